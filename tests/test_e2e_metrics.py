"""`GET /metrics` of a live gateway: the contract's metrics move as real invocations, errors and throttles happen."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

RESERVED_EXCEEDED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_EXCEEDED = "ConcurrentInvocationLimitExceeded"

BEHAVES = """
import os, time
def lambda_handler(event, context):
    what = event.get("do")
    if what == "raise":
        raise ValueError("asked to")
    if what == "sleep":
        time.sleep(event["seconds"])
    if what == "exit":
        os._exit(3)
    return event
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gw: RunningGateway) -> tuple[Samples, bytes]:
    status, headers, body = gw.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, body


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return scrape(gw)[0].get((name, frozenset(labels.items())), 0.0)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_metrics_is_prometheus_text_that_promtool_accepts(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, BEHAVES)
    invoke_json(lam, fname, {"a": 1})
    samples, body = scrape(gateway)
    names = {name for name, _ in samples}
    assert {"lambda_invocations_total", "lambda_duration_seconds_bucket", "gateway_http_requests_total"} <= names
    assert not any("request" in key for _, labels in samples for key, _ in labels)  # no request ids
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (Debian's `prometheus` package has it)")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_invocations_durations_cold_starts_payload_and_overhead(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, BEHAVES)
    before, _ = scrape(gateway)
    events = [{"do": "sleep", "seconds": 0.2}, {"x": "y" * 100}, {}]
    for event in events:
        invoke_json(lam, fname, event)
    after, _ = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    series = {"function": fname, "resource": fname, "version": "$LATEST"}
    assert delta("lambda_invocations_total", **series) == 3
    assert delta("lambda_duration_seconds_count", **series) == 3
    assert 0.2 <= delta("lambda_duration_seconds_sum", **series) < 2
    assert delta("lambda_duration_seconds_bucket", le="0.1", **series) == 2  # the sleep is above 0.1 s
    assert delta("gateway_cold_starts_total", function=fname) == 1
    assert delta("lambda_init_duration_seconds_count", function=fname, version="$LATEST") == 1
    assert delta("gateway_fork_seconds_count") >= 1
    assert delta("gateway_payload_bytes_total", direction="in") == sum(len(json.dumps(e)) for e in events)
    assert delta("gateway_payload_bytes_total", direction="out") >= len(events) * len("{}")
    assert delta("gateway_overhead_seconds_count", direction="in") >= 2  # warm ones only
    assert delta("gateway_overhead_seconds_count", direction="out") >= 3
    assert delta("gateway_http_requests_total", operation="Invoke", status="200") >= 3
    for kind in ("function", "timeout", "crash", "out_of_memory", "init"):
        assert after[("lambda_errors_total", frozenset({**series, "kind": kind}.items()))] == 0


def test_errors_of_each_kind(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, BEHAVES, Timeout=1)
    for event in ({"do": "raise"}, {"do": "sleep", "seconds": 3}, {"do": "exit"}):
        resp, _ = invoke_json(lam, fname, event)
        assert resp["FunctionError"] == "Unhandled"
    broken = fname + "-init"
    create_function(lam, broken, "import no_such_module_here\n")
    resp, body = invoke_json(lam, broken)
    assert body["errorType"] == "Runtime.ImportModuleError"
    series = {"function": fname, "resource": fname, "version": "$LATEST"}
    samples, _ = scrape(gateway)
    for kind, want in {"function": 1, "timeout": 1, "crash": 1, "init": 0, "out_of_memory": 0}.items():
        assert samples[("lambda_errors_total", frozenset({**series, "kind": kind}.items()))] == want, kind
    assert samples[("lambda_invocations_total", frozenset(series.items()))] == 3
    init_series = frozenset({"function": broken, "resource": broken, "version": "$LATEST", "kind": "init"}.items())
    assert samples[("lambda_errors_total", init_series)] == 1
    timed_out = samples[("lambda_duration_seconds_sum", frozenset(series.items()))]
    assert timed_out >= 1.0  # a timeout counts the whole timeout


def test_reserved_throttle_is_counted_with_its_reason(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, BEHAVES)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=0)
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            invoke_json(lam, fname)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    samples, _ = scrape(gateway)
    assert samples[("lambda_throttles_total", frozenset({"function": fname, "reason": RESERVED_EXCEEDED}.items()))] == 2
    assert samples[("lambda_reserved_concurrency", frozenset({"function": fname}.items()))] == 0
    assert samples[("gateway_http_requests_total", frozenset({"operation": "Invoke", "status": "429"}.items()))] >= 2


