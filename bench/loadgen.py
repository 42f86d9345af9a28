"""An honest HTTP/1.1 load generator for loopback targets: closed loop and open loop (wrk2-style), library + CLI.

Built to share a small machine with the server it loads, so it is cheap per request: uvloop, raw
`asyncio.Protocol` connections, pre-encoded request bytes, one clock read per request in the closed loop, no
per-request task, future or timer, and a minimal response parser (status line, `Content-Length`,
`Transfer-Encoding: chunked`, `Connection: close`, body delimited by EOF). No pipelining: a connection carries
one request at a time.

Client cost, measured on the 2-core shared development machine (load average ~4 from other work, so +-30 %):
* closed loop, 32 connections, against a trivial raw uvloop server answering a fixed 2-byte response:
  17-20 us of CPU per request (user ~6-7 us, of which ~2.6 us is this module's Python per response; system
  ~11-13 us: one recv and one send per request, plus epoll), up to ~38,000 requests/s from one core. `wrk -t1`
  on the same server: ~13 us per request (34,000 requests/s).
* closed loop, 32 connections, 5 s, against the in-process baseline (`bench/baselines/inprocess.py`), 5 rounds:
  median 5,000 requests/s (4,500-9,100) vs wrk's median 5,200 (3,300-9,700): the server is the limit, not the
  client; 35-42 us of client CPU per request (wrk: 27-35 us), higher than against the trivial server because
  each loop wake-up finds fewer responses to process. The client used ~0.2 core (wrk ~0.15).
* open loop at low rates: the cost is dominated by process wake-ups (~100-200 us each on this machine), e.g.
  200 requests/s costs ~4 % of a core (~200 us per request).

Model
-----
* Closed loop (`closed_loop`): N keep-alive connections; each sends its next request as soon as the previous
  response is complete. Latency = response complete - actual send time. The send time of a request is the
  clock read taken when the previous response on that connection was processed (so a few microseconds of the
  client's own bookkeeping are counted as latency, never hidden).
* Open loop (`open_loop`): a constant arrival rate R over a fixed pool of N connections. Request i has the
  intended send time t0 + i/R. At (or after) that time it goes out on a free connection (free connections are
  used round-robin); if none is free it waits, first in first out, and is sent as soon as a connection frees
  up. Latency = response complete - INTENDED send time, so time spent queued in the client because the server
  is slow is counted (coordinated omission corrected). The scheduler sleeps on a loop timer until the next
  intended time, rounded UP to a whole millisecond (the loop's timers have 1 ms resolution; never early, no
  spinning), and then sends everything that is due. Sends are thus 0-1 ms late by design (~0.5 ms on average)
  plus the OS's wake-up delay, which on a busy machine is often more; that lateness is part of the latency,
  and a send more than `late_threshold_ms` after its intended time is counted in `late_sends`
  (`max_lateness_ms` is the worst). Late sends are the client's or the machine's delay, not the server's.
  Requests that were due but not completed when the run ends (in flight, or still queued in the client) are
  reported in `unfinished`: a growing number there means the server cannot keep up with R.

What is counted
---------------
* The run connects all N connections first (a failure is an error, `ConnectionError`), then starts the clock
  t0. `warmup` seconds follow whose requests are not recorded, then the measured window of `duration`
  seconds. A request is *measured* if it was started (closed loop: actually sent; open loop: intended send
  time) at or after the end of the warm-up; a measured request that completes before the end of the run is
  counted in `requests`, its latency in the histogram and its status in `statuses` (non-2xx responses are
  responses: they have a latency, and are also counted in `errors["non_2xx"]`). Responses to warm-up
  requests are discarded even if they arrive inside the window, so with `warmup > 0` the closed loop
  undercounts by at most N requests. `throughput_rps` = requests / measured window.
* `max_requests` caps the number of measured requests (the run then ends when all of them have finished, or
  when the duration is up, whichever comes first; `duration_s` is the window actually measured).
* `errors["timeout"]`: a measured request still unanswered `timeout` seconds after it was sent (checked by a
  sweep every min(0.25 s, timeout/8), so detection can lag by that much); the connection is aborted and
  reopened. `errors["socket"]`: a connection reset/closed while a measured request was in flight, a protocol
  error in the response, or a failed reconnect attempt after the warm-up (retried every 50 ms).
* `reconnects`: connections reopened during the window, whether the server closed them (`Connection: close`,
  HTTP/1.0, EOF after a complete response as with gunicorn sync workers), or after an error or a timeout.
  When a reused keep-alive connection is closed by the server before any byte of the response to the request
  just sent on it (the server closed it after the previous response without saying so), that request is
  resent once on the new connection, its latency still counted from its original start; not an error.
* `client_cpu_s`: CPU time (user + system) of the whole load-generator process during the measured window,
  from `time.process_time()`: if a server runs in the same process (as in the tests) it is included.
* Hard caps: duration and warm-up <= 600 s each, connections <= 1024, rate <= 1,000,000 req/s. Targets must be
  loopback (127.0.0.0/8, ::1 or "localhost", which means 127.0.0.1); anything else raises `NotLoopbackError`.

CLI: `python bench/loadgen.py URL [--method POST] [--body '{}'] [--header 'K: V' ...] --mode closed|open
[-c CONNECTIONS] [-d SECONDS] [--rate RPS] [--warmup S] [--max-requests N] [--timeout S] [--out FILE]`
prints the JSON result (`LoadResult.to_dict()`) to stdout or FILE, and a progress line a second on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import random
import sys
import time
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import uvloop

MAX_DURATION_S = 600.0
MAX_WARMUP_S = 600.0
MAX_CONNECTIONS = 1024
MAX_RATE_RPS = 1_000_000.0
MAX_HEAD_BYTES = 64 * 1024
RECONNECT_BACKOFF_S = 0.05

_now = time.perf_counter_ns


class NotLoopbackError(ValueError):
    """The target is not a loopback address; this load generator only loads the local machine."""


# --------------------------------------------------------------------------------------------------------------
# Request helpers


def encode_request(
    method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None, host: str = "127.0.0.1"
) -> bytes:
    """Encode one keep-alive HTTP/1.1 request with `Host` and `Content-Length` (always, even 0).

    `headers` may override `Host`; `Content-Length` and `Transfer-Encoding` may not be given. Raises
    `ValueError` on CR/LF in any field or a path that does not start with "/".
    """
    if not method or not method.isascii() or not method.isalpha():
        raise ValueError(f"bad method: {method!r}")
    if not path.startswith("/") or any(ch in path for ch in " \r\n"):
        raise ValueError(f"bad path (must start with '/', no spaces or CR/LF): {path!r}")
    hdrs: dict[str, str] = {"Host": host}
    for name, value in (headers or {}).items():
        if not name or any(ch in name for ch in ":\r\n ") or any(ch in value for ch in "\r\n"):
            raise ValueError(f"bad header: {name!r}: {value!r}")
        lname = name.lower()
        if lname in ("content-length", "transfer-encoding"):
            raise ValueError(f"{name} is set by encode_request")
        if lname == "host":
            hdrs["Host"] = value
        else:
            hdrs[name] = value
    head = f"{method.upper()} {path} HTTP/1.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + bytes(body)


def zipf_indices(n_items: int, count: int, s: float = 1.0, seed: int = 1) -> list[int]:
    """`count` indices in [0, n_items), rank k drawn with probability proportional to 1/(k+1)**s.

    Pure Python and deterministic for a given (n_items, count, s, seed); index 0 is the most frequent.
    """
    if n_items < 1 or count < 0 or s < 0:
        raise ValueError("need n_items >= 1, count >= 0, s >= 0")
    cum = list(accumulate(1.0 / (k + 1) ** s for k in range(n_items)))
    return random.Random(seed).choices(range(n_items), cum_weights=cum, k=count)


def check_loopback(host: str) -> str:
    """Return the address to connect to for `host` if it is loopback, else raise `NotLoopbackError`.

    "localhost" maps to 127.0.0.1 (no name resolution is done); IPv6 may be given with or without brackets.
    """
    h = host.strip()
    if h.lower() == "localhost":
        return "127.0.0.1"
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        addr = None
    if addr is None or not addr.is_loopback:
        raise NotLoopbackError(
            f"refusing target {host!r}: this load generator only targets loopback (127.0.0.0/8, ::1, localhost)"
        )
    return str(addr)


# --------------------------------------------------------------------------------------------------------------
# Histogram

_SUB_BITS = 11  # 2048 sub-buckets per power of two (1024 distinct per octave above 2048): <= 0.05 % error
_SUB = 1 << _SUB_BITS
_PRESIZE = _SUB + (_SUB >> 1) * 22  # values up to 2**33 us (~2.4 h) before the list grows
_NO_MIN = 1 << 62


class Histogram:
    """Log-linear latency histogram of integer microseconds (HDR-style, ~3 significant digits).

    Values below 2048 us are exact; above, each power of two is split in 1024 equal buckets, so a reported
    percentile is within 1/2048 (0.05 %) of the exact nearest-rank value. `record` is O(1); `max`/`min` are exact.
    """

    __slots__ = ("_counts", "_min", "count", "max_us", "sum_us")

    def __init__(self) -> None:
        self._counts: list[int] = [0] * _PRESIZE
        self.count = 0
        self.sum_us = 0
        self._min = _NO_MIN
        self.max_us = 0

    @property
    def min_us(self) -> int:
        return self._min if self.count else 0

    def record(self, value_us: int) -> None:
        """Add one value (microseconds; negatives count as 0)."""
        v = value_us if value_us > 0 else 0
        shift = v.bit_length() - _SUB_BITS
        idx = (shift << (_SUB_BITS - 1)) + (v >> shift) if shift > 0 else v
        try:
            self._counts[idx] += 1
        except IndexError:
            self._counts.extend([0] * (idx + 1 - len(self._counts)))
            self._counts[idx] += 1
        if v > self.max_us:
            self.max_us = v
        if v < self._min:
            self._min = v
        self.count += 1
        self.sum_us += v

    def merge(self, other: Histogram) -> None:
        """Add all of `other`'s values to this histogram."""
        if other.count == 0:
            return
        counts = self._counts
        if len(other._counts) > len(counts):
            counts.extend([0] * (len(other._counts) - len(counts)))
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self._min = min(self._min, other._min)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.sum_us += other.sum_us

    def _value_at(self, idx: int) -> float:
        if idx < _SUB:
            v = float(idx)
        else:
            shift = (idx >> (_SUB_BITS - 1)) - 1
            lo = (idx - (shift << (_SUB_BITS - 1))) << shift
            v = lo + ((1 << shift) - 1) / 2
        return min(max(v, float(self._min)), float(self.max_us))

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile (0 <= p <= 100) in milliseconds; 0.0 if empty; p=100 is the exact max."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile out of range: {p}")
        n = self.count
        if n == 0:
            return 0.0
        if p >= 100:
            return self.max_us / 1000
        rank = max(1, math.ceil(p * n / 100 - 1e-9))
        acc = 0
        for idx, c in enumerate(self._counts):
            if c:
                acc += c
                if acc >= rank:
                    return self._value_at(idx) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float | int]:
        """count, and min/mean/p50/p90/p99/p99.9/max in milliseconds (all 0.0 when empty)."""
        n = self.count
        return {
            "count": n,
            "min": self.min_us / 1000,
            "mean": self.sum_us / n / 1000 if n else 0.0,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "p99.9": self.percentile(99.9),
            "max": self.max_us / 1000,
        }


