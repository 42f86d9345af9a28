"""Function URL configs through boto3 and the AWS CLI on a live gateway: the five operations on `$LATEST` and an
alias, every bound with Lambda's wording, conflicts, missing things, versions refused, paging, restarts and the URLs
going with their function or alias."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
SOURCE = "def lambda_handler(event, context):\n    return event\n"
URL_RE = re.compile(r"http://([a-z0-9]{32})\.lambda-url\.us-east-1\.localhost:(\d+)/")
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
NO_RESOURCE = "The resource you requested does not exist."
NO_FUNCTION = "Function does not exist"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _with_alias(lam: Any, name: str) -> str:
    create_function(lam, name, SOURCE)
    version = str(lam.publish_version(FunctionName=name)["Version"])
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    return version


# -- the operations ------------------------------------------------------------------------------------------


def test_create_get_update_list_delete(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    created = lam.create_function_url_config(FunctionName=fname, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    match = URL_RE.fullmatch(created["FunctionUrl"])
    assert match is not None and int(match[2]) == gateway.port
    assert created["FunctionArn"] == ARN + fname  # unqualified for $LATEST
    assert created["AuthType"] == "NONE" and created["InvokeMode"] == "BUFFERED"
    assert TIME_RE.fullmatch(created["CreationTime"]) and "LastModifiedTime" not in created and "Cors" not in created

    got = lam.get_function_url_config(FunctionName=fname)
    assert got["FunctionUrl"] == created["FunctionUrl"] and got["CreationTime"] == created["CreationTime"]
    assert TIME_RE.fullmatch(got["LastModifiedTime"])
    assert lam.get_function_url_config(FunctionName=ARN + fname)["FunctionUrl"] == created["FunctionUrl"]

    cors = {"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET", "POST"], "MaxAge": 300}
    updated = lam.update_function_url_config(FunctionName=fname, AuthType="AWS_IAM", Cors=cors)
    assert updated["AuthType"] == "AWS_IAM" and updated["Cors"] == cors
    cleared = lam.update_function_url_config(FunctionName=fname, Cors={})  # an empty Cors clears it
    assert "Cors" not in cleared and "Cors" not in lam.get_function_url_config(FunctionName=fname)
    lam.update_function_url_config(FunctionName=fname, Cors=cors)
    assert updated["FunctionUrl"] == created["FunctionUrl"]  # a URL never changes
    assert updated["LastModifiedTime"] >= got["LastModifiedTime"]
    again = lam.update_function_url_config(FunctionName=fname, InvokeMode="RESPONSE_STREAM")
    assert again["AuthType"] == "AWS_IAM" and again["Cors"] == cors and again["InvokeMode"] == "RESPONSE_STREAM"

    listed = lam.list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"]
    assert [u["FunctionUrl"] for u in listed] == [created["FunctionUrl"]]
    assert listed[0]["InvokeMode"] == "RESPONSE_STREAM" and "LastModifiedTime" in listed[0]

    deleted = lam.delete_function_url_config(FunctionName=fname)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as info:
        lam.get_function_url_config(FunctionName=fname)
    assert _error(info) == (404, "ResourceNotFoundException", NO_RESOURCE)
    assert lam.list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"] == []
    recreated = lam.create_function_url_config(FunctionName=fname, AuthType="NONE")
    assert recreated["FunctionUrl"] != created["FunctionUrl"]  # a new URL, the old one is gone for good


def test_a_second_url_conflicts(lam: Any, fname: str) -> None:
    _with_alias(lam, fname)
    lam.create_function_url_config(FunctionName=fname, AuthType="NONE")
    with pytest.raises(ClientError) as info:
        lam.create_function_url_config(FunctionName=fname, AuthType="AWS_IAM")
    assert _error(info) == (
        409,
        "ResourceConflictException",
        f"Failed to create function url config for [functionArn = {ARN}{fname}]. Error message:  "
        "FunctionUrlConfig exists for this Lambda function",
    )
    lam.create_function_url_config(FunctionName=fname, Qualifier="live", AuthType="NONE")
    with pytest.raises(ClientError) as info:
        lam.create_function_url_config(FunctionName=f"{fname}:live", AuthType="NONE")
    assert _error(info)[0] == 409 and f"[functionArn = {ARN}{fname}:live]" in _error(info)[2]


def test_an_alias_has_its_own_url_and_versions_are_refused(lam: Any, fname: str) -> None:
    version = _with_alias(lam, fname)
    plain = lam.create_function_url_config(FunctionName=fname, AuthType="NONE")
    aliased = lam.create_function_url_config(FunctionName=fname, Qualifier="live", AuthType="AWS_IAM")
    assert aliased["FunctionArn"] == f"{ARN}{fname}:live"
    assert aliased["FunctionUrl"] != plain["FunctionUrl"]
    assert lam.get_function_url_config(FunctionName=fname, Qualifier="live")["AuthType"] == "AWS_IAM"
    assert lam.get_function_url_config(FunctionName=fname)["AuthType"] == "NONE"
    version_error = (
        f"1 validation error detected: Value '{version}' at 'qualifier' failed to satisfy constraint: Member must "
        r"satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)"
    )
    with pytest.raises(ClientError) as info:  # the model's pattern has no `$`: the unqualified function is $LATEST's
        lam.get_function_url_config(FunctionName=fname, Qualifier="$LATEST")
    assert _error(info) == (400, "ValidationException", version_error.replace(f"'{version}'", "'$LATEST'"))
    for call, extra in (
        (lam.create_function_url_config, {"AuthType": "NONE"}),
        (lam.get_function_url_config, {}),
        (lam.update_function_url_config, {"AuthType": "NONE"}),
        (lam.delete_function_url_config, {}),
    ):
        with pytest.raises(ClientError) as info:
            call(FunctionName=fname, Qualifier=version, **extra)
        assert _error(info) == (400, "ValidationException", version_error)
    with pytest.raises(ClientError) as info:
        lam.get_function_url_config(FunctionName=f"{fname}:{version}")
    assert _error(info) == (400, "ValidationException", version_error)


def test_missing_functions_aliases_and_urls(lam: Any, fname: str) -> None:
    cases = [
        (lam.create_function_url_config, {"FunctionName": "no-such-function", "AuthType": "NONE"}, NO_FUNCTION),
        (lam.update_function_url_config, {"FunctionName": "no-such-function", "AuthType": "NONE"}, NO_FUNCTION),
        (lam.get_function_url_config, {"FunctionName": "no-such-function"}, NO_RESOURCE),
        (lam.delete_function_url_config, {"FunctionName": "no-such-function"}, NO_RESOURCE),
        (lam.list_function_url_configs, {"FunctionName": "no-such-function"}, NO_FUNCTION),
    ]
    create_function(lam, fname, SOURCE)
    cases += [
        (lam.create_function_url_config, {"FunctionName": fname, "Qualifier": "nope", "AuthType": "NONE"}, NO_FUNCTION),
        (lam.update_function_url_config, {"FunctionName": fname, "Qualifier": "nope"}, NO_FUNCTION),
        (lam.get_function_url_config, {"FunctionName": fname}, NO_RESOURCE),
        (lam.update_function_url_config, {"FunctionName": fname, "AuthType": "NONE"}, NO_RESOURCE),
        (lam.delete_function_url_config, {"FunctionName": fname}, NO_RESOURCE),
    ]
    for call, params, message in cases:
        with pytest.raises(ClientError) as info:
            call(**params)
        assert _error(info) == (404, "ResourceNotFoundException", message), (call, params)


# -- validation ------------------------------------------------------------------------------------------------


def _raw(gateway: RunningGateway, method: str, name: str, body: Any, query: str = "") -> tuple[int, str, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, headers, raw = gateway.request(
        method, f"/2021-10-31/functions/{name}/url{query}", data, {"Content-Type": "application/json"}
    )
    answer = json.loads(raw)
    return status, headers.get("x-amzn-ErrorType", ""), answer.get("message") or answer.get("Message")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Value null at 'authType' failed to satisfy constraint: Member must not be null"),
        ({"AuthType": "PUBLIC"}, "Value 'PUBLIC' at 'authType' failed to satisfy constraint: Member must satisfy "
         "enum value set: [AWS_IAM, NONE]"),
        ({"AuthType": "NONE", "InvokeMode": "STREAM"}, "Value 'STREAM' at 'invokeMode' failed to satisfy constraint: "
         "Member must satisfy enum value set: [RESPONSE_STREAM, BUFFERED]"),
        ({"AuthType": "NONE", "Cors": {"MaxAge": 86401}}, "Value '86401' at 'cors.maxAge' failed to satisfy "
         "constraint: Member must have value less than or equal to 86400"),
        ({"AuthType": "NONE", "Cors": {"MaxAge": -1}}, "Value '-1' at 'cors.maxAge' failed to satisfy constraint: "
         "Member must have value greater than or equal to 0"),
        ({"AuthType": "NONE", "Cors": {"AllowMethods": ["GET", "OPTIONS"]}}, "Value '[GET, OPTIONS]' at "
         "'cors.allowMethods' failed to satisfy constraint: Member must satisfy constraint: [Member must have length "
         "less than or equal to 6, Member must have length greater than or equal to 0, Member must satisfy regular "
         "expression pattern: .*, Member must not be null]"),
        ({"AuthType": "NONE", "Cors": {"AllowMethods": ["GET"] * 7}}, "Value '[GET, GET, GET, GET, GET, GET, GET]' "
         "at 'cors.allowMethods' failed to satisfy constraint: Member must have length less than or equal to 6"),
        ({"AuthType": "NONE", "Cors": {"AllowOrigins": [""]}}, "Value '[]' at 'cors.allowOrigins' failed to satisfy "
         "constraint: Member must satisfy constraint: [Member must have length less than or equal to 253, Member "
         "must have length greater than or equal to 1, Member must satisfy regular expression pattern: .*, Member "
         "must not be null]"),
        ({"AuthType": "NONE", "Cors": {"AllowHeaders": ["x"] * 101}}, "at 'cors.allowHeaders' failed to satisfy "
         "constraint: Member must have length less than or equal to 100"),
        ({"AuthType": "NONE", "Cors": {"ExposeHeaders": ["x" * 1025]}}, "at 'cors.exposeHeaders' failed to satisfy "
         "constraint: Member must satisfy constraint: [Member must have length less than or equal to 1024"),
    ],
)  # fmt: skip
def test_the_model_s_constraints(gateway: RunningGateway, lam: Any, fname: str, body: Any, message: str) -> None:
    create_function(lam, fname, SOURCE)
    status, kind, said = _raw(gateway, "POST", fname, body)
    assert (status, kind) == (400, "ValidationException"), said
    assert said.startswith("1 validation error detected: ") and message in said
    assert lam.list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"] == []


def test_violations_are_reported_together_and_shapes_refused(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    status, kind, said = _raw(gateway, "POST", fname, {"AuthType": "X", "InvokeMode": "Y"})
    assert (status, kind) == (400, "ValidationException") and said.startswith("2 validation errors detected: ")
    for bad in ({"AuthType": "NONE", "Extra": 1}, {"AuthType": "NONE", "Cors": {"AllowOrigin": ["*"]}},
                {"AuthType": "NONE", "Cors": {"AllowOrigins": "*"}}, {"AuthType": "NONE", "Cors": {"MaxAge": "1"}},
                {"AuthType": "NONE", "Cors": {"AllowOrigins": [1]}}, {"AuthType": 1}, b"not json"):  # fmt: skip
        status, kind, said = _raw(gateway, "POST", fname, bad)
        assert (status, kind) == (400, "InvalidRequestContentException"), (bad, said)
    with pytest.raises(ClientError) as info:  # botocore checks types only: the gateway refuses the value
        lam.create_function_url_config(FunctionName=fname, AuthType="BASIC")
    assert _error(info)[1] == "ValidationException"


# -- lists, restarts, deletions ------------------------------------------------------------------------------


def test_list_pages(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    version = lam.publish_version(FunctionName=fname)["Version"]
    aliases = ["a1", "a2", "a3"]
    for alias in aliases:
        lam.create_alias(FunctionName=fname, Name=alias, FunctionVersion=version)
        lam.create_function_url_config(FunctionName=fname, Qualifier=alias, AuthType="NONE")
    lam.create_function_url_config(FunctionName=fname, AuthType="AWS_IAM")
    everything = lam.list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"]
    assert [u["FunctionArn"] for u in everything] == [ARN + fname] + [f"{ARN}{fname}:{a}" for a in aliases]
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = lam.list_function_url_configs(FunctionName=fname, MaxItems=1, **marker)
        assert len(page["FunctionUrlConfigs"]) == 1
        seen.append(page["FunctionUrlConfigs"][0]["FunctionArn"])
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert seen == [u["FunctionArn"] for u in everything]
    paginated = [u for p in lam.get_paginator("list_function_url_configs").paginate(
        FunctionName=fname, PaginationConfig={"PageSize": 2}) for u in p["FunctionUrlConfigs"]]  # fmt: skip
    assert paginated == everything
    with pytest.raises(ClientError) as info:
        lam.list_function_url_configs(FunctionName=fname, MaxItems=51)
    assert _error(info)[1] == "ValidationException"


def test_urls_survive_a_restart_and_go_with_their_function_or_alias(
    gateway_factory: GatewayFactory, fname: str
) -> None:
    gw = gateway_factory()
    lam = gw.client()
    _with_alias(lam, fname)
    plain = lam.create_function_url_config(FunctionName=fname, AuthType="NONE", Cors={"AllowOrigins": ["*"]})
    aliased = lam.create_function_url_config(FunctionName=fname, Qualifier="live", AuthType="AWS_IAM")
    before = [_answer(u) for u in lam.list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"]]
    gw.restart()
    lam = gw.client()
    after = [_answer(u) for u in lam.list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"]]
    assert after == before
    assert {plain["FunctionUrl"], aliased["FunctionUrl"]} == {u["FunctionUrl"] for u in after}

    lam.delete_alias(FunctionName=fname, Name="live")
    with pytest.raises(ClientError) as info:
        lam.get_function_url_config(FunctionName=fname, Qualifier="live")
    assert _error(info)[0] == 404
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="1")
    with pytest.raises(ClientError):  # a new alias of the same name has no URL
        lam.get_function_url_config(FunctionName=fname, Qualifier="live")

    lam.delete_function(FunctionName=fname)
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as info:  # a new function of the same name starts with none
        lam.get_function_url_config(FunctionName=fname)
    assert _error(info)[0] == 404
    gw.restart()
    assert gw.client().list_function_url_configs(FunctionName=fname)["FunctionUrlConfigs"] == []
    assert (gw.data_dir / "function-urls.sqlite3").exists()


# -- the AWS CLI -----------------------------------------------------------------------------------------------


def _aws(gateway: RunningGateway, *args: str) -> Any:
    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("the AWS CLI (`aws`) is not on PATH")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_PAGER": "", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip
    done = subprocess.run(
        [aws, "--endpoint-url", gateway.url, "--output", "json", "lambda", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def test_the_aws_cli(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    created = _aws(
        gateway, "create-function-url-config", "--function-name", fname, "--auth-type", "NONE",
        "--cors", "AllowOrigins=https://example.com,AllowMethods=GET,MaxAge=60",
    )  # fmt: skip
    assert URL_RE.fullmatch(created["FunctionUrl"])
    assert created["Cors"] == {"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET"], "MaxAge": 60}
    got = _aws(gateway, "get-function-url-config", "--function-name", fname)
    assert got["FunctionUrl"] == created["FunctionUrl"]
    listed = _aws(gateway, "list-function-url-configs", "--function-name", fname)
    assert [u["FunctionUrl"] for u in listed["FunctionUrlConfigs"]] == [created["FunctionUrl"]]
    assert _aws(gateway, "delete-function-url-config", "--function-name", fname) is None


# -- deploy's FunctionUrlConfig ----------------------------------------------------------------------------------


def test_deploy_creates_the_url_once_and_updates_it_in_place(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    top = tmp_path / "deploy"
    (top / "site").mkdir(parents=True)
    (top / "site" / "lambda_function.py").write_text(SOURCE)
    function_json = top / "site" / "function.json"
    function_json.write_text(json.dumps({"Handler": "lambda_function.lambda_handler",
                                         "FunctionUrlConfig": {"AuthType": "NONE"}}))  # fmt: skip
    gw = gateway_factory(args=("--deploy", str(top)))
    first = gw.client().get_function_url_config(FunctionName="site")
    assert first["AuthType"] == "NONE" and URL_RE.fullmatch(first["FunctionUrl"])
    assert f"function URL of site: {first['FunctionUrl']} (NONE)" in gw.log()
    statements = json.loads(gw.client().get_policy(FunctionName="site")["Policy"])["Statement"]
    assert len(statements) == 2  # AWS's two for a public URL
    gw.client().remove_permission(FunctionName="site", StatementId=statements[0]["Sid"])  # the operator closes it
    gw.restart()
    again = gw.client().get_function_url_config(FunctionName="site")
    assert _answer(again) == _answer(first)  # unchanged: same URL, same times
    left = json.loads(gw.client().get_policy(FunctionName="site")["Policy"])["Statement"]
    assert [st["Sid"] for st in left] == [statements[1]["Sid"]]  # a restart does not reopen it
    function_json.write_text(json.dumps({"Handler": "lambda_function.lambda_handler", "FunctionUrlConfig": {
        "AuthType": "AWS_IAM", "Cors": {"AllowOrigins": ["*"]}, "InvokeMode": "RESPONSE_STREAM"}}))  # fmt: skip
    gw.restart()
    updated = gw.client().get_function_url_config(FunctionName="site")
    assert updated["FunctionUrl"] == first["FunctionUrl"] and updated["AuthType"] == "AWS_IAM"
    assert updated["Cors"] == {"AllowOrigins": ["*"]} and updated["InvokeMode"] == "RESPONSE_STREAM"
    function_json.write_text(json.dumps({"Handler": "lambda_function.lambda_handler",
                                         "FunctionUrlConfig": {"AuthType": "OPEN"}}))  # fmt: skip
    gw.restart()
    assert "Value 'OPEN' at 'authType' failed to satisfy constraint" in gw.log()
    assert gw.client().get_function_url_config(FunctionName="site")["AuthType"] == "AWS_IAM"  # left as it was


def test_the_web_example_is_deployed_with_a_url(gateway_factory: GatewayFactory) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    gw = gateway_factory(args=("--deploy", str(examples)))
    lam = gw.client()
    url = lam.get_function_url_config(FunctionName="web")
    assert url["AuthType"] == "NONE"
    assert f"function URL of web: {url['FunctionUrl']} (NONE)" in gw.log()
    try:
        policy = json.loads(lam.get_policy(FunctionName="web")["Policy"])
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 501:
            raise
        return  # no policy store on this branch (helper P's)
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["FunctionURLAllowPublicAccess"]["Action"] == "lambda:InvokeFunctionUrl"
    assert statements["FunctionURLAllowPublicAccess"]["Condition"] == {
        "StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}
    }
    assert statements["FunctionURLAllowInvokeAction"]["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
    gw.restart()  # deployed again: each statement once
    policy = json.loads(gw.client().get_policy(FunctionName="web")["Policy"])
    assert sorted(s["Sid"] for s in policy["Statement"]) == [
        "FunctionURLAllowInvokeAction",
        "FunctionURLAllowPublicAccess",
    ]
