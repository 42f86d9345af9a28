"""DeadLetterConfig.TargetArn through boto3: only an SQS queue or SNS topic this gateway can deliver to (its
endpoint is set) is stored; an empty TargetArn removes it, as on Lambda."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunningGateway, _gateway_env, create_function

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
