"""AddPermission / RemovePermission / GetPolicy and the layer equivalents, with boto3 and the AWS CLI against the
real gateway: the documents Lambda returns, every error, RevisionId checks, cascades, persistence across a restart."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GatewayFactory, RunningGateway, create_function, make_zip
from tests.test_api_cli import aws

SOURCE = "def lambda_handler(event, context):\n    return event\n"
ARN = "arn:aws:lambda:us-east-1:123456789012"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


def _policy(lam: Any, name: str, **kw: Any) -> tuple[dict[str, Any], str]:
    got = lam.get_policy(FunctionName=name, **kw)
    return json.loads(got["Policy"]), got["RevisionId"]


def test_add_get_remove_render_lambda_s_documents(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    fn_arn = f"{ARN}:function:{fname}"
    added = lam.add_permission(
        FunctionName=fname, StatementId="s3invoke", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::my-bucket", SourceAccount="123456789012",
    )  # fmt: skip
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    s3 = {
        "Sid": "s3invoke",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": fn_arn,
        "Condition": {
            "StringEquals": {"AWS:SourceAccount": "123456789012"},
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
        },
    }
    assert json.loads(added["Statement"]) == s3
    assert list(json.loads(added["Statement"])) == ["Sid", "Effect", "Principal", "Action", "Resource", "Condition"]
    lam.add_permission(FunctionName=fname, StatementId="acct", Action="lambda:GetFunction", Principal="210987654321")
    lam.add_permission(
        FunctionName=fname, StatementId="url", Action="lambda:InvokeFunctionUrl", Principal="*",
        FunctionUrlAuthType="NONE",
    )  # fmt: skip
    lam.add_permission(
        FunctionName=fname, StatementId="viaurl", Action="lambda:InvokeFunction", Principal="*",
        InvokedViaFunctionUrl=True,
    )  # fmt: skip
    lam.add_permission(
        FunctionName=fname, StatementId="org", Action="lambda:*", Principal="*", PrincipalOrgID="o-a1b2c3d4e5",
        EventSourceToken="tok.en-1",
    )  # fmt: skip
    role = "arn:aws:iam::123456789012:role/other"
    lam.add_permission(FunctionName=fname, StatementId="role", Action="*", Principal=role)
    policy, revision = _policy(lam, fname)
    assert policy["Version"] == "2012-10-17" and policy["Id"] == "default"
    assert [s["Sid"] for s in policy["Statement"]] == ["s3invoke", "acct", "url", "viaurl", "org", "role"]
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["s3invoke"] == s3
    assert by_sid["acct"]["Principal"] == {"AWS": "arn:aws:iam::210987654321:root"}
    assert by_sid["url"]["Principal"] == "*"
    assert by_sid["url"]["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}
    assert by_sid["viaurl"]["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
    assert by_sid["org"]["Condition"] == {
        "StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5", "lambda:EventSourceToken": "tok.en-1"}
    }
    assert by_sid["role"]["Principal"] == {"AWS": role}
    assert len(revision) == 36
    lam.remove_permission(FunctionName=fname, StatementId="acct")
    policy, revision2 = _policy(lam, fname)
    assert "acct" not in [s["Sid"] for s in policy["Statement"]] and revision2 != revision
    for sid in ("s3invoke", "url", "viaurl", "org", "role"):
        lam.remove_permission(FunctionName=fname, StatementId=sid)
    with pytest.raises(ClientError) as exc:
        lam.get_policy(FunctionName=fname)  # the document went with its last statement
    assert _error(exc) == (404, "ResourceNotFoundException", "The resource you requested does not exist.")


def test_each_version_and_alias_has_its_own_document(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="1")
    lam.add_permission(FunctionName=fname, StatementId="v1", Action="lambda:InvokeFunction", Principal="*",
                       Qualifier="1")  # fmt: skip
    added = lam.add_permission(FunctionName=f"{fname}:live", StatementId="v1", Action="lambda:InvokeFunction",
                               Principal="*")  # fmt: skip
    assert json.loads(added["Statement"])["Resource"] == f"{ARN}:function:{fname}:live"
    assert _policy(lam, fname, Qualifier="1")[0]["Statement"][0]["Resource"] == f"{ARN}:function:{fname}:1"
    assert len(_policy(lam, f"{fname}:live")[0]["Statement"]) == 1
    with pytest.raises(ClientError) as exc:
        lam.get_policy(FunctionName=fname)
    assert _error(exc)[1] == "ResourceNotFoundException"
    # a deleted alias, then version, takes its document with it; the function's others stay
    lam.add_permission(FunctionName=fname, StatementId="fn", Action="lambda:InvokeFunction", Principal="*")
    lam.delete_alias(FunctionName=fname, Name="live")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="1")
    with pytest.raises(ClientError):
        lam.get_policy(FunctionName=fname, Qualifier="live")
    lam.delete_alias(FunctionName=fname, Name="live")
    lam.delete_function(FunctionName=fname, Qualifier="1")
    with pytest.raises(ClientError) as exc:
        lam.get_policy(FunctionName=fname, Qualifier="1")
    assert _error(exc)[1] == "ResourceNotFoundException"
    assert _policy(lam, fname)[0]["Statement"][0]["Sid"] == "fn"


def test_errors(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    base = {"FunctionName": fname, "StatementId": "a", "Action": "lambda:InvokeFunction", "Principal": "*"}
    lam.add_permission(**base)
    cases: list[tuple[dict[str, Any], tuple[int, str, str]]] = [
        ({}, (409, "ResourceConflictException", "The statement id (a) provided already exists. Please provide a new "
              "statement id, or remove the existing statement.")),
        ({"StatementId": "b", "Qualifier": "$LATEST"},
         (400, "InvalidParameterValueException", "We currently do not support adding policies for $LATEST.")),
        ({"StatementId": "b", "Qualifier": "7"},
         (404, "ResourceNotFoundException", f"Function not found: {ARN}:function:{fname}:7")),
        ({"StatementId": "b", "Qualifier": "nope"},
         (404, "ResourceNotFoundException", f"Cannot find alias arn: {ARN}:function:{fname}:nope")),
        ({"FunctionName": fname + "-missing", "StatementId": "b"},
         (404, "ResourceNotFoundException", f"Function not found: {ARN}:function:{fname}-missing")),
        ({"StatementId": "b", "Principal": "not a principal!"},
         (400, "ValidationException", "1 validation error detected: Value 'not a principal!' at 'principal' failed to "
              r"satisfy constraint: Member must satisfy regular expression pattern: [^\s]+")),
        ({"StatementId": "b", "Principal": "bob"},
         (400, "InvalidParameterValueException",
          "The provided principal was invalid. Please check the principal and try again.")),
        ({"StatementId": "b c", "Action": "invoke"},
         (400, "ValidationException", "2 validation errors detected: Value 'b c' at 'statementId' failed to satisfy "
              "constraint: Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+); Value 'invoke' at "
              "'action' failed to satisfy constraint: Member must satisfy regular expression pattern: "
              "(lambda:[*]|lambda:[a-zA-Z]+|[*])")),
        ({"StatementId": "b", "SourceAccount": "12"},
         (400, "ValidationException", "1 validation error detected: Value '12' at 'sourceAccount' failed to satisfy "
              r"constraint: Member must satisfy regular expression pattern: \d{12}")),
        ({"StatementId": "b", "RevisionId": "00000000-0000-4000-8000-000000000000"},
         (412, "PreconditionFailedException", "The Revision Id provided does not match the latest Revision Id. Call "
              "the GetFunction/GetAlias API to retrieve the latest Revision Id")),
    ]  # fmt: skip
    for change, expected in cases:
        with pytest.raises(ClientError) as exc:
            lam.add_permission(**{**base, **change})
        assert _error(exc) == expected, change
    # the document's RevisionId lets a change through, and a stale one does not
    _, revision = _policy(lam, fname)
    lam.add_permission(**{**base, "StatementId": "b", "RevisionId": revision})
    with pytest.raises(ClientError) as exc:
        lam.remove_permission(FunctionName=fname, StatementId="b", RevisionId=revision)
    assert _error(exc)[:2] == (412, "PreconditionFailedException")
    lam.remove_permission(FunctionName=fname, StatementId="b", RevisionId=_policy(lam, fname)[1])
    with pytest.raises(ClientError) as exc:
        lam.remove_permission(FunctionName=fname, StatementId="zz")
    assert _error(exc) == (404, "ResourceNotFoundException", "Statement zz is not found in resource policy.")
    with pytest.raises(ClientError) as exc:
        lam.remove_permission(FunctionName=fname + "-missing", StatementId="a")
    assert _error(exc) == (404, "ResourceNotFoundException", f"No policy found for: {ARN}:function:{fname}-missing")
    with pytest.raises(ClientError) as exc:
        lam.get_policy(FunctionName=fname + "-missing")
    assert _error(exc) == (404, "ResourceNotFoundException", f"Function not found: {ARN}:function:{fname}-missing")


def test_first_statement_accepts_the_function_s_revision_and_size_is_limited(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    config = lam.get_function_configuration(FunctionName=fname)  # Active, with its settled RevisionId
    lam.add_permission(FunctionName=fname, StatementId="first", Action="lambda:InvokeFunction", Principal="*",
                       RevisionId=config["RevisionId"])  # fmt: skip
    arn = "arn:aws:s3:::" + "b" * 1000
    with pytest.raises(ClientError) as exc:
        for i in range(30):
            lam.add_permission(FunctionName=fname, StatementId=f"s{i}", Action="lambda:InvokeFunction",
                               Principal="s3.amazonaws.com", SourceArn=arn)  # fmt: skip
    status, code, message = _error(exc)
    assert (status, code) == (400, "PolicyLengthExceededException")
    assert message.startswith("The final policy size (") and message.endswith("is bigger than the limit (20480).")
    assert len(lam.get_policy(FunctionName=fname)["Policy"]) <= 20480


def test_a_deleted_function_takes_its_policies_and_a_new_one_starts_empty(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE, Publish=True)
    lam.add_permission(FunctionName=fname, StatementId="a", Action="lambda:InvokeFunction", Principal="*")
    lam.add_permission(FunctionName=fname, StatementId="a", Action="lambda:InvokeFunction", Principal="*",
                       Qualifier="1")  # fmt: skip
    lam.delete_function(FunctionName=fname)
    create_function(lam, fname, SOURCE, Publish=True)
    for kw in ({}, {"Qualifier": "1"}):
        with pytest.raises(ClientError) as exc:
            lam.get_policy(FunctionName=fname, **kw)
        assert _error(exc)[1] == "ResourceNotFoundException"


def _layer(lam: Any, name: str) -> dict[str, Any]:
    return dict(lam.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip({"python/x.py": "X = 1\n"})}))


def test_layer_version_permissions(lam: Any, fname: str) -> None:
    layer = _layer(lam, fname)
    lv_arn = layer["LayerVersionArn"]
    added = lam.add_layer_version_permission(
        LayerName=fname, VersionNumber=1, StatementId="xaccount", Action="lambda:GetLayerVersion",
        Principal="210987654321",
    )  # fmt: skip
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert json.loads(added["Statement"]) == {
        "Sid": "xaccount", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": "lambda:GetLayerVersion", "Resource": lv_arn,
    }  # fmt: skip
    with pytest.raises(ClientError) as exc:  # a stale RevisionId
        lam.add_layer_version_permission(
            LayerName=layer["LayerArn"], VersionNumber=1, StatementId="all", Action="lambda:GetLayerVersion",
            Principal="*", RevisionId="stale",
        )  # fmt: skip
    assert _error(exc) == (412, "PreconditionFailedException", "The Revision Id provided does not match the latest "
                           "Revision Id. Call the GetLayerPolicy API to retrieve the latest Revision Id")  # fmt: skip
    second = lam.add_layer_version_permission(
        LayerName=layer["LayerArn"], VersionNumber=1, StatementId="org", Action="lambda:GetLayerVersion",
        Principal="*", OrganizationId="o-a1b2c3d4e5", RevisionId=added["RevisionId"],
    )  # fmt: skip
    assert json.loads(second["Statement"])["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}
    got = lam.get_layer_version_policy(LayerName=fname, VersionNumber=1)
    assert got["RevisionId"] == second["RevisionId"] != added["RevisionId"]
    policy = json.loads(got["Policy"])
    assert (policy["Version"], policy["Id"], [s["Sid"] for s in policy["Statement"]]) == (
        "2012-10-17", "default", ["xaccount", "org"],
    )  # fmt: skip
    errors: list[tuple[dict[str, Any], tuple[int, str, str]]] = [
        ({"StatementId": "xaccount"}, (409, "ResourceConflictException", "The statement id (xaccount) provided "
                                       "already exists. Please provide a new statement id, or remove the existing "
                                       "statement.")),
        ({"Action": "lambda:InvokeFunction"},
         (400, "ValidationException", "1 validation error detected: Value 'lambda:InvokeFunction' at 'action' failed "
              "to satisfy constraint: Member must satisfy regular expression pattern: lambda:GetLayerVersion")),
        ({"Principal": "s3.amazonaws.com"},
         (400, "ValidationException", "1 validation error detected: Value 's3.amazonaws.com' at 'principal' failed "
              r"to satisfy constraint: Member must satisfy regular expression pattern: \d{12}|\*|"
              r"arn:(aws[a-zA-Z-]*):iam::\d{12}:root")),
        ({"VersionNumber": 9},
         (404, "ResourceNotFoundException", f"Layer version {layer['LayerArn']}:9 does not exist.")),
    ]  # fmt: skip
    base = {"LayerName": fname, "VersionNumber": 1, "StatementId": "new", "Action": "lambda:GetLayerVersion",
            "Principal": "*"}  # fmt: skip
    for change, expected in errors:
        with pytest.raises(ClientError) as exc:
            lam.add_layer_version_permission(**{**base, **change})
        assert _error(exc) == expected, change
    with pytest.raises(ClientError) as exc:
        lam.remove_layer_version_permission(LayerName=fname, VersionNumber=1, StatementId="nope")
    assert _error(exc) == (404, "ResourceNotFoundException", "Statement nope is not found in resource policy.")
    lam.remove_layer_version_permission(LayerName=fname, VersionNumber=1, StatementId="xaccount")
    lam.remove_layer_version_permission(LayerName=fname, VersionNumber=1, StatementId="org")
    with pytest.raises(ClientError) as exc:
        lam.get_layer_version_policy(LayerName=fname, VersionNumber=1)
    assert _error(exc) == (404, "ResourceNotFoundException", "No policy is associated with the given resource.")
    # a deleted layer version takes its policy with it
    lam.add_layer_version_permission(**base)
    lam.delete_layer_version(LayerName=fname, VersionNumber=1)
    with pytest.raises(ClientError) as exc:
        lam.get_layer_version_policy(LayerName=fname, VersionNumber=1)
    assert _error(exc) == (404, "ResourceNotFoundException", f"Layer version {lv_arn} does not exist.")


def test_policies_survive_a_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "kept", SOURCE, Publish=True)
    lam.add_permission(FunctionName="kept", StatementId="a", Action="lambda:InvokeFunction", Principal="*")
    lam.add_permission(FunctionName="kept:1", StatementId="b", Action="lambda:InvokeFunction", Principal="*")
    _layer(lam, "kept-layer")
    lam.add_layer_version_permission(LayerName="kept-layer", VersionNumber=1, StatementId="c",
                                     Action="lambda:GetLayerVersion", Principal="*")  # fmt: skip
    before = [_policy(lam, "kept"), _policy(lam, "kept", Qualifier="1")]
    layer_before = lam.get_layer_version_policy(LayerName="kept-layer", VersionNumber=1)
    gw.close_clients()
    gw.restart()
    lam = gw.client()
    assert [_policy(lam, "kept"), _policy(lam, "kept", Qualifier="1")] == before
    layer_after = lam.get_layer_version_policy(LayerName="kept-layer", VersionNumber=1)
    assert (layer_after["Policy"], layer_after["RevisionId"]) == (layer_before["Policy"], layer_before["RevisionId"])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)
_MEMBER = st.sampled_from(
    [
        "StatementId",
        "Action",
        "Principal",
        "SourceArn",
        "SourceAccount",
        "PrincipalOrgID",
        "EventSourceToken",
        "FunctionUrlAuthType",
        "InvokedViaFunctionUrl",
        "OrganizationId",
    ]
)
_SEGMENT = st.sampled_from(
    [
        "fuzzpol",
        "fuzzpol:1",
        "fuzzpol:live",
        "nope",
        "x" * 300,
        "%24LATEST",
        "a%2Fb",
        "..",
        "fuzzpol?Qualifier=%24LATEST",
        "fuzzpol?Qualifier=9",
        "fuzzpol?RevisionId=x",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.dictionaries(_MEMBER, _JSON, max_size=6),
    target=_SEGMENT,
    sid=st.sampled_from(["a", "a.b", "%20", "x" * 150]),
    layer=st.sampled_from(
        [
            "fuzzlayer/versions/1",
            "fuzzlayer/versions/99",
            "fuzzlayer/versions/-1",
            "fuzzlayer/versions/x",
            "nolayer/versions/1",
        ]
    ),
)
def test_bad_input_gets_a_lambda_shaped_4xx(
    gateway: RunningGateway, body: dict[str, Any], target: str, sid: str, layer: str
) -> None:
    lam = gateway.client()
    if gateway.request("GET", "/2015-03-31/functions/fuzzpol")[0] != 200:
        create_function(lam, "fuzzpol", SOURCE, Publish=True)
        lam.create_alias(FunctionName="fuzzpol", Name="live", FunctionVersion="1")
        _layer(lam, "fuzzlayer")
    path, _, query = target.partition("?")
    query = "?" + query if query else ""
    layer_path = f"/2018-10-31/layers/{layer}/policy"
    for method, url, data in (
        ("POST", f"/2015-03-31/functions/{path}/policy{query}", json.dumps(body).encode()),
        ("GET", f"/2015-03-31/functions/{path}/policy{query}", None),
        ("DELETE", f"/2015-03-31/functions/{path}/policy/{sid}{query}", None),
        ("POST", layer_path, json.dumps(body).encode()),
        ("GET", layer_path, None),
        ("DELETE", f"{layer_path}/{sid}", None),
    ):
        status, headers, raw = gateway.request(method, url, data, {"Content-Type": "application/json"})
        assert status < 500, (method, url, body, status, raw)
        if status >= 400:
            doc = json.loads(raw)  # `message` or `Message`: the error shape's key in Lambda's model (issue 18)
            assert "x-amzn-ErrorType" in headers and (doc.get("message") or doc.get("Message")), (method, url, raw)


# -- the AWS CLI ----------------------------------------------------------------------------------------------

needs_cli = pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI (`aws`) is not on PATH")


@needs_cli
def test_aws_cli_add_permission_get_policy_remove_permission(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    out = aws(
        gateway, "add-permission", "--function-name", fname, "--statement-id", "sns", "--action",
        "lambda:InvokeFunction", "--principal", "sns.amazonaws.com", "--source-arn",
        "arn:aws:sns:us-east-1:123456789012:topic",
    )  # fmt: skip
    statement = json.loads(json.loads(out.stdout)["Statement"])
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Condition"] == {"ArnLike": {"AWS:SourceArn": "arn:aws:sns:us-east-1:123456789012:topic"}}
    got = json.loads(aws(gateway, "get-policy", "--function-name", fname).stdout)
    assert json.loads(got["Policy"])["Statement"] == [statement]
    aws(gateway, "remove-permission", "--function-name", fname, "--statement-id", "sns", "--revision-id",
        got["RevisionId"])  # fmt: skip
    done = aws(gateway, "get-policy", "--function-name", fname, check=False)
    assert done.returncode != 0 and "ResourceNotFoundException" in done.stderr


@needs_cli
def test_aws_cli_layer_version_permission(gateway: RunningGateway, lam: Any, fname: str) -> None:
    _layer(lam, fname)
    out = aws(
        gateway, "add-layer-version-permission", "--layer-name", fname, "--version-number", "1", "--statement-id",
        "everyone", "--action", "lambda:GetLayerVersion", "--principal", "*",
    )  # fmt: skip
    added = json.loads(out.stdout)
    assert json.loads(added["Statement"])["Principal"] == "*"
    got = json.loads(aws(gateway, "get-layer-version-policy", "--layer-name", fname, "--version-number", "1").stdout)
    assert got["RevisionId"] == added["RevisionId"]