def test_account_throttle_and_concurrency_gauges(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "1", "GATEWAY_UNRESERVED_MIN": "1"})
    lam = gw.client()
    create_function(lam, fname, BEHAVES)
    invoke_json(lam, fname)  # warm: the slow one below is then busy, not initializing
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke_json, gw.client(), fname, {"do": "sleep", "seconds": 1.5})
        wait_for(lambda: metric(gw, "gateway_environments", function=fname, state="busy") == 1)
        samples, _ = scrape(gw)
        assert samples[("lambda_concurrent_executions", frozenset({"function": fname}.items()))] == 1
        assert samples[("lambda_unreserved_concurrent_executions", frozenset())] == 1
        assert samples[("lambda_concurrency_limit", frozenset({"scope": "account"}.items()))] == 1
        assert samples[("gateway_environments", frozenset({"function": fname, "state": "idle"}.items()))] == 0
        with pytest.raises(ClientError) as exc:
            invoke_json(lam, fname)
        assert exc.value.response["Error"]["Code"] == "TooManyRequestsException"
        slow.result(timeout=30)
    samples, _ = scrape(gw)
    assert samples[("lambda_throttles_total", frozenset({"function": fname, "reason": ACCOUNT_EXCEEDED}.items()))] == 1
    assert samples[("gateway_environments", frozenset({"function": fname, "state": "idle"}.items()))] == 1
    assert samples[("gateway_environments", frozenset({"function": fname, "state": "busy"}.items()))] == 0
    assert samples[("lambda_concurrent_executions", frozenset({"function": fname}.items()))] == 0


def test_initializing_environments(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, "import time\ntime.sleep(3)\n" + BEHAVES)  # long enough to be seen on a busy machine
    with ThreadPoolExecutor(1) as pool:
        cold = pool.submit(invoke_json, gateway.client(), fname)
        wait_for(lambda: metric(gateway, "gateway_environments", function=fname, state="initializing") == 1)
        assert metric(gateway, "lambda_concurrent_executions", function=fname) == 1
        cold.result(timeout=30)
    samples, _ = scrape(gateway)
    assert samples[("gateway_environments", frozenset({"function": fname, "state": "initializing"}.items()))] == 0
    init = samples[("lambda_init_duration_seconds_sum", frozenset({"function": fname, "version": "$LATEST"}.items()))]
    assert init >= 3


def test_provisioned_concurrency_and_aliases(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, BEHAVES, Timeout=10)
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    lam.put_provisioned_concurrency_config(FunctionName=fname, Qualifier=version, ProvisionedConcurrentExecutions=1)
    pv = {"function": fname, "version": version}
    wait_for(lambda: metric(gateway, "lambda_provisioned_concurrency_allocated", **pv) == 1, timeout=30)
    assert metric(gateway, "lambda_provisioned_concurrency_utilization", **pv) == 0

    with ThreadPoolExecutor(1) as pool:
        busy: Future[Any] = pool.submit(invoke_json, gateway.client(), f"{fname}:live", {"do": "sleep", "seconds": 3})
        wait_for(lambda: metric(gateway, "lambda_provisioned_concurrent_executions", **pv) == 1)
        assert metric(gateway, "lambda_provisioned_concurrency_utilization", **pv) == 1
        invoke_json(lam, fname, {"while": "busy"}, Qualifier=version)  # the provisioned one is busy: spillover
        busy.result(timeout=30)
    invoke_json(lam, f"{fname}:live")  # the provisioned environment again

    samples, _ = scrape(gateway)
    live = frozenset({"function": fname, "resource": f"{fname}:live", "version": version}.items())
    by_version = frozenset({"function": fname, "resource": f"{fname}:{version}", "version": version}.items())
    assert samples[("lambda_invocations_total", live)] == 2
    assert samples[("lambda_provisioned_concurrency_invocations_total", live)] == 2
    assert samples[("lambda_provisioned_concurrency_spillover_invocations_total", live)] == 0
    assert samples[("lambda_invocations_total", by_version)] == 1
    assert samples[("lambda_provisioned_concurrency_spillover_invocations_total", by_version)] == 1
    assert samples[("gateway_cold_starts_total", frozenset({"function": fname}.items()))] == 1  # the spillover
    assert samples[("lambda_provisioned_concurrent_executions", frozenset(pv.items()))] == 0
