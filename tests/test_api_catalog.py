"""The operations catalog: OPERATIONS.md against the botocore model, real routes, and the 501 fallback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from botocore.exceptions import ClientError

from gateway.api import catalog
from gateway.api.catalog import IMPLEMENTED, NOT_APPLICABLE, PLANNED, Operation
from gateway.api.http import error_middleware
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import RunningGateway

ROOT = Path(__file__).resolve().parent.parent
ARN = "arn:aws:lambda:us-east-1:123456789012"

#: a plausible value for every URI variable of the model (an unknown one fails the test: add it here)
URI_VALUES = {
    "FunctionName": "catalog-probe",
    "Name": "live",
    "StatementId": "sid-1",
    "UUID": "a1b2c3d4-0000-4000-8000-000000000001",
    "Resource": f"{ARN}:function:catalog-probe",
    "ResourceArn": f"{ARN}:function:catalog-probe",
    "LayerName": "catalog-probe-layer",
    "VersionNumber": "1",
    "CodeSigningConfigArn": f"{ARN}:code-signing-config:csc-0123456789abcdef0",
    "CapacityProviderName": "catalog-probe-cp",
    "CallbackId": "Y2FsbGJhY2s/aWQ+MQ==",  # base64: '/' and '+' travel percent-encoded
    "DurableExecutionArn": f"{ARN}:function:catalog-probe:$LATEST/durable-execution/run/1",
}
#: query members an implemented operation requires before it can answer anything
REQUIRED_QUERY = {
    "GetLayerVersionByArn": {"Arn": f"{ARN}:layer:catalog-probe-layer:1"},
    "UntagResource": {"tagKeys": "k"},
}
#: messages of the catalog's fallback and of the error middleware for paths and methods no route serves
FALLBACK_MESSAGES = re.compile(
    r"is not implemented by this gateway|is not an operation of the Lambda API|not supported on"
)

OPERATIONS = catalog.load_operations()
IMPLEMENTED_OPS = [op for op in OPERATIONS if catalog.status_of(op.name).state == IMPLEMENTED]
OTHER_OPS = [op for op in OPERATIONS if catalog.status_of(op.name).state != IMPLEMENTED]


def request_path(op: Operation) -> str:
    """The operation's path with its variables filled (percent-encoded as botocore does) and its query."""
    path = re.sub(r"\{([^{}+]+)\+?\}", lambda m: quote(URI_VALUES[m[1]], safe=""), op.uri.partition("?")[0])
    query = {**op.query, **REQUIRED_QUERY.get(op.name, {})}
    return path + ("?" + urlencode(query) if query else "")


# -- the table ------------------------------------------------------------------------------------


def test_checked_in_operations_cover_the_installed_model() -> None:
    model = catalog.model_operations()
    assert model is not None, "botocore is a test dependency"
    checked_in = {op.name: op for op in OPERATIONS}
    missing = [op.name for op in model if op.name not in checked_in]
    assert not missing, f"run python -m gateway.api.catalog: operations.json lacks {missing}"
    changed = [op for op in model if checked_in[op.name] != op]
    assert not changed, f"run python -m gateway.api.catalog: the model changed {changed}"


def test_every_operation_has_a_state_and_no_state_is_stale() -> None:
    names = {op.name for op in OPERATIONS}
    for op in OPERATIONS:
        status = catalog.status_of(op.name)
        assert status.state in (IMPLEMENTED, PLANNED, NOT_APPLICABLE), op.name
        assert status.note, op.name
    assert set(catalog.STATUS) <= names, set(catalog.STATUS) - names


def test_operations_md_lists_every_model_operation_with_its_state() -> None:
    text = (ROOT / "OPERATIONS.md").read_text()
    assert text == catalog.render_markdown(OPERATIONS), "OPERATIONS.md is stale: run python -m gateway.api.catalog"
    model = catalog.model_operations() or ()
    for op in (*OPERATIONS, *model):
        state = catalog.status_of(op.name).state
        row = re.search(rf"^\| {op.name} \| `{re.escape(op.method)} {re.escape(op.uri)}` \| ([a-z ]+) \|", text, re.M)
        assert row is not None, f"{op.name} is not in OPERATIONS.md"
        assert row[1] == state


