"""Baseline (a): the ceiling for one Python process, an aiohttp + uvloop server calling the handler in-process.

`POST /2015-03-31/functions/{FunctionName}/invocations` reads the body, parses it with orjson, calls the
same no-op handler the benchmark deploys to the gateway (`handler.lambda_handler(event, context)`, imported
once at start-up, with `context=None`) in the server's own process and event loop, and returns
`orjson.dumps(result)` as application/json over a keep-alive connection. No registry, no environments, no
sockets to workers, no metrics: what is left is the cost of aiohttp's HTTP server on uvloop in a single
process, which the gateway's invoke path cannot beat.

Run: `python bench/baselines/inprocess.py --port P [--host H]`; `GET /healthz` answers 200 once it
listens; SIGTERM or SIGINT stop it (it starts no child processes).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
import uvloop
from aiohttp import web

try:
    from .handler import lambda_handler
except ImportError:  # run as a script: bench/baselines/ is sys.path[0]
    from handler import lambda_handler  # type: ignore[no-redef,import-not-found]

INVOKE_ROUTE = "/2015-03-31/functions/{FunctionName}/invocations"
#: Lambda's synchronous payload limit (6 MB) and some room: the payload scenarios send events up to that size
MAX_BODY = 7 * 1024 * 1024


async def invoke(request: web.Request) -> web.Response:
    body = await request.read()
    event = orjson.loads(body) if body else {}
    return web.Response(body=orjson.dumps(lambda_handler(event, None)), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def create_app() -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(INVOKE_ROUTE, invoke)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, backlog=1024).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
