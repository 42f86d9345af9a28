"""The SQS event source (gateway/events/pollers/sqs.py) against real SQS-compatible servers (ElasticMQ and moto,
tests/servers.py): what a fetch gives (Lambda's `aws:sqs` records), that nothing is deleted before `settle` says so,
that a failed message comes back after its visibility timeout, and how a missing queue or a dead endpoint fails."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.events.pollers.sqs import QueueArn, SqsSource, parse_queue_arn, record_of, source_for
from gateway.settings import Settings
from gateway.store.mappings import Mapping
from tests.conftest import free_port
from tests.servers import ACCOUNT, Server

_names = iter(range(1_000_000))


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Credentials from the environment only: no shared files of this machine, no instance metadata lookups."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSQSSOURCETEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sqs-source-test-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["elasticmq_server", "moto_server"])
def server(request: pytest.FixtureRequest) -> Server:
    server: Server = request.getfixturevalue(request.param)
    return server


class Queue:
    """A new queue on a server, and a source reading it (closed at the end)."""

    def __init__(self, server: Server, visibility: int = 30, fifo: bool = False) -> None:
        self.server = server
        self.name = f"src-{next(_names)}-{int(time.time() * 1000) % 100000}" + (".fifo" if fifo else "")
        attributes = {"VisibilityTimeout": str(visibility)}
        if fifo:
            attributes["FifoQueue"] = "true"
        self.url = server.client("sqs").create_queue(QueueName=self.name, Attributes=attributes)["QueueUrl"]
        self.arn = server.arn("sqs", self.name)
        self.sources: list[SqsSource] = []

    def source(self, **kwargs: Any) -> SqsSource:
        src = SqsSource(self.arn, self.server.url, **kwargs)
        self.sources.append(src)
        return src

    def send(self, body: str, **kwargs: Any) -> str:
        return str(self.server.client("sqs").send_message(QueueUrl=self.url, MessageBody=body, **kwargs)["MessageId"])

    def counts(self) -> tuple[int, int]:
        """(visible, in flight) messages."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        got = self.server.client("sqs").get_queue_attributes(QueueUrl=self.url, AttributeNames=names)["Attributes"]
        return int(got[names[0]]), int(got[names[1]])


@pytest.fixture
async def make_queue(server: Server) -> AsyncIterator[Any]:
    made: list[Queue] = []

    def make(**kwargs: Any) -> Queue:
        made.append(Queue(server, **kwargs))
        return made[-1]

    yield make
    for q in made:
        for src in q.sources:
            await src.close()


async def fetch_all(src: SqsSource, count: int, wait: float = 10.0) -> list[Record]:
    """Fetch until `count` records came (or `wait` seconds passed)."""
    got: list[Record] = []
    deadline = time.monotonic() + wait
    while len(got) < count and time.monotonic() < deadline:
        got += await src.fetch(count - len(got), 1)
    return got


# -- pure parts -------------------------------------------------------------------------------------------------


def test_queue_arns() -> None:
    assert parse_queue_arn("arn:aws:sqs:eu-west-1:123456789012:orders") == QueueArn(
        "arn:aws:sqs:eu-west-1:123456789012:orders", "eu-west-1", "123456789012", "orders"
    )
    assert parse_queue_arn("arn:aws:sqs:us-east-1:123456789012:jobs.fifo") is not None
    for bad in (
        "arn:aws:sns:us-east-1:123456789012:t",
        "arn:aws:sqs::123456789012:q",
        "arn:aws:sqs:us-east-1::q",
        "arn:aws:sqs:us-east-1:123456789012:a/b",
        "arn:aws:sqs:us-east-1:123456789012:" + "q" * 81,
        "https://sqs.us-east-1.amazonaws.com/123456789012/q",
    ):
        assert parse_queue_arn(bad) is None, bad


QUEUE = QueueArn("arn:aws:sqs:eu-west-1:123456789012:q", "eu-west-1", "123456789012", "q")


def message(body: str, **extra: Any) -> dict[str, Any]:
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "Body": body,
        "MD5OfBody": hashlib.md5(body.encode(errors="surrogatepass")).hexdigest(),
        "Attributes": {"SentTimestamp": "1765100000123", "ApproximateReceiveCount": "1"},
        **extra,
    }


