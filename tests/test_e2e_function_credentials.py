"""Functions call the API back with the session credentials the gateway gives them, and only do what those allow.

A handler uses `boto3.client("lambda")` with no arguments (AWS_ENDPOINT_URL_LAMBDA and the credential variables come
from its environment), through the environments' listener, where every request must be signed although the main
listener runs without operator credentials: in a jail, at the bridge address of the environments' network (the only
address of the host they reach); in the rlimits mode, at GATEWAY_ENVIRONMENT_LISTEN (127.0.0.2 here).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, free_port, invoke_json, make_zip

CALLER = r"""
import json, os, urllib.error, urllib.request
import boto3
from botocore.exceptions import ClientError

def lambda_handler(event, context):
    action, target = event["action"], event.get("target")
    if action == "env":
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_LAMBDA")
        return {k: os.environ.get(k) for k in keys}
    if action == "unsigned":
        url = os.environ["AWS_ENDPOINT_URL_LAMBDA"] + "/2015-03-31/functions/"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return {"status": resp.status}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "error": exc.headers["x-amzn-ErrorType"]}
    lam = boto3.client("lambda")
    try:
        if action == "invoke":
            resp = lam.invoke(FunctionName=target, Payload=json.dumps({"from": context.function_name}))
            return {"ok": json.loads(resp["Payload"].read())}
        if action == "get":
            return {"ok": lam.get_function(FunctionName=target)["Configuration"]["FunctionName"]}
        if action == "get_config":
            return {"ok": lam.get_function_configuration(FunctionName=target)["FunctionName"]}
        if action == "delete":
            lam.delete_function(FunctionName=target)
            return {"ok": True}
        if action == "update":
            lam.update_function_configuration(FunctionName=target, Timeout=9)
            return {"ok": True}
        if action == "list":
            return {"ok": [f["FunctionName"] for f in lam.list_functions()["Functions"]]}
        if action == "add_permission":  # widening a policy: operators only
            lam.add_permission(FunctionName=target, StatementId="mine", Action="lambda:InvokeFunction", Principal="*")
            return {"ok": True}
        if action == "remove_permission":
            lam.remove_permission(FunctionName=target, StatementId="grant")
            return {"ok": True}
        if action == "get_policy":
            return {"ok": lam.get_policy(FunctionName=target)["Policy"]}
        if action == "add_layer_permission":
            lam.add_layer_version_permission(LayerName=target, VersionNumber=1, StatementId="mine",
                                             Action="lambda:GetLayerVersion", Principal="*")
            return {"ok": True}
        if action == "get_layer_policy":
            return {"ok": lam.get_layer_version_policy(LayerName=target, VersionNumber=1)["Policy"]}
        if action == "get_layer":
            return {"ok": lam.get_layer_version(LayerName=target, VersionNumber=1)["LayerVersionArn"]}
        if action == "get_layer_by_arn":
            return {"ok": lam.get_layer_version_by_arn(Arn=target)["LayerVersionArn"]}
        if action == "list_layers":
            return {"ok": [layer["LayerName"] for layer in lam.list_layers()["Layers"]]}
    except ClientError as exc:
        err = exc.response["Error"]
        return {"status": exc.response["ResponseMetadata"]["HTTPStatusCode"], "error": err["Code"],
                "message": err["Message"]}
