"""Concurrent mode of an environment: an asyncio loop runs each INVOKE as a task (Lambda's
PerExecutionEnvironmentMaxConcurrency, async handlers only). The contract with the gateway is the sequential loop's
(runtimes/python/serving.py, the default and the hot path); what differs:

Every invocation has its own context, deadline and request id (in log lines, via a ContextVar), and its own
output: `sys.stdout`/`sys.stderr` append to the current invocation's buffer, sent as its reply's `log`. Limit: what
bypasses `sys.stdout` (subprocesses, C extensions writing to fd 1, threads that do not carry the invocation's
context) goes down the output pipe and is shipped with whichever invocation finishes next; and when the
environment is killed (a timeout, a crash) the buffered output of the invocations in flight is lost, only what
went down the pipe is left for the gateway to report.
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

from gateway.contracts import environment as wire
from gateway.contracts.environment import Invoke, ReplyHead
from gateway.contracts.zygote import ExitCode
from runtimes.python import replies
from runtimes.python.context import for_invocation
from runtimes.python.output import InvocationOutput as _InvocationOutput
from runtimes.python.output import OutputCapture as _OutputCapture
from runtimes.python.output import current_output as _output
from runtimes.python.output import current_request_id as _request_id
from runtimes.python.serving import invocations


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
    os._exit(ExitCode.FAILED)


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
        self._decoder = wire.FrameDecoder(wire.FROM_GATEWAY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for invoke in invocations(self._decoder, data):
            # each task runs in a copy of this context: its ContextVar settings stay its own
            task = asyncio.get_running_loop().create_task(self._invoke(invoke))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def connection_lost(self, exc: Exception | None) -> None:
        os._exit(ExitCode.OK)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            traceback.print_exception(exc)
            os._exit(ExitCode.FAILED)

    async def _invoke(self, invoke: Invoke) -> None:
        inv_id, request_id = invoke.inv_id, invoke.request_id
        async with self._slots:
            _request_id.set(request_id)
            output = _InvocationOutput()
            _output.set(output)
            start = time.perf_counter()
            reply: ReplyHead
            try:
                event = json.loads(invoke.payload)
                context = for_invocation(
                    request_id, invoke.invoked_arn, invoke.deadline_ms, invoke.client_context, self._environ
                )
                reply = replies.result(inv_id, request_id, await self._handler(event, context))
            except (Exception, asyncio.CancelledError) as exc:  # a CancelledError the handler let out is its error
                reply = replies.exception(inv_id, request_id, exc)
            duration_ms = (time.perf_counter() - start) * 1000.0
            max_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            log = output.close()
            assert self._transport is not None
            self._transport.write(wire.encode_reply(reply, duration_ms, max_rss_kb, self._capture.pending(), log))
