"""Delivery of records and dead letters to a real SQS/SNS/EventBridge server (moto's, tests/servers.py), read back
with boto3 as a consumer would: what arrives, in Lambda's form; what is refused, and how fast; what never leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.events.delivery import Delivery, DeliveryFailed, is_aws_endpoint
from gateway.events.targets import Target, parse_target
from gateway.settings import Settings
from tests.conftest import free_port
from tests.servers import MotoServer, Server

KEY_ID = "AKIDDELIVERYTESTKEY1"
SECRET = "delivery-test-secret-never-shown"
TOKEN = "delivery-test-session-token-never-shown"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn:$LATEST"
_names = iter(range(1_000_000))


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Credentials from the environment only: no shared files of this machine, no instance metadata lookups."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)


def settings_for(url: str, **kwargs: Any) -> Settings:
    return Settings(sqs_endpoint=url, sns_endpoint=url, events_endpoint=url, **kwargs)


@pytest.fixture
async def delivery(moto_server: MotoServer) -> AsyncIterator[Delivery]:
    d = Delivery(settings_for(moto_server.url))
    yield d
    await d.close()


@pytest.fixture(params=["moto_server", "elasticmq_server"])
async def sqs(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, Delivery]]:
    """Each SQS server, and a Delivery to it."""
    server: Server = request.getfixturevalue(request.param)
    d = Delivery(settings_for(server.url))
    yield server, d
    await d.close()


def name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{int(time.time() * 1000) % 100000}"


def target(arn: str) -> Target:
    parsed = parse_target(arn)
    assert parsed is not None
    return parsed


def record(condition: str = "Success", **payloads: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2026-12-07T10:00:00.000Z",
        "requestContext": {
            "requestId": "a7f3f7d8-0000-4000-8000-000000000001",
            "functionArn": FUNCTION_ARN,
            "condition": condition,
            "approximateInvokeCount": 1,
        },
        "requestPayload": {"order": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": {"ok": True},
    }
    rec.update(payloads)
    return rec


def subscribed_topic(moto: MotoServer) -> tuple[str, str]:
    """A new SNS topic with a new SQS queue subscribed to it: (topic ARN, queue URL)."""
    topic = moto.client("sns").create_topic(Name=name("topic"))["TopicArn"]
    url, arn = moto.queue(name("sub"))
    moto.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, url


async def test_record_reaches_an_sqs_queue(sqs: tuple[Server, Delivery]) -> None:
    server, delivery = sqs
    url, arn = server.queue(name("dest"))
    rec = record()
    await delivery.send(target(arn), json.dumps(rec).encode(), True)
    (message,) = server.receive(url)
    assert json.loads(message["Body"]) == rec
    assert "MessageAttributes" not in message


async def test_record_reaches_an_sns_topic(moto_server: MotoServer, delivery: Delivery) -> None:
    topic, url = subscribed_topic(moto_server)
    rec = record("RetriesExhausted")
    await delivery.send(target(topic), json.dumps(rec).encode(), False)
    (message,) = moto_server.receive(url)
    envelope = json.loads(message["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
    assert json.loads(envelope["Message"]) == rec


@pytest.mark.parametrize("success", [True, False])
async def test_record_reaches_an_eventbridge_bus(moto_server: MotoServer, delivery: Delivery, success: bool) -> None:
    """A rule matching what Lambda puts on a bus (source "lambda", its DetailType) forwards the event to a queue."""
    events = moto_server.client("events")
    bus = events.create_event_bus(Name=name("bus"))["EventBusArn"]
    detail_type = f"Lambda Function Invocation Result - {'Success' if success else 'Failure'}"
    pattern = {"source": ["lambda"], "detail-type": [detail_type]}
    events.put_rule(Name="results", EventBusName=bus, EventPattern=json.dumps(pattern))
    url, queue_arn = moto_server.queue(name("rule"))
    events.put_targets(Rule="results", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
    rec = record("Success" if success else "EventAgeExceeded")
    await delivery.send(target(bus), json.dumps(rec).encode(), success)
    (message,) = moto_server.receive(url)
    event = json.loads(message["Body"])
    assert event["source"] == "lambda" and event["detail-type"] == detail_type
    assert event["resources"] == [bus, FUNCTION_ARN]
    assert event["detail"] == rec


async def test_a_missing_bus_fails(moto_server: MotoServer, delivery: Delivery) -> None:
    with pytest.raises(DeliveryFailed, match="EVENTS did not take"):
        await delivery.send(target(moto_server.arn("events", "event-bus/" + name("nobus"))), b"{}", True)


def attributes(message: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {k: (v["DataType"], v["StringValue"]) for k, v in message["MessageAttributes"].items()}


async def test_dead_letter_reaches_an_sqs_queue(sqs: tuple[Server, Delivery]) -> None:
    server, delivery = sqs
    url, arn = server.queue(name("dlq"))
    event = b'{"order": 7, "note": "caf\xc3\xa9"}'
    await delivery.dead_letter(target(arn), event, "req-1", "200", "Test exception (this is intentional)")
    (message,) = server.receive(url)
    assert message["Body"].encode() == event  # the original event, unchanged
    assert attributes(message) == {
        "RequestID": ("String", "req-1"),
        "ErrorCode": ("Number", "200"),
        "ErrorMessage": ("String", "Test exception (this is intentional)"),
    }


async def test_dead_letter_reaches_an_sns_topic(moto_server: MotoServer, delivery: Delivery) -> None:
    topic, url = subscribed_topic(moto_server)
    await delivery.dead_letter(target(topic), b'{"order": 8}', "req-2", "500", "boom")
    (message,) = moto_server.receive(url)
    envelope = json.loads(message["Body"])
    assert envelope["Message"] == '{"order": 8}'
    assert envelope["MessageAttributes"] == {
        "RequestID": {"Type": "String", "Value": "req-2"},
        "ErrorCode": {"Type": "Number", "Value": "500"},
        "ErrorMessage": {"Type": "String", "Value": "boom"},
    }


async def test_a_functions_error_message_is_cut_to_1_kb_and_cleaned(
    moto_server: MotoServer, delivery: Delivery
) -> None:
    """The ErrorMessage is the function's words: control characters SQS would refuse cannot make the dead letter
    fail, and 1 KB of it is kept (on a character boundary)."""
    url, arn = moto_server.queue(name("dlq"))
    words = "\x00\x1b[31m" + "é" * 3000
    await delivery.dead_letter(target(arn), b"{}", "req-3", "200", words)
    (message,) = moto_server.receive(url)
    kept = attributes(message)["ErrorMessage"][1]
    assert len(kept.encode()) <= 1024 and kept.startswith("\ufffd\ufffd[31mé")
    assert "\x00" not in kept and "\x1b" not in kept


async def test_a_record_with_noncharacters_arrives_the_same(moto_server: MotoServer, delivery: Delivery) -> None:
    """U+FFFF and U+FFFE (refused by SQS) in a function's response are sent escaped: the same JSON."""
    url, arn = moto_server.queue(name("dest"))
    rec = record(responsePayload={"text": "a\uffffb\ufffe"})
    await delivery.send(target(arn), json.dumps(rec, ensure_ascii=False).encode(), True)
    (message,) = moto_server.receive(url)
    assert "\uffff" not in message["Body"] and json.loads(message["Body"]) == rec


