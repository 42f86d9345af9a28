"""Event invoke configs through boto3 on a live gateway: the five operations on $LATEST, versions and aliases, Put vs
Update, every bound and error with Lambda's wording, destinations, paging, restarts and deletions."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.conftest import GatewayFactory, RunningGateway, create_function, free_port, invoke_json

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
SOURCE = "def lambda_handler(event, context):\n    return event\n"
PATH = "/2019-09-25/functions/{}/event-invoke-config"
NO_DESTINATIONS = {"OnSuccess": {}, "OnFailure": {}}
NOTHING_SET = "You must specify at least one of error handling or destination setting."


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _missing(name: str, qualifier: str = "$LATEST") -> str:
    return f"The function {ARN}{name}:{qualifier} doesn't have an EventInvokeConfig"


def _with_version_and_alias(lam: Any, name: str) -> str:
    create_function(lam, name, SOURCE)
    version = str(lam.publish_version(FunctionName=name)["Version"])
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    return version


def _raw(gateway: RunningGateway, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, headers, raw = gateway.request(method, path, data, {"Content-Type": "application/json"})
    return status, headers, json.loads(raw) if raw else None


# -- the operations ------------------------------------------------------------------------------------------


def test_put_get_list_delete_on_latest_a_version_and_an_alias(gateway: RunningGateway, lam: Any, fname: str) -> None:
    version = _with_version_and_alias(lam, fname)
    put = lam.put_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=1)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["FunctionArn"] == f"{ARN}{fname}:$LATEST"
    assert put["MaximumRetryAttempts"] == 1 and "MaximumEventAgeInSeconds" not in put  # only what was set
    assert put["DestinationConfig"] == NO_DESTINATIONS
    assert isinstance(put["LastModified"], datetime.datetime)  # botocore parsed a timestamp
    _, _, raw = _raw(gateway, "GET", PATH.format(fname))
    assert isinstance(raw["LastModified"], float)  # epoch seconds, as rest-json carries the model's timestamps
    assert abs(raw["LastModified"] - datetime.datetime.now(datetime.UTC).timestamp()) < 60

    lam.put_function_event_invoke_config(FunctionName=fname, Qualifier=version, MaximumEventAgeInSeconds=60)
    by_arn = lam.put_function_event_invoke_config(FunctionName=f"{ARN}{fname}:live", MaximumRetryAttempts=0)
    assert by_arn["FunctionArn"] == f"{ARN}{fname}:live"
    assert _answer(lam.get_function_event_invoke_config(FunctionName=f"{fname}:live")) == _answer(by_arn)
    got = lam.get_function_event_invoke_config(FunctionName=fname, Qualifier=version)
    assert got["FunctionArn"] == f"{ARN}{fname}:{version}" and got["MaximumEventAgeInSeconds"] == 60
    assert lam.get_function_event_invoke_config(FunctionName=fname, Qualifier="$LATEST")["MaximumRetryAttempts"] == 1

    listed = lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [f"{ARN}{fname}:{q}" for q in ("$LATEST", version, "live")]
    assert "NextMarker" not in lam.list_function_event_invoke_configs(FunctionName=fname)

    deleted = lam.delete_function_event_invoke_config(FunctionName=fname, Qualifier="live")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as info:
        lam.get_function_event_invoke_config(FunctionName=fname, Qualifier="live")
    assert _error(info) == (404, "ResourceNotFoundException", _missing(fname, "live"))
    with pytest.raises(ClientError) as info:
        lam.delete_function_event_invoke_config(FunctionName=fname, Qualifier="live")
    assert _error(info) == (404, "ResourceNotFoundException", _missing(fname, "live"))
    assert len(lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"]) == 2


def test_put_replaces_and_update_changes_only_what_it_is_given(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    other = f"{fname}-target"
    create_function(lam, other, SOURCE)
    lam.put_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60)
    lam.put_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=0)
    got = lam.get_function_event_invoke_config(FunctionName=fname)
    assert got["MaximumRetryAttempts"] == 0 and "MaximumEventAgeInSeconds" not in got  # Put removed it

    lam.put_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60)
    first = lam.get_function_event_invoke_config(FunctionName=fname)["LastModified"]
    updated = lam.update_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=0)
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (0, 60)  # Update kept it
    assert updated["LastModified"] >= first
    destination = {"OnFailure": {"Destination": f"{ARN}{other}"}}
    updated = lam.update_function_event_invoke_config(FunctionName=fname, DestinationConfig=destination)
    assert updated["DestinationConfig"] == {"OnSuccess": {}, **destination}
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (0, 60)
    cleared = lam.update_function_event_invoke_config(FunctionName=fname, DestinationConfig={})
    assert cleared["DestinationConfig"] == NO_DESTINATIONS  # a DestinationConfig replaces both destinations
    assert _answer(lam.get_function_event_invoke_config(FunctionName=fname)) == _answer(cleared)


# -- errors ----------------------------------------------------------------------------------------------------


def test_errors_name_what_is_missing_as_lambda_does(lam: Any, fname: str) -> None:
    version = _with_version_and_alias(lam, fname)
    cases: list[tuple[str, dict[str, Any], tuple[int, str, str]]] = [
        ("put", {"FunctionName": "no-such-fn"}, (400, "InvalidParameterValueException", NOTHING_SET)),
        ("put", {"FunctionName": fname}, (400, "InvalidParameterValueException", NOTHING_SET)),
        ("update", {"FunctionName": fname}, (400, "InvalidParameterValueException", NOTHING_SET)),
    ]
    missing_function = (404, "ResourceNotFoundException", "The function doesn't exist.")
    for target in ({"FunctionName": "no-such-fn"}, {"FunctionName": f"{ARN}no-such-fn"},
                   {"FunctionName": fname, "Qualifier": "nope"}, {"FunctionName": fname, "Qualifier": "99"},
                   {"FunctionName": f"{fname}:nope"}):  # fmt: skip
        cases.append(("put", {**target, "MaximumRetryAttempts": 1}, missing_function))
        cases.append(("update", {**target, "MaximumRetryAttempts": 1}, missing_function))
    for op in ("get", "delete"):  # also when the function is not there: Lambda says the config is missing
        cases.append((op, {"FunctionName": "no-such-fn"}, (404, "ResourceNotFoundException", _missing("no-such-fn"))))
        cases.append((op, {"FunctionName": fname, "Qualifier": version}, (404, "ResourceNotFoundException",
                                                                           _missing(fname, version))))  # fmt: skip
    cases.append(("update", {"FunctionName": f"{fname}:live", "MaximumRetryAttempts": 1},
                  (404, "ResourceNotFoundException", _missing(fname, "live"))))  # fmt: skip
    mismatch = "The derived qualifier from the function name does not match the specified qualifier."
    cases.append(("put", {"FunctionName": f"{fname}:live", "Qualifier": version, "MaximumRetryAttempts": 1},
                  (400, "InvalidParameterValueException", mismatch)))  # fmt: skip
    for op, params, expected in cases:
        with pytest.raises(ClientError) as info:
            getattr(lam, f"{op}_function_event_invoke_config")(**params)
        assert _error(info) == expected, (op, params)
    with pytest.raises(ClientError) as info:
        lam.list_function_event_invoke_configs(FunctionName="no-such-fn")
    assert _error(info) == missing_function
    assert lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"] == []


def test_bounds_are_checked_by_the_server_as_the_model_says(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    with pytest.raises(ParamValidationError):  # boto3 checks minimums itself: turn its checks off to reach ours
        lam.put_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=-1)
    raw = gateway.client(parameter_validation=False)
    cases = [
        ({"MaximumRetryAttempts": 3}, "Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: Member "
         "must have value less than or equal to 2"),
        ({"MaximumRetryAttempts": -1}, "Value '-1' at 'maximumRetryAttempts' failed to satisfy constraint: Member "
         "must have value greater than or equal to 0"),
        ({"MaximumEventAgeInSeconds": 59}, "Value '59' at 'maximumEventAgeInSeconds' failed to satisfy constraint: "
         "Member must have value greater than or equal to 60"),
        ({"MaximumEventAgeInSeconds": 21601}, "Value '21601' at 'maximumEventAgeInSeconds' failed to satisfy "
         "constraint: Member must have value less than or equal to 21600"),
    ]  # fmt: skip
    for params, message in cases:
        for op in (raw.put_function_event_invoke_config, raw.update_function_event_invoke_config):
            with pytest.raises(ClientError) as info:
                op(FunctionName=fname, **params)
            assert _error(info) == (400, "ValidationException", f"1 validation error detected: {message}")
    with pytest.raises(ClientError) as info:
        raw.put_function_event_invoke_config(FunctionName=fname, MaximumRetryAttempts=5, MaximumEventAgeInSeconds=1)
    assert _error(info)[2].startswith("2 validation errors detected: Value '5' at 'maximumRetryAttempts'")
    for good in ({"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60},
                 {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 21600}):  # fmt: skip
        assert raw.put_function_event_invoke_config(FunctionName=fname, **good)["MaximumRetryAttempts"] in (0, 2)
    for items, bound in (("0", "greater than or equal to 1"), ("51", "less than or equal to 50")):
        with pytest.raises(ClientError) as info:
            raw.list_function_event_invoke_configs(FunctionName=fname, MaxItems=int(items))
        assert _error(info) == (400, "ValidationException", f"1 validation error detected: Value '{items}' at "
                                f"'maxItems' failed to satisfy constraint: Member must have value {bound}")  # fmt: skip


def test_malformed_bodies_are_refused_before_anything_is_stored(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    bodies: list[tuple[Any, str]] = [
        ({"MaximumRetryAttempts": "1"}, "InvalidRequestContentException"),
        ({"MaximumRetryAttempts": True}, "InvalidRequestContentException"),
        ({"MaximumRetryAttempts": 1.5}, "InvalidRequestContentException"),
        ({"MaximumRetryAttempts": 1, "Surprise": 1}, "InvalidRequestContentException"),
        ({"DestinationConfig": []}, "InvalidRequestContentException"),
        ({"DestinationConfig": {"OnSuccess": "arn"}}, "InvalidRequestContentException"),
        ({"DestinationConfig": {"OnSuccess": {"Destination": 7}}}, "InvalidRequestContentException"),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "x", "Type": "Lambda"}}},
            "InvalidRequestContentException",
        ),
        ({"DestinationConfig": {"OnError": {}}}, "InvalidRequestContentException"),
        (b"{not json", "InvalidRequestContentException"),
        ([1, 2], "InvalidRequestContentException"),
    ]
    for body, code in bodies:
        for method in ("PUT", "POST"):
            status, headers, answer = _raw(gateway, method, PATH.format(fname), body)
            assert (status, headers.get("x-amzn-ErrorType")) == (400, code), (method, body, answer)
    status, _, answer = _raw(gateway, "GET", PATH.format(fname) + "?Qualifier=../x")
    assert status == 400 and "qualifier" in answer["message"]  # a ValidationException: no Type (issue 18 cause 10)
    assert lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"] == []


# -- destinations ----------------------------------------------------------------------------------------------


def _put_destination(lam: Any, name: str, arn: str, member: str = "OnFailure") -> dict[str, Any]:
    return dict(
        lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={member: {"Destination": arn}})
    )


def test_destinations_are_checked_as_lambda_does(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    other = f"{fname}-target"
    create_function(lam, other, SOURCE)
    lam.create_alias(FunctionName=other, Name="live", FunctionVersion="$LATEST")
    for arn in (f"{ARN}{other}", f"{ARN}{other}:live", f"{ARN}{other}:$LATEST"):
        for member in ("OnSuccess", "OnFailure"):
            answer = _put_destination(lam, fname, arn, member)
            assert answer["DestinationConfig"][member] == {"Destination": arn}
            assert lam.get_function_event_invoke_config(FunctionName=fname)["DestinationConfig"][member] == {
                "Destination": arn
            }
    empty = lam.put_function_event_invoke_config(FunctionName=fname, DestinationConfig={"OnSuccess": {}})
    assert empty["DestinationConfig"] == NO_DESTINATIONS and "MaximumRetryAttempts" not in empty

    invalid = "InvalidParameterValueException"
    refused = [
        (f"{ARN}{fname}", "You can't specify the function as a destination for itself."),
        (f"{ARN}{fname}:live", "You can't specify the function as a destination for itself."),
        (f"{ARN}no-such-fn", f"The destination ARN {ARN}no-such-fn is invalid."),
        (f"{ARN}{other}:nope", f"The destination ARN {ARN}{other}:nope is invalid."),
        (f"{ARN.replace(':lambda:', ':iam:')}{other}", "The provided destination config DestinationConfig("
         f"onSuccess=null, onFailure=OnFailure(destination={ARN.replace(':lambda:', ':iam:')}{other})) is invalid."),
    ]  # fmt: skip
    for arn, message in refused:
        with pytest.raises(ClientError) as info:
            _put_destination(lam, fname, arn)
        assert _error(info) == (400, invalid, message), arn
    for arn, reason in (
        ("arn:aws:lambda:eu-west-1:123456789012:function:x", "must be a function of this gateway"),
        ("arn:aws:lambda:us-east-1:210987654321:function:x", "must be a function of this gateway"),
        ("arn:aws:sqs:us-east-1:123456789012:q", "GATEWAY_SQS_ENDPOINT"),
        ("arn:aws:sns:us-east-1:123456789012:t", "GATEWAY_SNS_ENDPOINT"),
        ("arn:aws:events:us-east-1:123456789012:event-bus/default", "GATEWAY_EVENTS_ENDPOINT"),
        ("arn:aws:s3:::bucket", "is invalid"),
    ):
        with pytest.raises(ClientError) as info:
            _put_destination(lam, fname, arn)
        status, code, message = _error(info)
        assert (status, code) == (400, invalid) and message.startswith(f"The destination ARN {arn} is invalid.")
        assert reason in message, message
    pattern = "Member must satisfy regular expression pattern: ^$|kafka://"
    raw = gateway.client(parameter_validation=False)
    for arn, constraint in (("not-an-arn", pattern), ("arn:aws:" + "x" * 400, "Member must have length less than or "
                                                                             "equal to 350")):  # fmt: skip
        with pytest.raises(ClientError) as info:
            _put_destination(raw, fname, arn)
        status, code, message = _error(info)
        assert (status, code) == (400, "ValidationException")
        assert "at 'destinationConfig.onFailure.destination' failed to satisfy constraint: " + constraint in message
    # none of the refused Puts replaced the config that was there
    assert lam.get_function_event_invoke_config(FunctionName=fname)["DestinationConfig"] == NO_DESTINATIONS


def test_services_with_an_endpoint_are_accepted(gateway_factory: GatewayFactory, fname: str) -> None:
    endpoint = "http://127.0.0.1:9"  # never contacted by a Put: the gateway only checks it can deliver there
    env = {"GATEWAY_SQS_ENDPOINT": endpoint, "GATEWAY_SNS_ENDPOINT": endpoint, "GATEWAY_EVENTS_ENDPOINT": endpoint}
    lam = gateway_factory(env=env).client()
    create_function(lam, fname, SOURCE)
    queue, topic = "arn:aws:sqs:us-east-1:123456789012:q", "arn:aws:sns:us-east-1:123456789012:t"
    bus = "arn:aws:events:us-east-1:123456789012:event-bus/default"
    config = {"OnSuccess": {"Destination": topic}, "OnFailure": {"Destination": queue}}
    assert lam.put_function_event_invoke_config(FunctionName=fname, DestinationConfig=config)["DestinationConfig"] == (
        config
    )
    assert _put_destination(lam, fname, bus, "OnSuccess")["DestinationConfig"]["OnSuccess"] == {"Destination": bus}


# -- paging, restarts, deletions --------------------------------------------------------------------------------


def test_list_pages_through_every_config(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    versions = []
    for i in range(3):
        lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"STEP": str(i)}})
        versions.append(str(lam.publish_version(FunctionName=fname)["Version"]))
    for alias in ("blue", "green"):
        lam.create_alias(FunctionName=fname, Name=alias, FunctionVersion=versions[0])
    qualifiers = ["$LATEST", *versions, "blue", "green"]
    for i, qualifier in enumerate(qualifiers):
        lam.put_function_event_invoke_config(FunctionName=fname, Qualifier=qualifier, MaximumRetryAttempts=i % 3)
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = lam.list_function_event_invoke_configs(FunctionName=fname, MaxItems=2, **marker)
        assert len(page["FunctionEventInvokeConfigs"]) <= 2
        seen += [c["FunctionArn"].rsplit(":", 1)[1] for c in page["FunctionEventInvokeConfigs"]]
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert seen == qualifiers, (seen, qualifiers)
    paginated = lam.get_paginator("list_function_event_invoke_configs").paginate(
        FunctionName=fname, PaginationConfig={"PageSize": 4}
    )
    assert [c["FunctionArn"] for p in paginated for c in p["FunctionEventInvokeConfigs"]] == [
        f"{ARN}{fname}:{q}" for q in qualifiers
    ]


def test_configs_survive_a_restart_and_go_with_their_function(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory()
    lam = gw.client()
    version = _with_version_and_alias(lam, fname)
    other = f"{fname}-target"
    create_function(lam, other, SOURCE)
    destination = {"OnSuccess": {"Destination": f"{ARN}{other}"}}
    before = {
        q: _answer(lam.put_function_event_invoke_config(FunctionName=fname, Qualifier=q, MaximumRetryAttempts=1,
                                                        DestinationConfig=destination))
        for q in ("$LATEST", version, "live")
    }  # fmt: skip
    gw.restart()
    lam = gw.client()
    for qualifier, answer in before.items():
        assert _answer(lam.get_function_event_invoke_config(FunctionName=fname, Qualifier=qualifier)) == answer

    lam.delete_alias(FunctionName=fname, Name="live")
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion="$LATEST")  # a new alias of the same name
    with pytest.raises(ClientError) as info:
        lam.get_function_event_invoke_config(FunctionName=fname, Qualifier="live")
    assert _error(info)[2] == _missing(fname, "live")
    lam.delete_function(FunctionName=fname, Qualifier=version)
    listed = lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [f"{ARN}{fname}:$LATEST"]
    lam.delete_function(FunctionName=fname)
    create_function(lam, fname, SOURCE)  # the same name again starts with no config
    assert lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"] == []
    gw.restart()
    lam = gw.client()
    assert lam.list_function_event_invoke_configs(FunctionName=fname)["FunctionEventInvokeConfigs"] == []
    assert (gw.data_dir / "event-invoke.sqlite3").exists()


# -- what a function may do ------------------------------------------------------------------------------------

MEDDLER = r"""
import boto3
from botocore.exceptions import ClientError

