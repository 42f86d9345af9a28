"""The requests Lambda's outcomes become (gateway/events/messages.py): pure, no server."""

from __future__ import annotations

import json

import pytest

from gateway.events import messages
from gateway.events.messages import NotText, TooLarge
from gateway.events.targets import Service, Target, parse_target

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn:live"
BUS = "arn:aws:events:us-east-1:123456789012:event-bus/results"


def target(arn: str) -> Target:
    parsed = parse_target(arn)
    assert parsed is not None
    return parsed


def record(**extra: object) -> bytes:
    rec = {"version": "1.0", "requestContext": {"functionArn": FUNCTION_ARN, "condition": "Success"}, **extra}
    return json.dumps(rec).encode()


def test_an_eventbridge_entry_as_lambda_puts_it() -> None:
    for success, kind in ((True, "Success"), (False, "Failure")):
        message = messages.destination(target(BUS), record(), success)
        assert message.entry == {
            "Source": "lambda",
            "DetailType": f"Lambda Function Invocation Result - {kind}",
            "Detail": record().decode(),
            "Resources": [BUS, FUNCTION_ARN],
            "EventBusName": BUS,
        }


def test_an_entry_without_a_function_arn_names_the_bus_only() -> None:
    assert messages.destination(target(BUS), b'{"requestContext": 3}', True).entry["Resources"] == [BUS]  # type: ignore[index]


def test_entry_size_is_counted_as_eventbridge_counts_it() -> None:
    message = messages.destination(target(BUS), b"{}", True)
    expected = 14 + len("lambda") + len("Lambda Function Invocation Result - Success") + 2 + len(BUS) + 0
    assert message.size() == expected  # no function ARN in this record


def test_sqs_size_counts_the_attributes() -> None:
    queue = target("arn:aws:sqs:us-east-1:123456789012:q")
    message = messages.dead_letter(queue, b"{}", "id", "200", "é")
    assert message.size() == 2 + len("RequestIDStringid") + len("ErrorCodeNumber200") + len("ErrorMessageString") + 2


def test_limits_are_the_services() -> None:
    topic = target("arn:aws:sns:us-east-1:123456789012:t")
    queue = target("arn:aws:sqs:us-east-1:123456789012:q")
    fits = b'"' + b"x" * (262_144 - 2) + b'"'
    assert messages.destination(topic, fits, True).size() == 262_144
    with pytest.raises(TooLarge, match="262145 bytes, over SNS's limit of 262144"):
        messages.destination(topic, fits + b" ", True)
    assert messages.destination(queue, b" " * 1_048_576, True).size() == 1_048_576
    with pytest.raises(TooLarge, match="over SQS's limit of 1048576"):
        messages.destination(queue, b" " * 1_048_577, True)


def test_an_onfailure_record_too_large_drops_its_payloads_only_then() -> None:
    topic = target("arn:aws:sns:us-east-1:123456789012:t")
    big = record(requestPayload="x" * 200_000, responsePayload="y" * 100_000, responseContext={"statusCode": 200})
    slim = json.loads(messages.destination(topic, big, False).body)
    assert slim == {"version": "1.0", "requestContext": json.loads(big)["requestContext"],
                    "responseContext": {"statusCode": 200}}  # fmt: skip
    small = record(requestPayload="x")
    assert messages.destination(topic, small, False).body == small.decode()  # kept whole when it fits
    with pytest.raises(TooLarge):
        messages.destination(topic, big, True)  # an OnSuccess record is not cut


def test_text_only() -> None:
    queue = target("arn:aws:sqs:us-east-1:123456789012:q")
    with pytest.raises(NotText):
        messages.destination(queue, b'{"a": "\xff"}', True)
    with pytest.raises(NotText):
        messages.dead_letter(queue, b"\xc3", "id", "200", "m")


def test_noncharacters_are_escaped_in_json() -> None:
    queue = target("arn:aws:sqs:us-east-1:123456789012:q")
    raw = json.dumps({"s": "\uffff\ufffe"}, ensure_ascii=False).encode()
    body = messages.destination(queue, raw, True).body
    assert body == '{"s": "\\uffff\\ufffe"}' and json.loads(body) == json.loads(raw)


def test_dead_letter_attributes() -> None:
    topic = target("arn:aws:sns:us-east-1:123456789012:t")
    message = messages.dead_letter(topic, b"{}", "req", "429", "")
    # an empty ErrorMessage is left out: the services refuse empty attribute values
    assert message.sqs_attributes() == {
        "RequestID": {"DataType": "String", "StringValue": "req"},
        "ErrorCode": {"DataType": "Number", "StringValue": "429"},
    }
    for code in ("20", "2000", "abc", "٢٠٠", ""):
        with pytest.raises(ValueError, match="3-digit"):
            messages.dead_letter(topic, b"{}", "req", code, "m")


def test_truncation_keeps_whole_characters() -> None:
    assert messages.truncated("é" * 600) == "é" * 512
    assert messages.truncated("a" + "é" * 600) == "a" + "é" * 511
    assert messages.truncated("short") == "short"


def test_only_the_services_delivered_here() -> None:
    function = target("arn:aws:lambda:us-east-1:123456789012:function:f")
    with pytest.raises(ValueError, match="not a service"):
        messages.destination(function, b"{}", True)
    with pytest.raises(ValueError, match="SQS queue or an SNS topic"):
        messages.dead_letter(target(BUS), b"{}", "r", "200", "m")
    assert messages.limit(Service.SQS) == 1_048_576