# -- sizes ---------------------------------------------------------------------------------------------------------


async def test_a_large_record_fits_sqs(moto_server: MotoServer, delivery: Delivery) -> None:
    url, arn = moto_server.queue(name("dest"))
    rec = record(requestPayload={"blob": "x" * 900_000})
    await delivery.send(target(arn), json.dumps(rec).encode(), True)
    (message,) = moto_server.receive(url)
    assert json.loads(message["Body"]) == rec


async def test_an_onfailure_record_too_large_for_sns_loses_its_payloads(
    moto_server: MotoServer, delivery: Delivery
) -> None:
    topic, url = subscribed_topic(moto_server)
    rec = record("RetriesExhausted", requestPayload={"blob": "x" * 300_000})
    await delivery.send(target(topic), json.dumps(rec).encode(), False)
    (message,) = moto_server.receive(url)
    got = json.loads(json.loads(message["Body"])["Message"])
    assert "requestPayload" not in got and "responsePayload" not in got
    assert got["requestContext"] == rec["requestContext"] and got["responseContext"] == rec["responseContext"]


async def test_too_large_is_refused_before_sending(moto_server: MotoServer, delivery: Delivery) -> None:
    """An OnSuccess record over SNS's 256 KiB, a dead letter over SQS's 1 MiB or SNS's 256 KiB: refused here,
    nothing sent (the subscribed queue stays empty)."""
    topic, url = subscribed_topic(moto_server)
    big = json.dumps(record(requestPayload={"blob": "x" * 300_000})).encode()
    with pytest.raises(DeliveryFailed, match="over SNS's limit of 262144 bytes"):
        await delivery.send(target(topic), big, True)
    with pytest.raises(DeliveryFailed, match="over SNS's limit"):
        await delivery.dead_letter(target(topic), big, "req", "200", "boom")
    _, queue = moto_server.queue(name("dlq"))
    with pytest.raises(DeliveryFailed, match="over SQS's limit of 1048576 bytes") as caught:
        await delivery.dead_letter(target(queue), b'"' + b"y" * 1_048_576 + b'"', "req", "200", "boom")
    assert "yyyy" not in str(caught.value)  # the payload is never quoted
    assert moto_server.receive(url, wait=1) == []


