"""The Prometheus text exposition of the gateway's metrics: the families of the contract, and snapshots of them.

`Families` names every metric of the contract (names, help, labels: see metrics.py). A `Snapshot` holds numbers
copied on the event loop by `Metrics.snapshot()`; turning it into families (`collect`) or text (`render`) reads only
those copies, so it may run in any thread. `render` formats the families labelled per function directly, byte for
byte what prometheus_client's `generate_latest` makes of `collect()` (a test checks it) and about ten times faster:
a worker thread holds the GIL while it renders, and the event loop may wait for it. A snapshot's `parts` (the
asynchronous invocation series: async_metrics.py) follow the contract's families. `Histogram` is the hot path's
histogram (plain numbers, one thread), made cumulative here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, cast

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from gateway.errors import ERROR_KINDS


def buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        out.append((repr(float(bound)), total))
    out.append(("+Inf", total + counts[-1]))
    return out


HistCopy = tuple[tuple[float, ...], list[int], float]


class Histogram:
    """A histogram updated from one thread only: one bucket count per observation, made cumulative at scrape."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value: `le`
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs ending with +Inf, as HistogramMetricFamily wants them."""
        return buckets(self.bounds, self.counts)

    def copy(self) -> HistCopy:
        """(bounds, counts, sum) as they are now: a snapshot another thread may read."""
        return self.bounds, self.counts.copy(), self.sum


class Part(Protocol):
    """More families copied on the loop with the snapshot (gateway.observability.async_metrics): rendered after
    the contract's families, in the same order by `collect()` and `render()`; both may run in any thread."""

    def families(self) -> list[Metric]: ...

    def render(self) -> bytes: ...


