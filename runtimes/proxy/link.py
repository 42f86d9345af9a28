"""The proxy's end of the environment socket (gateway/contracts/environment.py): INVOKE and SHUTDOWN in, READY,
CHUNK (a streamed response's pieces), RESULT and ERROR out.

Reads are a loop reader (`loop.add_reader`) on the socket, which stays blocking: frames to the gateway go out with
one blocking `sendall` each, so a frame is complete on the socket before anything else happens (the proxy may exit
right after one: nothing is left in a buffer), and the hot path pays no transport machinery. The gateway reads its
end all the time, so a write waits only for the socket's buffer to drain, as the Python fast path's do.

SHUTDOWN, the socket's end, or a frame that is not an INVOKE (a bug on the gateway's side, or garbage) end the
environment: `on_end(code)`, an `ExitCode`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

from gateway.contracts import environment as wire
from gateway.contracts.environment import INVOKE, RESET, SHUTDOWN, Invoke, ReplyHead, typed
from gateway.contracts.zygote import ExitCode

#: bytes read from the socket at a time (an INVOKE carries up to 6 MB: a few reads)
RECV_BUFFER = 256 * 1024


class GatewayLink:
    """One environment's socket to the gateway. `on_invoke` gets each INVOKE; `on_end` is called when it must end."""

    def __init__(self, sock: socket.socket, on_invoke: Callable[[Invoke], None], on_end: Callable[[int], None]) -> None:
        self._sock = sock
        self._decoder = wire.FrameDecoder(wire.FROM_GATEWAY)
        self._buffer = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buffer)
        self._send = sock.sendall
        self.on_invoke = on_invoke
        self.on_end = on_end
        self.ready_sent = False
        self.reset_sent = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            received = self._sock.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            received = 0
        if not received:
            self.on_end(ExitCode.OK)  # the gateway dropped this environment
            return
        try:
            frames = self._decoder.feed(self._view[:received].tobytes())
        except wire.ProtocolError:
            self.on_end(ExitCode.BAD_FRAME)
            return
        for frame in frames:
            kind = frame[0]
            if kind == INVOKE:
                self.on_invoke(typed(Invoke, frame))
            elif kind == SHUTDOWN:
                self.on_end(ExitCode.OK)
                return
            else:
                self.on_end(ExitCode.BAD_FRAME)
                return

    def ready(self, init_ms: float, error_type: str | None = None, message: str = "", stack: bytes = b"") -> None:
        """READY, once: Init is over (`error_type` None) or failed (`stack`: the JSON array of the stack, or empty)."""
        if self.ready_sent:
            return
        self.ready_sent = True
        self._write(wire.encode_ready(os.getpid(), init_ms, 1, error_type, message, stack))

    def reply(self, head: ReplyHead, duration_ms: float, max_rss_kb: int, pending: int) -> None:
        """RESULT or ERROR for an invocation (`head`: result_head / error_head)."""
        self._write(wire.encode_reply(head, duration_ms, max_rss_kb, pending, b""))

    def reset(self, why: str) -> None:
        """RESET, once: the gateway hands this environment no more invocations (what it sent is still answered) and
        ends it with SHUTDOWN. `why` goes to the environment's output."""
        if not self.reset_sent:
            self.reset_sent = True
            os.write(2, f"[gateway] the execution environment is reset: {why}\n".encode())
            self._write(wire.encode((RESET,)))

    def chunk(self, inv_id: int, data: bytes) -> None:
        """CHUNK: a piece of invocation `inv_id`'s streamed response (at most MAX_CHUNK bytes), before its reply."""
        self._write(wire.encode_chunk(inv_id, data))

    def head(self, inv_id: int, content_type: str) -> None:
        """HEAD: invocation `inv_id`'s streamed response begins, of `content_type` (one `valid_content_type`)."""
        self._write(wire.encode((wire.HEAD, inv_id, content_type)))

    def _write(self, frame: bytes) -> None:
        try:
            self._send(frame)
        except OSError:  # the gateway is gone, or dropped us: nothing left to serve
            self.on_end(ExitCode.OK)
