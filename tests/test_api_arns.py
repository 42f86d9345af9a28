"""ARNs as Lambda answers and takes them (issue 18, causes 1-3), against a real gateway with boto3.

Sources of the answers pinned here:
- [S1] LocalStack's recordings of AWS, tests/aws/services/lambda_/test_lambda_api.snapshot.json:
  `TestLambdaVersions::test_publish_version_on_create` ("create_response": Publish=True answers the unqualified
  FunctionArn with Version "1"), `TestLambdaFunction::test_function_arns` ("function_arn_other_region_exc": 404
  ResourceNotFoundException "Functions from 'ap-southeast-1' are not reachable in this region ('<region>')";
  "function_arn_other_account_exc": 403 AccessDeniedException).
- [S2] The same message from real AWS on Invoke, quoted in an AWS SDK for Go error: "StatusCode: 404, RequestID: ...,
  ResourceNotFoundException: Functions from 'us-east-1' are not reachable in this region ('ap-southeast-2')".
- [S3] botocore's partitions.json (`regionRegex` per partition): the partition of an ARN follows its region.
- [S4] botocore's rest-json parser (botocore/parsers.py, `_populate_response_metadata`): `ResponseMetadata.RequestId`
  is the `x-amzn-RequestId` header, which AWS sends on every answer, errors included (the Go error in [S2] carries
  one for a 404).
- [S5] AWS's answer to a layer of another region, quoted in a CloudFormation failure event: "Layers are not in the
  same region as the function. Layers are expected to be in region us-west-2. (Service: Lambda, Status Code: 400".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json, make_zip
from tests.test_e2e_function_credentials import ASSUMED, _call, _start

SOURCE = "def lambda_handler(event, context):\n    return {'v': 1}\n"
ACCOUNT = "123456789012"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


def _unreachable(region: str, ours: str = "us-east-1") -> tuple[int, str, str]:
    """[S1], [S2]: AWS's answer to an ARN of another region."""
    return 404, "ResourceNotFoundException", f"Functions from '{region}' are not reachable in this region ('{ours}')"


def _denied(action: str, resource: str, caller: str = f"arn:aws:iam::{ACCOUNT}:root") -> tuple[int, str, str]:
    """[S1]: 403 AccessDeniedException for an ARN of another account, worded as AWS words a cross-account denial."""
    message = (
        f"User: {caller} is not authorized to perform: lambda:{action} on resource: {resource} "
        f"because no resource-based policy allows the lambda:{action} action"
    )
    return 403, "AccessDeniedException", message


def _returned(answer: tuple[int, str, str]) -> dict[str, Any]:
    """An error as the CALLER function returns it."""
    status, error, message = answer
    return {"status": status, "error": error, "message": message}


# -- cause 1: CreateFunction(Publish=True) -----------------------------------------------------------


def test_create_with_publish_answers_the_unqualified_arn_and_version_1(lam: Any, fname: str) -> None:
    """[S1] test_publish_version_on_create: FunctionArn unqualified, Version "1"; DeleteFunction given that ARN
    deletes the function (all its versions), not only version 1."""
    created = create_function(lam, fname, SOURCE, Publish=True)
    assert (created["FunctionArn"], created["Version"]) == (ARN + fname, "1")
    assert lam.get_function(FunctionName=fname, Qualifier="1")["Configuration"]["FunctionArn"] == f"{ARN}{fname}:1"
    lam.delete_function(FunctionName=created["FunctionArn"])
    for qualifier in ("$LATEST", "1"):
        with pytest.raises(ClientError) as exc:
            lam.get_function(FunctionName=fname, Qualifier=qualifier)
        assert _error(exc)[:2] == (404, "ResourceNotFoundException")
    assert created["RevisionId"] and created["CodeSha256"]


def test_create_without_publish_and_update_with_publish_are_unchanged(lam: Any, fname: str) -> None:
    """Only CreateFunction answers a published version under the unqualified ARN: UpdateFunctionCode(Publish=True)
    answers the new version's qualified ARN (LocalStack's provider, `map_config_out(version,
    return_qualified_arn=bool(Publish))`, validated against AWS by its test_publish_with_update)."""
    created = create_function(lam, fname, SOURCE)
    assert (created["FunctionArn"], created["Version"]) == (ARN + fname, "$LATEST")
    zip_bytes = make_zip({"lambda_function.py": SOURCE.replace("1", "2")})
    updated = lam.update_function_code(FunctionName=fname, ZipFile=zip_bytes, Publish=True)
    assert (updated["FunctionArn"], updated["Version"]) == (f"{ARN}{fname}:1", "1")


