"""One load run's shared state and lifecycle (`Run`): argument checks, connecting, the clock (warm-up, window,
deadline), the timeout sweep, the progress line, reconnects and the result. Its subclasses in
bench/load/loops.py decide when a free connection sends (closed loop, open loop).

Concurrency: everything runs on one event loop; connections call back into the run, timers are loop handles
owned by the run and cancelled when it finishes, reconnect tasks are owned by it and cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

from bench.load.client import Connection, Retry
from bench.load.histogram import Histogram
from bench.load.request import check_loopback
from bench.load.result import LoadResult

MAX_DURATION_S = 600.0
MAX_WARMUP_S = 600.0
MAX_CONNECTIONS = 1024
RECONNECT_BACKOFF_S = 0.05

_now = time.perf_counter_ns


class Run:
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
        self.live: set[Connection] = set()
        self.initial: list[Connection] = []
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
            *(
                self.loop.create_connection(lambda: Connection(self), self.host, self.port)
                for _ in range(self.connections)
            ),
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

    def on_connected(self, conn: Connection) -> None:
        if self.running:
            self.on_ready(conn, _now())
        elif self.started:  # finished while reconnecting
            conn.closing = True
            assert conn.tr is not None
            conn.tr.close()

    def reopen(self, now: int, retry: Retry | None = None) -> None:
        """Open a replacement connection (in the background; retried until the run ends); it first sends `retry`."""
        if not self.running:
            return
        if now >= self.w0:
            self.reconnects += 1
        task = self.loop.create_task(self._reopen(retry))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reopen(self, retry: Retry | None) -> None:
        while self.running:
            try:
                await self.loop.create_connection(lambda: Connection(self, retry), self.host, self.port)
                return
            except OSError:
                if _now() >= self.w0:
                    self.socket_errors += 1
                await asyncio.sleep(RECONNECT_BACKOFF_S)

    def send(self, conn: Connection, start_ns: int, now: int, measured: bool) -> None:
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

    def on_ready(self, conn: Connection, now: int) -> None:
        """`conn` is connected and idle."""
        raise NotImplementedError

    def check_done(self, now: int) -> None:
        """Finish early once max_requests measured requests have been sent and none is in flight."""
        raise NotImplementedError

    def _count_unfinished(self, now: int) -> int:
        return sum(1 for c in self.live if c.busy and c.measured)
