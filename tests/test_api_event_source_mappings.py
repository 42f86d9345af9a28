"""Event source mappings through boto3 on a live gateway: the five operations, states, every source's rules, filter
patterns refused at Create/Update, paging and filters of List, persistence across a restart, a deleted function
taking its mappings, and an unreachable source leaving the mapping Enabled with the reason."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GatewayFactory, RunningGateway, create_function, free_port, invoke_json

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
SOURCE = "def lambda_handler(event, context):\n    return None\n"
MQ = "arn:aws:mq:us-east-1:123456789012:broker:b1:b-0123abcd-0123-4567-89ab-0123456789ab"
SQS = "arn:aws:sqs:us-east-1:123456789012:q1"
PATH = "/2015-03-31/event-source-mappings/"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _kafka(port: int = 1, topic: str = "orders", **extra: Any) -> dict[str, Any]:
    return {
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [f"127.0.0.1:{port}"]}},
        "Topics": [topic],
        "StartingPosition": "TRIM_HORIZON",
        **extra,
    }


def _wait_state(lam: Any, uuid: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = dict(lam.get_event_source_mapping(UUID=uuid))
        if got["State"] == state or time.monotonic() > deadline:
            assert got["State"] == state, got
            return got
        time.sleep(0.05)


def _wait_reason(lam: Any, uuid: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = dict(lam.get_event_source_mapping(UUID=uuid))
        if got["StateTransitionReason"].startswith("PROBLEM") or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_create_get_update_disable_enable_delete_a_kafka_mapping(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    created = lam.create_event_source_mapping(FunctionName=fname, BatchSize=5, **_kafka())
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["State"] == "Creating" and len(created["UUID"]) == 36
    assert created["FunctionArn"] == ARN + fname and created["BatchSize"] == 5
    assert created["MaximumRetryAttempts"] == -1 and created["MaximumRecordAgeInSeconds"] == -1
    assert created["SelfManagedKafkaEventSourceConfig"] == {"ConsumerGroupId": created["UUID"]}
    assert created["EventSourceMappingArn"].endswith(":event-source-mapping:" + created["UUID"])
    uuid = created["UUID"]
    enabled = _wait_state(lam, uuid, "Enabled")
    assert enabled["Topics"] == ["orders"] and enabled["StartingPosition"] == "TRIM_HORIZON"
    # the broker is unreachable (port 1), or the Kafka module is not there: Enabled, and the reason is shown
    problem = _wait_reason(lam, uuid)
    assert problem["State"] == "Enabled" and problem["StateTransitionReason"].startswith("PROBLEM"), problem

    pattern = json.dumps({"value": {"kind": ["order"]}})
    updated = lam.update_event_source_mapping(
        UUID=uuid, BatchSize=50, FilterCriteria={"Filters": [{"Pattern": pattern}]}, MaximumRetryAttempts=3
    )
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202 and updated["State"] == "Updating"
    assert updated["FilterCriteria"] == {"Filters": [{"Pattern": pattern}]} and updated["MaximumRetryAttempts"] == 3
    _wait_state(lam, uuid, "Enabled")
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=False)["State"] == "Disabling"
    _wait_state(lam, uuid, "Disabled")
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=True)["State"] == "Enabling"
    _wait_state(lam, uuid, "Enabled")
    cleared = lam.update_event_source_mapping(UUID=uuid, FilterCriteria={})
    assert "FilterCriteria" not in cleared

    deleted = lam.delete_event_source_mapping(UUID=uuid)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202 and deleted["State"] == "Deleting"
    with pytest.raises(ClientError) as info:
        lam.get_event_source_mapping(UUID=uuid)
    assert _error(info)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as info:
        lam.delete_event_source_mapping(UUID=uuid)
    assert _error(info)[:2] == (404, "ResourceNotFoundException")


def test_function_name_forms_and_a_missing_function(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.create_alias(FunctionName=fname, Name="live", FunctionVersion=version)
    by_arn = lam.create_event_source_mapping(FunctionName=f"{ARN}{fname}:live", **_kafka(topic="a"))
    assert by_arn["FunctionArn"] == f"{ARN}{fname}:live"
    partial = lam.create_event_source_mapping(FunctionName=f"123456789012:function:{fname}", **_kafka(topic="b"))
    assert partial["FunctionArn"] == ARN + fname
    with pytest.raises(ClientError) as info:
        lam.create_event_source_mapping(FunctionName=fname + "-nope", **_kafka())
    assert _error(info) == (404, "ResourceNotFoundException", f"Function not found: {ARN}{fname}-nope")
    listed = lam.list_event_source_mappings(FunctionName=fname)["EventSourceMappings"]
    assert {m["UUID"] for m in listed} == {by_arn["UUID"], partial["UUID"]}
    only_alias = lam.list_event_source_mappings(FunctionName=f"{fname}:live")["EventSourceMappings"]
    assert [m["UUID"] for m in only_alias] == [by_arn["UUID"]]
    with pytest.raises(ClientError) as info:  # the same source for the same function twice
        lam.create_event_source_mapping(FunctionName=f"{ARN}{fname}:live", **_kafka(topic="a"))
    assert _error(info)[:2] == (409, "ResourceConflictException")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"}, "Unsupported event source"),
        ({"EventSourceArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"}, "Unsupported event source"),
        ({"EventSourceArn": MQ}, "Queues must name exactly one queue"),
        ({"EventSourceArn": MQ, "Queues": ["q"], "MaximumRetryAttempts": 2}, "Unsupported MaximumRetryAttempts"),
        ({"EventSourceArn": MQ, "Queues": ["q"], "StartingPosition": "LATEST"}, "not supported for this event"),
        ({"EventSourceArn": SQS}, "GATEWAY_SQS_ENDPOINT"),
        ({**_kafka(), "StartingPosition": "AT_TIMESTAMP"}, "StartingPositionTimestamp is required"),
        ({k: v for k, v in _kafka().items() if k != "StartingPosition"}, "StartingPosition is required"),
        ({**_kafka(), "Topics": ["a", "b"]}, "exactly one Kafka topic"),
        ({**_kafka(), "FilterCriteria": {"Filters": [{"Pattern": "{not json"}]}}, "Invalid filter pattern"),
        ({**_kafka(), "FilterCriteria": {"Filters": [{"Pattern": '{"a": "x"}'}]}}, "must be an array or an object"),
        ({**_kafka(), "FilterCriteria": {"Filters": [{"Pattern": '{"a": [{"nope": 1}]}'}]}}, "Unknown operator"),
        ({**_kafka(), "FilterCriteria": {"Filters": [{"Pattern": '{"a": []}'}]}}, "is empty"),
        ({**_kafka(), "DestinationConfig": {"OnSuccess": {"Destination": SQS}}}, "OnSuccess"),
        ({**_kafka(), "DestinationConfig": {"OnFailure": {"Destination": SQS}}}, "GATEWAY_SQS_ENDPOINT"),
        ({**_kafka(), "DestinationConfig": {"OnFailure": {"Destination": ARN + "x"}}}, "SQS queue or an SNS topic"),
        ({**_kafka(), "TumblingWindowInSeconds": 5}, "not supported by this gateway"),
        ({**_kafka(), "EventSourceArn": SQS}, "not both"),
    ],
)
def test_create_refuses_with_a_clear_error(lam: Any, fname: str, params: dict[str, Any], needle: str) -> None:
    create_function(lam, fname, SOURCE)
    with pytest.raises(ClientError) as info:
        lam.create_event_source_mapping(FunctionName=fname, **params)
    status, code, message = _error(info)
    assert (status, code) == (400, "InvalidParameterValueException") and needle in message, message


def test_bounds_are_the_models(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    body = {"FunctionName": fname, **_kafka(), "BatchSize": 0, "MaximumBatchingWindowInSeconds": 301}
    status, headers, raw = gateway.request(
        "POST", "/2015-03-31/event-source-mappings/", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    assert b"2 validation errors" in raw and b"batchSize" in raw and b"maximumBatchingWindowInSeconds" in raw
    uuid = lam.create_event_source_mapping(FunctionName=fname, **_kafka())["UUID"]
    with pytest.raises(ClientError) as info:
        lam.update_event_source_mapping(UUID=uuid, FilterCriteria={"Filters": [{"Pattern": '{"a": [{"numeric": 1}]}'}]})
    assert _error(info)[1] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as info:
        lam.update_event_source_mapping(UUID="0" * 36, BatchSize=2)
    assert _error(info)[:2] == (404, "ResourceNotFoundException")


def test_mq_mapping_list_paging_and_event_source_filter(lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    uuids = set()
    for i in range(3):
        made = lam.create_event_source_mapping(FunctionName=fname, EventSourceArn=MQ, Queues=[f"q{i}"], BatchSize=7)
        assert made["Queues"] == [f"q{i}"] and "MaximumRetryAttempts" not in made and "Topics" not in made
        uuids.add(made["UUID"])
    seen, marker = [], None
    while True:
        page = lam.list_event_source_mappings(EventSourceArn=MQ, MaxItems=2, **({"Marker": marker} if marker else {}))
        seen += [m["UUID"] for m in page["EventSourceMappings"] if m["FunctionArn"] == ARN + fname]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert set(seen) == uuids and len(seen) == 3


def test_mappings_survive_a_restart_and_go_with_their_function(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "f1", SOURCE)
    kept = lam.create_event_source_mapping(FunctionName="f1", Enabled=False, **_kafka())["UUID"]
    _wait_state(lam, kept, "Disabled")
    gw.restart()
    lam = gw.client()
    got = lam.get_event_source_mapping(UUID=kept)
    assert got["State"] == "Disabled" and got["Topics"] == ["orders"]
    lam.delete_function(FunctionName="f1")
    with pytest.raises(ClientError) as info:
        lam.get_event_source_mapping(UUID=kept)
    assert _error(info)[1] == "ResourceNotFoundException"
    assert lam.list_event_source_mappings()["EventSourceMappings"] == []


ABUSER = r"""
import boto3
from botocore.exceptions import ClientError

