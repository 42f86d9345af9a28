"""Versions and aliases through boto3: publish, qualify, route, delete, persist."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json, make_zip

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"

SOURCE = """
import os
MARKER = "m0"
def lambda_handler(event, context):
    return {"marker": MARKER, "pid": os.getpid(), "version": context.function_version,
            "arn": context.invoked_function_arn, "timeout": os.environ.get("TT")}
"""


def _code(marker: str) -> bytes:
    return make_zip({"lambda_function.py": SOURCE.replace('"m0"', f'"{marker}"')})


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_publish_list_and_invoke_versions(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE.replace('"m0"', '"m1"'))
    v1 = lam.publish_version(FunctionName=fname, Description="first")
    assert (v1["Version"], v1["FunctionArn"], v1["Description"]) == ("1", f"{ARN}{fname}:1", "first")
    assert lam.publish_version(FunctionName=fname)["Version"] == "1"  # nothing changed: the latest version
    lam.update_function_code(FunctionName=fname, ZipFile=_code("m2"))
    v2 = lam.publish_version(FunctionName=fname)
    assert v2["Version"] == "2"
    lam.update_function_code(FunctionName=fname, ZipFile=_code("m3"))  # $LATEST moves on

    versions = lam.list_versions_by_function(FunctionName=fname)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    assert versions[0]["FunctionArn"] == f"{ARN}{fname}:$LATEST"

    seen = {}
    for qualifier, marker in (("1", "m1"), ("2", "m2"), ("$LATEST", "m3")):
        resp, body = invoke_json(lam, f"{fname}:{qualifier}")
        assert resp["ExecutedVersion"] == qualifier
        assert (body["marker"], body["version"]) == (marker, qualifier)
        assert body["arn"] == f"{ARN}{fname}:{qualifier}"
        seen[qualifier] = body["pid"]
    assert len(set(seen.values())) == 3  # environments of different versions never mix
    assert invoke_json(lam, fname, Qualifier="1")[1]["marker"] == "m1"
    assert lam.get_function_configuration(FunctionName=fname, Qualifier="1")["Version"] == "1"
    assert lam.get_function(FunctionName=f"{fname}:2")["Configuration"]["CodeSha256"] == v2["CodeSha256"]


def test_version_keeps_its_settings(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Environment={"Variables": {"TT": "one"}})
    lam.publish_version(FunctionName=fname)
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"TT": "two"}})
    assert invoke_json(lam, f"{fname}:1")[1]["timeout"] == "one"
    assert invoke_json(lam, fname)[1]["timeout"] == "two"


def test_publish_checks(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    created = lam.get_function_configuration(FunctionName=fname)  # Active, with its RevisionId
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=fname, CodeSha256=base64.b64encode(hashlib.sha256(b"x").digest()).decode())
    assert _error(exc) == (400, "InvalidParameterValueException")
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=fname, RevisionId="not-the-revision")
    assert _error(exc) == (412, "PreconditionFailedException")
    ok = lam.publish_version(FunctionName=fname, CodeSha256=created["CodeSha256"], RevisionId=created["RevisionId"])
    assert ok["Version"] == "1"
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName="no-such-function-here")
    assert _error(exc) == (404, "ResourceNotFoundException")


def test_publish_on_create_and_update(lam: Any, fname: str) -> None:
    created = create_function(lam, fname, SOURCE, Publish=True)
    assert created["Version"] == "1"
    updated = lam.update_function_code(FunctionName=fname, ZipFile=_code("m9"), Publish=True)
    assert updated["Version"] == "2"
    assert invoke_json(lam, f"{fname}:2")[1]["marker"] == "m9"


def test_delete_version_and_numbers_are_not_reused(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    lam.update_function_code(FunctionName=fname, ZipFile=_code("x"), Publish=True)
    lam.delete_function(FunctionName=fname, Qualifier="2")
    with pytest.raises(ClientError) as exc:
        invoke_json(lam, f"{fname}:2")
    assert _error(exc) == (404, "ResourceNotFoundException")
    lam.update_function_code(FunctionName=fname, ZipFile=_code("y"))
    assert lam.publish_version(FunctionName=fname)["Version"] == "3"
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=fname, Qualifier="$LATEST")
    assert _error(exc) == (400, "InvalidParameterValueException")


def test_alias_lifecycle(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE.replace('"m0"', '"a"'), Publish=True)
    lam.update_function_code(FunctionName=fname, ZipFile=_code("b"), Publish=True)
    alias = lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="1", Description="prod")
    assert (alias["AliasArn"], alias["FunctionVersion"]) == (f"{ARN}{fname}:live", "1")
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="1")
    assert _error(exc) == (409, "ResourceConflictException")
    for name in (f"{fname}:live", f"{ARN}{fname}:live"):
        resp, body = invoke_json(lam, name)
        assert (resp["ExecutedVersion"], body["marker"], body["arn"]) == ("1", "a", f"{ARN}{fname}:live")
    assert invoke_json(lam, fname, Qualifier="live")[1]["marker"] == "a"
    assert lam.get_function_configuration(FunctionName=fname, Qualifier="live")["Version"] == "1"

    with pytest.raises(ClientError) as exc:
        lam.update_alias(FunctionName=fname, Name="live", FunctionVersion="2", RevisionId="stale")
    assert _error(exc) == (412, "PreconditionFailedException")
    updated = lam.update_alias(FunctionName=fname, Name="live", FunctionVersion="2", RevisionId=alias["RevisionId"])
    assert updated["RevisionId"] != alias["RevisionId"] and updated["Description"] == "prod"
    assert invoke_json(lam, f"{fname}:live")[1]["marker"] == "b"

    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=fname, Qualifier="2")  # the alias still points at it
    assert _error(exc) == (409, "ResourceConflictException")
    lam.create_alias(FunctionName=fname, Name="old", FunctionVersion="1")
    assert [a["Name"] for a in lam.list_aliases(FunctionName=fname)["Aliases"]] == ["live", "old"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=fname, FunctionVersion="1")["Aliases"]] == ["old"]
    lam.delete_alias(FunctionName=fname, Name="live")
    with pytest.raises(ClientError) as exc:
        lam.get_alias(FunctionName=fname, Name="live")
    assert _error(exc) == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        invoke_json(lam, f"{fname}:live")
    assert _error(exc) == (404, "ResourceNotFoundException")


def test_weighted_alias_splits_traffic(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    lam.update_function_code(FunctionName=fname, ZipFile=_code("two"), Publish=True)
    lam.create_alias(
        FunctionName=fname, Name="canary", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )  # fmt: skip
    alias = lam.get_alias(FunctionName=fname, Name="canary")
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}
    n = 400
    counts: Counter[str] = Counter()
    for _ in range(n):
        resp, body = invoke_json(lam, f"{fname}:canary")
        counts[resp["ExecutedVersion"]] += 1
        assert body["version"] == resp["ExecutedVersion"]
    share = counts["2"] / n
    assert set(counts) == {"1", "2"}
    assert abs(share - 0.3) < 0.1, counts  # 4+ standard deviations for n=400


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"Name": "123", "FunctionVersion": "1"}, "ValidationException"),
        ({"Name": "bad name", "FunctionVersion": "1"}, "ValidationException"),
        ({"Name": "a", "FunctionVersion": "7"}, "ResourceNotFoundException"),
        ({"Name": "a", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}},
         "InvalidParameterValueException"),
        ({"Name": "a", "FunctionVersion": "$LATEST", "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}}},
         "InvalidParameterValueException"),
        ({"Name": "a", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"1": 2.0}}},
         "ValidationException"),
    ],
)  # fmt: skip
def test_alias_validation(gateway: RunningGateway, fname: str, kwargs: dict[str, Any], expected: str) -> None:
    lam = gateway.client(parameter_validation=False)
    create_function(lam, fname, SOURCE, Publish=True)
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=fname, **kwargs)
    assert exc.value.response["Error"]["Code"] == expected


def test_paginators_and_waiter(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    for i in range(4):
        lam.update_function_code(FunctionName=fname, ZipFile=_code(f"p{i}"), Publish=True)
        lam.create_alias(FunctionName=fname, Name=f"a{i}", FunctionVersion=str(i + 1))
    pages = list(lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=fname, PaginationConfig={"PageSize": 2}))  # fmt: skip
    assert len(pages) == 3
    assert [v["Version"] for p in pages for v in p["Versions"]] == ["$LATEST", "1", "2", "3", "4", "5"]
    pages = list(lam.get_paginator("list_aliases").paginate(FunctionName=fname, PaginationConfig={"PageSize": 3}))
    assert [a["Name"] for p in pages for a in p["Aliases"]] == ["a0", "a1", "a2", "a3"]
    lam.get_waiter("published_version_active").wait(FunctionName=fname, Qualifier="5")


def test_versions_and_aliases_survive_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "durable", SOURCE, Publish=True)
    lam.update_function_code(FunctionName="durable", ZipFile=_code("after"), Publish=True)
    lam.create_alias(FunctionName="durable", Name="live", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})  # fmt: skip
    gw.restart()
    lam = gw.client()
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="durable")["Versions"]] == [
        "$LATEST", "1", "2"]  # fmt: skip
    assert lam.get_alias(FunctionName="durable", Name="live")["RoutingConfig"] == {
        "AdditionalVersionWeights": {"2": 0.5}}  # fmt: skip
    assert invoke_json(lam, "durable:1")[1]["marker"] == "m0"
    lam.update_function_code(FunctionName="durable", ZipFile=_code("later"))
    assert lam.publish_version(FunctionName="durable")["Version"] == "3"


def test_publish_on_update_returns_its_own_code_under_concurrency(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)

    def update(i: int) -> tuple[str, str]:
        zip_bytes = _code(f"c{i}")
        resp = lam.update_function_code(FunctionName=fname, ZipFile=zip_bytes, Publish=True)
        return resp["CodeSha256"], base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()

    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(update, range(12)))
    assert all(got == sent for got, sent in results)


def test_concurrent_alias_updates_lose_nothing(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    lam.update_function_code(FunctionName=fname, ZipFile=_code("z"), Publish=True)
    names = [f"a{i}" for i in range(8)]
    for name in names:
        lam.create_alias(FunctionName=fname, Name=name, FunctionVersion="1")
    jobs = [{"Name": n, "Description": "changed"} for n in names] + [{"Name": n, "FunctionVersion": "2"} for n in names]
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda kw: lam.update_alias(FunctionName=fname, **kw), jobs))
    for name in names:
        alias = lam.get_alias(FunctionName=fname, Name=name)
        assert (alias["Description"], alias["FunctionVersion"]) == ("changed", "2")


def test_paging_survives_a_deleted_marker(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    for name in ("a", "b", "c", "d"):
        lam.create_alias(FunctionName=fname, Name=name, FunctionVersion="1")
    first = lam.list_aliases(FunctionName=fname, MaxItems=2)
    assert [a["Name"] for a in first["Aliases"]] == ["a", "b"]
    lam.delete_alias(FunctionName=fname, Name="b")
    rest = lam.list_aliases(FunctionName=fname, Marker=first["NextMarker"])
    assert [a["Name"] for a in rest["Aliases"]] == ["c", "d"]


def test_qualified_reads_show_the_qualified_arn(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="1")
    got = lam.get_function(FunctionName=fname, Qualifier="live")["Configuration"]
    assert (got["FunctionArn"], got["Version"]) == (f"{ARN}{fname}:live", "1")
    latest = lam.get_function_configuration(FunctionName=fname, Qualifier="$LATEST")
    assert latest["FunctionArn"] == f"{ARN}{fname}:$LATEST"
    assert lam.get_function_configuration(FunctionName=fname)["FunctionArn"] == f"{ARN}{fname}"
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=fname, Qualifier="live")
    assert _error(exc) == (400, "InvalidParameterValueException")
    lam.delete_function(FunctionName=fname, Qualifier="9")  # a version that does not exist: nothing to do
