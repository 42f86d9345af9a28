"""Language runtimes that run inside the gateway's environments."""