# -- cause 2: region and account in ARNs -------------------------------------------------------------


def test_an_arn_of_another_region_reaches_nothing(lam: Any, fname: str) -> None:
    """[S1], [S2]: every operation given a FunctionName ARN of another region answers 404 with AWS's message, and the
    local function of the same name is untouched (a DeleteFunction used to delete it)."""
    create_function(lam, fname, SOURCE)
    lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=5)
    foreign = f"arn:aws:lambda:eu-central-1:{ACCOUNT}:function:{fname}"
    calls = {
        "DeleteFunction": lambda: lam.delete_function(FunctionName=foreign),
        "GetFunction": lambda: lam.get_function(FunctionName=foreign),
        "GetFunctionConfiguration": lambda: lam.get_function_configuration(FunctionName=foreign + ":$LATEST"),
        "Invoke": lambda: lam.invoke(FunctionName=foreign, Payload=b"{}"),
        "InvokeEvent": lambda: lam.invoke(FunctionName=foreign, Payload=b"{}", InvocationType="Event"),
        "GetFunctionConcurrency": lambda: lam.get_function_concurrency(FunctionName=foreign),
        "DeleteFunctionConcurrency": lambda: lam.delete_function_concurrency(FunctionName=foreign),
        "UpdateFunctionConfiguration": lambda: lam.update_function_configuration(FunctionName=foreign, Timeout=9),
        "PublishVersion": lambda: lam.publish_version(FunctionName=foreign),
        "ListVersionsByFunction": lambda: lam.list_versions_by_function(FunctionName=foreign),
        "CreateAlias": lambda: lam.create_alias(FunctionName=foreign, Name="live", FunctionVersion="$LATEST"),
        "AddPermission": lambda: lam.add_permission(
            FunctionName=foreign, StatementId="s", Action="lambda:InvokeFunction", Principal="*"
        ),
        "CreateFunctionUrlConfig": lambda: lam.create_function_url_config(FunctionName=foreign, AuthType="NONE"),
        "PutFunctionEventInvokeConfig": lambda: lam.put_function_event_invoke_config(
            FunctionName=foreign, MaximumRetryAttempts=0
        ),
        "InvokeAsync": lambda: lam.invoke_async(FunctionName=foreign, InvokeArgs=b"{}"),
        "CreateEventSourceMapping": lambda: lam.create_event_source_mapping(
            FunctionName=foreign, EventSourceArn=f"arn:aws:sqs:us-east-1:{ACCOUNT}:q"
        ),
        "ListEventSourceMappings": lambda: lam.list_event_source_mappings(FunctionName=foreign),
    }
    for operation, call in calls.items():
        with pytest.raises(ClientError) as exc:
            call()
        assert _error(exc) == _unreachable("eu-central-1"), operation
    config = lam.get_function(FunctionName=fname)
    assert config["Configuration"]["Timeout"] == 3 and config["Concurrency"]["ReservedConcurrentExecutions"] == 5
    assert lam.list_versions_by_function(FunctionName=fname)["Versions"][-1]["Version"] == "$LATEST"
    assert lam.list_aliases(FunctionName=fname)["Aliases"] == []
    with pytest.raises(ClientError) as exc:
        lam.get_policy(FunctionName=fname)
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=fname)
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")