"""
ECHO = "def lambda_handler(event, context):\n    return {'echo': event}\n"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ASSUMED = "arn:aws:sts::123456789012:assumed-role/lambda-role/caller"
OPERATOR = {"GATEWAY_ACCESS_KEY_ID": "test", "GATEWAY_SECRET_ACCESS_KEY": "test"}


def _start(gateway_factory: GatewayFactory, mode: str = "jail", **env: str) -> tuple[RunningGateway, str]:
    if mode == "rlimits":
        port = free_port()
        env |= {"GATEWAY_SANDBOX": "rlimits", "GATEWAY_ENVIRONMENT_LISTEN": f"127.0.0.2:{port}"}
    gw = gateway_factory(env=env)
    if mode == "rlimits":
        endpoint = f"http://127.0.0.2:{port}"
    else:
        endpoint = f"http://{gw.health()['isolation']['network']['gateway_address']}:{gw.port}"
    lam = gw.client()
    create_function(lam, "caller", CALLER, Timeout=30)
    create_function(lam, "callee", ECHO)
    return gw, endpoint


def _call(gw: RunningGateway, action: str, target: str | None = None) -> Any:
    return invoke_json(gw.client(), "caller", {"action": action, "target": target})[1]


def _session_client(endpoint: str, creds: dict[str, str]) -> Any:
    return boto3.client(
        "lambda", endpoint_url=endpoint, region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}),
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds["AWS_SESSION_TOKEN"],
    )  # fmt: skip


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


def _denied(action: str, resource: str) -> str:
    return (
        f"User: {ASSUMED} is not authorized to perform: lambda:{action} on resource: {resource} "
        f"because no identity-based policy allows the lambda:{action} action"
    )


@pytest.mark.parametrize("mode", ["jail", "rlimits"])
def test_a_handler_invokes_another_function_but_cannot_read_or_change_it(
    gateway_factory: GatewayFactory, mode: str
) -> None:
    gw, endpoint = _start(gateway_factory, mode)
    env = _call(gw, "env")
    assert env["AWS_ENDPOINT_URL_LAMBDA"] == endpoint
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and env["AWS_SESSION_TOKEN"]
    assert _call(gw, "invoke", "callee") == {"ok": {"echo": {"from": "caller"}}}
    arn = "arn:aws:lambda:us-east-1:123456789012:function:callee"
    for action, op in (("get", "GetFunction"), ("delete", "DeleteFunction"), ("update", "UpdateFunctionConfiguration")):
        assert _call(gw, action, "callee") == {
            "status": 403,
            "error": "AccessDeniedException",
            "message": _denied(op, arn),
        }
    assert _call(gw, "list") == {
        "status": 403,
        "error": "AccessDeniedException",
        "message": _denied("ListFunctions", "*"),
    }
    # its own configuration it may read
    assert _call(gw, "get_config", "caller") == {"ok": "caller"}
    assert _call(gw, "get", "caller") == {"ok": "caller"}
    # nothing changed: the operator (main listener, no credentials configured here) still sees callee as it was
    config = gw.client().get_function_configuration(FunctionName="callee")
    assert config["Timeout"] == 3
    # an unsigned request from the environment to its listener is refused although the main listener is open
    assert _call(gw, "unsigned") == {"status": 403, "error": "MissingAuthenticationTokenException"}


def test_the_environments_listener_refuses_unsigned_tampered_and_expired_credentials(
    gateway_factory: GatewayFactory,
) -> None:
    gw, endpoint = _start(gateway_factory, GATEWAY_SESSION_TTL="8")
    creds = _call(gw, "env")
    session = _session_client(endpoint, creds)
    assert json.loads(session.invoke(FunctionName="callee", Payload=b"{}")["Payload"].read()) == {"echo": {}}
    unsigned = boto3.client(
        "lambda", endpoint_url=endpoint, region_name="us-east-1", config=Config(signature_version=botocore_unsigned())
    )
    with pytest.raises(ClientError) as exc:
        unsigned.list_functions()
    assert _error(exc)[:2] == (403, "MissingAuthenticationTokenException")
    claims, _, mac = creds["AWS_SESSION_TOKEN"].partition(".")
    tampered = {**creds, "AWS_SESSION_TOKEN": claims[:-2] + ("AA" if claims[-2:] != "AA" else "BB") + "." + mac}
    with pytest.raises(ClientError) as exc:
        _session_client(endpoint, tampered).invoke(FunctionName="callee", Payload=b"{}")
    assert _error(exc) == (403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    wrong_secret = {**creds, "AWS_SECRET_ACCESS_KEY": "x" * 40}
    with pytest.raises(ClientError) as exc:
        _session_client(endpoint, wrong_secret).invoke(FunctionName="callee", Payload=b"{}")
    assert _error(exc)[:2] == (403, "InvalidSignatureException")
    claims = json.loads(base64.urlsafe_b64decode(creds["AWS_SESSION_TOKEN"].partition(".")[0] + "=="))
    time.sleep(max(0.0, claims["e"] - time.time() + 0.5))  # the token says when it expires (not a secret)
    with pytest.raises(ClientError) as exc:
        _session_client(endpoint, creds).invoke(FunctionName="callee", Payload=b"{}")
    assert _error(exc) == (403, "ExpiredTokenException", "The security token included in the request is expired")
    # the operator's own listener needs no signature here (loopback, no operator credentials)
    assert invoke_json(gw.client(), "callee", {})[1] == {"echo": {}}
    # environments older than their credentials' safe age were retired: a new one has fresh credentials
    deadline = time.monotonic() + 10
    while _call(gw, "env")["AWS_ACCESS_KEY_ID"] == creds["AWS_ACCESS_KEY_ID"] and time.monotonic() < deadline:
        time.sleep(0.3)
    fresh = _call(gw, "env")
    assert fresh["AWS_ACCESS_KEY_ID"] != creds["AWS_ACCESS_KEY_ID"]
    assert _call(gw, "invoke", "callee") == {"ok": {"echo": {"from": "caller"}}}


def botocore_unsigned() -> Any:
    from botocore import UNSIGNED

    return UNSIGNED


def test_with_operator_credentials_sessions_work_on_the_main_listener_and_operators_do_everything(
    gateway_factory: GatewayFactory,
) -> None:
    gw, endpoint = _start(gateway_factory, **OPERATOR)
    creds = _call(gw, "env")
    assert _call(gw, "invoke", "callee") == {"ok": {"echo": {"from": "caller"}}}
    main = _session_client(gw.url, creds)  # the same credentials on the main listener
    assert json.loads(main.invoke(FunctionName="callee", Payload=b"{}")["Payload"].read()) == {"echo": {}}
    with pytest.raises(ClientError) as exc:
        main.delete_function(FunctionName="callee")
    arn = "arn:aws:lambda:us-east-1:123456789012:function:callee"
    assert _error(exc) == (403, "AccessDeniedException", _denied("DeleteFunction", arn))
    status, _, _ = gw.request("GET", "/metrics")
    assert status == 200  # open on the main listener
    # the operator's key works on both listeners, for everything
    for url in (gw.url, endpoint):
        op = boto3.client(
            "lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )
        op.update_function_configuration(FunctionName="callee", Timeout=7)
        assert op.get_function(FunctionName="callee")["Configuration"]["Timeout"] == 7
    gw.client().delete_function(FunctionName="callee")
    gone = _call(gw, "invoke", "callee")
    assert gone.get("error") == "ResourceNotFoundException", gone


# -- resource-based policies (GATEWAY_FUNCTION_INVOKE=policy) ------------------------------------------------------

CALLEE = "arn:aws:lambda:us-east-1:123456789012:function:callee"


def _denied_by_policy(resource: str, action: str = "lambda:InvokeFunction") -> dict[str, Any]:
    return {
        "status": 403,
        "error": "AccessDeniedException",
        "message": f"User: {ASSUMED} is not authorized to perform: {action} on resource: {resource} "
        f"because no resource-based policy allows the {action} action",
    }


def test_in_policy_mode_a_handler_invokes_only_what_a_policy_grants_its_role(gateway_factory: GatewayFactory) -> None:
    gw, endpoint = _start(gateway_factory, GATEWAY_FUNCTION_INVOKE="policy")
    op = gw.client()
    op.publish_version(FunctionName="callee")
    op.create_alias(FunctionName="callee", Name="live", FunctionVersion="1")
    assert _call(gw, "invoke", "callee") == _denied_by_policy(CALLEE)
    # statements that do not name this caller, or apply only through a function URL, grant nothing
    op.add_permission(FunctionName="callee", StatementId="other", Action="lambda:InvokeFunction",
                      Principal="arn:aws:iam::123456789012:role/other")  # fmt: skip
    op.add_permission(FunctionName="callee", StatementId="s3", Action="lambda:InvokeFunction",
                      Principal="s3.amazonaws.com")  # fmt: skip
    op.add_permission(FunctionName="callee", StatementId="url", Action="lambda:InvokeFunction", Principal="*",
                      InvokedViaFunctionUrl=True)  # fmt: skip
    op.add_permission(FunctionName="callee", StatementId="get", Action="lambda:GetFunction", Principal=ROLE)
    assert _call(gw, "invoke", "callee") == _denied_by_policy(CALLEE)
    op.add_permission(FunctionName="callee", StatementId="grant", Action="lambda:InvokeFunction", Principal=ROLE)
    assert _call(gw, "invoke", "callee") == {"ok": {"echo": {"from": "caller"}}}
    # each qualifier has its own document: the alias is still closed, until its account is granted
    assert _call(gw, "invoke", "callee:live") == _denied_by_policy(CALLEE + ":live")
    op.add_permission(FunctionName="callee:live", StatementId="acct", Action="lambda:*", Principal="123456789012")
    assert _call(gw, "invoke", "callee:live") == {"ok": {"echo": {"from": "caller"}}}
    # InvokeAsync and InvokeWithResponseStream are held to the same policy
    creds = _call(gw, "env")
    session = _session_client(endpoint, creds)
    assert session.invoke(FunctionName="callee", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    assert session.invoke_async(FunctionName="callee", InvokeArgs=b"{}")["Status"] == 202
    stream = session.invoke_with_response_stream(FunctionName="callee", Payload=b"{}")
    assert any("PayloadChunk" in event for event in stream["EventStream"])
    for call in (
        lambda: session.invoke(FunctionName="callee:1", Payload=b"{}"),
        lambda: session.invoke_with_response_stream(FunctionName="callee:1", Payload=b"{}"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _error(exc)[:2] == (403, "AccessDeniedException")
    op.remove_permission(FunctionName="callee", StatementId="grant")
    assert _call(gw, "invoke", "callee") == _denied_by_policy(CALLEE)
    with pytest.raises(ClientError) as exc:
        session.invoke_async(FunctionName="callee", InvokeArgs=b"{}")
    assert _error(exc)[:2] == (403, "AccessDeniedException")

    # InvokeAsync runs the unqualified function whatever the query says: a ?Qualifier= naming the granted alias
    # must not lend its policy to it
    def add_qualifier(request: Any, **_: Any) -> None:
        request.url += "?Qualifier=live"

    session.meta.events.register("before-sign.lambda.InvokeAsync", add_qualifier)
    with pytest.raises(ClientError) as exc:
        session.invoke_async(FunctionName="callee", InvokeArgs=b"{}")
    assert _error(exc) == (403, "AccessDeniedException", _denied_by_policy(CALLEE)["message"])
    # the operator is never held to resource policies
    assert invoke_json(op, "callee", {})[1] == {"echo": {}}


def test_in_any_mode_a_handler_invokes_without_a_policy(gateway_factory: GatewayFactory) -> None:
    gw, _ = _start(gateway_factory, GATEWAY_FUNCTION_INVOKE="any")
    assert _call(gw, "invoke", "callee") == {"ok": {"echo": {"from": "caller"}}}


def test_a_function_cannot_read_or_change_policies(gateway_factory: GatewayFactory) -> None:
    gw, _ = _start(gateway_factory, GATEWAY_FUNCTION_INVOKE="policy")
    op = gw.client()
    op.add_permission(FunctionName="callee", StatementId="grant", Action="lambda:InvokeFunction", Principal="*")
    op.publish_layer_version(LayerName="lay", Content={"ZipFile": make_zip({"python/x.py": "X = 1\n"})})
    for target in ("callee", "caller"):  # another function's policy, or its own
        arn = f"arn:aws:lambda:us-east-1:123456789012:function:{target}"
        for action, operation in (
            ("add_permission", "AddPermission"),
            ("remove_permission", "RemovePermission"),
            ("get_policy", "GetPolicy"),
        ):
            assert _call(gw, action, target) == {
                "status": 403, "error": "AccessDeniedException", "message": _denied(operation, arn),
            }, (action, target)  # fmt: skip
    for action in ("add_layer_permission", "get_layer_policy"):
        got = _call(gw, action, "lay")
        assert (got["status"], got["error"]) == (403, "AccessDeniedException"), action
    # nothing changed
    policy = json.loads(op.get_policy(FunctionName="callee")["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["grant"]
    with pytest.raises(ClientError):
        op.get_layer_version_policy(LayerName="lay", VersionNumber=1)


def test_a_handler_reads_a_layer_version_only_once_its_policy_grants_the_account(
    gateway_factory: GatewayFactory,
) -> None:
    gw, _ = _start(gateway_factory)
    op = gw.client()
    lv_arn = op.publish_layer_version(LayerName="lay", Content={"ZipFile": make_zip({"python/x.py": "X = 1\n"})})[
        "LayerVersionArn"
    ]
    denied = _denied_by_policy(lv_arn, "lambda:GetLayerVersion")
    assert _call(gw, "get_layer", "lay") == denied
    assert _call(gw, "get_layer_by_arn", lv_arn) == denied
    op.add_layer_version_permission(LayerName="lay", VersionNumber=1, StatementId="other", Principal="210987654321",
                                    Action="lambda:GetLayerVersion")  # fmt: skip
    assert _call(gw, "get_layer", "lay") == denied
    op.add_layer_version_permission(LayerName="lay", VersionNumber=1, StatementId="acct", Principal="123456789012",
                                    Action="lambda:GetLayerVersion")  # fmt: skip
    assert _call(gw, "get_layer", "lay") == {"ok": lv_arn}
    assert _call(gw, "get_layer_by_arn", lv_arn) == {"ok": lv_arn}
    assert _call(gw, "list_layers") == {
        "status": 403, "error": "AccessDeniedException", "message": _denied("ListLayers", "*"),
    }  # fmt: skip
