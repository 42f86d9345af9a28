"""OnSuccess / OnFailure destinations on SQS, SNS and EventBridge, through a live gateway and a real server (moto).

An Event invoke runs, and Lambda's invocation record is read back as a consumer would: from an SQS queue, from a
queue subscribed to an SNS topic, from a queue an EventBridge rule targets.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway, create_function
from tests.servers import MotoServer

HANDLER = """
def lambda_handler(event, context):
    if event.get("fail"):
        raise ValueError("no thanks: " + event["order"])
    return {"done": event["order"]}
"""
ACCOUNT_REGION = "us-east-1:123456789012"


@pytest.fixture
def gw(gateway_factory: GatewayFactory, moto_server: MotoServer) -> RunningGateway:
    env = {
        "GATEWAY_ASYNC_DELAY_SCALE": "0.01",
        "GATEWAY_SQS_ENDPOINT": moto_server.url,
        "GATEWAY_SNS_ENDPOINT": moto_server.url,
        "GATEWAY_EVENTS_ENDPOINT": moto_server.url,
        "AWS_ACCESS_KEY_ID": "gateway-delivery",
        "AWS_SECRET_ACCESS_KEY": "gateway-delivery-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return gateway_factory(env=env)


def _target(moto: MotoServer, service: str, name: str) -> tuple[str, str]:
    """(the destination ARN, the URL of the queue its deliveries end up in)."""
    url, queue_arn = moto.queue(name)
    if service == "sqs":
        return queue_arn, url
    if service == "sns":
        topic = moto.client("sns").create_topic(Name=name)["TopicArn"]
        moto.client("sns").subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        return topic, url
    events = moto.client("events")
    bus = events.create_event_bus(Name=name)["EventBusArn"]
    events.put_rule(Name=name, EventBusName=name, EventPattern=json.dumps({"source": ["lambda"]}))
    events.put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "q", "Arn": queue_arn}])
    return bus, url


def _one_message(moto: MotoServer, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not (messages := moto.receive(url, wait=1)) and time.monotonic() < deadline:
        pass
    assert len(messages) == 1, messages
    return dict(json.loads(messages[0]["Body"]))


@pytest.mark.parametrize("service", ["sqs", "sns", "events"])
def test_records_reach_each_service_as_lambda_sends_them(
    gw: RunningGateway, moto_server: MotoServer, fname: str, service: str
) -> None:
    lam = gw.client()
    create_function(lam, fname, HANDLER)
    success, success_url = _target(moto_server, service, f"ok-{fname}"[:64])
    failure, failure_url = _target(moto_server, service, f"ko-{fname}"[:64])
    lam.put_function_event_invoke_config(
        FunctionName=fname,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnSuccess": {"Destination": success}, "OnFailure": {"Destination": failure}},
    )
    ok = lam.invoke(FunctionName=fname, InvocationType="Event", Payload=b'{"order": "o-1"}')
    ko = lam.invoke(FunctionName=fname, InvocationType="Event", Payload=b'{"order": "o-2", "fail": true}')

    record = _one_message(moto_server, success_url)
    if service == "events":
        assert record["source"] == "lambda"
        assert record["detail-type"] == "Lambda Function Invocation Result - Success"
        record = record["detail"]
    assert record["version"] == "1.0" and record["timestamp"].endswith("Z")
    assert record["requestContext"] == {
        "requestId": ok["ResponseMetadata"]["RequestId"],
        "functionArn": f"arn:aws:lambda:{ACCOUNT_REGION}:function:{fname}:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"order": "o-1"}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"done": "o-1"}

    record = _one_message(moto_server, failure_url)
    if service == "events":
        assert record["detail-type"] == "Lambda Function Invocation Result - Failure"
        record = record["detail"]
    assert record["requestContext"]["requestId"] == ko["ResponseMetadata"]["RequestId"]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2  # the first attempt and one retry
    assert record["requestPayload"] == {"order": "o-2", "fail": True}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "no thanks: o-2"
    assert "gateway-delivery-secret" not in gw.log()