# -- failures: bounded, and saying why ---------------------------------------------------------------------------


async def test_a_missing_queue_fails(sqs: tuple[Server, Delivery]) -> None:
    server, delivery = sqs
    with pytest.raises(DeliveryFailed, match=r"SQS did not take the message .*(NonExistentQueue|QueueDoesNotExist)"):
        await delivery.send(target(server.arn("sqs", name("nothere"))), b"{}", True)


async def test_a_servers_own_smaller_limit_is_a_failure(elasticmq_server: Server) -> None:
    """ElasticMQ keeps SQS's old 256 KiB limit: a record under AWS's 1 MiB but over that is refused by the server,
    and the refusal is a DeliveryFailed saying so."""
    delivery = Delivery(settings_for(elasticmq_server.url))
    _, arn = elasticmq_server.queue(name("dest"))
    rec = record(requestPayload={"blob": "x" * 300_000})
    with pytest.raises(DeliveryFailed, match="MessageTooLong"):
        await delivery.send(target(arn), json.dumps(rec).encode(), True)
    await delivery.close()


async def test_a_dead_endpoint_fails_fast() -> None:
    delivery = Delivery(settings_for(f"http://127.0.0.1:{free_port()}"))
    start = time.monotonic()
    with pytest.raises(DeliveryFailed, match="EndpointConnectionError"):
        await delivery.dead_letter(target("arn:aws:sns:us-east-1:123456789012:t"), b"{}", "r", "200", "x")
    assert time.monotonic() - start < 5
    await delivery.close()