class Snapshot:
    """Numbers copied on the loop; `collect()` and `render()` read only them, so they may run in any thread."""

    def __init__(self) -> None:
        self.series: list[tuple[tuple[str, str, str], int, list[int], HistCopy, int, int]] = []
        self.throttles: dict[tuple[str, str], int] = {}
        self.init_duration: list[tuple[tuple[str, str], HistCopy]] = []
        self.cold_starts: dict[str, int] = {}
        self.overhead: tuple[HistCopy, HistCopy] | None = None
        self.fork: HistCopy | None = None
        self.payload = (0, 0)
        self.http: dict[tuple[str, int], int] = {}
        self.zygote_restarts = 0
        self.gauges = Families()  # the pool and concurrency gauges, filled on the loop
        self.parts: list[Part] = []

    def collect(self) -> Iterator[Metric]:
        fam = self.gauges
        for labels, invocations, errors, (bounds, counts, total), provisioned, spillover in self.series:
            fam.invocations.add_metric(labels, invocations)
            for kind, count in zip(ERROR_KINDS, errors, strict=True):
                fam.errors.add_metric((*labels, kind), count)
            fam.duration.add_metric(labels, buckets(bounds, counts), total)
            fam.provisioned_invocations.add_metric(labels, provisioned)
            fam.spillover.add_metric(labels, spillover)
        for (function, reason), count in self.throttles.items():
            fam.throttles.add_metric((function, reason), count)
        for fv, (bounds, counts, total) in self.init_duration:
            fam.init_duration.add_metric(fv, buckets(bounds, counts), total)
        for function, count in self.cold_starts.items():
            fam.cold_starts.add_metric((function,), count)
        if self.overhead is not None:
            for direction, (bounds, counts, total) in zip(("in", "out"), self.overhead, strict=True):
                fam.overhead.add_metric((direction,), buckets(bounds, counts), total)
        if self.fork is not None:
            bounds, counts, total = self.fork
            fam.fork.add_metric((), buckets(bounds, counts), total)
        fam.payload.add_metric(("in",), self.payload[0])
        fam.payload.add_metric(("out",), self.payload[1])
        for (operation, status), count in self.http.items():
            fam.http.add_metric((operation, str(status)), count)
        fam.zygote_restarts.add_metric((), self.zygote_restarts)
        return iter(fam.all() + [metric for part in self.parts for metric in part.families()])

    def render(self) -> bytes:
        """The Prometheus text exposition of the snapshot, byte for byte what `generate_latest` makes of `collect()`.

        Pure CPU work on copied numbers, meant for a worker thread. The families labelled per function are
        formatted here directly, ~10x faster than through prometheus_client's sample objects: a worker thread holds
        the GIL while it renders, and each millisecond of that is a millisecond the event loop may wait for it.
        """
        fam = self.gauges
        out: list[bytes] = []
        for attr, metric in vars(fam).items():
            lines = self._fast_lines(attr)
            if lines is None:
                if attr in _LIGHT_FILLERS:
                    _LIGHT_FILLERS[attr](self, metric)
                out.append(generate_latest(_One(metric)))  # a collector of one family
                continue
            name = metric.name + "_total" if metric.type == "counter" else metric.name
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {metric.type}\n{''.join(lines)}".encode())
        out += [part.render() for part in self.parts]
        return b"".join(out)

    def _fast_lines(self, attr: str) -> list[str] | None:
        """Sample lines of a per-function family, labels sorted by name as generate_latest sorts them."""
        lines: list[str] = []
        if attr in _SERIES_COUNTERS:
            name, index = _SERIES_COUNTERS[attr]
            for series in self.series:
                f, r, v = map(escape, series[0])
                count = cast(int, series[index])
                lines.append(f'{name}{{function="{f}",resource="{r}",version="{v}"}} {number(count)}\n')
        elif attr == "errors":
            for (f, r, v), _, errors, *_rest in self.series:
                f, r, v = escape(f), escape(r), escape(v)
                for kind, count in zip(ERROR_KINDS, errors, strict=True):
                    head = f'lambda_errors_total{{function="{f}",kind="{kind}",resource="{r}",version="{v}"}} '
                    lines.append(f"{head}{number(count)}\n")
        elif attr == "duration":
            for (f, r, v), _, _, hist, _, _ in self.series:
                f, r, v = escape(f), escape(r), escape(v)
                histogram_lines(lines, "lambda_duration_seconds", f'function="{f}",', f',resource="{r}",version="{v}"',
                                 hist)  # fmt: skip
        elif attr == "init_duration":
            for (f, v), hist in self.init_duration:
                histogram_lines(lines, "lambda_init_duration_seconds", f'function="{escape(f)}",',
                                 f',version="{escape(v)}"', hist)  # fmt: skip
        elif attr == "throttles":
            for (f, reason), count in self.throttles.items():
                head = f'lambda_throttles_total{{function="{escape(f)}",reason="{escape(reason)}"}}'
                lines.append(f"{head} {number(count)}\n")
        elif attr == "cold_starts":
            for f, count in self.cold_starts.items():
                lines.append(f'gateway_cold_starts_total{{function="{escape(f)}"}} {number(count)}\n')
        else:
            return None
        return lines

    def _fill_overhead(self, metric: Metric) -> None:
        if self.overhead is not None:
            for direction, (bounds, counts, total) in zip(("in", "out"), self.overhead, strict=True):
                metric.add_metric((direction,), buckets(bounds, counts), total)  # type: ignore[attr-defined]

    def _fill_fork(self, metric: Metric) -> None:
        if self.fork is not None:
            bounds, counts, total = self.fork
            metric.add_metric((), buckets(bounds, counts), total)  # type: ignore[attr-defined]

    def _fill_payload(self, metric: Metric) -> None:
        metric.add_metric(("in",), self.payload[0])  # type: ignore[attr-defined]
        metric.add_metric(("out",), self.payload[1])  # type: ignore[attr-defined]

    def _fill_http(self, metric: Metric) -> None:
        for (operation, status), count in self.http.items():
            metric.add_metric((operation, str(status)), count)  # type: ignore[attr-defined]

    def _fill_restarts(self, metric: Metric) -> None:
        metric.add_metric((), self.zygote_restarts)  # type: ignore[attr-defined]


#: per-series counters rendered directly: family attribute -> (sample name, index in a snapshot series)
_SERIES_COUNTERS = {
    "invocations": ("lambda_invocations_total", 1),
    "provisioned_invocations": ("lambda_provisioned_concurrency_invocations_total", 4),
    "spillover": ("lambda_provisioned_concurrency_spillover_invocations_total", 5),
}
_LIGHT_FILLERS: dict[str, Callable[[Snapshot, Metric], None]] = {
    "overhead": Snapshot._fill_overhead,
    "fork": Snapshot._fill_fork,
    "payload": Snapshot._fill_payload,
    "http": Snapshot._fill_http,
    "zygote_restarts": Snapshot._fill_restarts,
}