# --------------------------------------------------------------------------------------------------------------
# Result


@dataclass
class LoadResult:
    """What one run measured; see the module docstring for the definitions. `histogram` is the raw latencies."""

    mode: str
    host: str
    port: int
    connections: int
    target_rate_rps: float | None
    duration_s: float
    warmup_s: float
    requests: int
    statuses: dict[int, int]
    socket_errors: int
    timeouts: int
    late_sends: int
    max_lateness_ms: float
    reconnects: int
    unfinished: int
    client_cpu_s: float
    timeout_s: float
    histogram: Histogram = field(repr=False)

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (latencies in ms, statuses keyed by the code as a string)."""
        return {
            "mode": self.mode,
            "target": {"host": self.host, "port": self.port},
            "connections": self.connections,
            "target_rate_rps": self.target_rate_rps,
            "duration_s": round(self.duration_s, 4),
            "warmup_s": self.warmup_s,
            "requests": self.requests,
            "throughput_rps": round(self.throughput_rps, 1),
            "latency_ms": self.histogram.summary(),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": {"socket": self.socket_errors, "timeout": self.timeouts, "non_2xx": self.non_2xx},
            "late_sends": self.late_sends,
            "max_lateness_ms": round(self.max_lateness_ms, 3),
            "reconnects": self.reconnects,
            "unfinished": self.unfinished,
            "timeout_s": self.timeout_s,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_cpu_us_per_request": round(self.client_cpu_s * 1e6 / self.requests, 2) if self.requests else None,
        }


# --------------------------------------------------------------------------------------------------------------
# Connections


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

_Retry = tuple[bytes, int, bool, bool]  # (request, start_ns, measured, is_head) to resend on a new connection


class _Conn(asyncio.Protocol):
    """One client connection carrying at most one request at a time; reports to its `_Run`."""

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

    def __init__(self, run: _Run, retry: _Retry | None = None) -> None:
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


# --------------------------------------------------------------------------------------------------------------
# Runs


class _Run:
    """State shared by the connections of one run; subclasses decide when a free connection sends."""

    mode = ""

    def __init__(
        self,
        host: str,
        port: int,
        requests: Sequence[bytes],
        connections: int,
        duration: float,
        warmup: float,
        max_requests: int | None,
        timeout: float,
        progress: bool,
    ) -> None:
        self.host = check_loopback(host)
        if not 0 < port < 65536:
            raise ValueError(f"bad port: {port}")
        if not requests or not all(isinstance(r, bytes | bytearray) and r for r in requests):
            raise ValueError("requests must be a non-empty sequence of non-empty byte strings")
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be in [1, {MAX_CONNECTIONS}]")
        if not 0 < duration <= MAX_DURATION_S:
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S}] s")
        if not 0 <= warmup <= MAX_WARMUP_S:
            raise ValueError(f"warmup must be in [0, {MAX_WARMUP_S}] s")
        if max_requests is not None and max_requests < 1:
            raise ValueError("max_requests must be >= 1")
        if not 0 < timeout <= MAX_DURATION_S:
            raise ValueError(f"timeout must be in (0, {MAX_DURATION_S}] s")
        self.port = port
        self.requests = [bytes(r) for r in requests]
        self.n_req = len(self.requests)
        self.heads = [r.startswith(b"HEAD ") for r in self.requests]
        self.any_head = any(self.heads)
        self.connections = connections
        self.duration = duration
        self.warmup = warmup
        self.max_requests = max_requests
        self.timeout = timeout
        self.timeout_ns = int(timeout * 1e9)
        self.progress = progress
        self.loop = asyncio.get_running_loop()

        self.hist = Histogram()
        self.statuses: dict[int, int] = {}
        self.socket_errors = 0
        self.timeouts = 0
        self.reconnects = 0
        self.late_sends = 0
        self.max_late_ns = 0
        self.unfinished = 0
        self.inflight = 0
        self.req_i = 0

        self.started = False
        self.running = False
        self.live: set[_Conn] = set()
        self.initial: list[_Conn] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.t0 = self.w0 = self.end = self.stop_ns = 0
        self.cpu0 = self.cpu1 = 0.0
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._p_last = (0, 0)

    # -- lifecycle

    async def execute(self) -> LoadResult:
        try:
            await self._connect_all()
            self._start()
            await self.done
        finally:
            await self._shutdown()
        return self._result()

    async def _connect_all(self) -> None:
        results = await asyncio.gather(
            *(self.loop.create_connection(lambda: _Conn(self), self.host, self.port) for _ in range(self.connections)),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {r}") from r
        self.initial = [proto for _tr, proto in results]  # type: ignore[misc]

    def _start(self) -> None:
        now = _now()
        self.t0 = now
        self.w0 = now + int(self.warmup * 1e9)
        self.end = self.w0 + int(self.duration * 1e9)
        self.started = self.running = True
        self.cpu0 = time.process_time()
        later = self.loop.call_later
        self._handles["deadline"] = later(self.warmup + self.duration, self._deadline)
        if self.warmup > 0:
            self._handles["w0"] = later(self.warmup, self._window_start)
        self._handles["sweep"] = later(self._sweep_interval(), self._sweep)
        if self.progress:
            self._p_last = (now, 0)
            self._handles["progress"] = later(1.0, self._progress)
        self._begin(now)

    def finish(self, now: int) -> None:
        """End the run now: no more sends or recording; the window ends here."""
        if not self.running:
            return
        self.running = False
        self.stop_ns = now
        self.cpu1 = time.process_time()
        self.unfinished = self._count_unfinished(now)
        for h in self._handles.values():
            h.cancel()
        self._handles.clear()
        if not self.done.done():
            self.done.set_result(None)

    async def _shutdown(self) -> None:
        if self.running:  # error or cancellation: stop where we are
            self.finish(_now())
        for h in self._handles.values():
            h.cancel()
        self.running = False
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        conns = list(self.live)
        for c in conns:
            c.closing = True
            if c.tr is not None:
                c.tr.close()
        if conns:
            await asyncio.wait([c.lost for c in conns], timeout=2.0)
        for c in list(self.live):
            if c.tr is not None:
                c.tr.abort()

    def _result(self) -> LoadResult:
        window = max(0, self.stop_ns - self.w0) / 1e9
        return LoadResult(
            mode=self.mode,
            host=self.host,
            port=self.port,
            connections=self.connections,
            target_rate_rps=getattr(self, "rate", None),
            duration_s=window,
            warmup_s=self.warmup,
            requests=self.hist.count,
            statuses=dict(self.statuses),
            socket_errors=self.socket_errors,
            timeouts=self.timeouts,
            late_sends=self.late_sends,
            max_lateness_ms=self.max_late_ns / 1e6,
            reconnects=self.reconnects,
            unfinished=self.unfinished,
            client_cpu_s=max(0.0, self.cpu1 - self.cpu0),
            timeout_s=self.timeout,
            histogram=self.hist,
        )

    # -- timers

    def _deadline(self) -> None:
        self.finish(_now())

    def _window_start(self) -> None:
        self.cpu0 = time.process_time()
        self._p_last = (_now(), self.hist.count)

    def _sweep_interval(self) -> float:
        return max(0.001, min(0.25, self.timeout / 8))

    def _sweep(self) -> None:
        """Abort connections whose request has waited longer than the timeout (counted), and reopen them."""
        now = _now()
        limit = self.timeout_ns
        for c in list(self.live):
            if c.busy and now - c.sent_ns > limit:
                c.busy = False
                self.inflight -= 1
                if c.measured:
                    self.timeouts += 1
                c.closing = True
                assert c.tr is not None
                c.tr.abort()
                self.reopen(now)
        self.check_done(now)
        if self.running:
            self._handles["sweep"] = self.loop.call_later(self._sweep_interval(), self._sweep)

    def _progress(self) -> None:
        now = _now()
        last_ns, last_n = self._p_last
        n = self.hist.count
        rate = (n - last_n) * 1e9 / max(1, now - last_ns)
        self._p_last = (now, n)
        non2xx = sum(c for s, c in self.statuses.items() if not 200 <= s < 300)
        phase = " (warm-up)" if now < self.w0 else ""
        line = (
            f"[loadgen] {(now - self.t0) / 1e9:6.1f}s{phase} done={n} rate={rate:.0f}/s "
            f"p50={self.hist.percentile(50):.2f}ms p99={self.hist.percentile(99):.2f}ms "
            f"errors(socket/timeout/non2xx)={self.socket_errors}/{self.timeouts}/{non2xx}"
            f"{self._progress_extra(now)}"
        )
        print(line, file=sys.stderr, flush=True)
        if self.running:
            self._handles["progress"] = self.loop.call_later(1.0, self._progress)

    def _progress_extra(self, now: int) -> str:
        return ""

    # -- connections

    def on_connected(self, conn: _Conn) -> None:
        if self.running:
            self.on_ready(conn, _now())
        elif self.started:  # finished while reconnecting
            conn.closing = True
            assert conn.tr is not None
            conn.tr.close()

    def reopen(self, now: int, retry: _Retry | None = None) -> None:
        """Open a replacement connection (in the background; retried until the run ends); it first sends `retry`."""
        if not self.running:
            return
        if now >= self.w0:
            self.reconnects += 1
        task = self.loop.create_task(self._reopen(retry))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reopen(self, retry: _Retry | None) -> None:
        while self.running:
            try:
                await self.loop.create_connection(lambda: _Conn(self, retry), self.host, self.port)
                return
            except OSError:
                if _now() >= self.w0:
                    self.socket_errors += 1
                await asyncio.sleep(RECONNECT_BACKOFF_S)

    def send(self, conn: _Conn, start_ns: int, now: int, measured: bool) -> None:
        """Write the next request of the cycle on `conn` (which must be idle)."""
        i = self.req_i
        req = self.requests[i]
        if self.any_head:
            conn.is_head = self.heads[i]
        i += 1
        self.req_i = 0 if i == self.n_req else i
        conn.busy = True
        conn.req = req
        conn.start_ns = start_ns
        conn.sent_ns = now
        conn.measured = measured
        self.inflight += 1
        assert conn.tr is not None
        conn.tr.write(req)

    # -- mode-specific

    def _begin(self, now: int) -> None:
        raise NotImplementedError

    def on_ready(self, conn: _Conn, now: int) -> None:
        """`conn` is connected and idle."""
        raise NotImplementedError

    def check_done(self, now: int) -> None:
        """Finish early once max_requests measured requests have been sent and none is in flight."""
        raise NotImplementedError

    def _count_unfinished(self, now: int) -> int:
        return sum(1 for c in self.live if c.busy and c.measured)


class _ClosedRun(_Run):
    mode = "closed"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remaining = self.max_requests  # measured sends left; None = unlimited

    def _begin(self, now: int) -> None:
        for c in self.initial:
            if c.dead:
                self.reopen(now)
            else:
                self.on_ready(c, now)

    def on_ready(self, conn: _Conn, now: int) -> None:
        measured = now >= self.w0
        if measured and self.remaining is not None:
            if self.remaining <= 0:
                self.check_done(now)
                return
            self.remaining -= 1
        # self.send(conn, now, now, measured), inlined: this is the closed loop's per-request path
        i = self.req_i
        req = self.requests[i]
        if self.any_head:
            conn.is_head = self.heads[i]
        i += 1
        self.req_i = 0 if i == self.n_req else i
        conn.busy = True
        conn.req = req
        conn.start_ns = conn.sent_ns = now
        conn.measured = measured
        self.inflight += 1
        conn.tr.write(req)  # type: ignore[union-attr]

    def check_done(self, now: int) -> None:
        if self.remaining is not None and self.remaining <= 0 and self.inflight == 0:
            self.finish(now)


class _OpenRun(_Run):
    mode = "open"

    def __init__(self, *args: Any, rate: float, late_threshold_ms: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0 < rate <= MAX_RATE_RPS:
            raise ValueError(f"rate must be in (0, {MAX_RATE_RPS:.0f}] requests/s")
        if late_threshold_ms < 0:
            raise ValueError("late_threshold_ms must be >= 0")
        self.rate = float(rate)
        self.period_ns = 1e9 / rate
        self.late_thr_ns = int(late_threshold_ms * 1e6)
        self.idle: deque[_Conn] = deque()
        self.next_i = 0  # next request index of the schedule to send
        self.w0_i = 0  # first index intended at or after the end of the warm-up
        self.limit_i = sys.maxsize  # first index not to send (max_requests)

    def intended(self, i: int) -> int:
        return self.t0 + int(i * self.period_ns)

    def _begin(self, now: int) -> None:
        i = max(0, math.ceil((self.w0 - self.t0) / self.period_ns) - 1)
        while self.intended(i) < self.w0:
            i += 1
        self.w0_i = i
        if self.max_requests is not None:
            self.limit_i = i + self.max_requests
        for c in self.initial:
            if c.dead:
                self.reopen(now)
            else:
                self.idle.append(c)
        self._pump(now)

    def on_ready(self, conn: _Conn, now: int) -> None:
        self.idle.append(conn)
        self._pump(now)

    def _pump(self, now: int) -> None:
        """Send every due request on free connections, oldest first; arm a timer for the next if one is free."""
        idle = self.idle
        while idle:
            i = self.next_i
            if i >= self.limit_i:
                self.check_done(now)
                return
            intended = self.t0 + int(i * self.period_ns)
            if intended > now:
                if "tick" not in self._handles:
                    # whole milliseconds, at least one: the loop's timers have 1 ms resolution and a shorter delay
                    # would round to "now" and spin; everything due at the wake-up is sent then
                    delay_ms = -((now - intended) // 1_000_000)
                    self._handles["tick"] = self.loop.call_later(delay_ms / 1000, self._tick)
                return
            if intended >= self.end:
                return
            conn = idle.popleft()
            if conn.dead:
                continue
            self.next_i = i + 1
            measured = intended >= self.w0
            if measured:
                late = now - intended
                if late > self.late_thr_ns:
                    self.late_sends += 1
                    if late > self.max_late_ns:
                        self.max_late_ns = late
            self.send(conn, intended, now, measured)

    def _tick(self) -> None:
        self._handles.pop("tick", None)
        if self.running:
            self._pump(_now())

    def check_done(self, now: int) -> None:
        if self.next_i >= self.limit_i and self.inflight == 0:
            self.finish(now)

    def _due_unsent(self, now: int) -> int:
        last = min(now, self.end - 1)
        due = 0 if last < self.t0 else int((last - self.t0) // self.period_ns) + 1
        while due > 0 and self.intended(due - 1) > last:
            due -= 1
        return max(0, min(due, self.limit_i) - max(self.next_i, self.w0_i))

    def _count_unfinished(self, now: int) -> int:
        return super()._count_unfinished(now) + self._due_unsent(now)

    def _progress_extra(self, now: int) -> str:
        return f" late={self.late_sends} queued={self._due_unsent(now)}"


# --------------------------------------------------------------------------------------------------------------
# Public entry points


async def closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    duration: float,
    *,
    warmup: float = 0.0,
    max_requests: int | None = None,
    timeout: float = 30.0,
    progress: bool = False,
) -> LoadResult:
    """Closed-loop load: `connections` keep-alive connections, each sending its next request on each response."""
    run = _ClosedRun(host, port, requests, connections, duration, warmup, max_requests, timeout, progress)
    return await run.execute()


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    rate: float,
    duration: float,
    *,
    connections: int = 64,
    warmup: float = 0.0,
    max_requests: int | None = None,
    timeout: float = 30.0,
    late_threshold_ms: float = 1.0,
    progress: bool = False,
) -> LoadResult:
    """Open-loop load at `rate` requests/s over `connections` connections; latency from the intended send time."""
    run = _OpenRun(
        host,
        port,
        requests,
        connections,
        duration,
        warmup,
        max_requests,
        timeout,
        progress,
        rate=rate,
        late_threshold_ms=late_threshold_ms,
    )
    return await run.execute()


def run(coro: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run `closed_loop(...)`/`open_loop(...)` to completion on a fresh uvloop event loop."""
    return uvloop.run(coro)


