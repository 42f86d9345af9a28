"""The load generator's client side: one raw `asyncio.Protocol` per keep-alive connection, a minimal HTTP/1.1
response parser, and what each outcome (response, protocol error, lost connection) does to the run's counters.

A `Connection` carries at most one request at a time (no pipelining) and reports to its `Run` (bench/load/run.py),
which decides what it sends next. Everything runs on the run's event loop: callbacks, no tasks or futures per
request. The fast path (`data_received` with a whole response whose head was seen before) is one dict lookup.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from bench.load.run import Run

MAX_HEAD_BYTES = 64 * 1024

_now = time.perf_counter_ns


def _parse_head(buf: bytes | bytearray, hend: int) -> tuple[int, int, bool, bool]:
    """(status, content_length or -1, chunked, close) from the response head buf[:hend]; ValueError if malformed."""
    if buf[:5] != b"HTTP/" or buf[12:13] not in (b" ", b"\r", b""):
        raise ValueError("not an HTTP response")
    status = int(buf[9:12])
    head = bytes(buf[:hend]).lower()
    close = head[5:8] == b"1.0"
    clen = -1
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 17)
        clen = int(head[i + 17 : j if j >= 0 else hend])
        if clen < 0:
            raise ValueError("negative Content-Length")
    chunked = False
    i = head.find(b"\r\ntransfer-encoding:")
    if i >= 0:
        j = head.find(b"\r\n", i + 20)
        chunked = b"chunked" in head[i + 20 : j if j >= 0 else hend]
        if chunked:
            clen = -1
    i = head.find(b"\r\nconnection:")
    if i >= 0:
        j = head.find(b"\r\n", i + 13)
        value = head[i + 13 : j if j >= 0 else hend]
        if b"close" in value:
            close = True
        elif b"keep-alive" in value:
            close = False
    return status, clen, chunked, close


# Parsed response heads by their exact bytes: a server's heads repeat (aiohttp's only change with the Date, once
# a second), so the fast path is one dict lookup instead of a parse. Bounded; cleared when full.
_HEADS: dict[bytes, tuple[int, int, bool, bool]] = {}
_HEADS_MAX = 4096

Retry = tuple[bytes, int, bool, bool]  # (request, start_ns, measured, is_head) to resend on a new connection


class Connection(asyncio.Protocol):
    """One client connection carrying at most one request at a time; reports to its `Run`."""

    __slots__ = (
        "_buf",
        "_chunked",
        "_clen",
        "_close",
        "_cpos",
        "_eof_body",
        "_hend",
        "_retry",
        "_run",
        "_status",
        "busy",
        "closing",
        "dead",
        "is_head",
        "lost",
        "measured",
        "req",
        "sent_ns",
        "start_ns",
        "tr",
        "used",
    )

    def __init__(self, run: Run, retry: Retry | None = None) -> None:
        self._run = run
        self._retry = retry  # a request to resend as soon as connected (see connection_lost)
        self.tr: asyncio.Transport | None = None
        self.req = b""  # the request in flight
        self.used = False  # a response has been received on this connection
        self.busy = False  # a request is in flight
        self.measured = False  # ... and it counts (started after the warm-up)
        self.start_ns = 0  # latency origin: actual (closed loop) or intended (open loop) send time
        self.sent_ns = 0  # actual send time, for the timeout
        self.dead = False  # connection lost
        self.closing = False  # closed by us; whoever closed it took care of reopening
        self.is_head = False
        self.lost: asyncio.Future[None] = run.loop.create_future()
        self._reset_parser()

    def _reset_parser(self) -> None:
        self._buf = bytearray()
        self._hend = -1
        self._status = 0
        self._clen = -1
        self._chunked = False
        self._close = False
        self._eof_body = False
        self._cpos = 0

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        run = self._run
        run.live.add(self)
        retry = self._retry
        if retry is not None and run.running:
            self._retry = None
            self.req, self.start_ns, self.measured, self.is_head = retry
            self.busy = True
            self.sent_ns = _now()
            self.tr.write(self.req)  # still counted in run.inflight
        else:
            run.on_connected(self)

    def data_received(self, data: bytes) -> None:
        now = _now()
        if not self.busy:
            self._protocol_error(now)  # unsolicited bytes: we never pipeline
            return
        if self._hend < 0 and not self._buf:
            # fast path: a whole response with Content-Length in one read, its head most likely seen before
            hend = data.find(b"\r\n\r\n")
            if hend >= 12:
                key = data[:hend]
                parsed = _HEADS.get(key)
                if parsed is None:
                    try:
                        parsed = _parse_head(key, hend)
                    except ValueError:
                        self._protocol_error(now)
                        return
                    if len(_HEADS) >= _HEADS_MAX:
                        _HEADS.clear()
                    _HEADS[key] = parsed
                status, clen, _chunked, close = parsed
                if clen >= 0 and status >= 200 and len(data) == hend + 4 + clen:
                    self._done(now, status, close)
                    return
        self._buf += data
        self._advance(now)

    def eof_received(self) -> bool:
        if self.busy and self._eof_body and self._hend >= 0:
            status = self._status
            self._reset_parser()
            self._done(_now(), status, True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        run = self._run
        run.live.discard(self)
        self.dead = True
        if not self.lost.done():
            self.lost.set_result(None)
        if self.closing or not run.running:
            return
        now = _now()
        if self.busy:
            self.busy = False
            if self.used and self._hend < 0 and not self._buf:
                # A reused keep-alive connection closed by the server before any byte of the response (it
                # closed after the previous response, as we sent this one): resend once on a new connection,
                # latency still counted from the original start. On a fresh connection this is an error.
                run.reopen(now, (self.req, self.start_ns, self.measured, self.is_head))
                return
            run.inflight -= 1
            if self.measured:
                run.socket_errors += 1
        run.reopen(now)
        run.check_done(now)

    # -- parsing (slow path: partial reads, chunked, 1xx, HEAD, EOF-delimited bodies)

    def _advance(self, now: int) -> None:
        buf = self._buf
        while self._hend < 0:
            hend = buf.find(b"\r\n\r\n")
            if hend < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._protocol_error(now)
                return
            try:
                status, clen, chunked, close = _parse_head(buf, hend)
            except ValueError:
                self._protocol_error(now)
                return
            if 100 <= status < 200 and status != 101:
                del buf[: hend + 4]  # interim response: the real one follows
                continue
            if self.is_head or status in (204, 304):
                clen, chunked = 0, False
            self._hend = self._cpos = hend + 4
            self._status, self._clen, self._chunked, self._close = status, clen, chunked, close
            self._eof_body = clen < 0 and not chunked
        if self._eof_body:
            del buf[self._hend :]  # body ends at EOF; keep nothing
            return
        if self._chunked:
            try:
                end = self._scan_chunks(buf)
            except ValueError:
                self._protocol_error(now)
                return
            if end < 0:
                return
        else:
            end = self._hend + self._clen
            if len(buf) < end:
                return
        if len(buf) != end:
            self._protocol_error(now)
            return
        status, close = self._status, self._close
        self._reset_parser()
        self._done(now, status, close)

    def _scan_chunks(self, buf: bytearray) -> int:
        """End offset of a complete chunked body in buf, or -1 if more is needed (progress kept in _cpos).

        Raises ValueError on a malformed chunk size.
        """
        pos = self._cpos
        while True:
            le = buf.find(b"\r\n", pos)
            if le < 0:
                return -1
            size = int(bytes(buf[pos:le]).split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                t = buf.find(b"\r\n\r\n", le)
                return -1 if t < 0 else t + 4
            nxt = le + 2 + size + 2
            if len(buf) < nxt:
                return -1
            pos = self._cpos = nxt

    # -- outcomes

    def _done(self, now: int, status: int, close: bool) -> None:
        run = self._run
        self.busy = False
        self.used = True
        if not run.running:
            return
        run.inflight -= 1
        if self.measured:
            run.hist.record((now - self.start_ns) // 1000)
            st = run.statuses
            st[status] = st.get(status, 0) + 1
        if close:
            self.closing = True
            assert self.tr is not None
            self.tr.close()
            run.reopen(now)
            run.check_done(now)
        else:
            run.on_ready(self, now)

    def _protocol_error(self, now: int) -> None:
        run = self._run
        self.closing = True
        if self.tr is not None:
            self.tr.abort()
        if not run.running:
            return
        if self.busy:
            self.busy = False
            run.inflight -= 1
            if self.measured:
                run.socket_errors += 1
        elif now >= run.w0:
            run.socket_errors += 1
        run.reopen(now)
        run.check_done(now)
