"""The Kafka event source (gateway/events/pollers/kafka.py) against a real broker (KRaft, tests/servers.py): the
event's shape, offsets committed only for settled records and never past a failed one, a failed record fetched
again, a restarted source resuming from the committed offset, StartingPosition, an unreachable broker. Records are
produced with aiokafka's producer; committed offsets are read back with its admin client."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from gateway.events.pollers.kafka import (
    AT_TIMESTAMP,
    LATEST,
    TRIM_HORIZON,
    KafkaSource,
    filter_view,
    record_event,
    source_for,
)
from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.settings import Settings
from gateway.store.mappings import KAFKA, Mapping
from tests.conftest import free_port
from tests.servers import KafkaServer

_names = itertools.count()
#: the first test to use the broker waits for Maven (on a fresh machine, some 40 jars) and the JVM's start
pytestmark = pytest.mark.timeout(400)


# --- pure parts -------------------------------------------------------------------------------------------------


def _message(**kw: Any) -> ConsumerRecord[bytes, bytes]:
    fields: dict[str, Any] = {
        "topic": "orders",
        "partition": 2,
        "offset": 15,
        "timestamp": 1545084650987,
        "timestamp_type": 0,
        "key": b"recordKey",
        "value": b'{"key":"value"}',
        "checksum": None,
        "serialized_key_size": 9,
        "serialized_value_size": 15,
        "headers": [("headerKey", b"headerValue")],
    }
    fields.update(kw)
    return ConsumerRecord(**fields)


def test_record_event_has_lambdas_shape() -> None:
    assert record_event(_message()) == {
        "topic": "orders",
        "partition": 2,
        "offset": 15,
        "timestamp": 1545084650987,
        "timestampType": "CREATE_TIME",
        "key": "cmVjb3JkS2V5",
        "value": "eyJrZXkiOiJ2YWx1ZSJ9",
        "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}],
    }


def test_record_without_key_or_value_leaves_them_out() -> None:
    event = record_event(_message(key=None, value=None, headers=[("empty", None)], timestamp_type=1))
    assert "key" not in event and "value" not in event
    assert event["timestampType"] == "LOG_APPEND_TIME" and event["headers"] == [{"empty": []}]


@pytest.mark.parametrize(
    ("value", "seen"),
    [
        (b'{"device_ID": "AB1234"}', {"device_ID": "AB1234"}),
        (b"[1, 2]", [1, 2]),
        (b"plain text", "plain text"),
        (b"\xff\xfe binary", base64.b64encode(b"\xff\xfe binary").decode()),
    ],
)
def test_filter_view_decodes_the_value(value: bytes, seen: Any) -> None:
    event = record_event(_message(value=value))
    view = filter_view(event)
    assert view["value"] == seen
    assert view["offset"] == 15 and event["value"] == base64.b64encode(value).decode()  # the event is untouched


def test_source_for_takes_the_mappings_group_topic_and_servers() -> None:
    mapping = Mapping(
        uuid="6b2f0a3c-0000-4000-8000-000000000001",
        function="f",
        qualifier=None,
        kind=KAFKA,
        topics=("orders",),
        self_managed={"KAFKA_BOOTSTRAP_SERVERS": ["a:9092", "b:9092"]},
        starting_position=LATEST,
    )
    source = source_for(mapping, Settings())
    assert (source.group_id, source.topic, source.servers) == (mapping.uuid, "orders", ["a:9092", "b:9092"])
    assert source.starting_position == LATEST and source.kind == "kafka"
    named = source_for(Mapping(**{**_fields(mapping), "consumer_group_id": "billing"}), Settings())
    assert named.group_id == "billing"


async def test_authentication_it_cannot_do_is_refused_not_ignored() -> None:
    """SASL/TLS secrets are not read here: the mapping is told so instead of being connected in plaintext."""
    base = Mapping(
        uuid="u",
        function="f",
        qualifier=None,
        kind=KAFKA,
        topics=("t",),
        self_managed={"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:1"]},
    )
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka"
    access = ({"Type": "VPC_SUBNET", "URI": "subnet:subnet-1"}, {"Type": "SASL_SCRAM_512_AUTH", "URI": secret})
    source = source_for(Mapping(**{**_fields(base), "source_access": access}), Settings())
    with pytest.raises(SourceUnavailable, match="SASL_SCRAM_512_AUTH not supported"):
        await source.open()
    await source.close()
    assert source_for(Mapping(**{**_fields(base), "source_access": access[:1]}), Settings()).unsupported == []


def _fields(mapping: Mapping) -> dict[str, Any]:
    return {f: getattr(mapping, f) for f in mapping.__dataclass_fields__}


# --- against the broker -----------------------------------------------------------------------------------------

Produce = Callable[..., Awaitable[None]]


@pytest.fixture
async def topic(kafka_server: KafkaServer) -> str:
    """A new topic with two partitions."""
    name = f"t{next(_names)}-{int(time.time() * 1000)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    return name


@pytest.fixture
async def produce(kafka_server: KafkaServer) -> AsyncIterator[Produce]:
    """`await produce(topic, value, partition=0, key=None, headers=())`: one record, acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap)
    await producer.start()

    async def send(topic: str, value: bytes, partition: int = 0, key: bytes | None = None, headers: Any = ()) -> None:
        await producer.send_and_wait(topic, value, key=key, partition=partition, headers=list(headers))

    yield send
    await producer.stop()


