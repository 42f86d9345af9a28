"""The ceiling for one Python process: an aiohttp + uvloop "hello world" that does an invoke's minimum work.

`POST /2015-03-31/functions/{FunctionName}/invocations` reads the body, parses it with orjson, calls the
same no-op handler the benchmark deploys to the gateway (`lambda_handler(event, context)`) in-process, and
returns `orjson.dumps(result)`. No registry, no environments, no sockets to workers, no metrics: what is
left is the cost of aiohttp's HTTP server on uvloop, which the gateway's invoke path cannot beat.

Run: `python bench/hello_baseline.py --port P`; `GET /healthz` answers 200 once it listens; SIGTERM or
SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import orjson
import uvloop
from aiohttp import web


def lambda_handler(event: Any, context: Any) -> Any:
    """The no-op handler, identical to the one bench/core.py deploys to the gateway."""
    return event


async def invoke(request: web.Request) -> web.Response:
    body = await request.read()
    event = orjson.loads(body) if body else {}
    return web.Response(body=orjson.dumps(lambda_handler(event, None)), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{FunctionName}/invocations", invoke)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
