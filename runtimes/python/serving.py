"""The sequential serving loop, an environment's hot path: one invocation at a time, blocking reads and writes.

Contract with the gateway (gateway/contracts/environment.py): answer every INVOKE with exactly one RESULT or ERROR
frame carrying its id. Output written to fds 1 and 2 (print, logging, subprocesses) goes down the output pipe, which
the gateway reads as it is written (runtimes/python/output.py): nothing of it travels in the reply. SHUTDOWN or the
socket's EOF end the process (ExitCode.OK); a frame that is not an INVOKE ends it with ExitCode.BAD_FRAME.
The concurrent loop (async handlers that opted in) is runtimes/python/concurrent.py.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, NoReturn

from gateway.contracts import environment as wire
from gateway.contracts.environment import INVOKE, SHUTDOWN, Invoke, ReplyHead, typed
from gateway.contracts.zygote import ExitCode
from runtimes.python import replies
from runtimes.python.context import for_invocation
from runtimes.python.output import LambdaLogHandler, OutputCapture

#: bytes read from the gateway's socket at a time
RECV_BUFFER = 256 * 1024


def invocations(decoder: wire.FrameDecoder, data: bytes) -> list[Invoke]:
    """The INVOKE frames `data` completes. SHUTDOWN ends the process; anything else from the gateway is a bug
    on its side or garbage on the socket, and ends it too (the gateway then reports the environment gone)."""
    try:
        frames = decoder.feed(data)
    except wire.ProtocolError:
        os._exit(ExitCode.BAD_FRAME)
    for frame in frames:
        if frame[0] == SHUTDOWN:
            os._exit(ExitCode.OK)
        if frame[0] != INVOKE:
            os._exit(ExitCode.BAD_FRAME)
    return [typed(Invoke, frame) for frame in frames]  # each checked by the decoder: a valid INVOKE


def serve(
    sock: socket.socket,
    handler: Callable[[Any, Any], Any],
    capture: OutputCapture,
    log_handler: LambdaLogHandler,
    environ: dict[str, str],
) -> NoReturn:
    """Sequential mode's main: read INVOKEs, call the handler, reply; until the gateway ends it."""
    decoder = wire.FrameDecoder(wire.FROM_GATEWAY)
    # One receive buffer for the life of the process: recv(n) would allocate (and, for a large n, mmap and
    # page-fault in) n fresh bytes on every call.
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    recv_into = sock.recv_into
    send = sock.sendall
    getrusage = resource.getrusage
    perf = time.perf_counter
    pending = capture.pending
    encode_reply = wire.encode_reply
    while True:
        received = recv_into(buffer)
        if not received:
            os._exit(ExitCode.OK)
        for invoke in invocations(decoder, view[:received].tobytes()):
            request_id = invoke.request_id
            log_handler.request_id = request_id
            start = perf()
            reply: ReplyHead
            try:
                event = json.loads(invoke.payload)
                context = for_invocation(
                    request_id, invoke.invoked_arn, invoke.deadline_ms, invoke.client_context, environ
                )
                reply = replies.result(invoke.inv_id, request_id, handler(event, context))
            except Exception as exc:
                reply = replies.exception(invoke.inv_id, request_id, exc)
            duration_ms = (perf() - start) * 1000.0
            max_rss_kb = getrusage(resource.RUSAGE_SELF).ru_maxrss
            # The output went down the pipe as it was written: the gateway has read it by the time this arrives.
            send(encode_reply(reply, duration_ms, max_rss_kb, pending(), b""))


def rehearse() -> None:
    """Run the common code of Init and of an invocation once, on throwaway values.

    A forked child shares its memory with the zygote until it writes to it, and CPython writes to every object it
    touches (reference counts): the first run of any code path in a new environment takes page faults. Taking
    them here, in a spare nobody waits for, makes the Init and the first invocation a caller waits for cheaper.
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)
    time.tzset()
    os.makedirs(os.getcwd(), exist_ok=True)
    os.path.join(os.getcwd(), "tmp")
    handler = LambdaLogHandler(False)
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    importlib.invalidate_caches()
    data = wire.encode_invoke(1, b'{"k": [1, 2.5, "s", null, true]}', 0, "rid", "arn", None)
    for invoke in invocations(wire.FrameDecoder(wire.FROM_GATEWAY), data):
        for_invocation(invoke.request_id, invoke.invoked_arn, invoke.deadline_ms, invoke.client_context, saved)
        reply = replies.result(invoke.inv_id, invoke.request_id, json.loads(invoke.payload))
        wire.encode_reply(reply, 0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0, b"")