def lambda_handler(event, context):
    lam = boto3.client("lambda")
    calls = {
        "create": lambda: lam.create_event_source_mapping(
            FunctionName=context.function_name, Topics=["t"], StartingPosition="LATEST",
            SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:22"]}}),
        "list": lambda: lam.list_event_source_mappings(),
        "get": lambda: lam.get_event_source_mapping(UUID=event["uuid"]),
        "update": lambda: lam.update_event_source_mapping(UUID=event["uuid"], Enabled=False),
        "delete": lambda: lam.delete_event_source_mapping(UUID=event["uuid"]),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = "allowed"
        except ClientError as exc:
            out[name] = exc.response["Error"]["Code"]
    return out
"""


def test_a_function_cannot_create_read_or_change_mappings(gateway_factory: GatewayFactory) -> None:
    """A function's session credentials must not make the gateway connect anywhere (a mapping's broker address is
    the gateway's own network, not the jail's) nor stop or read other mappings: 403 for each operation."""
    port = free_port()
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits", "GATEWAY_ENVIRONMENT_LISTEN": f"127.0.0.2:{port}"})
    lam = gw.client()
    create_function(lam, "abuser", ABUSER, Timeout=30)
    uuid = lam.create_event_source_mapping(FunctionName="abuser", **_kafka())["UUID"]
    _, answer = invoke_json(lam, "abuser", {"uuid": uuid})
    assert answer == dict.fromkeys(("create", "list", "get", "update", "delete"), "AccessDeniedException"), answer
    assert [m["UUID"] for m in lam.list_event_source_mappings()["EventSourceMappings"]] == [uuid]
    assert lam.get_event_source_mapping(UUID=uuid)["State"] in ("Creating", "Enabled")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["FunctionName", "EventSourceArn", "Enabled", "BatchSize", "FilterCriteria", "MaximumBatchingWindowInSeconds",
     "StartingPosition", "StartingPositionTimestamp", "Topics", "Queues", "SelfManagedEventSource",
     "SourceAccessConfigurations", "FunctionResponseTypes", "ScalingConfig", "DestinationConfig",
     "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError",
     "SelfManagedKafkaEventSourceConfig", "Unknown"]
)  # fmt: skip


def test_generated_bodies_get_lambda_shaped_answers(gateway: RunningGateway, lam: Any, fname: str) -> None:
    """Create and Update with generated bodies (a valid one with members replaced or added): a 2xx or a Lambda-shaped
    4xx, never a 500; afterwards every mapping can be read."""
    create_function(lam, fname, SOURCE)
    base = {"FunctionName": fname, **_kafka(topic="fuzz")}
    uuid = lam.create_event_source_mapping(**base)["UUID"]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.dictionaries(FIELDS, JSON_VALUES, max_size=4), st.booleans(), st.booleans())
    def check(members: dict[str, Any], update: bool, from_base: bool) -> None:
        body = {**(base if from_base else {}), **members}
        method, path = ("PUT", f"/2015-03-31/event-source-mappings/{uuid}") if update else ("POST", PATH)
        status, headers, raw = gateway.request(
            method, path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        assert status < 500, (method, body, status, raw[:300])
        if status >= 400:
            assert headers.get("x-amzn-ErrorType") and "message" in json.loads(raw), raw[:300]

    check()
    for mapping in lam.list_event_source_mappings(FunctionName=fname)["EventSourceMappings"]:
        assert lam.get_event_source_mapping(UUID=mapping["UUID"])["FunctionArn"].startswith(ARN + fname)