def test_operations_json_is_compact_and_sorted() -> None:
    rows = json.loads(catalog.OPERATIONS_JSON.read_text())
    assert all(len(row) == 3 for row in rows)
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)


def test_the_brief_s_implemented_operations_are_marked_implemented() -> None:
    expected = {
        "CreateFunction", "GetFunction", "GetFunctionConfiguration", "ListFunctions", "UpdateFunctionCode",
        "UpdateFunctionConfiguration", "DeleteFunction", "Invoke", "PublishVersion", "ListVersionsByFunction",
        "CreateAlias", "GetAlias", "UpdateAlias", "DeleteAlias", "ListAliases", "PublishLayerVersion",
        "GetLayerVersion", "GetLayerVersionByArn", "ListLayers", "ListLayerVersions", "DeleteLayerVersion",
        "TagResource", "UntagResource", "ListTags", "GetAccountSettings",
        "PutFunctionConcurrency", "GetFunctionConcurrency", "DeleteFunctionConcurrency",
        "PutProvisionedConcurrencyConfig", "GetProvisionedConcurrencyConfig", "DeleteProvisionedConcurrencyConfig",
        "ListProvisionedConcurrencyConfigs",
        "InvokeWithResponseStream",  # issue 14
        "InvokeAsync",  # issue 15
        "PutFunctionEventInvokeConfig", "GetFunctionEventInvokeConfig", "UpdateFunctionEventInvokeConfig",
        "DeleteFunctionEventInvokeConfig", "ListFunctionEventInvokeConfigs",  # issue 15
        "CreateEventSourceMapping", "GetEventSourceMapping", "UpdateEventSourceMapping", "DeleteEventSourceMapping",
        "ListEventSourceMappings",  # issue 16
        "AddPermission", "GetPolicy", "RemovePermission", "AddLayerVersionPermission", "GetLayerVersionPolicy",
        "RemoveLayerVersionPermission",  # issue 17
        "CreateFunctionUrlConfig", "GetFunctionUrlConfig", "UpdateFunctionUrlConfig", "DeleteFunctionUrlConfig",
        "ListFunctionUrlConfigs",  # issue 17
        "CreateCodeSigningConfig", "GetCodeSigningConfig", "UpdateCodeSigningConfig", "DeleteCodeSigningConfig",
        "ListCodeSigningConfigs", "ListFunctionsByCodeSigningConfig", "PutFunctionCodeSigningConfig",
        "GetFunctionCodeSigningConfig", "DeleteFunctionCodeSigningConfig",  # issue 18
    }  # fmt: skip
    assert {op.name for op in IMPLEMENTED_OPS} == expected


# -- routes of the real application ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> web.Application:
    """The gateway's application, routed but not started (no storage, no runtimes)."""
    return create_app(Settings())


@pytest.mark.parametrize("op", IMPLEMENTED_OPS, ids=lambda op: op.name)
async def test_implemented_operation_is_served_by_a_real_route(app: web.Application, op: Operation) -> None:
    request = make_mocked_request(op.method, request_path(op), app=app)
    match = await app.router.resolve(request)
    assert match.http_exception is None, f"{op.name}: no route for {op.method} {op.uri}"
    assert not catalog.is_fallback(match.handler), f"{op.name} is answered by the catalog's fallback"


@pytest.mark.parametrize("op", OTHER_OPS, ids=lambda op: op.name)
async def test_other_operation_is_answered_by_the_fallback(app: web.Application, op: Operation) -> None:
    request = make_mocked_request(op.method, request_path(op), app=app)
    match = await app.router.resolve(request)
    assert match.http_exception is None, f"{op.name}: no route for {op.method} {op.uri}"
    assert catalog.is_fallback(match.handler), (
        f"{op.name} is served by a real route: mark it implemented in gateway/api/catalog.py"
    )


# -- a live gateway -------------------------------------------------------------------------------------


