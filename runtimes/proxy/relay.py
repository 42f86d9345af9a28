"""Output relays: the proxy reads a child's output pipe (an extension's; the runtime's when a telemetry subscription
wants "function" records), passes every byte on to the environment's output (fd 1, the pipe the gateway reads) and
hands complete lines to a callback (the Telemetry API's log records).

Concurrency model: a relay reads on the proxy's event loop (`add_reader`, non-blocking); the writes to fd 1 go through
one `Writer` thread, because fd 1 blocks while the gateway does not read it (it pauses reading an environment that is
idle and printed too much) and the event loop must never block on it. The writer's queue is bounded (QUEUE_BYTES):
past it, relays stop reading, so a child that floods its output blocks on its own pipe, as it would without the
proxy. `Relay.drain()` reads what the pipe holds right now, and `Writer.flushed()` waits until it reached fd 1, so
what a runtime printed before posting its response is in the invocation's log.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable

#: bytes waiting for fd 1 beyond which relays pause reading
QUEUE_BYTES = 1 << 20
#: the longest line handed to the callback (a longer one is cut into pieces of this size)
MAX_LINE = 256 * 1024
READ_SIZE = 1 << 16


class Writer:
    """One thread writing queued chunks to `fd` in order, blocking when it is full."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._cond = threading.Condition()
        self._paused: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="output-writer", daemon=True)
        self._thread.start()

    @property
    def full(self) -> bool:
        return self._size >= QUEUE_BYTES

    def write(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()

    def when_room(self, resume: Callable[[], None]) -> None:
        """Call `resume` on the event loop once the queue is below its bound again."""
        self._loop = asyncio.get_event_loop()
        with self._cond:
            self._paused.append(resume)

    def wait_empty(self, timeout: float) -> None:
        """Block (up to `timeout` seconds) until what was queued so far has been written to `fd`."""
        with self._cond:
            self._cond.wait_for(lambda: self._size == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                if self._closed and not self._chunks:
                    return
                chunk = self._chunks.popleft()
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:  # the gateway closed the pipe: the environment is going away
                pass
            with self._cond:
                self._size -= len(chunk)
                resumes = self._paused if self._size < QUEUE_BYTES else []
                if resumes:
                    self._paused = []
                self._cond.notify_all()
            if resumes and self._loop is not None:
                for resume in resumes:
                    self._loop.call_soon_threadsafe(resume)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class Relay:
    """Reads `fd` (the read end of a child's output pipe, made non-blocking here) into `writer`, and calls
    `on_line(line)` for each complete line while `on_line` is set. Closes `fd` at EOF or `close()`."""

    def __init__(self, fd: int, writer: Writer, on_line: Callable[[str], None] | None) -> None:
        self.fd = fd
        self.writer = writer
        self.on_line = on_line
        self._partial = b""
        self._loop = asyncio.get_event_loop()
        self._reading = False
        self.closed = False
        os.set_blocking(fd, False)
        self._resume()

    def _resume(self) -> None:
        if not self.closed and not self._reading:
            self._loop.add_reader(self.fd, self._readable)
            self._reading = True

    def _readable(self) -> None:
        self.drain()
        if not self.closed and self.writer.full:
            self._loop.remove_reader(self.fd)
            self._reading = False
            self.writer.when_room(self._resume)

    def drain(self) -> None:
        """Read what the pipe holds now (without blocking) and pass it on."""
        while not self.closed and not self.writer.full:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lines(b"", final=True)
                self.close()
                return
            self.writer.write(data)
            self._lines(data, final=False)

    def _lines(self, data: bytes, final: bool) -> None:
        if self.on_line is None:
            return
        buffered = self._partial + data
        *lines, rest = buffered.split(b"\n")
        if final and rest:
            lines.append(rest)
            rest = b""
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._partial = rest
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):  # an overlong line, in pieces of MAX_LINE
                self.on_line(line[start : start + MAX_LINE].decode("utf-8", "backslashreplace"))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False
        os.close(self.fd)


def pipe_for_child() -> tuple[int, int]:
    """(read end, write end) of a new pipe: the write end inheritable, for a child's fds 1 and 2."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    return read_end, write_end
