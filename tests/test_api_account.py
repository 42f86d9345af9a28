"""GetAccountSettings: Lambda's limits, the gateway's concurrency setting, and usage counted from what is stored."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway, create_function, make_zip

SOURCE = "def lambda_handler(event, context):\n    return event\n"


def settings(client: Any) -> dict[str, Any]:
    resp = dict(client.get_account_settings())
    resp.pop("ResponseMetadata")
    return resp


def test_fresh_gateway_reports_its_settings_and_no_usage(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_ACCOUNT_CONCURRENCY": "7"})
    assert settings(gw.client()) == {
        "AccountLimit": {
            "TotalCodeSize": 80530636800,
            "CodeSizeUnzipped": 262144000,
            "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": 7,
            "UnreservedConcurrentExecutions": 7,
        },
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
    }


def test_usage_counts_functions_versions_and_layers(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    client = gw.client()
    first = create_function(client, "first", SOURCE)
    second = create_function(client, "second", SOURCE, files={"data.bin": bytes(range(256)) * 64})
    usage = settings(client)["AccountUsage"]
    assert usage == {"FunctionCount": 2, "TotalCodeSize": first["CodeSize"] + second["CodeSize"]}

    version = client.publish_version(FunctionName="first")  # a published version keeps its own copy of the code
    usage = settings(client)["AccountUsage"]
    assert usage == {"FunctionCount": 2, "TotalCodeSize": 2 * first["CodeSize"] + second["CodeSize"]}
    assert version["CodeSize"] == first["CodeSize"]

    layer = client.publish_layer_version(LayerName="libs", Content={"ZipFile": make_zip({"python/lib.py": "X = 1"})})
    usage = settings(client)["AccountUsage"]
    assert usage["TotalCodeSize"] == 2 * first["CodeSize"] + second["CodeSize"] + layer["Content"]["CodeSize"]

    client.delete_function(FunctionName="first")  # with its versions
    assert settings(client)["AccountUsage"] == {
        "FunctionCount": 1,
        "TotalCodeSize": second["CodeSize"] + layer["Content"]["CodeSize"],
    }


def test_shared_gateway_counts_every_function(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    listed = [f for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]
    assert settings(lam)["AccountUsage"]["FunctionCount"] == len(listed)
    limit = settings(lam)["AccountLimit"]
    assert limit["ConcurrentExecutions"] == limit["UnreservedConcurrentExecutions"] == 1000


def test_raw_http_shape(gateway: RunningGateway) -> None:
    status, headers, body = gateway.request("GET", "/2016-08-19/account-settings")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert set(data) == {"AccountLimit", "AccountUsage"}
    assert all(isinstance(v, int) for part in data.values() for v in part.values())
