"""Reserved concurrency through boto3: settings, the account floor, throttling at the limits, persistence."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

SOURCE = """
import os, time
def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"""

RESERVED_EXCEEDED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_EXCEEDED = "ConcurrentInvocationLimitExceeded"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _floor_message(minimum: int) -> str:
    return (
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
        f"below its minimum value of [{minimum}]."
    )


def _limits(lam: Any) -> tuple[int, int]:
    limit = lam.get_account_settings()["AccountLimit"]
    return limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"]


def _burst(gw: RunningGateway, name: str, count: int, sleep: float) -> list[tuple[int, float, dict[str, Any]]]:
    """`count` invocations released at once over raw HTTP: (status, seconds, body) of each."""
    barrier = threading.Barrier(count)
    out: list[tuple[int, float, dict[str, Any]]] = []
    lock = threading.Lock()
    payload = json.dumps({"sleep": sleep}).encode()

    def call() -> None:
        barrier.wait()
        start = time.monotonic()
        status, _, body = gw.request("POST", f"/2015-03-31/functions/{name}/invocations", payload)
        elapsed = time.monotonic() - start
        with lock:
            out.append((status, elapsed, json.loads(body)))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == count
    return out


def test_put_get_delete_and_get_function(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=fname)
    assert "Concurrency" not in lam.get_function(FunctionName=fname)
    put = lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=5)
    assert (put["ResponseMetadata"]["HTTPStatusCode"], put["ReservedConcurrentExecutions"]) == (200, 5)
    assert lam.get_function_concurrency(FunctionName=fname)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=fname)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=2)  # replaces
    assert lam.get_function_concurrency(FunctionName=fname)["ReservedConcurrentExecutions"] == 2
    assert invoke_json(lam, fname)[0]["StatusCode"] == 200
    resp = lam.delete_function_concurrency(FunctionName=fname)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=fname)
    assert "Concurrency" not in lam.get_function(FunctionName=fname)

    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=fname + "-missing", ReservedConcurrentExecutions=1)
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        lam.get_function_concurrency(FunctionName=fname + "-missing")
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")


def test_zero_disables_the_function(lam: Any, gateway: RunningGateway, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as exc:
        invoke_json(lam, fname)
    assert _error(exc)[:2] == (429, "TooManyRequestsException")
    assert exc.value.response["Reason"] == RESERVED_EXCEEDED
    status, headers, body = gateway.request("POST", f"/2015-03-31/functions/{fname}/invocations", b"{}")
    assert (status, headers["x-amzn-ErrorType"]) == (429, "TooManyRequestsException")
    assert json.loads(body)["Reason"] == RESERVED_EXCEEDED
    lam.delete_function_concurrency(FunctionName=fname)
    assert invoke_json(lam, fname)[0]["StatusCode"] == 200


def test_the_unreserved_floor_and_account_settings(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "20", "GATEWAY_UNRESERVED_MIN": "10"})
    lam = gw.client()
    assert _limits(lam) == (20, 20)
    create_function(lam, fname, SOURCE)
    other = fname + "-o"
    create_function(lam, other, SOURCE)
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=11)
    assert _error(exc) == (400, "InvalidParameterValueException", _floor_message(10))
    assert _limits(lam) == (20, 20)  # nothing reserved by the refused call
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=6)
    assert _limits(lam) == (20, 14)
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=other, ReservedConcurrentExecutions=5)
    assert _error(exc) == (400, "InvalidParameterValueException", _floor_message(10))
    lam.put_function_concurrency(FunctionName=other, ReservedConcurrentExecutions=4)
    assert _limits(lam) == (20, 10)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=5)  # lowering is always fine
    assert _limits(lam) == (20, 11)
    lam.delete_function_concurrency(FunctionName=other)
    assert _limits(lam) == (20, 15)
    lam.delete_function_concurrency(FunctionName=fname)
    assert _limits(lam) == (20, 20)


def test_throttles_at_the_reserved_and_unreserved_limits(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "10", "GATEWAY_UNRESERVED_MIN": "5"})
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=3)

    results = _burst(gw, fname, 12, 1.0)
    ok = [r for r in results if r[0] == 200]
    throttled = [r for r in results if r[0] == 429]
    assert (len(ok), len(throttled)) == (3, 9)
    assert all(elapsed >= 1.0 for _, elapsed, _ in ok)
    assert all(elapsed < 0.5 for _, elapsed, _ in throttled), sorted(e for _, e, _ in throttled)
    assert {body["Reason"] for _, _, body in throttled} == {RESERVED_EXCEEDED}
    assert len({body["pid"] for _, _, body in ok}) == 3

    # functions without a reservation share the rest: 10 - 3 = 7
    other = fname + "-o"
    create_function(lam, other, SOURCE)
    assert _limits(lam) == (10, 7)
    results = _burst(gw, other, 9, 1.0)
    ok = [r for r in results if r[0] == 200]
    throttled = [r for r in results if r[0] == 429]
    assert (len(ok), len(throttled)) == (7, 2)
    assert all(elapsed < 0.5 for _, elapsed, _ in throttled)
    assert {body["Reason"] for _, _, body in throttled} == {ACCOUNT_EXCEEDED}
    # all slots are handed back: both functions run again
    assert invoke_json(lam, fname)[0]["StatusCode"] == 200
    assert invoke_json(lam, other)[0]["StatusCode"] == 200
    assert gw.health()["inflight"] == 0


def test_reservation_persists_across_restart(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "20", "GATEWAY_UNRESERVED_MIN": "10"})
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    disabled = fname + "-off"
    create_function(lam, disabled, SOURCE)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=4)
    lam.put_function_concurrency(FunctionName=disabled, ReservedConcurrentExecutions=0)
    gw.restart()
    lam = gw.client()
    assert lam.get_function_concurrency(FunctionName=fname)["ReservedConcurrentExecutions"] == 4
    assert lam.get_function(FunctionName=fname)["Concurrency"] == {"ReservedConcurrentExecutions": 4}
    assert _limits(lam) == (20, 16)
    with pytest.raises(ClientError) as exc:  # enforced, not only reported
        invoke_json(lam, disabled)
    assert exc.value.response["Reason"] == RESERVED_EXCEEDED
    with pytest.raises(ClientError) as exc:  # and the floor still counts the loaded reservations
        lam.put_function_concurrency(FunctionName=disabled, ReservedConcurrentExecutions=7)
    assert _error(exc) == (400, "InvalidParameterValueException", _floor_message(10))


def test_deleting_the_function_drops_its_reservation(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "20", "GATEWAY_UNRESERVED_MIN": "10"})
    lam = gw.client()
    create_function(lam, fname, SOURCE)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=0)
    assert _limits(lam) == (20, 20)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=7)
    assert _limits(lam) == (20, 13)
    lam.delete_function(FunctionName=fname)
    assert _limits(lam) == (20, 20)
    create_function(lam, fname, SOURCE)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=fname)
    assert "Concurrency" not in lam.get_function(FunctionName=fname)
    assert invoke_json(lam, fname)[0]["StatusCode"] == 200
    # and the whole floor is free again
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=10)
    gw.restart()
    lam = gw.client()
    assert lam.get_function_concurrency(FunctionName=fname)["ReservedConcurrentExecutions"] == 10
