"""boto3's paginators and waiters for Lambda, unchanged, against the gateway."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import WaiterError

from tests.conftest import GatewayFactory, create_function

SOURCE = "def lambda_handler(event, context):\n    return event\n"
FAST = {"Delay": 1, "MaxAttempts": 5}


def test_list_functions_paginator_visits_every_function_once(gateway_factory: GatewayFactory) -> None:
    client = gateway_factory().client()
    names = [f"paged-{i:02d}" for i in range(7)]
    for name in names:
        create_function(client, name, SOURCE)
    pages = list(client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["Functions"]) for p in pages] == [3, 3, 1]
    assert [f["FunctionName"] for p in pages for f in p["Functions"]] == names
    # MaxItems across pages, resumed from the token botocore hands back
    first = client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2, "MaxItems": 5})
    result = first.build_full_result()
    assert [f["FunctionName"] for f in result["Functions"]] == names[:5]
    rest = client.get_paginator("list_functions").paginate(PaginationConfig={"StartingToken": result["NextToken"]})
    assert [f["FunctionName"] for f in rest.build_full_result()["Functions"]] == names[5:]


def test_list_versions_and_aliases_paginators(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    for i in range(3):
        lam.update_function_configuration(FunctionName=fname, Timeout=3 + i + 1)
        number = lam.publish_version(FunctionName=fname)["Version"]
        lam.create_alias(FunctionName=fname, Name=f"a{i}", FunctionVersion=number)
    versions = lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=fname, PaginationConfig={"PageSize": 2}
    )
    assert [v["Version"] for v in versions.build_full_result()["Versions"]] == ["$LATEST", "1", "2", "3"]
    aliases = lam.get_paginator("list_aliases").paginate(FunctionName=fname, PaginationConfig={"PageSize": 2})
    assert [a["Name"] for a in aliases.build_full_result()["Aliases"]] == ["a0", "a1", "a2"]


def test_function_exists_waits_for_a_function_created_meanwhile(lam: Any, gateway: Any, fname: str) -> None:
    creator = gateway.client()
    timer = threading.Timer(1.5, create_function, (creator, fname, SOURCE))
    timer.start()
    try:
        started = time.monotonic()
        lam.get_waiter("function_exists").wait(FunctionName=fname, WaiterConfig=FAST)
        assert time.monotonic() - started >= 1.0  # it had to retry on ResourceNotFoundException
    finally:
        timer.join()


def test_function_exists_gives_up_on_a_missing_function(lam: Any) -> None:
    with pytest.raises(WaiterError, match="Max attempts exceeded"):
        lam.get_waiter("function_exists").wait(
            FunctionName="never-created", WaiterConfig={"Delay": 1, "MaxAttempts": 2}
        )


def test_active_and_updated_waiters(lam: Any, fname: str) -> None:
    """A deploy tool's sequence as on AWS (issue 18, cause 7): CreateFunction answers Pending and
    UpdateFunctionConfiguration InProgress, the tool waits with botocore's own waiters, which succeed at their
    first poll here (the gateway's work is done before it answers: a waiter's Delay is never spent)."""
    created = create_function(lam, fname, SOURCE)
    assert created["State"] == "Pending" and "LastUpdateStatus" not in created
    started = time.monotonic()
    for waiter in ("function_active_v2", "function_active", "function_updated_v2", "function_updated"):
        lam.get_waiter(waiter).wait(FunctionName=fname, WaiterConfig=FAST)
    updated = lam.update_function_configuration(FunctionName=fname, Timeout=10)
    assert updated["LastUpdateStatus"] == "InProgress"
    lam.get_waiter("function_updated_v2").wait(FunctionName=fname, WaiterConfig=FAST)
    assert time.monotonic() - started < FAST["Delay"]  # no waiter had to poll twice
    assert lam.get_function(FunctionName=fname)["Configuration"]["Timeout"] == 10
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName=fname, Qualifier=version, WaiterConfig=FAST)
