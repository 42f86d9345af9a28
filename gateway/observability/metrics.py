"""Prometheus metrics on an injected registry: Lambda's, per function / resource / executed version; the gateway's.

Names, labels and types are a contract with the Grafana dashboards (`tests/test_e2e_prometheus.py` checks them):
`lambda_*` mirror what Lambda publishes to CloudWatch, `gateway_*` describe this gateway. Label sets are bounded
(functions, resources as invoked, versions, fixed enumerations; never request ids), units are base units and
counters end in `_total`.

Concurrency model: every update runs on the event loop thread. The hot path therefore updates plain numbers on a
record cached per label set (one dict lookup per invocation), without the lock each prometheus_client child takes
per update (measured here: ~1 µs a counter increment, ~3 µs a histogram observation, and an invocation makes about
eight updates). A scrape is split in two: `snapshot()`, on the loop, copies those numbers and computes the gauges
(environments by state, concurrency, provisioned concurrency) from the pools, the concurrency accounting and the
zygotes, so nothing is maintained for them between scrapes and no other thread ever reads pool state; turning a
`Snapshot` (gateway.observability.exposition) into metric families and text touches nothing shared and runs in a
worker thread (gateway.api.metrics). `Metrics` is also the registry's collector (`collect()` = snapshot + families,
on the calling thread) for tools that scrape the registry directly.

The asynchronous invocation series live in `AsyncMetrics` (async_metrics.py), which `Metrics` delegates to.

Series of deleted functions and versions are dropped (`forget`, called from the registry's change hook); an
invocation that ends after its function was deleted creates no new series (`alive`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from gateway.errors import ERROR_KINDS
from gateway.observability.async_metrics import AsyncFamilies, AsyncMetrics
from gateway.observability.exposition import Families, Histogram, Snapshot
from gateway.observability.mapping_metrics import MappingMetrics, mapping_families
from gateway.observability.url_metrics import UrlMetrics, url_families
from gateway.store.records import LATEST

if TYPE_CHECKING:
    from gateway.execution.admission import Concurrency
    from gateway.execution.invoker import Outcome
    from gateway.execution.pool import PoolCensus
    from gateway.execution.pools import PoolManager
    from gateway.execution.zygote import Zygote
    from gateway.store.records import FunctionConfig

#: Lambda's Duration: 1 ms .. the 900 s timeout limit
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
#: Init is limited to 10 s
INIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: the gateway's share of one invocation, each way: 10 µs .. 100 ms
OVERHEAD_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.000075,
    0.0001,
    0.00015,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
#: a warm zygote forks in about a millisecond
FORK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


ENVIRONMENT_STATES = ("initializing", "idle", "busy")
_KIND_INDEX = {kind: i for i, kind in enumerate(ERROR_KINDS)}


class Series:
    """What one (function, resource, executed version) has recorded."""

    __slots__ = ("duration", "errors", "invocations", "labels", "provisioned", "spillover")

    def __init__(self, function: str, resource: str, version: str) -> None:
        self.labels = (function, resource, version)
        self.invocations = 0
        self.errors = [0] * len(ERROR_KINDS)
        self.duration = Histogram(DURATION_BUCKETS)
        self.provisioned = 0
        self.spillover = 0


class Totals:
    """Environments of one function (or version) by state, summed over its pools' censuses at scrape time."""

    __slots__ = ("busy", "executing", "idle", "initializing", "provisioned", "provisioned_busy")

    def __init__(self) -> None:
        self.initializing = self.idle = self.busy = 0
        self.executing = 0  # invocations being run, and on-demand environments initializing for one
        self.provisioned = self.provisioned_busy = 0

    def add(self, census: PoolCensus) -> None:
        """Count one pool's live environments in."""
        self.initializing += census.initializing
        self.idle += census.idle
        self.busy += census.busy
        self.executing += census.executions
        self.provisioned += census.provisioned
        self.provisioned_busy += census.provisioned_busy


