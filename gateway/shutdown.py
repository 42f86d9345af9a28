"""Graceful stop with a hard limit: stop accepting, drain for up to `GATEWAY_DRAIN_TIMEOUT`, then cut what still runs.

`drain()` runs after SIGTERM/SIGINT, before the aiohttp runner's own cleanup:

1. The listening sockets close (new connections are refused), idle keep-alive connections are closed, busy ones close
   after their response, log followers are ended, and the dispatcher starts no more asynchronous attempts (queued
   events wait on file for the next start; the attempts in flight drain like requests).
2. Up to `timeout` seconds for every connection to finish.
3. Past it, in-flight invocations are cut: the invoker refuses new work, every environment's process group is killed,
   and each caller still waiting gets a Lambda-shaped 500 `ServiceException` saying the gateway stopped.
   `CUT_GRACE` seconds more let those answers go out.

The runner's cleanup then gives what is left (a control-plane request still in a thread) `RUNNER_GRACE` seconds twice
(aiohttp waits, cancels, waits) and stops the zygotes; so the process exits within about `timeout` + 2 x
`CUT_GRACE` + 2 x `RUNNER_GRACE` seconds of the signal, whatever a function does.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.api.logs import LOGSTORE
from gateway.app_keys import CONCURRENCY, DISPATCHER, INVOKER, POOLS
from gateway.events.dispatcher import Dispatcher

log = logging.getLogger("gateway")

#: seconds for cut invocations' answers to be written once their environments are killed
CUT_GRACE = 2.0
#: the aiohttp runner's shutdown timeout: what is left after the drain (aiohttp waits for it twice)
RUNNER_GRACE = 1.0
#: how often the drain looks whether every connection has finished
POLL = 0.05


async def drain(runner: web.BaseRunner, app: web.Application, timeout: float) -> None:
    """Steps 1-3 of the module's docstring; returns when nothing is in flight any more, or after the cut."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if server is None:  # the runner never started
        return
    server.pre_shutdown()
    dispatcher = app.get(DISPATCHER)
    if dispatcher is not None:  # queued events wait on file; attempts in flight drain like requests
        dispatcher.stop_taking()
    for conn in list(
        server.connections
    ):  # idle keep-alive ones: close() only flags them, they would wait for a request
        if getattr(conn, "idle", False):
            conn.force_close()
    store = app.get(LOGSTORE)
    if store is not None:
        store.stop_following()
    if await _finished(server, deadline, dispatcher):
        return
    inflight = app[CONCURRENCY].inflight() if CONCURRENCY in app else 0
    log.warning("drain timeout (GATEWAY_DRAIN_TIMEOUT %.1f s) reached: cutting %d invocations", timeout, inflight)
    cut(app)
    await _finished(server, loop.time() + CUT_GRACE, dispatcher)


def cut(app: web.Application) -> None:
    """End every invocation now: no new ones start, every environment is killed (their callers get errors)."""
    if INVOKER in app:
        app[INVOKER].stopping = True
    if POOLS in app:
        app[POOLS].close()


async def _finished(server: web.Server, deadline: float, dispatcher: Dispatcher | None) -> bool:
    """Wait until the server has no connection and the dispatcher no attempt left, or `deadline` (loop time);
    whether nothing is left."""
    loop = asyncio.get_running_loop()
    while server.connections or (dispatcher is not None and dispatcher.inflight()):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL)
    return True
