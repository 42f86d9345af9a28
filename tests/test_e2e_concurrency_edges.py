"""Edges of the concurrency settings found in review: races, counting, restarts, shared environments."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, create_function, invoke_json

SLOW_INIT = """
import os, time
time.sleep(1.0)
def lambda_handler(event, context):
    return {"pid": os.getpid()}
"""

ASYNC = """
import asyncio, os
async def lambda_handler(event, context):
    await asyncio.sleep(0.05)
    return {"pid": os.getpid()}
"""

SHARED = {"LambdaManagedInstancesCapacityProviderConfig": {
    "CapacityProviderArn": "arn:aws:lambda:us-east-1:123456789012:capacity-provider:p",
    "PerExecutionEnvironmentMaxConcurrency": 4}}  # fmt: skip


def _wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_an_environment_in_init_counts_once_against_node_memory(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_MEMORY_BUDGET_MB": "512"})
    lam = gw.client()
    create_function(lam, "slowinit", SLOW_INIT, MemorySize=256)
    with ThreadPoolExecutor(2) as ex:  # two 256 MB cold starts fill 512 MB exactly, while both are in Init
        results = list(ex.map(lambda _: invoke_json(lam, "slowinit"), range(2)))
    assert all("FunctionError" not in resp for resp, _ in results)
    assert len({body["pid"] for _, body in results}) == 2


def test_concurrent_reservations_cannot_break_the_floor(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "1000", "GATEWAY_UNRESERVED_MIN": "100"})
    lam = gw.client()
    for name in ("r1", "r2"):
        create_function(lam, name, ASYNC)

    def reserve(name: str) -> str:
        try:
            lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=850)
            return "ok"
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])

    with ThreadPoolExecutor(2) as ex:
        outcomes = sorted(ex.map(reserve, ("r1", "r2")))
    assert outcomes == ["InvalidParameterValueException", "ok"]
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 150


def test_provisioned_environments_are_back_right_after_a_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_REAP_INTERVAL": "30"})  # no reaper tick to lean on
    lam = gw.client()
    create_function(lam, "warm", ASYNC.replace("async def", "def").replace("await asyncio.sleep(0.05)", "pass"),
                    Publish=True)  # fmt: skip
    lam.put_provisioned_concurrency_config(FunctionName="warm", Qualifier="1", ProvisionedConcurrentExecutions=1)
    status = lambda: lam.get_provisioned_concurrency_config(FunctionName="warm", Qualifier="1")["Status"]  # noqa: E731
    _wait_until(lambda: status() == "READY")
    gw.restart()
    lam = gw.client()
    _wait_until(lambda: status() == "READY", timeout=5.0)


def test_provisioned_shared_environments_are_retired(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_REAP_INTERVAL": "0.2"})
    lam = gw.client()
    create_function(lam, "sharedprov", ASYNC, Publish=True, CapacityProviderConfig=SHARED)
    lam.put_provisioned_concurrency_config(FunctionName="sharedprov", Qualifier="1", ProvisionedConcurrentExecutions=2)
    _wait_until(lambda: gw.health()["environments"] == 2)
    lam.put_provisioned_concurrency_config(FunctionName="sharedprov", Qualifier="1", ProvisionedConcurrentExecutions=1)
    _wait_until(lambda: gw.health()["environments"] == 1)
    lam.delete_provisioned_concurrency_config(FunctionName="sharedprov", Qualifier="1")
    _wait_until(lambda: gw.health()["environments"] == 0)