def _error(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("op", OTHER_OPS, ids=lambda op: op.name)
def test_not_implemented_operation_answers_501_naming_it(gateway: RunningGateway, op: Operation) -> None:
    body = b"{}" if op.method in ("POST", "PUT") else None
    status, headers, raw = gateway.request(op.method, request_path(op), body, {"Content-Type": "application/json"})
    assert status == 501, (op.name, status, raw)
    assert headers.get("x-amzn-ErrorType") == "NotImplementedException"
    error = _error(raw)
    assert error["message"] == catalog.not_implemented_message(op.name)
    assert error["message"].startswith(op.name + " is not implemented by this gateway")


@pytest.mark.parametrize("op", IMPLEMENTED_OPS, ids=lambda op: op.name)
def test_implemented_operation_answers_from_its_route(gateway: RunningGateway, op: Operation) -> None:
    body = b"{}" if op.method in ("POST", "PUT") else None
    status, headers, raw = gateway.request(op.method, request_path(op), body, {"Content-Type": "application/json"})
    if status >= 400:
        assert "x-amzn-ErrorType" in headers, (op.name, status, raw)
        assert not FALLBACK_MESSAGES.search(_error(raw).get("message", "")), (op.name, raw)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/2015-03-31/no-such-thing"), ("POST", "/"), ("PATCH", "/2015-03-31/functions/f"), ("GET", "/x%2Fy")],
)
def test_paths_outside_the_model_answer_a_lambda_shaped_error(gateway: RunningGateway, method: str, path: str) -> None:
    status, headers, raw = gateway.request(method, path)
    assert status == 501
    assert headers.get("x-amzn-ErrorType") == "NotImplementedException"
    assert _error(raw)["Type"] == "Service"
    assert _error(raw)["message"]


def test_boto3_raises_the_named_error_without_retrying(lam: Any) -> None:
    with pytest.raises(ClientError) as info:
        lam.get_runtime_management_config(FunctionName="catalog-probe")
    err = info.value.response
    assert err["Error"]["Code"] == "NotImplementedException"
    assert err["Error"]["Message"] == catalog.not_implemented_message("GetRuntimeManagementConfig")
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert err["ResponseMetadata"]["RetryAttempts"] == 0
    with pytest.raises(ClientError, match="ListCapacityProviders is not implemented"):
        lam.list_capacity_providers()
    with pytest.raises(ClientError, match="GetDurableExecution is not implemented"):
        lam.get_durable_execution(DurableExecutionArn=URI_VALUES["DurableExecutionArn"])


# -- the catalog on a small application ---------------------------------------------------------------


async def test_existing_routes_are_not_shadowed_and_static_queries_pick_the_operation() -> None:
    async def list_layers_or_get_by_arn(request: web.Request) -> web.Response:
        return web.json_response({"real": request.query.get("find", "ListLayers")})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/2018-10-31/layers", list_layers_or_get_by_arn)
    app.router.add_get("/2015-03-31/functions/{name:[^/]+}/policy", list_layers_or_get_by_arn)  # other names, regex
    catalog.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        for path in ("/2018-10-31/layers", "/2018-10-31/layers?find=LayerVersion&Arn=x"):
            resp = await client.get(path)
            assert resp.status == 200, await resp.text()
        assert (await client.get("/2015-03-31/functions/f/policy")).status == 200
        resp = await client.post("/2015-03-31/functions/f/policy", json={})
        assert (await resp.json())["message"] == catalog.not_implemented_message("AddPermission")
        pc = "/2019-09-30/functions/f/provisioned-concurrency"
        resp = await client.get(pc + "?List=ALL")
        assert resp.status == 501
        assert (await resp.json())["message"] == catalog.not_implemented_message("ListProvisionedConcurrencyConfigs")
        resp = await client.get(pc + "?Qualifier=live")
        assert (await resp.json())["message"] == catalog.not_implemented_message("GetProvisionedConcurrencyConfig")
        resp = await client.put(pc + "?Qualifier=live", json={})
        assert (await resp.json())["message"] == catalog.not_implemented_message("PutProvisionedConcurrencyConfig")


def test_messages_say_planned_or_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(catalog.STATUS, "SomePlannedOperation", catalog.Status(PLANNED, "a later issue"))
    assert catalog.not_implemented_message("SomePlannedOperation") == (
        "SomePlannedOperation is not implemented by this gateway yet (planned: a later issue)"
    )
    assert "(not applicable: runtimes are" in catalog.not_implemented_message("PutRuntimeManagementConfig")
    assert catalog.not_implemented_message("SomeFutureOperation") == (
        "SomeFutureOperation is not implemented by this gateway yet"
    )


def test_check_mode_reports_no_drift(capsys: pytest.CaptureFixture[str]) -> None:
    assert catalog.main(["--check"]) == 0, capsys.readouterr().err
