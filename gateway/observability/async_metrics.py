"""Metrics of asynchronous invocation: Lambda's AsyncEventsReceived, AsyncEventAge, AsyncEventsDropped,
DestinationDeliveryFailures and DeadLetterErrors per function, and this gateway's queue depth per function.

`Metrics` (metrics.py) owns one `AsyncMetrics` and delegates its `async_*`, `destination_failed`,
`dead_letter_failed`, `watch_queue` and `forget` to it; the families are part of the same contract with the Grafana
dashboards (`tests/test_e2e_prometheus.py`):

| metric | type | labels | Lambda's |
| --- | --- | --- | --- |
| `lambda_async_events_received_total` | counter | function | AsyncEventsReceived |
| `lambda_async_event_age_seconds` | histogram | function | AsyncEventAge (one observation per attempt) |
| `lambda_async_events_dropped_total` | counter | function, reason | AsyncEventsDropped |
| `lambda_destination_delivery_failures_total` | counter | function, service | DestinationDeliveryFailures |
| `lambda_dead_letter_errors_total` | counter | function | DeadLetterErrors |
| `gateway_async_queue_depth` | gauge | function | (none: Lambda's queue is invisible) |

`reason` function_deleted counts events dropped because the version or alias they were for was deleted (the events
of a deleted function go with it, and so do its series). The queue's depths are what the queue's `depths()` says
(events waiting, delayed retries included, those being run not), and 0 for a function with series and none waiting.

Every counter of a function is exported, at zero, from the first thing recorded for it (every `reason` of
`DROP_REASONS`, every `service` of `DESTINATION_SERVICES`), so that the first drop or failure is an increase that
`rate()` and `increase()` (and an alert on them) can see. A reason or service outside those tuples is counted too,
from its first occurrence: the caller keeps the label set bounded.

Concurrency model, as in metrics.py: every update runs on the event loop thread and adds to plain numbers in one
record per function. `snapshot()`, on the loop, copies them and calls the queue's depth callable (so that callable
runs on the loop, and must be cheap and must not block); the `AsyncSnapshot` it returns is turned into families or
text in any thread and touches nothing shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from gateway.observability.exposition import HistCopy, Histogram, buckets, escape, histogram_lines, number

#: why an event left the queue without a successful invocation (`AsyncEventsDropped`)
DROP_REASONS = ("retries_exhausted", "event_age_exceeded", "function_deleted")
#: where a destination record may go (gateway.events.targets.Service's values)
DESTINATION_SERVICES = ("lambda", "sqs", "sns", "events")
#: an event's age at an attempt: 1 ms (a warm function keeping up) .. Lambda's 6 h maximum event age, with bounds
#: near the retries' times (about 1 min, then 3 min after the first attempt; throttles back off up to 5 min)
AGE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    90,
    120,
    180,
    300,
    600,
    1800,
    3600,
    10800,
    21600,
)


class FunctionEvents:
    """What one function's asynchronous invocations have recorded."""

    __slots__ = ("age", "dead_letter", "destination", "dropped", "received")

    def __init__(self) -> None:
        self.received = 0
        self.age = Histogram(AGE_BUCKETS)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.destination = dict.fromkeys(DESTINATION_SERVICES, 0)
        self.dead_letter = 0


class AsyncMetrics:
    """The asynchronous invocation series of every function; `alive(function)` says whether a function still
    exists: asked only when a function is seen for the first time (or again after `forget`)."""

    def __init__(self, alive: Callable[[str], bool] | None = None) -> None:
        self.alive = alive
        self.functions: dict[str, FunctionEvents] = {}
        self.depths: Callable[[], Mapping[str, int]] | None = None

    def _record(self, function: str) -> FunctionEvents | None:
        record = self.functions.get(function)
        if record is None:
            if self.alive is not None and not self.alive(function):
                return None  # recorded after its function was deleted: no series comes back
            record = self.functions[function] = FunctionEvents()
        return record

    # -- hot path: on the event loop, cheap, never raises ------------------------------------------------

    def received(self, function: str) -> None:
        """An event was durably queued (answered 202)."""
        record = self._record(function)
        if record is not None:
            record.received += 1

    def event_age(self, function: str, seconds: float) -> None:
        """An attempt started `seconds` after its event was queued."""
        record = self._record(function)
        if record is not None:
            record.age.observe(seconds)

    def dropped(self, function: str, reason: str) -> None:
        """An event left the queue without a successful invocation (after its OnFailure destination or DLQ)."""
        record = self._record(function)
        if record is not None:
            record.dropped[reason] = record.dropped.get(reason, 0) + 1

    def destination_failed(self, function: str, service: str) -> None:
        """A destination record could not be delivered to `service`."""
        record = self._record(function)
        if record is not None:
            record.destination[service] = record.destination.get(service, 0) + 1

    def dead_letter_failed(self, function: str) -> None:
        """An event could not be sent to the function's dead-letter queue."""
        record = self._record(function)
        if record is not None:
            record.dead_letter += 1

    def watch_queue(self, depths: Callable[[], Mapping[str, int]]) -> None:
        """Export `depths()` (function -> events waiting) at each scrape; without it, no depth series."""
        self.depths = depths

    def forget(self, function: str) -> None:
        """Drop a deleted function's series (the queue's depths come from the queue, which drops its events)."""
        self.functions.pop(function, None)

    # -- scrape ------------------------------------------------------------------------------------------

    def snapshot(self) -> AsyncSnapshot:
        """The numbers as they are now, and the queue's depths: call on the event loop."""
        snap = AsyncSnapshot()
        snap.functions = [
            (name, r.received, r.age.copy(), dict(r.dropped), dict(r.destination), r.dead_letter)
            for name, r in self.functions.items()
        ]
        if self.depths is not None:
            # a function that has had events and has none waiting shows 0, not a gap (the queue lists only waiting)
            depths = dict.fromkeys(self.functions, 0)
            depths.update(self.depths())
            snap.depths = sorted(depths.items())
        return snap


