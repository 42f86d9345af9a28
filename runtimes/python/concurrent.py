"""Concurrent mode of an environment: an asyncio loop runs each INVOKE as a task (Lambda's
PerExecutionEnvironmentMaxConcurrency, async handlers only). See runtimes/python/bootstrap.py's docstring for the
contract with the gateway; the sequential loop there is the default and the hot path.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from gateway.contracts import environment as protocol
from runtimes.python import bootstrap
from runtimes.python.output import InvocationOutput as _InvocationOutput
from runtimes.python.output import OutputCapture as _OutputCapture
from runtimes.python.output import current_output as _output
from runtimes.python.output import current_request_id as _request_id


def serve_concurrently(
    sock: socket.socket,
    handler: Callable[[Any, Any], Any],
    capture: _OutputCapture,
    environ: dict[str, str],
    max_concurrency: int,
) -> NoReturn:
    """Concurrent mode's main: an asyncio loop; the process exits from the protocol (EOF, SHUTDOWN, bad frame)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # for handlers that call asyncio.get_event_loop()
    server = _ConcurrentServer(handler, capture, environ, max_concurrency)
    loop.run_until_complete(loop.create_unix_connection(lambda: server, sock=sock))
    loop.run_forever()
    # Only handler code stopping the loop gets here: the invocations in flight are lost, like in a crash.
    sys.stderr.write("the runtime's event loop was stopped by the function; exiting\n")
    os._exit(1)


class _ConcurrentServer(asyncio.Protocol):
    """Concurrent mode on the environment's socket: every INVOKE becomes a task, each replies when it finishes.

    Single-threaded (one event loop). At most `max_concurrency` handlers run at once; further INVOKEs wait
    in the semaphore in arrival order. Replies go through the transport, which writes whole frames in
    order, so frames never interleave. SHUTDOWN, EOF or a bad frame end the process at once, like the
    sequential loop; so does a failure of the runtime's own code in a task (the gateway then fails the
    invocations in flight instead of waiting for replies that would never come).
    """

    def __init__(
        self, handler: Callable[[Any, Any], Any], capture: _OutputCapture, environ: dict[str, str], limit: int
    ) -> None:
        self._handler = handler
        self._capture = capture
        self._environ = environ
        self._slots = asyncio.Semaphore(limit)
        self._decoder = protocol.FrameDecoder(protocol.FROM_GATEWAY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for frame in bootstrap._invocations(self._decoder, data):
            # each task runs in a copy of this context: its ContextVar settings stay its own
            task = asyncio.get_running_loop().create_task(self._invoke(frame))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def connection_lost(self, exc: Exception | None) -> None:
        os._exit(0)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            traceback.print_exception(exc)
            os._exit(1)

    async def _invoke(self, frame: list[Any]) -> None:
        _, inv_id, payload, deadline_ms, request_id, arn, client_context = frame
        async with self._slots:
            _request_id.set(request_id)
            output = _InvocationOutput()
            _output.set(output)
            start = time.perf_counter()
            reply: tuple[Any, ...]
            try:
                event = json.loads(payload)
                result = await self._handler(
                    event, bootstrap._context(request_id, arn, deadline_ms, client_context, self._environ)
                )
                reply = bootstrap._result_reply(inv_id, request_id, result)
            except (Exception, asyncio.CancelledError) as exc:  # a CancelledError the handler let out is its error
                reply = bootstrap._exception_reply(inv_id, request_id, exc)
            duration_ms = (time.perf_counter() - start) * 1000.0
            max_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            log = output.close()
            assert self._transport is not None
            self._transport.write(protocol.encode((*reply, duration_ms, max_rss_kb, self._capture.pending(), log)))
