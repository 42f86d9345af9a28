"""DeadLetterConfig.TargetArn through boto3: only an SQS queue or SNS topic this gateway can deliver to (its
endpoint is set) is stored; an empty TargetArn removes it, as on Lambda. And end to end: an Event invoke whose
retries run out reaches the dead-letter queue on a real server (moto), in Lambda's form."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway, _gateway_env, create_function
from tests.servers import MotoServer

SOURCE = "def lambda_handler(event, context):\n    return event\n"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:dead-letters"
TOPIC = "arn:aws:sns:us-east-1:123456789012:dead-letters"


@pytest.fixture(scope="module")
def sqs_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway with an SQS endpoint set (nothing listens there: these calls only configure) and no SNS one,
    shared by this module's tests."""
    gw = RunningGateway(
        tmp_path_factory.mktemp("dlq") / "data", _gateway_env(GATEWAY_SQS_ENDPOINT="http://127.0.0.1:9")
    )
    gw.start()
    yield gw
    gw.stop()


def refused(call: Any, error: str, *words: str) -> None:
    with pytest.raises(Exception) as caught:
        call()
    response = caught.value.response  # type: ignore[attr-defined]
    assert response["Error"]["Code"] == error, response
    for word in words:
        assert word in response["Error"]["Message"]


@pytest.mark.parametrize(
    ("arn", "error", "words"),
    [
        ("not-an-arn", "ValidationException", ("deadLetterConfig.targetArn", "regular expression pattern")),
        ("arn:aws:lambda:us-east-1:123456789012:function:other", "InvalidParameterValueException",
         ("SQS queue or an SNS topic",)),
        ("arn:aws:events:us-east-1:123456789012:event-bus/default", "InvalidParameterValueException", ()),
        ("arn:aws:s3:::bucket", "InvalidParameterValueException", ()),
        ("arn:aws:sqs:us-east-1::no-account", "InvalidParameterValueException", ()),
        (TOPIC, "InvalidParameterValueException", ("GATEWAY_SNS_ENDPOINT",)),
    ],
)  # fmt: skip
def test_unusable_targets_are_refused(
    sqs_gateway: RunningGateway, fname: str, arn: str, error: str, words: tuple[str, ...]
) -> None:
    lam = sqs_gateway.client()
    refused(lambda: create_function(lam, fname, SOURCE, DeadLetterConfig={"TargetArn": arn}), error, *words)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_configuration(FunctionName=fname)  # nothing was created
    create_function(lam, fname, SOURCE)
    refused(lambda: lam.update_function_configuration(FunctionName=fname, DeadLetterConfig={"TargetArn": arn}), error)
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=fname)


def test_a_queue_is_stored_returned_and_removed(sqs_gateway: RunningGateway, fname: str) -> None:
    lam = sqs_gateway.client()
    created = create_function(lam, fname, SOURCE, DeadLetterConfig={"TargetArn": QUEUE})
    assert created["DeadLetterConfig"] == {"TargetArn": QUEUE}
    assert lam.get_function_configuration(FunctionName=fname)["DeadLetterConfig"] == {"TargetArn": QUEUE}
    # a refused update leaves the stored one
    refused(lambda: lam.update_function_configuration(FunctionName=fname, DeadLetterConfig={"TargetArn": TOPIC}),
            "InvalidParameterValueException")  # fmt: skip
    assert lam.get_function_configuration(FunctionName=fname)["DeadLetterConfig"] == {"TargetArn": QUEUE}
    other = QUEUE + "-2"
    lam.update_function_configuration(FunctionName=fname, DeadLetterConfig={"TargetArn": other})
    assert lam.get_function_configuration(FunctionName=fname)["DeadLetterConfig"] == {"TargetArn": other}
    updated = lam.update_function_configuration(FunctionName=fname, DeadLetterConfig={"TargetArn": ""})
    assert "DeadLetterConfig" not in updated
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=fname)


def test_without_endpoints_no_dead_letter_queue(lam: Any, fname: str) -> None:
    """The shared gateway names no endpoint: an SQS dead-letter queue is refused, saying which setting is missing."""
    refused(lambda: create_function(lam, fname, SOURCE, DeadLetterConfig={"TargetArn": QUEUE}),
            "InvalidParameterValueException", "GATEWAY_SQS_ENDPOINT")  # fmt: skip
    create_function(lam, fname, SOURCE, DeadLetterConfig={"TargetArn": ""})  # nothing to deliver to: fine
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=fname)


FAILS = """
def lambda_handler(event, context):
    raise RuntimeError("failed on purpose: " + event["order"])
"""


@pytest.mark.parametrize("service", ["sqs", "sns"])
def test_an_event_out_of_retries_reaches_its_dead_letter_queue(
    gateway_factory: GatewayFactory, moto_server: MotoServer, fname: str, service: str
) -> None:
    """Lambda's retries (scaled down), then the original event on the function's DLQ with RequestID, ErrorCode and
    ErrorMessage, read back from the queue (through a subscription for a topic)."""
    env = {
        "GATEWAY_ASYNC_DELAY_SCALE": "0.01",
        f"GATEWAY_{service.upper()}_ENDPOINT": moto_server.url,
        "AWS_ACCESS_KEY_ID": "gateway-delivery",  # the gateway's own credentials (moto takes any)
        "AWS_SECRET_ACCESS_KEY": "gateway-delivery-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    gw = gateway_factory(env=env)
    lam = gw.client()
    url, queue_arn = moto_server.queue(f"dlq-{fname}"[:80])
    target = queue_arn
    if service == "sns":
        target = moto_server.client("sns").create_topic(Name=f"dlq-{fname}"[:256])["TopicArn"]
        moto_server.client("sns").subscribe(TopicArn=target, Protocol="sqs", Endpoint=queue_arn)
    create_function(lam, fname, FAILS, DeadLetterConfig={"TargetArn": target})
    event = {"order": "o-17"}
    resp = lam.invoke(FunctionName=fname, InvocationType="Event", Payload=json.dumps(event).encode())
    request_id = resp["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 30
    while not (messages := moto_server.receive(url, wait=1)) and time.monotonic() < deadline:
        pass
    (message,) = messages
    if service == "sns":
        envelope = json.loads(message["Body"])
        body = envelope["Message"]
        attributes = {k: (v["Type"], v["Value"]) for k, v in envelope["MessageAttributes"].items()}
    else:
        body = message["Body"]
        attributes = {k: (v["DataType"], v["StringValue"]) for k, v in message["MessageAttributes"].items()}
    assert json.loads(body) == event
    assert attributes["RequestID"] == ("String", request_id)
    assert attributes["ErrorCode"] == ("Number", "200")
    assert attributes["ErrorMessage"] == ("String", "failed on purpose: o-17")  # the errorMessage, as on Lambda
    assert "gateway-delivery-secret" not in gw.log()
