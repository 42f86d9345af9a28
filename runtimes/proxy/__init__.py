"""The Runtime API proxy: an environment whose runtime is a program of its own (a custom runtime's `bootstrap`, Node.js,
awslambdaric, ...) talks to the gateway through it. Standard library and msgpack only: it runs in a child of a zygote
whose interpreter has a clean sys.path, on Python 3.10 and later.

- main.py         the environment's main once sealed: where it listens, the runtime's start and end, READY
- runtime_api.py  Lambda's Runtime API 2018-06-01 (next, response, error, init/error) for one runtime
- streaming.py    a response in streaming mode: its body to the gateway as CHUNK frames as it arrives
- server.py       the HTTP/1.1 server (asyncio.Protocol) and its router: the seam for more APIs (extensions, telemetry)
- http.py         the incremental HTTP/1.1 request parser (pure)
- link.py         the environment socket to the gateway (gateway/contracts/environment.py's frames)
- process.py      the runtime process: command line (AWS_LAMBDA_EXEC_WRAPPER), posix_spawn, its end, its peak memory
- lifecycle.py    with external extensions: the link that weaves Lambda's Init/Invoke/Shutdown phases in (ExtensionLink)
- extensions.py   the Extensions API 2020-01-01: the extensions' processes, register, event/next, init/exit errors
- telemetry.py    the Telemetry API 2022-07-01: subscriptions, buffering, delivery to listeners, Lambda's records
- relay.py        output relays: an extension's (and then the runtime's) output to the environment's, line by line
"""