def lambda_handler(event, context):
    lam = boto3.client("lambda")  # the session credentials and endpoint the gateway gave this environment
    calls = {
        "put": lambda name: lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0),
        "update": lambda name: lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0),
        "get": lambda name: lam.get_function_event_invoke_config(FunctionName=name),
        "delete": lambda name: lam.delete_function_event_invoke_config(FunctionName=name, Qualifier="$LATEST"),
        "list": lambda name: lam.list_function_event_invoke_configs(FunctionName=name),
    }
    out = {}
    for target in (context.function_name, event["other"]):
        for op, call in calls.items():
            try:
                call(target)
                out[f"{op} {target}"] = "allowed"
            except ClientError as exc:
                out[f"{op} {target}"] = exc.response["Error"]["Code"]
    return out
"""


def test_a_function_s_credentials_cannot_read_or_change_any_config(gateway_factory: GatewayFactory, fname: str) -> None:
    port = free_port()
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits", "GATEWAY_ENVIRONMENT_LISTEN": f"127.0.0.2:{port}"})
    lam = gw.client()
    other = f"{fname}-other"
    create_function(lam, fname, MEDDLER, Timeout=30)
    create_function(lam, other, SOURCE)
    before = {
        name: _answer(lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=2))
        for name in (fname, other)
    }
    _, results = invoke_json(lam, fname, {"other": other})
    assert results and set(results.values()) == {"AccessDeniedException"}, results
    assert len(results) == 10
    for name, answer in before.items():  # the operator still sees both configs as they were
        assert _answer(lam.get_function_event_invoke_config(FunctionName=name)) == answer
