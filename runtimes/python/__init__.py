"""The Python runtime: a zygote that forks environments, and the environment's bootstrap."""
