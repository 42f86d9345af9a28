"""gateway.metrics on a fresh registry: the invocation observer, the hot-path counters and the scrape-time gauges."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.contracts import environment as wire
from gateway.errors import ERROR_KINDS
from gateway.execution.admission import ACCOUNT_EXCEEDED, RESERVED_EXCEEDED, Concurrency
from gateway.execution.environment import Environment
from gateway.execution.invoker import Outcome
from gateway.execution.modes import ExclusivePool, SharedPool, pool_class
from gateway.execution.pool import PROVISIONED
from gateway.execution.pools import PoolManager
from gateway.execution.zygote import Zygote
from gateway.isolation.sandbox import Sandbox
from gateway.observability.metrics import Histogram, Metrics
from gateway.settings import Settings
from gateway.store.names import FunctionRef
from gateway.store.records import LATEST, FunctionConfig
from tests.conftest import RUNTIME


def config(name: str = "f", version: str = LATEST, max_concurrency: int = 1) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
        runtime=RUNTIME,
        handler="lambda_function.lambda_handler",
        role="arn:aws:iam::123456789012:role/r",
        code_sha256="0" * 64,
        code_size=1,
        code_dir=Path("/nonexistent"),
        last_modified="2026-11-23T14:38:00.000+0000",
        revision_id=f"rev-{name}-{version}",
        version=version,
        max_concurrency=max_concurrency,
    )


def observe(metrics: Metrics, cfg: FunctionConfig, outcome: Outcome, invoked_as: FunctionRef | None) -> None:
    """Call the observer as the Invoker does: with the outcome saying how the function was invoked (or not)."""
    if invoked_as is not None:
        outcome.resource = (
            invoked_as.name if invoked_as.qualifier is None else f"{invoked_as.name}:{invoked_as.qualifier}"
        )
    metrics.observe(cfg, outcome)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_histogram_buckets_are_cumulative_with_le_semantics() -> None:
    hist = Histogram((0.001, 0.01, 0.1))
    for v in (0.001, 0.0005, 0.005, 0.5):
        hist.observe(v)
    assert hist.buckets() == [("0.001", 2), ("0.01", 3), ("0.1", 3), ("+Inf", 4)]
    assert hist.count == 4
    assert hist.sum == pytest.approx(0.5065)


def test_observer_counts_per_function_resource_and_executed_version(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    cfg = config("f", "3")
    observe(metrics, cfg, Outcome("r1", "3", b"{}", duration_ms=3.0), FunctionRef("f", "live"))
    observe(metrics, cfg, Outcome("r2", "3", b"{}", duration_ms=30.0), FunctionRef("f", "live"))
    observe(metrics, config("f"), Outcome("r3", LATEST, b"{}", duration_ms=1.0), FunctionRef("f", None))
    live = {"function": "f", "resource": "f:live", "version": "3"}
    assert value(registry, "lambda_invocations_total", **live) == 2
    assert value(registry, "lambda_invocations_total", function="f", resource="f", version=LATEST) == 1
    assert value(registry, "lambda_duration_seconds_count", **live) == 2
    assert value(registry, "lambda_duration_seconds_sum", **live) == pytest.approx(0.033)
    assert value(registry, "lambda_duration_seconds_bucket", le="0.005", **live) == 1
    assert value(registry, "lambda_duration_seconds_bucket", le="0.0025", **live) == 0
    assert value(registry, "lambda_duration_seconds_bucket", le="+Inf", **live) == 2
    for kind in ERROR_KINDS:  # every kind is exported from the first invocation on, so rate() has a start
        assert value(registry, "lambda_errors_total", kind=kind, **live) == 0


def test_observer_without_invoked_as_labels_what_ran(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    observe(metrics, config("g", "2"), Outcome("r", "2", b""), None)
    observe(metrics, config("g"), Outcome("r", LATEST, b""), FunctionRef("other", "x"))  # stale: another function
    assert value(registry, "lambda_invocations_total", function="g", resource="g:2", version="2") == 1
    assert value(registry, "lambda_invocations_total", function="g", resource="g", version=LATEST) == 1


def test_errors_by_kind_cold_starts_and_init_duration(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    cfg = config("f")
    ref = FunctionRef("f", None)
    for kind in ERROR_KINDS:
        observe(metrics, cfg, Outcome("r", LATEST, b"", error_kind=kind), ref)
    observe(metrics, cfg, Outcome("r", LATEST, b"", error_kind="function"), ref)
    observe(metrics, cfg, Outcome("r", LATEST, b"", init_ms=120.0), ref)
    labels = {"function": "f", "resource": "f", "version": LATEST}
    assert value(registry, "lambda_invocations_total", **labels) == 7
    assert value(registry, "lambda_errors_total", kind="function", **labels) == 2
    for kind in ("timeout", "crash", "out_of_memory", "init"):
        assert value(registry, "lambda_errors_total", kind=kind, **labels) == 1
    assert value(registry, "gateway_cold_starts_total", function="f") == 1
    assert value(registry, "lambda_init_duration_seconds_count", function="f", version=LATEST) == 1
    assert value(registry, "lambda_init_duration_seconds_sum", function="f", version=LATEST) == pytest.approx(0.12)


def test_provisioned_and_spillover_invocations(registry: CollectorRegistry, tmp_path: Path) -> None:
    pools = PoolManager(Settings(data_dir=tmp_path), {})
    metrics = Metrics(registry, pools)
    cfg = config("f", "1")
    pool = pools.pools[("f", "1")] = pool_class(cfg)(cfg, pools.settings, cast(Zygote, None), pools.make_room)
    ref = FunctionRef("f", "live")
    observe(metrics, cfg, Outcome("r", "1", b"", provisioned=True), ref)
    observe(metrics, cfg, Outcome("r", "1", b""), ref)  # no provisioned concurrency configured: no spillover
    pool.provisioned_target = 2
    observe(metrics, cfg, Outcome("r", "1", b""), ref)
    labels = {"function": "f", "resource": "f:live", "version": "1"}
    assert value(registry, "lambda_provisioned_concurrency_invocations_total", **labels) == 1
    assert value(registry, "lambda_provisioned_concurrency_spillover_invocations_total", **labels) == 1
    assert value(registry, "lambda_invocations_total", **labels) == 3


def test_throttles_overhead_payload_fork_and_http(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.throttled("f", RESERVED_EXCEEDED)
    metrics.throttled("f", RESERVED_EXCEEDED)
    metrics.throttled("g", ACCOUNT_EXCEEDED)
    assert value(registry, "lambda_throttles_total", function="f", reason=RESERVED_EXCEEDED) == 2
    assert value(registry, "lambda_throttles_total", function="g", reason=ACCOUNT_EXCEEDED) == 1
    metrics.exchanged(10.0, [10.0002, 0.0], 100, 7, cold=False)  # no reply stamp: no "out" observation
    metrics.exchanged(10.0, [15.0, 0.0], 5, 5, cold=True)  # a cold start's way in is not the gateway's
    assert value(registry, "gateway_overhead_seconds_count", direction="in") == 1
    assert value(registry, "gateway_overhead_seconds_sum", direction="in") == pytest.approx(0.0002)
    assert value(registry, "gateway_overhead_seconds_bucket", direction="in", le="0.00025") == 1
    assert value(registry, "gateway_overhead_seconds_bucket", direction="in", le="0.00015") == 0
    assert value(registry, "gateway_overhead_seconds_count", direction="out") == 0
    assert value(registry, "gateway_payload_bytes_total", direction="in") == 105
    assert value(registry, "gateway_payload_bytes_total", direction="out") == 12
    metrics.forked(0.0015)
    assert value(registry, "gateway_fork_seconds_count") == 1
    assert value(registry, "gateway_fork_seconds_bucket", le="0.002") == 1
    metrics.http("Invoke", 200)
    metrics.http("Invoke", 429)
    metrics.http("Invoke", 200)
    assert value(registry, "gateway_http_requests_total", operation="Invoke", status="200") == 2
    assert value(registry, "gateway_http_requests_total", operation="Invoke", status="429") == 1


def test_a_second_collector_with_the_same_names_is_refused(registry: CollectorRegistry) -> None:
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)


def test_exposition_is_valid_text_with_every_family(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, concurrency=Concurrency(1000, 100))
    observe(metrics, config("f"), Outcome("r", LATEST, b"", duration_ms=2.0), None)
    families = {f.name: f.type for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["lambda_invocations"] == "counter"
    assert families["lambda_duration_seconds"] == "histogram"
    assert families["lambda_concurrency_limit"] == "gauge"
    assert families["gateway_zygote_restarts"] == "counter"
    assert value(registry, "lambda_concurrency_limit", scope="account") == 1000
    assert value(registry, "lambda_concurrency_limit", scope="unreserved") == 1000


def _ready(env: Environment, capacity: int = 1) -> Environment:
    env.data_received(wire.encode([wire.READY, env.pid, 1.0, capacity, None, "", b""]))
    return env


async def test_collector_counts_environments_by_state_and_provisioned(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    settings = Settings(data_dir=tmp_path, runtimes={RUNTIME: sys.executable})
    zygote = Zygote(sys.executable, [RUNTIME], tmp_path / "envs", Sandbox(jail=False, cgroups=None))
    zygote.restarts = 2
    pools = PoolManager(settings, {RUNTIME: zygote})
    concurrency = Concurrency(1000, 100)
    concurrency.set_reserved("f", 50)
    Metrics(registry, pools, concurrency, [zygote, zygote], lambda: {"f": 50})
    loop = asyncio.get_running_loop()
    envs: list[Environment] = []

    def env(init_type: str = "on-demand") -> Environment:
        output, writer = os.pipe()  # an output pipe nobody writes to: its reader sees EOF and stops
        os.close(writer)
        e = Environment(("f", "1"), 10_000_000 + len(envs), loop.create_future(), str(tmp_path / "none"), output)
        e.initialization_type = init_type
        envs.append(e)
        return e

    pool = pools.pools[("f", "1")] = ExclusivePool(config("f", "1"), settings, zygote, pools.make_room)
    idle, busy, starting = _ready(env()), _ready(env()), env()
    warm, hot = _ready(env(PROVISIONED)), _ready(env(PROVISIONED))
    dead = _ready(env())
    dead.dead = True
    pool.environments.update({idle, busy, starting, warm, hot, dead})
    pool.idle.append(idle)
    pool.warm.append(warm)
    pool.provisioned.update({warm, hot})
    pool.provisioned_target = 2
    pool.spawning = 1  # a fork under way
    concurrency.admit("g")
    labels = {"function": "f", "version": "1"}
    assert value(registry, "gateway_environments", function="f", state="initializing") == 2
    assert value(registry, "gateway_environments", function="f", state="idle") == 2
    assert value(registry, "gateway_environments", function="f", state="busy") == 2
    assert value(registry, "lambda_concurrent_executions", function="f") == 4  # 2 busy + 2 starting on demand
    assert value(registry, "lambda_provisioned_concurrency_allocated", **labels) == 2
    assert value(registry, "lambda_provisioned_concurrent_executions", **labels) == 1
    assert value(registry, "lambda_provisioned_concurrency_utilization", **labels) == 0.5
    assert value(registry, "lambda_unreserved_concurrent_executions") == 1
    assert value(registry, "lambda_concurrency_limit", scope="unreserved") == 950
    assert value(registry, "lambda_reserved_concurrency", function="f") == 50
    assert value(registry, "gateway_zygote_restarts_total") == 2  # one zygote, listed twice

    # Several invocations per environment: busy means "running at least one", executions count each.
    shared = pools.pools[("h", LATEST)] = SharedPool(config("h", max_concurrency=4), settings, zygote, pools.make_room)
    one, none = _ready(env(), 4), _ready(env(), 4)
    one.load = 3
    shared.environments.update({one, none})
    shared.shared.extend([one, none])
    assert value(registry, "gateway_environments", function="h", state="busy") == 1
    assert value(registry, "gateway_environments", function="h", state="idle") == 1
    assert value(registry, "lambda_concurrent_executions", function="h") == 3
    assert value(registry, "lambda_provisioned_concurrency_allocated", function="h", version=LATEST) is None


def test_forget_drops_a_deleted_version_then_the_deleted_function(registry: CollectorRegistry) -> None:
    existing = {("f", LATEST), ("f", "1"), ("f", "2"), ("g", LATEST)}
    metrics = Metrics(registry, alive=lambda name, version: (name, version) in existing)
    for version in (LATEST, "1", "2"):
        observe(metrics, config("f", version), Outcome("r", version, b"", init_ms=5.0), FunctionRef("f", None))
    observe(metrics, config("g"), Outcome("r", LATEST, b""), FunctionRef("g", None))
    metrics.throttled("f", RESERVED_EXCEEDED)
    existing.discard(("f", "1"))
    metrics.forget("f", "1")
    assert value(registry, "lambda_invocations_total", function="f", resource="f", version="1") is None
    assert value(registry, "lambda_init_duration_seconds_count", function="f", version="1") is None
    assert value(registry, "lambda_invocations_total", function="f", resource="f", version="2") == 1
    observe(metrics, config("f", "1"), Outcome("r", "1", b""), FunctionRef("f", None))  # ended after the delete
    assert value(registry, "lambda_invocations_total", function="f", resource="f", version="1") is None
    existing -= {("f", LATEST), ("f", "2")}
    metrics.forget("f")
    text = generate_latest(registry).decode()
    assert 'function="f"' not in text
    assert 'function="g"' in text


def test_snapshot_renders_what_the_registry_renders(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, concurrency=Concurrency(1000, 100))
    observe(metrics, config("f"), Outcome("r", LATEST, b"", duration_ms=2.0), FunctionRef("f", None))
    metrics.http("Invoke", 200)
    assert metrics.snapshot().render() == generate_latest(registry)


def test_the_fast_renderer_matches_generate_latest_for_every_family(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry, concurrency=Concurrency(1000, 100), reservations=lambda: {"f": 3})
    for i, version in enumerate((LATEST, "1", "2")):
        out = Outcome("r", version, b"", duration_ms=10.0**i, init_ms=2.5 * i, error_kind=ERROR_KINDS[i])
        out.provisioned = i == 1
        observe(metrics, config("f", version), out, FunctionRef("f", "live" if i == 2 else None))
    metrics.throttled("f", RESERVED_EXCEEDED)
    metrics.throttled("g", ACCOUNT_EXCEEDED)
    metrics.exchanged(0.0, (0.001, 0.0), 10, 2_000_000, False)
    metrics.forked(0.0012)
    metrics.http("Invoke", 200)
    snapshot = metrics.snapshot()
    rendered = snapshot.render()
    assert rendered == generate_latest(registry)
    assert b"lambda_duration_seconds_bucket" in rendered and b"gateway_payload_bytes_total" in rendered
