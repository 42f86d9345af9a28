"""Streamed responses on the gateway's side: where an invocation's CHUNK frames go (gateway/contracts/environment.py).

An `Environment` hands each CHUNK's piece to its invocation's sink, in order, then the reply to the sink's `end`:

- `Collector` (made by the environment at an invocation's first CHUNK, when the caller gave no sink: a synchronous
  Invoke of a function that streams, which Lambda answers with the whole response): keeps the pieces, at most
  `MAX_SYNC_RESPONSE` bytes: its `write` returns False as soon as they are more (the answer can only be
  Function.ResponseSizeTooLarge, so the gateway reads no further: the environment is killed as for an overflow
  below); `end` joins them before the RESULT's payload, or makes the reply Function.ResponseSizeTooLarge when the
  pieces and that payload are more, as Lambda does. An ERROR passes as it is.
- `Stream` (InvokeWithResponseStream's, given by the caller): a buffer its reader empties as the pieces come. While
  more than `HIGH_WATER` bytes wait for the reader (a slow client), the environment's socket is not read, so the
  function waits on a full socket instead of the gateway buffering its response; the reader resumes it. A reader
  that can no longer deliver (the client left) calls `discard`: pieces are then dropped as they come, so the
  function runs to its end as on Lambda (which does not stop a function whose caller left).

Either sink takes one HEAD (the content type), before any piece, charged as a piece; a second one, or one after a
piece, is a broken runtime's (`head` returns False and the environment kills itself, as for a bad frame). Either sink
takes at most `MAX_STREAM` bytes (Lambda's limit on a streamed response; each piece and the HEAD counting as at least
`MIN_CHUNK_COST`), a `Collector` at most `MAX_SYNC_RESPONSE`: `write` returns False beyond, and the environment then
ends the invocation with `overflowed(...)` and kills itself (it would go on streaming). Pieces are kept in one
buffer, never as one object each, so the gateway's memory follows the bytes however small the pieces. Everything
here runs on the event loop: `write` from the environment's `data_received`, `read` in the task that answers the
caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import orjson

from gateway.contracts.environment import (
    ERROR,
    MAX_CHUNK,
    MAX_STREAM,
    MAX_SYNC_RESPONSE,
    MIN_CHUNK_COST,
    Error,
    Reply,
    Result,
)

TOO_LARGE = "Function.ResponseSizeTooLarge"
#: bytes of a stream that may wait for its reader before the environment's socket stops being read
HIGH_WATER = 1024 * 1024


class Sink(Protocol):
    """Where an invocation's streamed pieces go (see the module's docstring). `total`: the bytes written so far;
    `content_type`: the streamed response's, as the runtime declared it (a HEAD frame), "" until then. `head` takes
    that HEAD: False if one came already or a piece did (the environment then dies, as for any bad frame)."""

    total: int
    content_type: str

    def head(self, content_type: str) -> bool: ...

    def write(self, data: bytes) -> bool: ...

    def end(self, reply: Reply) -> Reply: ...


class Reading(Protocol):
    """The environment's socket transport, as far as a stream pauses it."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def overflowed(inv_id: int, sink: Sink, log: bytes) -> Error:
    """The reply of an invocation whose response grew past its sink's limit: MAX_SYNC_RESPONSE for a `Collector`, else
    MAX_STREAM (it had `sink.total` bytes when it was cut: fewer when its pieces were so many and small that they
    counted as more, see MIN_CHUNK_COST)."""
    size = sink.total
    if isinstance(sink, Collector) and size > MAX_SYNC_RESPONSE:
        return Error(ERROR, inv_id, TOO_LARGE, _too_large_body(size, MAX_SYNC_RESPONSE), 0.0, 0, 0, log)
    limit = MAX_STREAM
    if size > limit - MAX_CHUNK:  # cut by its bytes (what a HEAD frame is charged may tip the last piece over)
        body = _too_large_body(size, limit)
    else:
        message = (
            f"Response stream exceeded the maximum allowed number of pieces ({limit // MIN_CHUNK_COST}): "
            f"{size} bytes in pieces of less than {MIN_CHUNK_COST} bytes each."
        )
        body = orjson.dumps({"errorMessage": message, "errorType": TOO_LARGE})
    return Error(ERROR, inv_id, TOO_LARGE, body, 0.0, 0, 0, log)