# --------------------------------------------------------------------------------------------------------------
# CLI


def _parse_url(url: str) -> tuple[str, int, str, str]:
    """(connect address, port, path?query, Host header value) of an http:// loopback URL."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL: {url!r}")
    addr = check_loopback(parts.hostname)
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return addr, port, path, parts.netloc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url", help="http://127.0.0.1:PORT/path (loopback only)")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="", help="request body (a string; @FILE reads a file)")
    parser.add_argument("--header", "-H", action="append", default=[], metavar="'K: V'")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("-c", "--connections", type=int, default=None, help="default 32 (closed), 64 (open)")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (open loop, required)")
    parser.add_argument("--warmup", type=float, default=0.0, help="unrecorded seconds before the window")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (default 30)")
    parser.add_argument("--late-threshold-ms", type=float, default=1.0)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line on stderr")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)

    try:
        addr, port, path, host_header = _parse_url(args.url)
        headers: dict[str, str] = {}
        for h in args.header:
            name, sep, value = h.partition(":")
            if not sep:
                raise ValueError(f"--header must be 'Name: value': {h!r}")
            headers[name.strip()] = value.strip()
        body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
        req = encode_request(args.method, path, body, headers, host=host_header)
        if args.mode == "open":
            if args.rate is None:
                raise ValueError("--mode open needs --rate")
            coro = open_loop(
                addr,
                port,
                [req],
                args.rate,
                args.duration,
                connections=args.connections or 64,
                warmup=args.warmup,
                max_requests=args.max_requests,
                timeout=args.timeout,
                late_threshold_ms=args.late_threshold_ms,
                progress=args.progress,
            )
        else:
            coro = closed_loop(
                addr,
                port,
                [req],
                args.connections or 32,
                args.duration,
                warmup=args.warmup,
                max_requests=args.max_requests,
                timeout=args.timeout,
                progress=args.progress,
            )
    except (ValueError, OSError) as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 2
    try:
        result = run(coro)
    except (ConnectionError, ValueError) as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