_FunctionCopy = tuple[str, int, HistCopy, dict[str, int], dict[str, int], int]


class AsyncSnapshot:
    """Numbers copied on the loop (an `exposition.Part` of a `Snapshot`): `families()` and `render()` read only
    them, in any thread; `render()` is byte for byte what `generate_latest` makes of `families()`."""

    def __init__(self) -> None:
        self.functions: list[_FunctionCopy] = []
        self.depths: list[tuple[str, int]] = []

    def families(self) -> list[Metric]:
        fam = AsyncFamilies()
        for name, received, (bounds, counts, total), dropped, destination, dead_letter in self.functions:
            fam.received.add_metric((name,), received)
            fam.age.add_metric((name,), buckets(bounds, counts), total)
            for reason, count in dropped.items():
                fam.dropped.add_metric((name, reason), count)
            for service, count in destination.items():
                fam.destination.add_metric((name, service), count)
            fam.dead_letter.add_metric((name,), dead_letter)
        for name, depth in self.depths:
            fam.depth.add_metric((name,), depth)
        return fam.all()

    def render(self) -> bytes:
        """The text exposition, formatted directly: ~10x faster than through prometheus_client's sample objects
        (see exposition.Snapshot.render), and these families grow with the functions."""
        lists: tuple[list[str], ...] = tuple([] for _ in range(6))
        received, age, dropped, destination, dead_letter, depth = lists
        for name, count, hist, drops, failures, dead in self.functions:
            f = escape(name)
            received.append(f'lambda_async_events_received_total{{function="{f}"}} {number(count)}\n')
            histogram_lines(age, "lambda_async_event_age_seconds", f'function="{f}",', "", hist)
            for reason, n in drops.items():
                head = f'lambda_async_events_dropped_total{{function="{f}",reason="{escape(reason)}"}}'
                dropped.append(f"{head} {number(n)}\n")
            for service, n in failures.items():
                head = f'lambda_destination_delivery_failures_total{{function="{f}",service="{escape(service)}"}}'
                destination.append(f"{head} {number(n)}\n")
            dead_letter.append(f'lambda_dead_letter_errors_total{{function="{f}"}} {number(dead)}\n')
        for name, n in self.depths:
            depth.append(f'gateway_async_queue_depth{{function="{escape(name)}"}} {number(int(n))}\n')
        out = []
        for metric, lines in zip(AsyncFamilies().all(), lists, strict=True):
            name = metric.name + "_total" if metric.type == "counter" else metric.name
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {metric.type}\n{''.join(lines)}")
        return "".join(out).encode()


class AsyncFamilies:
    """A fresh, empty family for each asynchronous invocation metric (in exposition order)."""

    def __init__(self) -> None:
        function = ("function",)
        self.received = CounterMetricFamily(
            "lambda_async_events_received",
            "Events queued for asynchronous invocation (answered 202), per function.",
            labels=function,
        )
        self.age = HistogramMetricFamily(
            "lambda_async_event_age_seconds",
            "Time from an event's queueing to each attempt to invoke the function with it (retries included).",
            labels=function,
        )
        self.dropped = CounterMetricFamily(
            "lambda_async_events_dropped",
            "Events dropped without a successful invocation, by reason: retries_exhausted, event_age_exceeded, "
            "function_deleted.",
            labels=("function", "reason"),
        )
        self.destination = CounterMetricFamily(
            "lambda_destination_delivery_failures",
            "Destination records that could not be delivered, by the destination's service: lambda, sqs, sns, events.",
            labels=("function", "service"),
        )
        self.dead_letter = CounterMetricFamily(
            "lambda_dead_letter_errors",
            "Events that could not be sent to the function's dead-letter queue.",
            labels=function,
        )
        self.depth = GaugeMetricFamily(
            "gateway_async_queue_depth",
            "Events waiting in the asynchronous invocation queue per function, retries included, in flight not.",
            labels=function,
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())