async def test_a_silent_endpoint_fails_within_the_timeouts(silent_endpoint: str) -> None:
    delivery = Delivery(settings_for(silent_endpoint), connect_timeout=0.5, read_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(DeliveryFailed, match="ReadTimeoutError"):
        await delivery.send(target("arn:aws:events:us-east-1:123456789012:event-bus/default"), b"{}", True)
    # two attempts of 0.5 s and a back-off of at most 1 s
    assert time.monotonic() - start < 4
    await delivery.close()


async def test_the_loop_runs_while_an_endpoint_is_stuck(silent_endpoint: str) -> None:
    """Delivery blocks nothing but its own threads: the event loop ticks on while a request waits."""
    delivery = Delivery(settings_for(silent_endpoint), connect_timeout=0.5, read_timeout=1.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    with pytest.raises(DeliveryFailed):
        await delivery.send(target("arn:aws:sns:us-east-1:123456789012:t"), b"{}", True)
    task.cancel()
    await delivery.close()
    assert ticks > 50  # at least half a second of 10 ms ticks in the two seconds or so the attempts took


def drain(server: MotoServer, url: str) -> list[dict[str, Any]]:
    """Every message on a queue, deleted as read."""
    got: list[dict[str, Any]] = []
    while batch := server.receive(url, wait=1):
        got += batch
        for m in batch:
            server.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


async def test_many_at_once(moto_server: MotoServer, delivery: Delivery) -> None:
    """More deliveries than the pool has threads, to one queue and one topic: every one arrives."""
    url, arn = moto_server.queue(name("many"))
    topic, sub = subscribed_topic(moto_server)
    events = [json.dumps({"n": n}).encode() for n in range(40)]
    sends = [delivery.send(target(arn), event, True) for event in events]
    sends += [delivery.dead_letter(target(topic), event, "r", "200", "x") for event in events[:20]]
    await asyncio.gather(*sends)
    assert sorted(json.loads(m["Body"])["n"] for m in drain(moto_server, url)) == list(range(40))
    notes = drain(moto_server, sub)
    assert sorted(json.loads(json.loads(m["Body"])["Message"])["n"] for m in notes) == list(range(20))


async def test_no_endpoint_no_delivery() -> None:
    delivery = Delivery(Settings())
    with pytest.raises(DeliveryFailed, match="no endpoint is set for SQS"):
        await delivery.send(target("arn:aws:sqs:us-east-1:123456789012:q"), b"{}", True)
    await delivery.close()
    with pytest.raises(DeliveryFailed, match="closed"):
        await delivery.send(target("arn:aws:sqs:us-east-1:123456789012:q"), b"{}", True)


# -- credentials ---------------------------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """A 'compatible server' that answers every request with an error quoting its signed headers."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        words = f"{self.headers.get('Authorization')} token={self.headers.get('X-Amz-Security-Token')}"
        body = json.dumps({"__type": "InvalidClientTokenId", "message": words}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("arn", ["arn:aws:sqs:us-east-1:123456789012:q", "arn:aws:sns:us-east-1:123456789012:t"])
async def test_credentials_never_in_errors_or_logs(
    echo_server: str, caplog: pytest.LogCaptureFixture, arn: str
) -> None:
    """A server that quotes the key id and session token back (as a JSON error SQS's protocol parses, and as a
    body SNS's cannot), a gateway logging at DEBUG: the error and the log show neither (nor the secret, which is
    never sent)."""
    caplog.set_level(logging.DEBUG)
    delivery = Delivery(settings_for(echo_server))
    with pytest.raises(DeliveryFailed, match="InvalidClientTokenId") as caught:
        await delivery.send(target(arn), b"{}", True)
    await delivery.close()
    shown = str(caught.value) + caplog.text
    assert "Credential=***/" in str(caught.value)
    for secret in (KEY_ID, SECRET, TOKEN):
        assert secret not in shown


async def test_placeholder_credentials_for_a_compatible_server(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable)
    caplog.set_level(logging.INFO, logger="gateway.events.delivery")
    delivery = Delivery(settings_for(moto_server.url))
    url, arn = moto_server.queue(name("dest"))
    await delivery.send(target(arn), b'{"placeholder": true}', True)
    await delivery.close()
    assert [m["Body"] for m in moto_server.receive(url)] == ['{"placeholder": true}']
    assert "signing SQS requests with placeholders" in caplog.text


async def test_no_credentials_no_placeholders_for_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable)
    delivery = Delivery(settings_for("https://sqs.us-east-1.amazonaws.com"))
    with pytest.raises(DeliveryFailed, match="no AWS credentials are configured to reach SQS"):
        await delivery.send(target("arn:aws:sqs:us-east-1:123456789012:q"), b"{}", True)
    await delivery.close()


@pytest.mark.parametrize(
    ("url", "aws"),
    [
        ("https://sqs.us-east-1.amazonaws.com", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/", True),
        ("https://events.us-east-1.api.aws", True),
        ("http://127.0.0.1:4566", False),
        ("http://amazonaws.com.example.org", False),
        ("http://localhost:9324", False),
    ],
)
def test_aws_endpoints(url: str, aws: bool) -> None:
    assert is_aws_endpoint(url) is aws