def _too_large_body(size: int, limit: int) -> bytes:
    message = f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({limit} bytes)."
    return orjson.dumps({"errorMessage": message, "errorType": TOO_LARGE})


def _head(sink: Collector | Stream, content_type: str) -> bool:
    """A sink's HEAD: taken only first (nothing charged yet: no HEAD, no piece), and charged as a piece, so that HEAD
    frames are never free."""
    if sink._charged:
        return False
    sink._charged = MIN_CHUNK_COST
    sink.content_type = content_type
    return True


class Collector:
    """A synchronous Invoke's sink: the pieces of a response Lambda returns whole."""

    __slots__ = ("_charged", "_kept", "content_type", "total")

    def __init__(self) -> None:
        self._kept = bytearray()
        self.total = 0
        self.content_type = ""
        self._charged = 0

    def head(self, content_type: str) -> bool:
        return _head(self, content_type)

    def write(self, data: bytes) -> bool:
        self.total += len(data)
        self._charged += max(len(data), MIN_CHUNK_COST)
        if self.total > MAX_SYNC_RESPONSE or self._charged > MAX_STREAM:  # the answer can only be an error now
            return False
        self._kept += data
        return True

    def end(self, reply: Reply) -> Reply:
        if not isinstance(reply, Result):
            return reply
        size = self.total + len(reply.payload)
        if size > MAX_SYNC_RESPONSE:
            body = _too_large_body(size, MAX_SYNC_RESPONSE)
            return Error(ERROR, reply.inv_id, TOO_LARGE, body, *reply[3:])
        self._kept += reply.payload
        return reply._replace(payload=bytes(self._kept))


class Stream:
    """InvokeWithResponseStream's sink: pieces for a reader, with the environment's socket paused while too many
    wait. `close()` (the invocation is over, however it ended) makes `read` return b"" once the buffer is empty."""

    __slots__ = (
        "_buffer",
        "_charged",
        "_closed",
        "_discarding",
        "_paused",
        "_started",
        "_transport",
        "_waiter",
        "content_type",
        "request_id",
        "total",
    )

    def __init__(self, request_id: str = "") -> None:
        #: the invocation's request id, known before it starts (the caller's answer begins before its outcome)
        self.request_id = request_id
        #: the streamed response's content type as the runtime declared it ("" until it does: before its first piece)
        self.content_type = ""
        self._buffer = bytearray()  # what waits for the reader
        self.total = 0
        self._charged = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._discarding = False
        self._transport: Reading | None = None
        self._paused = False
        self._started = False

    def attach(self, transport: Reading | None) -> None:
        """The invocation reached its environment, whose socket transport `write` pauses (the environment calls this
        as it registers the sink, just before it sends the payload)."""
        self._transport = transport
        self._started = True
        self._wake()

    async def begun(self) -> None:
        """Wait until the invocation has reached its environment (`attach`), or is over without having reached one."""
        while not self._started and not self._closed:
            await self._wait()

    def head(self, content_type: str) -> bool:
        return _head(self, content_type)

    def write(self, data: bytes) -> bool:
        self.total += len(data)
        self._charged += max(len(data), MIN_CHUNK_COST)
        if self._charged > MAX_STREAM:
            return False
        if self._discarding or not data:
            return True
        self._buffer += data
        self._wake()
        if len(self._buffer) > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        return True

    def end(self, reply: Reply) -> Reply:
        return reply

    def close(self) -> None:
        self._closed = True
        self._wake()
        self._resume()

    def discard(self) -> None:
        """The reader is gone: drop what waits and what comes."""
        self._discarding = True
        self._buffer.clear()
        self._resume()

    async def read(self) -> bytes:
        """What came since the last call (the pieces that came meanwhile, joined), waiting for something; b"" once
        closed and empty."""
        while not self._buffer and not self._closed:
            await self._wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        self._resume()
        return data

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._transport is not None:
                with contextlib.suppress(
                    Exception
                ):  # a transport closed under it (the environment died): nothing to do
                    self._transport.resume_reading()
