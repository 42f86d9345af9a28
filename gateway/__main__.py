"""Command line: `gateway serve` (also `python -m gateway serve`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.app import DataDirInUse, create_app
from gateway.config import Settings

log = logging.getLogger("gateway")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then stop accepting, drain in-flight requests, stop every child."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=settings.drain_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True, backlog=1024)
        await site.start()
        log.info("listening on http://%s:%d (data dir %s)", settings.host, settings.port, settings.data_dir)
        await stop.wait()
        log.info("stopping: draining in-flight invocations (up to %.0f s)", settings.drain_timeout)
    finally:
        await runner.cleanup()
    log.info("stopped")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="A self-hosted, Lambda-compatible gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--host", help="address to bind (default 127.0.0.1; env GATEWAY_HOST)")
    s.add_argument("--port", type=int, help="port (default 9000; env GATEWAY_PORT)")
    s.add_argument("--data-dir", help="registry, code and temp files (default ./.gateway-data)")
    s.add_argument("--idle-timeout", type=float, help="seconds before an idle environment is reaped (300)")
    s.add_argument(
        "--deploy",
        action="append",
        metavar="DIR",
        help="deploy each sub-directory of DIR as a function at start-up (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_args(args, os.environ)
    except ValueError as exc:
        sys.exit(f"gateway: {exc}")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except DataDirInUse as exc:
        sys.exit(f"gateway: {exc}")


if __name__ == "__main__":
    main()
