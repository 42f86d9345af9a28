"""The two load models: the closed loop (each connection sends its next request on each response) and the open
loop (a constant arrival rate, latency from the intended send time: coordinated omission corrected). The model
in full, and what is counted, is in bench/loadgen.py's docstring; `closed_loop` and `open_loop` are re-exported
there.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from bench.load.client import Connection
from bench.load.result import LoadResult
from bench.load.run import Run

MAX_RATE_RPS = 1_000_000.0

_now = time.perf_counter_ns


class ClosedRun(Run):
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

    def on_ready(self, conn: Connection, now: int) -> None:
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


class OpenRun(Run):
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
        self.idle: deque[Connection] = deque()
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

    def on_ready(self, conn: Connection, now: int) -> None:
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
    run = ClosedRun(host, port, requests, connections, duration, warmup, max_requests, timeout, progress)
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
    run = OpenRun(
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