def test_a_record_in_lambdas_shape() -> None:
    rec = record_of(
        message(
            '{"n": 1}',
            MessageAttributes={
                "s": {"StringValue": "v", "DataType": "String"},
                "b": {"BinaryValue": b"\x00\xff", "DataType": "Binary.raw"},
            },
            MD5OfMessageAttributes="abc",
        ),
        QUEUE,
    )
    assert rec.item_id == "m-1"
    assert rec.timestamp == 1765100000.123
    assert rec.group == ""
    assert rec.event == {
        "messageId": "m-1",
        "receiptHandle": "rh-1",
        "body": '{"n": 1}',
        "attributes": {"SentTimestamp": "1765100000123", "ApproximateReceiveCount": "1"},
        "messageAttributes": {
            "s": {"stringValue": "v", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "b": {"binaryValue": "AP8=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary.raw"},
        },
        "md5OfBody": hashlib.md5(b'{"n": 1}').hexdigest(),
        "md5OfMessageAttributes": "abc",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE.arn,
        "awsRegion": "eu-west-1",
    }
    assert rec.filter_view == rec.event | {"body": {"n": 1}}
    assert rec.size == len(json.dumps(rec.event, separators=(",", ":"))) + 1


@pytest.mark.parametrize("body", ["plain text", "", '{"unterminated": ', "[" * 100_000 + "]" * 100_000])
def test_a_body_that_is_not_json_is_seen_as_text_by_filters(body: str) -> None:
    """Deep nesting too: a body a sender made to break the decoder is a record like any other, never a poller that
    fails on it for ever."""
    rec = record_of(message(body), QUEUE)
    assert rec.filter_view["body"] == body == rec.event["body"]


def test_a_lone_surrogate_does_not_break_the_event() -> None:
    rec = record_of(message("half \ud800 a pair"), QUEUE)
    event = SqsSource(QUEUE.arn, None).event([rec])
    assert json.loads(event)["Records"][0]["body"] == "half \ud800 a pair"
    assert rec.size == len(event) - len(b'{"Records":[]}') + 1


def test_the_event_is_lambdas_records_list() -> None:
    src = SqsSource(QUEUE.arn, None)
    records = [record_of(message(f"body é {i}") | {"MessageId": f"m-{i}"}, QUEUE) for i in range(3)]
    event = src.event(records)
    assert json.loads(event) == {"Records": [r.event for r in records]}
    assert len(event) == len(b'{"Records":[]}') + sum(r.size for r in records) - 1


async def test_without_an_endpoint_or_with_a_bad_arn_open_says_why() -> None:
    src = source_for(Mapping("u", "f", None, "sqs", event_source_arn=QUEUE.arn), Settings())
    with pytest.raises(SourceUnavailable, match="GATEWAY_SQS_ENDPOINT is not set"):
        await src.open()
    await src.close()
    bad = SqsSource("arn:aws:sns:us-east-1:123456789012:t", "http://127.0.0.1:1")
    with pytest.raises(SourceUnavailable, match="is not an SQS queue's ARN"):
        await bad.open()
    await bad.close()


# -- against the servers ----------------------------------------------------------------------------------------


async def test_fetch_gives_lambda_records(make_queue: Any) -> None:
    q: Queue = make_queue()
    ids = [
        q.send(
            json.dumps({"n": i}),
            MessageAttributes={
                "kind": {"DataType": "String", "StringValue": "order"},
                "count": {"DataType": "Number", "StringValue": str(i)},
                "blob": {"DataType": "Binary", "BinaryValue": bytes([i, 255])},
            },
        )
        for i in range(3)
    ]
    src = q.source()
    await src.open()
    before = time.time()
    records = await fetch_all(src, 3)
    assert sorted(r.item_id for r in records) == sorted(ids)
    for rec in records:
        n = rec.filter_view["body"]["n"]
        ev = rec.event
        assert ev["messageId"] == rec.item_id and ev["receiptHandle"]
        assert ev["body"] == json.dumps({"n": n})
        assert ev["md5OfBody"] == hashlib.md5(ev["body"].encode()).hexdigest()
        assert (ev["eventSource"], ev["eventSourceARN"], ev["awsRegion"]) == ("aws:sqs", q.arn, "us-east-1")
        attributes = ev["attributes"]
        assert attributes["ApproximateReceiveCount"] == "1"
        for name in ("SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"):
            assert attributes[name], name
        assert before - 60 < rec.timestamp == int(attributes["SentTimestamp"]) / 1000 <= time.time() + 1
        assert ev["messageAttributes"] == {
            "kind": {"stringValue": "order", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "count": {"stringValue": str(n), "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
            "blob": {
                "binaryValue": base64.b64encode(bytes([n, 255])).decode(),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        }
    assert json.loads(src.event(records)) == {"Records": [r.event for r in records]}


async def test_at_most_ten_a_fetch(make_queue: Any) -> None:
    q: Queue = make_queue()
    entries = [{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
    for _ in range(2):
        q.server.client("sqs").send_message_batch(QueueUrl=q.url, Entries=entries)
    src = q.source()
    await src.open()
    first = await src.fetch(50, 1)
    assert 1 <= len(first) <= 10
    assert len(first) + len(await fetch_all(src, 20 - len(first))) == 20
    assert await src.fetch(0, 1) == []


async def test_nothing_is_deleted_before_settle(make_queue: Any) -> None:
    q: Queue = make_queue(visibility=1)
    sent = q.send("keep me")
    src = q.source()
    await src.open()
    assert len(await fetch_all(src, 1)) == 1
    assert q.counts() == (0, 1)
    # not settled: back after the visibility timeout, received a second time
    (again,) = await fetch_all(src, 1, wait=15)
    assert again.item_id == sent and again.event["attributes"]["ApproximateReceiveCount"] == "2"
    await src.settle([again], [])
    assert q.counts() == (0, 0)
    await asyncio.sleep(1.5)
    assert await src.fetch(10, 1) == []


async def test_a_failed_message_comes_back_after_the_visibility_timeout(make_queue: Any) -> None:
    q: Queue = make_queue(visibility=2)
    ok, bad = q.send("ok"), q.send("bad")
    src = q.source()
    await src.open()
    records = {r.item_id: r for r in await fetch_all(src, 2)}
    start = time.monotonic()
    await src.settle([records[ok]], [records[bad]])
    assert await src.fetch(10, 1) == []  # invisible meanwhile
    (back,) = await fetch_all(src, 1, wait=15)
    assert time.monotonic() - start >= 1.0
    assert back.item_id == bad
    assert back.event["attributes"]["ApproximateReceiveCount"] == "2"
    await src.settle([back], [])
    assert q.counts() == (0, 0)


async def test_discard_deletes(make_queue: Any) -> None:
    q: Queue = make_queue(visibility=1)
    for i in range(12):
        q.send(f"poison {i}")
    src = q.source()
    await src.open()
    records = await fetch_all(src, 12)
    await src.discard(records)  # two DeleteMessageBatch calls
    await asyncio.sleep(1.5)
    assert q.counts() == (0, 0)
    assert await src.fetch(10, 1) == []


async def test_a_fifo_queues_message_group_is_the_records_group(make_queue: Any) -> None:
    q: Queue = make_queue(fifo=True)
    q.send("a1", MessageGroupId="a", MessageDeduplicationId="1")
    q.send("b1", MessageGroupId="b", MessageDeduplicationId="2")
    src = q.source()
    await src.open()
    records = await fetch_all(src, 2)
    assert {r.event["body"]: r.group for r in records} == {"a1": "a", "b1": "b"}


async def test_long_poll_returns_when_a_message_arrives(make_queue: Any) -> None:
    q: Queue = make_queue()
    src = q.source()
    await src.open()
    start = time.monotonic()
    fetching = asyncio.create_task(src.fetch(10, 10))
    await asyncio.sleep(0.5)
    q.send("late")
    records = await fetching
    assert [r.event["body"] for r in records] == ["late"]
    assert time.monotonic() - start < 5


async def test_the_loop_ticks_during_a_long_poll(make_queue: Any) -> None:
    q: Queue = make_queue()
    src = q.source()
    await src.open()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    assert await src.fetch(10, 2.9) == []  # waits 2 s: whole seconds
    elapsed = time.monotonic() - start
    task.cancel()
    assert 1.8 < elapsed < 6
    assert ticks > elapsed * 30


async def test_a_cancelled_fetch_gives_its_messages_back_at_once(make_queue: Any) -> None:
    q: Queue = make_queue(visibility=60)
    src = q.source()
    await src.open()
    fetching = asyncio.create_task(src.fetch(10, 3))
    await asyncio.sleep(0.5)
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    sent = q.send("in flight when cancelled")  # the abandoned long poll takes it, then gives it back
    other = q.source()
    await other.open()
    (rec,) = await fetch_all(other, 1, wait=15)  # well before the 60 s visibility timeout
    assert rec.item_id == sent
    assert rec.event["attributes"]["ApproximateReceiveCount"] == "2"


async def test_close_returns_at_once_during_a_long_poll(make_queue: Any) -> None:
    q: Queue = make_queue()
    src = q.source()
    await src.open()
    fetching = asyncio.create_task(src.fetch(10, 20))
    await asyncio.sleep(0.3)
    fetching.cancel()
    start = time.monotonic()
    await src.close()
    assert time.monotonic() - start < 0.5
    with pytest.raises(SourceUnavailable, match="closed"):
        await src.fetch(10, 1)


async def test_a_missing_queue(server: Server) -> None:
    arn = server.arn("sqs", f"never-made-{next(_names)}")
    src = SqsSource(arn, server.url)
    with pytest.raises(SourceUnavailable) as caught:
        await src.open()
    assert arn in str(caught.value)
    assert "QueueDoesNotExist" in str(caught.value) or "NonExistentQueue" in str(caught.value)
    await src.close()


async def test_a_queue_deleted_meanwhile_fails_then_is_found_again(make_queue: Any) -> None:
    q: Queue = make_queue()
    src = q.source()
    await src.open()
    q.server.client("sqs").delete_queue(QueueUrl=q.url)
    with pytest.raises(SourceUnavailable, match=r"QueueDoesNotExist|NonExistentQueue"):
        await src.fetch(10, 1)
    q.server.client("sqs").create_queue(QueueName=q.name)
    q.send("again")
    (rec,) = await fetch_all(src, 1)
    assert rec.event["body"] == "again"


async def test_a_dead_endpoint_fails_fast() -> None:
    src = SqsSource(f"arn:aws:sqs:us-east-1:{ACCOUNT}:q", f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="EndpointConnectionError"):
        await src.open()
    with pytest.raises(SourceUnavailable, match="EndpointConnectionError"):
        await src.fetch(10, 20)
    assert time.monotonic() - start < 5
    await src.close()


async def test_a_silent_endpoint_fails_within_the_timeouts(silent_endpoint: str) -> None:
    src = SqsSource(f"arn:aws:sqs:us-east-1:{ACCOUNT}:q", silent_endpoint, connect_timeout=0.5, read_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="ReadTimeoutError"):
        await src.open()
    # two attempts of 0.5 s and a back-off of at most 1 s
    assert time.monotonic() - start < 4
    await src.close()


async def test_no_credentials_in_a_reason(make_queue: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reason is shown in the mapping (StateTransitionReason): never a credential, nor a URL's password."""
    q: Queue = make_queue()
    src = SqsSource(q.arn, q.server.url.replace("http://", "http://user:pa55word@") + "/nope")
    with pytest.raises(SourceUnavailable) as caught:
        await src.open()
    shown = str(caught.value)
    assert "pa55word" not in shown and "sqs-source-test-secret" not in shown and "AKIDSQSSOURCETEST" not in shown
    await src.close()


async def test_closed_sources_leave_no_threads(make_queue: Any) -> None:
    """The runner makes a new source at each reopen: the old one's workers must end."""
    q: Queue = make_queue()

    def workers() -> int:
        return sum(t.name.startswith("sqs-source") for t in threading.enumerate())

    before = workers()
    for _ in range(5):
        src = SqsSource(q.arn, q.server.url)
        await src.open()
        assert await src.fetch(10, 0) == []
        await src.close()
    deadline = time.monotonic() + 5
    while workers() > before:
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        await asyncio.sleep(0.05)