@pytest.fixture
async def sources(kafka_server: KafkaServer) -> AsyncIterator[Callable[..., Awaitable[KafkaSource]]]:
    """`await sources(topic, group, position=TRIM_HORIZON)`: an open source, closed at teardown."""
    opened: list[KafkaSource] = []

    async def make(topic: str, group: str, position: str = TRIM_HORIZON, at: float | None = None) -> KafkaSource:
        source = KafkaSource([kafka_server.bootstrap], topic, group, position, at)
        opened.append(source)
        await source.open()
        return source

    yield make
    for source in opened:
        await source.close()


async def _fetch_all(source: KafkaSource, want: int, wait: float = 10.0) -> list[Record]:
    """Fetch until `want` records came (or `wait` seconds passed)."""
    records: list[Record] = []
    deadline = time.monotonic() + wait
    while len(records) < want and time.monotonic() < deadline:
        records += await source.fetch(100, 0.5)
    return records


async def _committed(server: KafkaServer, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=server.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def _offsets(records: list[Record], partition: int | None = None) -> list[int]:
    return [int(r.item_id) for r in records if partition is None or r.event["partition"] == partition]


async def test_fetch_gives_lambdas_selfmanagedkafka_event(
    kafka_server: KafkaServer, topic: str, produce: Produce, sources: Any
) -> None:
    before = time.time()
    await produce(topic, b'{"device_ID": "AB1234"}', partition=0, key=b"k1", headers=[("trace", b"abc")])
    await produce(topic, b"plain", partition=1)
    source = await sources(topic, "g-shape")
    records = await _fetch_all(source, 2)
    assert sorted((r.group, r.item_id) for r in records) == [(f"{topic}-0", "0"), (f"{topic}-1", "0")]
    event = orjson.loads(source.event(records))
    assert event["eventSource"] == "SelfManagedKafka" and event["bootstrapServers"] == kafka_server.bootstrap
    assert set(event["records"]) == {f"{topic}-0", f"{topic}-1"}
    first = event["records"][f"{topic}-0"][0]
    assert first["topic"] == topic and first["partition"] == 0 and first["offset"] == 0
    assert base64.b64decode(first["key"]) == b"k1" and first["timestampType"] == "CREATE_TIME"
    assert base64.b64decode(first["value"]) == b'{"device_ID": "AB1234"}'
    assert first["headers"] == [{"trace": list(b"abc")}]
    assert "key" not in event["records"][f"{topic}-1"][0]
    json_record = next(r for r in records if r.event["partition"] == 0)
    assert json_record.filter_view["value"] == {"device_ID": "AB1234"}
    assert before - 1 <= json_record.timestamp <= time.time() + 1
    assert json_record.size >= len(orjson.dumps(json_record.event))


async def test_offsets_are_committed_only_after_settle(
    kafka_server: KafkaServer, topic: str, produce: Produce, sources: Any
) -> None:
    for i in range(3):
        await produce(topic, b"%d" % i)
    source = await sources(topic, "g-commit")
    records = await _fetch_all(source, 3)
    assert _offsets(records) == [0, 1, 2]
    assert await _committed(kafka_server, "g-commit") == {}  # fetched is not committed
    await source.close()
    again = await sources(topic, "g-commit")  # unsettled: all of them come again
    records = await _fetch_all(again, 3)
    assert _offsets(records) == [0, 1, 2]
    await again.settle(records, [])
    await again.flush()
    assert (await _committed(kafka_server, "g-commit"))[0] == 3


async def test_a_failed_record_comes_back_and_nothing_past_it_is_committed(
    kafka_server: KafkaServer, topic: str, produce: Produce, sources: Any
) -> None:
    for i in range(5):
        await produce(topic, b"%d" % i)
    await produce(topic, b"other partition", partition=1)
    source = await sources(topic, "g-fail")
    records = await _fetch_all(source, 6)
    by_offset = {(r.event["partition"], int(r.item_id)): r for r in records}
    failed = [by_offset[(0, 2)]]
    await source.settle([r for r in records if r not in failed], failed)
    await source.flush()
    # partition 0 stops at its failed record, partition 1 is not held back by it
    assert await _committed(kafka_server, "g-fail") == {0: 2, 1: 1}
    again = await _fetch_all(source, 3)
    assert _offsets(again, 0) == [2, 3, 4] and _offsets(again, 1) == []
    await source.settle(again, [])
    await source.flush()
    assert (await _committed(kafka_server, "g-fail"))[0] == 5
    assert await source.fetch(10, 0.5) == []


async def test_a_stale_result_of_a_record_already_sent_back_is_ignored(
    topic: str, produce: Produce, sources: Any
) -> None:
    """Two batches of one partition in flight; the first fails: the second's success must not commit past it."""
    for i in range(4):
        await produce(topic, b"%d" % i)
    source = await sources(topic, "g-stale")
    first = await source.fetch(2, 5.0)
    second = await _fetch_all(source, 2)
    assert _offsets(first) == [0, 1] and _offsets(second) == [2, 3]
    await source.settle([first[0]], [first[1]])
    await source.settle(second, [])  # too late: 1 failed, so 2 and 3 come again
    await source.settle([], second)  # and a failure of theirs seeks nowhere
    assert _offsets(await _fetch_all(source, 3)) == [1, 2, 3]


async def test_a_restarted_source_resumes_from_the_committed_offset(
    kafka_server: KafkaServer, topic: str, produce: Produce, sources: Any
) -> None:
    for i in range(5):
        await produce(topic, b"%d" % i)
    source = await sources(topic, "g-resume")
    records = await _fetch_all(source, 5)
    await source.settle(records[:3], [])
    await source.close()
    again = await sources(topic, "g-resume")
    assert _offsets(await _fetch_all(again, 2)) == [3, 4]


async def test_discard_commits_past_the_records(
    kafka_server: KafkaServer, topic: str, produce: Produce, sources: Any
) -> None:
    await produce(topic, b"poison")
    await produce(topic, b"fine")
    source = await sources(topic, "g-discard")
    records = await _fetch_all(source, 2)
    await source.settle([], records)
    await source.discard(await _fetch_all(source, 2))
    await source.flush()
    assert (await _committed(kafka_server, "g-discard"))[0] == 2


async def test_latest_starts_at_the_end_trim_horizon_at_the_start(topic: str, produce: Produce, sources: Any) -> None:
    await produce(topic, b"old")
    latest = await sources(topic, "g-latest", LATEST)
    assert await latest.fetch(10, 1.0) == []
    await produce(topic, b"new")
    assert [base64.b64decode(r.event["value"]) for r in await _fetch_all(latest, 1)] == [b"new"]
    oldest = await sources(topic, "g-trim", TRIM_HORIZON)
    assert [base64.b64decode(r.event["value"]) for r in await _fetch_all(oldest, 2)] == [b"old", b"new"]


async def test_latest_applies_only_where_the_group_has_committed_nothing(
    topic: str, produce: Produce, sources: Any
) -> None:
    await produce(topic, b"0")
    await produce(topic, b"1")
    first = await sources(topic, "g-latest-committed", TRIM_HORIZON)
    records = await _fetch_all(first, 2)
    await first.settle(records[:1], [])
    await first.close()
    resumed = await sources(topic, "g-latest-committed", LATEST)
    assert _offsets(await _fetch_all(resumed, 1)) == [1]


async def test_latest_is_kept_across_a_restart_before_any_record_came(
    topic: str, produce: Produce, sources: Any
) -> None:
    """LATEST is where the mapping started, committed at once: records produced while the gateway was down (or while
    the first batch of a fresh partition was in flight when it was killed) are not skipped by a later "latest"."""
    await produce(topic, b"old")
    first = await sources(topic, "g-latest-kept", LATEST)
    assert await first.fetch(10, 0.5) == []  # nothing yet; the position chosen is committed here
    await first.close()
    await produce(topic, b"while down")
    again = await sources(topic, "g-latest-kept", LATEST)
    assert [base64.b64decode(r.event["value"]) for r in await _fetch_all(again, 1)] == [b"while down"]


async def test_at_timestamp_starts_at_the_first_record_from_then(topic: str, produce: Produce, sources: Any) -> None:
    await produce(topic, b"before")
    await asyncio.sleep(0.05)
    at = time.time()
    await asyncio.sleep(0.05)
    await produce(topic, b"after")
    source = await sources(topic, "g-at", AT_TIMESTAMP, at)
    assert [base64.b64decode(r.event["value"]) for r in await _fetch_all(source, 1)] == [b"after"]
    assert await source.fetch(10, 0.5) == []


async def test_an_unreachable_broker_is_source_unavailable_with_its_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    source = KafkaSource([address], "orders", "g-nowhere")
    started = time.monotonic()
    try:
        with pytest.raises(SourceUnavailable, match=address):
            await source.open()
    finally:
        await source.close()
    assert time.monotonic() - started < 15


async def test_a_broker_that_goes_away_is_reported_by_fetch_and_close_still_works(
    kafka_server: KafkaServer, tmp_path: Path
) -> None:
    """aiokafka keeps reconnecting on its own and fetches come back empty: the source asks for metadata after a
    quiet spell, so that the runner learns the broker is gone (and reopens with back-off)."""
    broker = KafkaServer(tmp_path / "kafka.log", classpath=kafka_server.classpath).start(timeout=120)
    source = KafkaSource([broker.bootstrap], "gone", "g-gone")
    try:
        await source.open()
        source.probe_every = 1.0
        assert await source.fetch(10, 0.2) == []  # quiet, but there: no error
        broker.stop()
        with pytest.raises(SourceUnavailable, match=broker.bootstrap):
            for _ in range(20):
                await source.fetch(10, 0.5)
    finally:
        broker.stop()
        await source.close()  # does not raise aiokafka's cancellation of its own retry


async def test_no_bootstrap_servers_or_topic_is_source_unavailable() -> None:
    for source, reason in (
        (KafkaSource([], "t", "g"), "KAFKA_BOOTSTRAP_SERVERS"),
        (KafkaSource(["h:1"], "", "g"), "topic"),
    ):
        with pytest.raises(SourceUnavailable, match=reason):
            await source.open()
        await source.close()


async def test_two_members_share_the_partitions_and_a_restart_resumes_both(
    topic: str, produce: Produce, sources: Any
) -> None:
    """Two members of one group each get one partition; each settles the first record of its own; a member that
    comes after them starts both partitions from their committed offsets."""
    for partition in (0, 1):
        for i in range(2):
            await produce(topic, b"%d" % i, partition=partition)
    one = await sources(topic, "g-two")
    two = await sources(topic, "g-two")
    for member in (one, two):
        got = await _fetch_all(member, 2, wait=5.0)
        assert len(got) == 2 and len({r.group for r in got}) == 1  # one partition each
        await member.settle(got[:1], got[1:])
        await member.close()
    last = await sources(topic, "g-two")
    assert sorted((r.event["partition"], int(r.item_id)) for r in await _fetch_all(last, 2)) == [(0, 1), (1, 1)]