def test_an_arn_of_another_account_is_denied(lam: Any, fname: str) -> None:
    """[S1] function_arn_other_account_exc: 403 AccessDeniedException; full and partial ARNs alike."""
    create_function(lam, fname, SOURCE)
    other = "111122223333"
    full = f"arn:aws:lambda:us-east-1:{other}:function:{fname}"
    resource = f"arn:aws:lambda:us-east-1:{other}:function:{fname}"
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=full)
    assert _error(exc) == _denied("DeleteFunction", resource)
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=f"{other}:function:{fname}:$LATEST", Payload=b"{}")
    assert _error(exc) == _denied("InvokeFunction", resource + ":$LATEST")
    with pytest.raises(ClientError) as exc:
        lam.get_function_concurrency(FunctionName=full)
    assert _error(exc) == _denied("GetFunctionConcurrency", resource)
    # another account in another region: the account is checked first
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=f"arn:aws:lambda:eu-west-1:{other}:function:{fname}")
    assert _error(exc) == _denied("GetFunction", f"arn:aws:lambda:eu-west-1:{other}:function:{fname}")
    assert lam.get_function(FunctionName=fname)["Configuration"]["FunctionName"] == fname


def test_create_function_with_an_arn_of_elsewhere_creates_nothing(lam: Any, fname: str) -> None:
    """[S1] test_function_arns: CreateFunction with another region's ARN is a 404, with another account's a 403."""
    params: dict[str, Any] = {
        "Runtime": "python3.12", "Role": f"arn:aws:iam::{ACCOUNT}:role/r", "Handler": "lambda_function.lambda_handler",
        "Code": {"ZipFile": make_zip({"lambda_function.py": SOURCE})},
    }  # fmt: skip
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=f"arn:aws:lambda:ap-southeast-1:{ACCOUNT}:function:{fname}", **params)
    assert _error(exc) == _unreachable("ap-southeast-1")
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=f"arn:aws:lambda:us-east-1:123456789013:function:{fname}", **params)
    assert _error(exc) == _denied("CreateFunction", f"arn:aws:lambda:us-east-1:123456789013:function:{fname}")
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=fname)
    assert _error(exc)[:2] == (404, "ResourceNotFoundException")
    # this region's and account's ARNs, full and partial, name the function
    created = lam.create_function(FunctionName=ARN + fname, **params)
    assert created["FunctionArn"] == ARN + fname
    assert lam.get_function(FunctionName=f"{ACCOUNT}:function:{fname}")["Configuration"]["FunctionName"] == fname
    assert invoke_json(lam, f"{ARN}{fname}:$LATEST")[1] == {"v": 1}


def test_a_function_cannot_reach_a_function_through_an_arn_of_elsewhere(gateway_factory: GatewayFactory) -> None:
    """Attacker's view: a function's own credentials (invoke any function, read its own) get the same refusals;
    the denial names its assumed-role session as AWS would."""
    gw, _ = _start(gateway_factory, "rlimits")
    foreign_region = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:callee"
    assert _call(gw, "invoke", foreign_region) == _returned(_unreachable("eu-west-1"))
    other_account = "111111111111:function:callee"
    denied = _denied("InvokeFunction", "arn:aws:lambda:us-east-1:111111111111:function:callee", ASSUMED)
    assert _call(gw, "invoke", other_account) == _returned(denied)
    # its own function under another account's ARN is not its own
    denied = _denied("GetFunction", "arn:aws:lambda:us-east-1:111111111111:function:caller", ASSUMED)
    assert _call(gw, "get", "111111111111:function:caller") == _returned(denied)
    assert _call(gw, "invoke", "callee") == {"ok": {"echo": {"from": "caller"}}}


