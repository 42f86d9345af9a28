"""One typed module per process boundary, shared by the gateway and the runtimes. Imports nothing of the gateway."""
