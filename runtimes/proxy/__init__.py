"""The Runtime API proxy: an environment whose runtime is a program of its own (a custom runtime's `bootstrap`, Node.js,
awslambdaric, ...) talks to the gateway through it. See runtimes/proxy/main.py. Standard library and msgpack only: it
runs in a child of a zygote whose interpreter has a clean sys.path, on Python 3.9 and later.
"""