def test_the_partition_follows_the_region(gateway_factory: GatewayFactory, fname: str) -> None:
    """[S3]: a gateway in cn-north-1 names its ARNs in `aws-cn` and refuses the `aws` partition's regions."""
    gw = gateway_factory(env={"GATEWAY_REGION": "cn-north-1"})
    lam = boto3.client(
        "lambda", endpoint_url=gw.url, region_name="cn-north-1", aws_access_key_id="test",
        aws_secret_access_key="test", config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip
    try:
        created = create_function(lam, fname, SOURCE, Publish=True)
        arn = f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:function:{fname}"
        assert created["FunctionArn"] == arn
        assert created["RuntimeVersionConfig"]["RuntimeVersionArn"].startswith("arn:aws-cn:lambda:cn-north-1::runtime:")
        assert lam.get_function(FunctionName=arn, Qualifier="1")["Configuration"]["FunctionArn"] == arn + ":1"
        assert invoke_json(lam, arn)[1] == {"v": 1}
        alias = lam.create_alias(FunctionName=arn, Name="live", FunctionVersion="1")
        assert alias["AliasArn"] == arn + ":live"
        layer = lam.publish_layer_version(LayerName="lib", Content={"ZipFile": make_zip({"python/lib.py": "X = 1\n"})})
        assert layer["LayerVersionArn"] == f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:layer:lib:1"
        assert lam.get_layer_version_by_arn(Arn=layer["LayerVersionArn"])["Version"] == 1
        updated = lam.update_function_configuration(FunctionName=arn, Layers=[layer["LayerVersionArn"]])
        assert updated["Layers"][0]["Arn"] == layer["LayerVersionArn"]
        with pytest.raises(ClientError) as exc:  # [S5] the same layer under the `aws` partition's region: elsewhere
            lam.update_function_configuration(
                FunctionName=arn, Layers=[f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:lib:1"]
            )
        assert _error(exc) == (
            400,
            "InvalidParameterValueException",
            "Layers are not in the same region as the function. Layers are expected to be in region cn-north-1.",
        )
        with pytest.raises(ClientError) as exc:
            lam.get_function(FunctionName=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fname}")
        assert _error(exc) == _unreachable("us-east-1", "cn-north-1")
        with pytest.raises(ClientError) as exc:
            lam.get_function(FunctionName=f"111111111111:function:{fname}")
        caller = f"arn:aws-cn:iam::{ACCOUNT}:root"
        resource = f"arn:aws-cn:lambda:cn-north-1:111111111111:function:{fname}"
        assert _error(exc) == _denied("GetFunction", resource, caller)
    finally:
        lam.close()


# -- cause 3: x-amzn-RequestId on every control-plane answer ---------------------------------------


def test_every_control_plane_answer_carries_a_request_id(lam: Any, gateway: RunningGateway, fname: str) -> None:
    """[S4]: boto3's ResponseMetadata.RequestId on successes and errors, a fresh UUID each time."""
    seen: list[str] = []
    answers = [
        create_function(lam, fname, SOURCE),
        lam.get_function(FunctionName=fname),
        lam.list_functions(),
        lam.get_account_settings(),
        lam.put_function_concurrency(FunctionName=fname, ReservedConcurrentExecutions=2),
        lam.list_tags(Resource=ARN + fname),
        lam.delete_function(FunctionName=fname),
    ]
    for answer in answers:
        seen.append(answer["ResponseMetadata"]["RequestId"])
    for call in (
        lambda: lam.get_function(FunctionName=fname),  # 404
        lambda: lam.get_function(FunctionName="bad name!"),  # 400
        lambda: lam.list_functions(FunctionVersion="NONE"),  # 400
    ):
        with pytest.raises(ClientError) as exc:
            call()
        seen.append(exc.value.response["ResponseMetadata"]["RequestId"])
    assert all(UUID.fullmatch(rid) for rid in seen), seen
    assert len(set(seen)) == len(seen)
    # raw HTTP: an unknown path (501), the health check, a body that is not JSON
    for method, path, body in (
        ("GET", "/2015-03-31/no-such-thing", None),
        ("GET", "/healthz", None),
        ("POST", "/2015-03-31/functions", b"{not json"),
    ):
        _, headers, _ = gateway.request(method, path, body)
        assert UUID.fullmatch({k.lower(): v for k, v in headers.items()}["x-amzn-requestid"]), (method, path)


def test_invoke_keeps_the_invocations_request_id(lam: Any, fname: str) -> None:
    """Invoke's header is the invocation's own id (the one its logs and context carry), not a second one."""
    create_function(lam, fname, "def lambda_handler(event, context):\n    return context.aws_request_id\n")
    resp, payload = invoke_json(lam, fname)
    assert resp["ResponseMetadata"]["RequestId"] == payload


def test_deployed_examples_take_a_role_of_the_gateway_s_own_account(gateway_factory: GatewayFactory) -> None:
    """A role of another account is refused (AWS: "Cross-account pass role is not allowed."): the role `--deploy`
    gives a function.json without one is in the account the gateway serves."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    gw = gateway_factory(args=("--deploy", str(examples)), env={"GATEWAY_ACCOUNT_ID": "111122223333"})
    role = gw.client().get_function(FunctionName="hello")["Configuration"]["Role"]
    assert role == "arn:aws:iam::111122223333:role/gateway-example"
