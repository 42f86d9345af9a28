"""Provisioned concurrency through boto3: configs, warm environments ahead of traffic, spill-over, rules."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, function_log, invoke_json, wait_for

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
FAST_RECONCILE = {"GATEWAY_REAP_INTERVAL": "0.2"}

SOURCE = """
import os, time
def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "version": context.function_version}
"""


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _publish(lam: Any, name: str, marker: str) -> str:
    """Publish a new version of `name` (a configuration change makes it differ from the last one)."""
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"MARKER": marker}})
    return str(lam.publish_version(FunctionName=name)["Version"])


def _put(lam: Any, name: str, qualifier: str, count: int) -> dict[str, Any]:
    return dict(
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=qualifier, ProvisionedConcurrentExecutions=count
        )
    )


def _wait_status(lam: Any, name: str, qualifier: str, want: str = "READY", timeout: float = 30.0) -> dict[str, Any]:
    """Poll GetProvisionedConcurrencyConfig until its Status is `want` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        config = dict(lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier))
        if config["Status"] == want:
            return config
        assert config["Status"] != "FAILED" or want == "FAILED", config
        assert time.monotonic() < deadline, f"still {config['Status']} after {timeout}s: {config}"
        time.sleep(0.1)


def _invoke_tail(lam: Any, name: str, event: Any = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Invoke with LogType=Tail: (response, payload, log tail)."""
    resp, body = invoke_json(lam, name, event, LogType="Tail")
    return resp, body, base64.b64decode(resp["LogResult"]).decode()


def _wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_version_and_alias_become_ready_and_serve_warm_first(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    v1 = _publish(lam, fname, "one")
    v2 = _publish(lam, fname, "two")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=v2)

    put = _put(lam, fname, v1, 1)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert (put["RequestedProvisionedConcurrentExecutions"], put["Status"]) == (1, "IN_PROGRESS")
    assert put["AvailableProvisionedConcurrentExecutions"] == 0
    assert put["LastModified"].endswith("+0000")
    put = _put(lam, fname, "live", 2)
    assert (put["ResponseMetadata"]["HTTPStatusCode"], put["Status"]) == (202, "IN_PROGRESS")

    for qualifier, requested in ((v1, 1), ("live", 2)):
        ready = _wait_status(lam, fname, qualifier)
        assert ready["RequestedProvisionedConcurrentExecutions"] == requested
        assert ready["AvailableProvisionedConcurrentExecutions"] == requested
        assert ready["AllocatedProvisionedConcurrentExecutions"] == requested
        assert "StatusReason" not in ready
    assert gw.health()["environments"] == 3

    resp, body, tail = _invoke_tail(lam, f"{fname}:live")
    assert resp["ExecutedVersion"] == v2
    assert body == {"pid": body["pid"], "init": "provisioned-concurrency", "version": v2}
    assert "REPORT RequestId" in tail
    assert "Init Duration" not in tail
    resp, body, tail = _invoke_tail(lam, f"{fname}:{v1}")
    assert (resp["ExecutedVersion"], body["init"]) == (v1, "provisioned-concurrency")
    assert "Init Duration" not in tail
    # $LATEST has no provisioned concurrency: an on-demand cold start
    _, body, tail = _invoke_tail(lam, fname)
    assert body["init"] == "on-demand"
    assert "Init Duration" in tail


def test_load_beyond_provisioned_spills_over_to_on_demand(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client(max_pool_connections=10)
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    _put(lam, fname, version, 2)
    _wait_status(lam, fname, version)

    results: list[tuple[dict[str, Any], str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        _, body, tail = _invoke_tail(lam, f"{fname}:{version}", {"sleep": 1.5})
        with lock:
            results.append((body, tail))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    assert len({body["pid"] for body, _ in results}) == 4  # four environments at once
    kinds = sorted((body["init"], "Init Duration" in tail) for body, tail in results)
    assert kinds == [("on-demand", True)] * 2 + [("provisioned-concurrency", False)] * 2
    # the provisioned environments are still there for the next burst, and served first
    _, body, tail = _invoke_tail(lam, f"{fname}:{version}")
    assert body["init"] == "provisioned-concurrency"
    assert "Init Duration" not in tail


def test_provisioned_environments_are_never_reaped(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={**FAST_RECONCILE, "GATEWAY_IDLE_TIMEOUT": "1"})
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    _put(lam, fname, version, 1)
    _wait_status(lam, fname, version)
    _, warm, _ = _invoke_tail(lam, f"{fname}:{version}")
    _, on_demand, _ = _invoke_tail(lam, fname)  # $LATEST: on demand, reaped after 1 s idle
    time.sleep(3)
    config = lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)
    assert (config["Status"], config["AvailableProvisionedConcurrentExecutions"]) == ("READY", 1)
    _, again, tail = _invoke_tail(lam, f"{fname}:{version}")
    assert (again["pid"], again["init"]) == (warm["pid"], "provisioned-concurrency")
    assert "Init Duration" not in tail
    _, cold, tail = _invoke_tail(lam, fname)
    assert cold["pid"] != on_demand["pid"]  # the reaper did run: the on-demand environment was shut
    assert "Init Duration" in tail


def _with_aliases(lam: Any, fname: str) -> str:
    """A function, its version 1, and aliases of it: "latest" ($LATEST), "a1" and "a2" (version 1); the version."""
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    lam.create_alias(FunctionName=fname, Name="latest", FunctionVersion="$LATEST")
    lam.create_alias(FunctionName=fname, Name="a1", FunctionVersion=version)
    lam.create_alias(FunctionName=fname, Name="a2", FunctionVersion=version)
    return version


def test_rules_and_error_names(lam: Any, fname: str) -> None:
    version = _with_aliases(lam, fname)

    def put(qualifier: str, count: int = 1, name: str = fname) -> dict[str, Any]:
        return _put(lam, name, qualifier, count)

    unpublished = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
    for qualifier in ("$LATEST", "latest"):
        with pytest.raises(ClientError) as exc:
            put(qualifier)
        assert _error(exc) == (400, "InvalidParameterValueException", unpublished)
    for call in (lam.get_provisioned_concurrency_config, lam.delete_provisioned_concurrency_config):
        with pytest.raises(ClientError) as exc:
            call(FunctionName=fname, Qualifier="$LATEST")
        assert _error(exc) == (
            400,
            "InvalidParameterValueException",
            "The function resource provided must be an alias or a published version.",
        )
    with pytest.raises(ClientError) as exc:
        put("9")
    assert _error(exc) == (404, "ResourceNotFoundException", f"Function not found: {ARN}{fname}:9")
    with pytest.raises(ClientError) as exc:
        put("nope")
    assert _error(exc) == (404, "ResourceNotFoundException", f"Cannot find alias arn: {ARN}{fname}:nope")
    with pytest.raises(ClientError) as exc:
        put("1", name=fname + "-missing")
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        lam.list_provisioned_concurrency_configs(FunctionName=fname + "-missing")
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)
    assert _error(exc) == (
        404,
        "ProvisionedConcurrencyConfigNotFoundException",
        "No Provisioned Concurrency Config found for this function",
    )
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier="a1")
    # deleting a config that does not exist succeeds
    lam.delete_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)


def test_one_config_per_version(lam: Any, gateway: RunningGateway, fname: str) -> None:
    """A version and an alias of it, or two aliases of one version, conflict."""
    version = _with_aliases(lam, fname)

    def put(qualifier: str, count: int = 1) -> dict[str, Any]:
        return _put(lam, fname, qualifier, count)

    put(version)
    with pytest.raises(ClientError) as exc:
        put("a1")
    assert _error(exc) == (
        409,
        "ResourceConflictException",
        "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version",
    )
    put(version, 2)  # replacing the version's own config is no conflict
    assert (
        lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)[
            "RequestedProvisionedConcurrentExecutions"
        ]
        == 2
    )
    lam.delete_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)
    put("a1")
    with pytest.raises(ClientError) as exc:
        put("a2")
    assert _error(exc)[:2] == (409, "ResourceConflictException")
    with pytest.raises(ClientError) as exc:
        put(version)
    assert _error(exc) == (409, "ResourceConflictException", "Version is pointed by a Provisioned Concurrency alias")
    _raw_http_validation(gateway, fname)  # with a1's config of 1
    lam.delete_function(FunctionName=fname)  # the configs go with the function
    with pytest.raises(ClientError) as exc:
        lam.list_provisioned_concurrency_configs(FunctionName=fname)
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")


def _raw_http_validation(gateway: RunningGateway, fname: str) -> None:
    """Raw HTTP: what boto3 validates before sending; `fname`:a1 has a config of 1."""
    path = f"/2019-09-30/functions/{fname}/provisioned-concurrency"
    for query, body, want in (
        ("?Qualifier=a1", {"ProvisionedConcurrentExecutions": 0}, (400, "ValidationException")),
        ("?Qualifier=a1", {}, (400, "ValidationException")),
        ("?Qualifier=a1", {"ProvisionedConcurrentExecutions": "2"}, (400, "InvalidRequestContentException")),
        ("?Qualifier=a1", {"Provisioned": 2}, (400, "InvalidRequestContentException")),
        ("", {"ProvisionedConcurrentExecutions": 1}, (400, "ValidationException")),
    ):
        status, headers, _ = gateway.request("PUT", path + query, json.dumps(body).encode())
        assert (status, headers["x-amzn-ErrorType"]) == want, (query, body)
    status, headers, _ = gateway.request("GET", path + "?List=SOME")
    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    status, _, raw = gateway.request("GET", path + "?Qualifier=a1")
    assert status == 200
    assert json.loads(raw)["RequestedProvisionedConcurrentExecutions"] == 1


def test_limits_against_reserved_and_account(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "14", "GATEWAY_UNRESERVED_MIN": "10"})
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    v1 = _publish(lam, fname, "one")
    v2 = _publish(lam, fname, "two")
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=2)
    above_reserved = (
        "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function"
    )
    with pytest.raises(ClientError) as exc:
        _put(lam, fname, v1, 3)
    assert _error(exc) == (400, "InvalidParameterValueException", above_reserved)
    _put(lam, fname, v1, 1)
    # the function's total counts: 1 on v1 + 2 on v2 > 2
    with pytest.raises(ClientError) as exc:
        _put(lam, fname, v2, 2)
    assert _error(exc) == (400, "InvalidParameterValueException", above_reserved)
    _put(lam, fname, v2, 1)
    # and the reservation may not drop below what is provisioned
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=1)
    assert _error(exc)[:2] == (400, "InvalidParameterValueException")

    # without a reservation: unreserved (14 - 2 reserved = 12) less provisioned may not go below 10
    other = fname + "-o"
    create_function(lam, other, SOURCE)
    ov = _publish(lam, other, "one")
    floor = (
        "Specified ConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its "
        "minimum value of [10]."
    )
    with pytest.raises(ClientError) as exc:
        _put(lam, other, ov, 3)
    assert _error(exc) == (400, "InvalidParameterValueException", floor)
    _put(lam, other, ov, 2)
    for qualifier in (v1, v2):
        _wait_status(lam, fname, qualifier)
    _wait_status(lam, other, ov)


def test_delete_retires_the_environments(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    _put(lam, fname, "live", 2)
    _wait_status(lam, fname, "live")
    assert gw.health()["environments"] == 2
    # lowering the count shuts the extra idle environment
    put = _put(lam, fname, "live", 1)
    assert put["Status"] == "READY"
    _wait_until(lambda: gw.health()["environments"] == 1)
    resp = lam.delete_provisioned_concurrency_config(FunctionName=fname, Qualifier="live")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    _wait_until(lambda: gw.health()["environments"] == 0)
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier="live")
    assert lam.list_provisioned_concurrency_configs(FunctionName=fname)["ProvisionedConcurrencyConfigs"] == []
    time.sleep(0.5)  # a few reconcile ticks later, nothing came back
    assert gw.health()["environments"] == 0
    _, body, tail = _invoke_tail(lam, f"{fname}:live")
    assert body["init"] == "on-demand"
    assert "Init Duration" in tail


def test_provisioned_environments_come_back_after_a_restart(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    _put(lam, fname, "live", 1)
    before = _wait_status(lam, fname, "live")
    _, first, _ = _invoke_tail(lam, f"{fname}:live")

    gw.restart()
    lam = gw.client()
    after = _wait_status(lam, fname, "live")
    assert after["LastModified"] == before["LastModified"]
    assert gw.health()["environments"] == 1
    resp, body, tail = _invoke_tail(lam, f"{fname}:live")
    assert (resp["ExecutedVersion"], body["init"]) == (version, "provisioned-concurrency")
    assert body["pid"] != first["pid"]
    assert "Init Duration" not in tail


def test_init_error_fails_provisioning(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, "raise RuntimeError('no config for this stage')\n")
    version = _publish(lam, fname, "one")
    put = _put(lam, fname, version, 1)
    assert put["Status"] == "IN_PROGRESS"
    failed = _wait_status(lam, fname, version, "FAILED")
    assert failed["AvailableProvisionedConcurrentExecutions"] == 0
    assert "no config for this stage" in failed["StatusReason"]
    listed = lam.list_provisioned_concurrency_configs(FunctionName=fname)["ProvisionedConcurrencyConfigs"]
    assert [(c["Status"], c["StatusReason"]) for c in listed] == [("FAILED", failed["StatusReason"])]
    time.sleep(1)  # no respawn loop: still failed, nothing live
    assert lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)["Status"] == "FAILED"
    assert gw.health()["environments"] == 0


def test_list_with_paging(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    versions = [_publish(lam, fname, marker) for marker in ("one", "two", "three")]
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=versions[2])
    for qualifier in (*versions[:2], "live"):
        _put(lam, fname, qualifier, 1)

    page = lam.list_provisioned_concurrency_configs(FunctionName=fname, MaxItems=2)
    assert [c["FunctionArn"] for c in page["ProvisionedConcurrencyConfigs"]] == [
        f"{ARN}{fname}:{versions[0]}",
        f"{ARN}{fname}:{versions[1]}",
    ]
    item = page["ProvisionedConcurrencyConfigs"][0]
    assert item["RequestedProvisionedConcurrentExecutions"] == 1
    assert item["Status"] in ("IN_PROGRESS", "READY")
    assert {"AvailableProvisionedConcurrentExecutions", "AllocatedProvisionedConcurrentExecutions", "LastModified"} <= (
        item.keys()
    )
    rest = lam.list_provisioned_concurrency_configs(FunctionName=fname, MaxItems=2, Marker=page["NextMarker"])
    assert [c["FunctionArn"] for c in rest["ProvisionedConcurrencyConfigs"]] == [f"{ARN}{fname}:live"]
    assert "NextMarker" not in rest
    paginator = lam.get_paginator("list_provisioned_concurrency_configs")
    arns = [
        c["FunctionArn"]
        for p in paginator.paginate(FunctionName=fname, PaginationConfig={"PageSize": 1})
        for c in p["ProvisionedConcurrencyConfigs"]
    ]
    assert arns == [f"{ARN}{fname}:{q}" for q in (*versions[:2], "live")]
    for qualifier in (*versions[:2], "live"):
        _wait_status(lam, fname, qualifier)
    lam.delete_function(FunctionName=fname)


def test_alias_config_follows_update_alias_and_goes_with_delete_alias(
    gateway_factory: GatewayFactory, fname: str
) -> None:
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    v1 = _publish(lam, fname, "one")
    v2 = _publish(lam, fname, "two")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=v1)
    _put(lam, fname, "live", 1)
    _wait_status(lam, fname, "live")
    _, before, _ = _invoke_tail(lam, f"{fname}:live")

    lam.update_alias(FunctionName=fname, Name="live", FunctionVersion=v2)
    _wait_status(lam, fname, "live")
    _wait_until(lambda: gw.health()["environments"] == 1)  # v1's provisioned environment is retired
    resp, body, tail = _invoke_tail(lam, f"{fname}:live")
    assert (resp["ExecutedVersion"], body["version"], body["init"]) == (v2, v2, "provisioned-concurrency")
    assert body["pid"] != before["pid"]
    assert "Init Duration" not in tail
    _, body, _ = _invoke_tail(lam, f"{fname}:{v1}")
    assert body["init"] == "on-demand"

    lam.delete_alias(FunctionName=fname, Name="live")
    assert lam.list_provisioned_concurrency_configs(FunctionName=fname)["ProvisionedConcurrencyConfigs"] == []
    _wait_until(lambda: gw.health()["environments"] == 1)  # only v1's on-demand environment is left
    _, body, _ = _invoke_tail(lam, f"{fname}:{v2}")
    assert body["init"] == "on-demand"


def test_update_alias_keeps_the_provisioned_rules(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    v1 = _publish(lam, fname, "one")
    v2 = _publish(lam, fname, "two")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=v1)
    _put(lam, fname, "live", 1)
    _put(lam, fname, v2, 1)
    try:
        with pytest.raises(ClientError) as exc:  # would provision $LATEST
            lam.update_alias(FunctionName=fname, Name="live", FunctionVersion="$LATEST")
        assert _error(exc)[:2] == (400, "InvalidParameterValueException")
        with pytest.raises(ClientError) as exc:  # would provision version 2 twice
            lam.update_alias(FunctionName=fname, Name="live", FunctionVersion=v2)
        assert _error(exc)[:2] == (409, "ResourceConflictException")
        with pytest.raises(ClientError) as exc:  # routing a share to version 2 as well
            lam.update_alias(FunctionName=fname, Name="live", RoutingConfig={"AdditionalVersionWeights": {v2: 0.5}})
        assert _error(exc)[:2] == (409, "ResourceConflictException")
        assert lam.get_alias(FunctionName=fname, Name="live")["FunctionVersion"] == v1
    finally:
        lam.delete_function(FunctionName=fname)


def test_provisioned_counts_against_the_reservation(gateway_factory: GatewayFactory, fname: str) -> None:
    """Issue 18, cause 6: with the whole reservation provisioned on a version, `$LATEST` is throttled as AWS
    throttles it (TooManyRequestsException, Reason ReservedFunctionConcurrentInvocationLimitExceeded: botocore's
    model), the version runs; the config deleted, `$LATEST` runs again."""
    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=1)
    invoke_json(lam, fname)  # before: the reservation is all on demand
    _put(lam, fname, version, 1)
    _wait_status(lam, fname, version)
    for qualifier in (None, "$LATEST"):
        with pytest.raises(ClientError) as exc:
            lam.invoke(FunctionName=fname, **({"Qualifier": qualifier} if qualifier else {}))
        assert _error(exc) == (429, "TooManyRequestsException", "Rate Exceeded.")
        assert exc.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    for name in (f"{fname}:{version}", f"{fname}:live"):  # the version runs, by number or through an alias
        _, body, _ = _invoke_tail(lam, name)
        assert body["init"] == "provisioned-concurrency"
    lam.delete_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)
    assert invoke_json(lam, fname)[1]["version"] == "$LATEST"
    _put(lam, fname, "live", 1)  # and after a restart, admission knows it from the registry
    lam = gw.restart().client()
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=fname)
    assert _error(exc)[:2] == (429, "TooManyRequestsException")


def test_urls_and_async_events_of_an_alias_use_its_provisioned_slots(
    gateway_factory: GatewayFactory, fname: str
) -> None:
    """With the whole reservation provisioned on an alias, what invokes the alias through other doors — its function
    URL and its asynchronous (Event) invocations — runs on the provisioned slots, as Invoke does: admission is told the
    qualifier, or every one of them would be throttled as on-demand (R - P = 0)."""
    import urllib.request

    from tests.test_e2e_function_urls import url_for

    gw = gateway_factory(env=FAST_RECONCILE)
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    version = _publish(lam, fname, "one")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=1)
    _put(lam, fname, "live", 1)
    _wait_status(lam, fname, "live")
    base = url_for(gw, lam, fname, "live")
    with urllib.request.urlopen(base + "/", timeout=30) as resp:
        assert resp.status == 200 and json.loads(resp.read())["init"] == "provisioned-concurrency"
    lam.invoke(FunctionName=fname, Qualifier="live", InvocationType="Event", Payload=b'{"mark": "event"}')
    # run, not held as throttled (a throttled event would wait for a retry): a second START in the function's log
    wait_for(lambda: function_log(gw, fname).count("START RequestId") >= 2, timeout=20, what="the Event ran")