class _One:
    """A collector of one family, for generate_latest."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        return iter((self.metric,))


def escape(value: str) -> str:
    """A label value escaped as the text format wants it (names and versions never need it: kept cheap)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def histogram_lines(lines: list[str], name: str, before: str, after: str, hist: HistCopy) -> None:
    """_bucket lines (the `le` label sorts between `before` and `after`), then _count and _sum, as generate_latest."""
    bounds, counts, total = hist
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{{before}le="{float(bound)!r}"{after}}} {number(running)}\n')
    running += counts[-1]
    lines.append(f'{name}_bucket{{{before}le="+Inf"{after}}} {number(running)}\n')
    labels = (before + after[1:]).rstrip(",")  # `after` may be empty: `le` is the last label
    lines.append(f"{name}_count{{{labels}}} {number(running)}\n")
    lines.append(f"{name}_sum{{{labels}}} {_go_float(total)}\n")


def number(value: int) -> str:
    return f"{value}.0" if 0 <= value < 1_000_000 else _go_float(value)


_go_float = cast(Callable[[float], str], floatToGoString)  # untyped in prometheus_client


class Families:
    """A fresh, empty family for each metric of the contract."""

    def __init__(self) -> None:
        frv = ("function", "resource", "version")
        fv = ("function", "version")
        self.invocations = CounterMetricFamily(
            "lambda_invocations", "Invocations, by function, resource as invoked and executed version.", labels=frv
        )
        self.errors = CounterMetricFamily(
            "lambda_errors",
            "Invocations that ended in an error, by kind: function, timeout, crash, out_of_memory, init.",
            labels=(*frv, "kind"),
        )
        self.throttles = CounterMetricFamily(
            "lambda_throttles", "Invoke requests answered 429, by Lambda's Reason.", labels=("function", "reason")
        )
        self.duration = HistogramMetricFamily(
            "lambda_duration_seconds", "Time the function's handler ran (Lambda's Duration).", labels=frv
        )
        self.init_duration = HistogramMetricFamily(
            "lambda_init_duration_seconds", "Init Duration of cold starts (the handler module's import).", labels=fv
        )
        self.concurrent = GaugeMetricFamily(
            "lambda_concurrent_executions",
            "Invocations being run, or an environment initializing for one, per function.",
            labels=("function",),
        )
        self.unreserved_concurrent = GaugeMetricFamily(
            "lambda_unreserved_concurrent_executions",
            "Invocations in flight of functions without reserved concurrency.",
        )
        self.limit = GaugeMetricFamily(
            "lambda_concurrency_limit",
            "Concurrency limits: the account's, and what functions without a reservation share.",
            labels=("scope",),
        )
        self.reserved = GaugeMetricFamily(
            "lambda_reserved_concurrency", "Reserved concurrency of functions that have one.", labels=("function",)
        )
        self.provisioned_busy = GaugeMetricFamily(
            "lambda_provisioned_concurrent_executions", "Provisioned environments running an invocation.", labels=fv
        )
        self.provisioned_allocated = GaugeMetricFamily(
            "lambda_provisioned_concurrency_allocated", "Live, initialized provisioned environments.", labels=fv
        )
        self.provisioned_invocations = CounterMetricFamily(
            "lambda_provisioned_concurrency_invocations", "Invocations served by a provisioned environment.", labels=frv
        )
        self.spillover = CounterMetricFamily(
            "lambda_provisioned_concurrency_spillover_invocations",
            "Invocations served on demand while the version has provisioned concurrency.",
            labels=frv,
        )
        self.provisioned_utilization = GaugeMetricFamily(
            "lambda_provisioned_concurrency_utilization",
            "Busy provisioned environments over allocated ones.",
            labels=fv,
        )
        self.environments = GaugeMetricFamily(
            "gateway_environments",
            "Execution environments by state: initializing, idle, busy.",
            labels=("function", "state"),
        )
        self.overhead = HistogramMetricFamily(
            "gateway_overhead_seconds",
            "Time an invocation spends in the gateway: in = request received to payload written to the "
            "environment (warm invocations), out = reply received to response handed to aiohttp.",
            labels=("direction",),
        )
        self.fork = HistogramMetricFamily("gateway_fork_seconds", "Zygote fork requests: request sent to pid known.")
        self.cold_starts = CounterMetricFamily(
            "gateway_cold_starts", "Invocations that started a new environment.", labels=("function",)
        )
        self.zygote_restarts = CounterMetricFamily("gateway_zygote_restarts", "Restarts of runtime zygotes.")
        self.payload = CounterMetricFamily(
            "gateway_payload_bytes", "Invocation payload bytes: in = events, out = responses.", labels=("direction",)
        )
        self.http = CounterMetricFamily(
            "gateway_http_requests", "HTTP responses by API operation and status.", labels=("operation", "status")
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())