class Metrics:
    """The gateway's metrics, registered on `registry` as one collector.

    Hot-path entry points: `observe` (an `Invoker` observer), `throttled`, `exchanged` (the invoke route),
    `forked` (a zygote's fork hook), `http` (per response); of asynchronous invocation (the event queue and its
    dispatcher): `async_received`, `async_event_age`, `async_dropped`, `destination_failed`, `dead_letter_failed`,
    and `watch_queue` for the queue's depth at scrape time (async_metrics.py has their series). The gauges read
    `pools`, `concurrency`, `zygotes` and `reservations` (function -> reserved concurrency) when scraped; any of them
    may be left out. `alive(function, version)` says whether a version still exists: asked only when a label set is
    seen for the first time.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        pools: PoolManager | None = None,
        concurrency: Concurrency | None = None,
        zygotes: Iterable[Zygote] = (),
        reservations: Callable[[], Mapping[str, int]] | None = None,
        alive: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.alive = alive
        self.pools = pools
        self.concurrency = concurrency
        self.zygotes = set(zygotes)
        self.reservations = reservations
        self.series: dict[tuple[str, str], Series] = {}  # (resource, version) ->
        self.throttles: dict[tuple[str, str], int] = {}
        self.init_duration: dict[tuple[str, str], Histogram] = {}
        self.cold_starts: dict[str, int] = {}
        self.overhead_in = Histogram(OVERHEAD_BUCKETS)
        self.overhead_out = Histogram(OVERHEAD_BUCKETS)
        self.fork = Histogram(FORK_BUCKETS)
        self.bytes_in = 0
        self.bytes_out = 0
        #: (operation, HTTP status) -> responses
        self.http_requests: dict[tuple[str, int], int] = {}
        self.events = AsyncMetrics(None if alive is None else lambda function: alive(function, LATEST))
        #: per event source mapping (mapping_metrics.py): the poller runtime's `Counts`
        self.mappings = MappingMetrics()
        #: per function URL (url_metrics.py): the URL route records each request
        self.urls = UrlMetrics(None if alive is None else lambda function, _: alive(function, LATEST))
        registry.register(self)

    # -- hot path ------------------------------------------------------------------------------------

    def observe(self, config: FunctionConfig, outcome: Outcome) -> None:
        """Record one invocation (an `Invoker` observer): must be fast and must not raise."""
        resource = outcome.resource
        if resource.partition(":")[0] != config.name:  # not said how it was invoked: say what ran
            resource = config.name if config.version == LATEST else f"{config.name}:{config.version}"
        version = outcome.executed_version
        series = self.series.get((resource, version))
        if series is None:
            if self.alive is not None and not self.alive(config.name, version):
                return  # it ended after its function or version was deleted: no series comes back
            series = self.series[(resource, version)] = Series(config.name, resource, version)
        series.invocations += 1
        series.duration.observe(outcome.duration_ms / 1000.0)
        if outcome.error_kind is not None:
            series.errors[_KIND_INDEX[outcome.error_kind]] += 1
        if outcome.provisioned:
            series.provisioned += 1
        elif (
            version != LATEST  # $LATEST never has provisioned concurrency
            and self.pools is not None
            and self.pools.provisioned_target(config.name, version) > 0
        ):
            series.spillover += 1
        if outcome.init_ms is not None:  # this invocation started its environment: a cold start
            hist = self.init_duration.get((config.name, version))
            if hist is None:
                hist = self.init_duration[(config.name, version)] = Histogram(INIT_BUCKETS)
            hist.observe(outcome.init_ms / 1000.0)
            self.cold_starts[config.name] = self.cold_starts.get(config.name, 0) + 1

    def throttled(self, function: str, reason: str) -> None:
        """Count a 429 with Lambda's Reason."""
        key = (function, reason)
        count = self.throttles.get(key)
        if count is None and self.alive is not None and not self.alive(function, LATEST):
            return
        self.throttles[key] = (count or 0) + 1

    def forget(self, function: str, version: str | None = None) -> None:
        """Drop the series of a deleted function (`version` None) or of one deleted version (its executed version)."""
        if version == LATEST:
            return  # $LATEST is updated, never deleted alone
        for key, series in list(self.series.items()):
            if series.labels[0] == function and (version is None or series.labels[2] == version):
                del self.series[key]
        for key in [k for k in self.init_duration if k[0] == function and version in (None, k[1])]:
            del self.init_duration[key]
        if version is None:
            for key in [k for k in self.throttles if k[0] == function]:
                del self.throttles[key]
            self.cold_starts.pop(function, None)
            self.events.forget(function)
            self.urls.forget(function)

    def exchanged(self, received: float, stamps: Sequence[float], bytes_in: int, bytes_out: int, cold: bool) -> None:
        """The gateway's share of one invocation, in `time.perf_counter()` seconds, and its payload sizes.

        `received` is when the request reached the route, `stamps` when the payload was written to the
        environment and when its reply arrived (0.0 if that did not happen). A cold start's way in is left
        out: forking and Init have their own metrics.
        """
        written, replied = stamps
        if written and not cold:
            self.overhead_in.observe(written - received)
        if replied:
            self.overhead_out.observe(time.perf_counter() - replied)
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def forked(self, seconds: float) -> None:
        """A zygote forked an environment in `seconds` (request sent -> pid known)."""
        self.fork.observe(seconds)

    def http(self, operation: str, status: int) -> None:
        """Count one HTTP response of the API (`operation` is a bounded name such as "Invoke")."""
        key = (operation, status)
        self.http_requests[key] = self.http_requests.get(key, 0) + 1

    # -- asynchronous invocation (gateway.observability.async_metrics): on the loop, cheap, never raise ----

    def async_received(self, function: str) -> None:
        """An Event invoke was durably queued: Lambda's AsyncEventsReceived."""
        self.events.received(function)

    def async_event_age(self, function: str, seconds: float) -> None:
        """An attempt started `seconds` after its event was queued: AsyncEventAge, each attempt."""
        self.events.event_age(function, seconds)

    def async_dropped(self, function: str, reason: str) -> None:
        """AsyncEventsDropped; `reason` one of async_metrics.DROP_REASONS."""
        self.events.dropped(function, reason)

    def destination_failed(self, function: str, service: str) -> None:
        """DestinationDeliveryFailures; `service` lambda, sqs, sns or events."""
        self.events.destination_failed(function, service)

    def dead_letter_failed(self, function: str) -> None:
        """DeadLetterErrors."""
        self.events.dead_letter_failed(function)

    def watch_queue(self, depths: Callable[[], Mapping[str, int]]) -> None:
        """Export `depths()` (function -> events queued) as gateway_async_queue_depth, called on the loop at each
        scrape: it must be cheap (in memory) and must not raise."""
        self.events.watch_queue(depths)

    # -- scrape ----------------------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        """The families, without samples: lets the registry refuse a second collector with the same names."""
        return Families().all() + AsyncFamilies().all() + mapping_families() + list(url_families())

    def collect(self) -> Iterator[Metric]:
        """Every family with its samples: a snapshot made into families on the calling thread (the loop's)."""
        return self.snapshot().collect()

    def snapshot(self) -> Snapshot:
        """The numbers as they are now, and the gauges computed from the pools: call on the event loop."""
        snap = Snapshot()
        snap.series = [
            (s.labels, s.invocations, s.errors.copy(), s.duration.copy(), s.provisioned, s.spillover)
            for s in self.series.values()
        ]
        snap.throttles = dict(self.throttles)
        snap.init_duration = [(labels, hist.copy()) for labels, hist in self.init_duration.items()]
        snap.cold_starts = dict(self.cold_starts)
        snap.overhead = (self.overhead_in.copy(), self.overhead_out.copy())
        snap.fork = self.fork.copy()
        snap.payload = (self.bytes_in, self.bytes_out)
        snap.http = dict(self.http_requests)
        snap.zygote_restarts = sum(z.restarts for z in self.zygotes)
        snap.parts.append(self.events.snapshot())
        snap.parts.append(self.mappings.snapshot())
        snap.parts.append(self.urls.snapshot())
        fam = snap.gauges
        self._collect_pools(fam)
        self._collect_concurrency(fam)
        return snap

    def _collect_pools(self, fam: Families) -> None:
        if self.pools is None:
            return
        functions: dict[str, Totals] = {}
        versions: dict[tuple[str, str], Totals] = {}
        for census in self.pools.censuses():
            totals = functions.get(census.function)
            if totals is None:
                totals = functions[census.function] = Totals()
            totals.add(census)
            if census.provisioned_concurrency:
                key = (census.function, census.version)
                if key not in versions:
                    versions[key] = Totals()
                versions[key].add(census)
        for name, totals in sorted(functions.items()):
            for state, count in zip(ENVIRONMENT_STATES, (totals.initializing, totals.idle, totals.busy), strict=True):
                fam.environments.add_metric((name, state), count)
            fam.concurrent.add_metric((name,), totals.executing)
        for labels, totals in sorted(versions.items()):
            fam.provisioned_busy.add_metric(labels, totals.provisioned_busy)
            fam.provisioned_allocated.add_metric(labels, totals.provisioned)
            utilization = totals.provisioned_busy / totals.provisioned if totals.provisioned else 0.0
            fam.provisioned_utilization.add_metric(labels, utilization)

    def _collect_concurrency(self, fam: Families) -> None:
        concurrency = self.concurrency
        if concurrency is not None:
            fam.unreserved_concurrent.add_metric((), concurrency.unreserved_inflight)
            fam.limit.add_metric(("account",), concurrency.account_limit)
            fam.limit.add_metric(("unreserved",), concurrency.unreserved_limit)
        if self.reservations is not None:
            for name, reserved in sorted(self.reservations().items()):
                fam.reserved.add_metric((name,), reserved)
