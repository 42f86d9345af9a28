"""The RabbitMQ source (gateway/events/pollers/rabbitmq.py) against a real broker (Debian's rabbitmq-server:
tests/servers.py): Lambda's `aws:rmq` event, prefetch = BatchSize, acks only in settle/discard, redelivery of the
failed, dead-lettering of the discarded, virtual hosts, and a broker that is unknown, unreachable or goes away."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import orjson
import pytest

from gateway.events.pollers.rabbitmq import (
    RabbitMQSource,
    broker_url,
    header_value,
    java_date,
    source_for,
)
from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.settings import Settings
from gateway.store.mappings import RABBITMQ, Mapping
from tests.conftest import free_port
from tests.servers import RabbitMQServer

ARN = "arn:aws:mq:us-east-1:123456789012:broker:test-broker:b-0123-4567"
_names = itertools.count()


def _mapping(queue: str, vhost: str | None = None, batch_size: int = 10, arn: str = ARN) -> Mapping:
    access: list[dict[str, str]] = [{"Type": "BASIC_AUTH", "URI": "arn:aws:secretsmanager:us-east-1:1:secret:s"}]
    if vhost is not None:
        access.append({"Type": "VIRTUAL_HOST", "URI": vhost})
    return Mapping(
        uuid=f"u-{queue}",
        function="f",
        qualifier=None,
        kind=RABBITMQ,
        event_source_arn=arn,
        queues=(queue,),
        source_access=tuple(access),
        batch_size=batch_size,
    )


def _source(server: RabbitMQServer, queue: str, vhost: str | None = None, batch_size: int = 10) -> RabbitMQSource:
    return source_for(_mapping(queue, vhost, batch_size), Settings(mq_brokers={ARN: server.url()}))


@pytest.fixture
async def queue(rabbitmq_server: RabbitMQServer) -> AsyncIterator[str]:
    """A new durable queue on "/" (deleted afterwards)."""
    name = f"q-{next(_names)}"
    async with await aio_pika.connect(rabbitmq_server.url()) as conn:
        channel = await conn.channel()
        await channel.declare_queue(name, durable=True)
        yield name
        await channel.queue_delete(name)


async def _publish(url: str, queue: str, *bodies: bytes, **properties: Any) -> None:
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel(publisher_confirms=True)
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body, **properties), routing_key=queue)


async def _fetch(source: RabbitMQSource, count: int, wait: float = 10.0) -> list[Record]:
    """At least `count` records (more if they come at once), within `wait` seconds."""
    got: list[Record] = []
    deadline = asyncio.get_running_loop().time() + wait
    while len(got) < count:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"only {len(got)} of {count} records came"
        got += await source.fetch(100, left)
    return got


async def _left(url: str, queue: str) -> int:
    """Messages ready in `queue` (not counting those delivered and not yet acknowledged)."""
    async with await aio_pika.connect(url) as conn:
        declared = await (await conn.channel()).declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def _body(record: Record) -> bytes:
    return base64.b64decode(record.event["data"])


async def test_the_event_is_lambdas_aws_rmq_shape(rabbitmq_server: RabbitMQServer, queue: str) -> None:
    sent = datetime.datetime(2026, 1, 7, 13, 5, 9, tzinfo=datetime.UTC)
    await _publish(
        rabbitmq_server.url(),
        queue,
        b'{"order": 42}',
        content_type="application/json",
        headers={"tenant": "acme", "attempt": 3, "flag": True},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=4,
        correlation_id="c-1",
        message_id="m-1",
        timestamp=sent,
        expiration=60,
        app_id="shop",
    )
    async with await aio_pika.connect(rabbitmq_server.url()) as conn:  # few properties (aiormq sets 2, aio-pika more)
        raw = await (await conn.channel()).get_underlay_channel()
        await raw.basic_publish(b"plain \xff bytes", routing_key=queue)
    source = _source(rabbitmq_server, queue)
    await source.open()
    try:
        records = await _fetch(source, 2)
        event = orjson.loads(source.event(records))
        assert event["eventSource"] == "aws:rmq" and event["eventSourceArn"] == ARN
        assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
        first, second = event["rmqMessagesByQueue"][f"{queue}::/"]
        assert base64.b64decode(first["data"]) == b'{"order": 42}' and first["redelivered"] is False
        assert first["basicProperties"] == {
            "contentType": "application/json",
            "contentEncoding": None,
            "headers": {"tenant": {"bytes": list(b"acme")}, "attempt": 3, "flag": True},
            "deliveryMode": 2,
            "priority": 4,
            "correlationId": "c-1",
            "replyTo": None,
            "expiration": "60000",
            "messageId": "m-1",
            "timestamp": "Jan 7, 2026, 1:05:09 PM",
            "type": None,
            "userId": None,
            "appId": "shop",
            "clusterId": None,
            "bodySize": 13,
        }
        unset = ("contentType", "headers", "priority", "timestamp", "expiration", "appId", "clusterId")
        assert [second["basicProperties"][k] for k in unset] == [None] * len(unset)  # absent is null
        # what filters see: data decoded where it is JSON, else as the event has it
        assert records[0].filter_view["data"] == {"order": 42}
        assert records[1].filter_view["data"] == second["data"]
        assert records[0].item_id == "m-1"  # its messageId (else its delivery tag)
        assert records[0].timestamp == sent.timestamp()
        assert records[0].size >= len(orjson.dumps(first))
    finally:
        await source.close()


async def test_prefetch_is_the_batch_size_and_acks_wait_for_settle(rabbitmq_server: RabbitMQServer, queue: str) -> None:
    url = rabbitmq_server.url()
    await _publish(url, queue, *(b"%d" % i for i in range(5)))
    source = _source(rabbitmq_server, queue, batch_size=2)
    await source.open()
    try:
        batch = await _fetch(source, 2)
        assert len(batch) == 2
        assert await source.fetch(10, 0.5) == []  # the broker holds the rest back until we settle
        await source.settle(batch, [])
        batch = await _fetch(source, 2)
        assert [_body(r) for r in batch] == [b"2", b"3"]
    finally:
        await source.close()  # without settle: those two go back to the queue
    assert await _left(url, queue) == 3
    again = _source(rabbitmq_server, queue, batch_size=10)
    await again.open()
    try:
        batch = await _fetch(again, 3)
        assert [(_body(r), r.event["redelivered"]) for r in batch] == [(b"2", True), (b"3", True), (b"4", False)]
        await again.settle(batch, [])
    finally:
        await again.close()
    assert await _left(url, queue) == 0


async def test_a_failed_message_comes_back_redelivered(rabbitmq_server: RabbitMQServer, queue: str) -> None:
    await _publish(rabbitmq_server.url(), queue, b"ok", b"bad")
    source = _source(rabbitmq_server, queue)
    await source.open()
    try:
        ok, bad = await _fetch(source, 2)
        await source.settle([ok], [bad])
        (again,) = await _fetch(source, 1)
        assert _body(again) == b"bad" and again.event["redelivered"] is True
        assert orjson.loads(source.event([again]))["rmqMessagesByQueue"][f"{queue}::/"][0]["redelivered"] is True
        await source.settle([again], [])
        assert await source.fetch(10, 0.5) == []
    finally:
        await source.close()
    assert await _left(rabbitmq_server.url(), queue) == 0


async def test_discard_dead_letters_where_the_queue_says_so(rabbitmq_server: RabbitMQServer) -> None:
    url, name = rabbitmq_server.url(), f"q-{next(_names)}"
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_queue(f"{name}-dlq", durable=True)
        dead = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}-dlq"}
        await channel.declare_queue(name, durable=True, arguments=dead)
    await _publish(url, name, b"poison")
    source = _source(rabbitmq_server, name)
    await source.open()
    try:
        records = await _fetch(source, 1)
        await source.discard(records)
        assert await source.fetch(10, 0.5) == []
    finally:
        await source.close()
    assert (await _left(url, name), await _left(url, f"{name}-dlq")) == (0, 1)


async def test_the_virtual_host_is_the_mappings(rabbitmq_server: RabbitMQServer) -> None:
    name = f"q-{next(_names)}"
    async with await aio_pika.connect(rabbitmq_server.url("other")) as conn:
        await (await conn.channel()).declare_queue(name)
    await _publish(rabbitmq_server.url("other"), name, b"in other")
    missing = _source(rabbitmq_server, name)  # "/" has no such queue
    with pytest.raises(SourceUnavailable, match="NOT_FOUND"):
        await missing.open()
    await missing.close()
    source = _source(rabbitmq_server, name, vhost="other")
    await source.open()
    try:
        records = await _fetch(source, 1)
        assert list(orjson.loads(source.event(records))["rmqMessagesByQueue"]) == [f"{name}::other"]
        await source.settle(records, [])
    finally:
        await source.close()


async def test_an_unknown_broker_arn_reaches_no_host(rabbitmq_server: RabbitMQServer, queue: str) -> None:
    """A mapping can name only a broker the operator listed: an ARN that is not in GATEWAY_MQ_BROKERS is a reason,
    not a connection."""
    other = ARN.replace("test-broker", "elsewhere")
    source = source_for(_mapping(queue, arn=other), Settings(mq_brokers={ARN: rabbitmq_server.url()}))
    with pytest.raises(SourceUnavailable, match="GATEWAY_MQ_BROKERS") as caught:
        await source.open()
    assert other in str(caught.value)
    with pytest.raises(SourceUnavailable):
        await source.fetch(10, 0.1)
    await source.close()


@pytest.mark.parametrize("problem", ["closed port", "wrong password"])
async def test_an_unreachable_or_refusing_broker_is_a_reason_without_the_password(
    rabbitmq_server: RabbitMQServer, queue: str, problem: str
) -> None:
    if problem == "closed port":
        url = rabbitmq_server.url(port=free_port())
    else:
        url = rabbitmq_server.url().replace(rabbitmq_server.password, "not-the-pw-123")
    source = source_for(_mapping(queue), Settings(mq_brokers={ARN: url}))
    with pytest.raises(SourceUnavailable) as caught:
        await source.open()
    await source.close()
    reason = str(caught.value)
    assert ARN in reason and rabbitmq_server.password not in reason and "not-the-pw-123" not in reason


class _Proxy:
    """A TCP relay to the broker that a test can cut (the broker "goes away") and bring back on the same port."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def test_a_broker_that_goes_away_is_unavailable_and_loses_nothing(
    rabbitmq_server: RabbitMQServer, queue: str
) -> None:
    await _publish(rabbitmq_server.url(), queue, b"in flight")
    proxy = _Proxy(rabbitmq_server.port)
    await proxy.start()
    source = source_for(_mapping(queue), Settings(mq_brokers={ARN: rabbitmq_server.url(port=proxy.port)}))
    await source.open()
    try:
        records = await _fetch(source, 1)
        waiting = asyncio.create_task(source.fetch(10, 30.0))
        await asyncio.sleep(0.2)
        await proxy.cut()
        with pytest.raises(SourceUnavailable, match="lost the connection") as caught:
            await asyncio.wait_for(waiting, 10)
        assert rabbitmq_server.password not in str(caught.value)
        await source.settle(records, [])  # its channel is gone: nothing to ack, the broker requeued it
        with pytest.raises(SourceUnavailable):
            await source.fetch(10, 0.1)
        await source.close()
        with pytest.raises(SourceUnavailable):  # still cut
            await source.open()
        await source.close()
        await proxy.start()  # the broker is back: the runner's next `open` resumes, the message comes again
        await source.open()
        (again,) = await _fetch(source, 1)
        assert _body(again) == b"in flight" and again.event["redelivered"] is True
        await source.settle([again], [])
    finally:
        await source.close()
        await proxy.cut()
    assert await _left(rabbitmq_server.url(), queue) == 0


async def test_a_deleted_queue_is_a_reason(rabbitmq_server: RabbitMQServer) -> None:
    """The broker cancels the consumer of a deleted queue (the channel stays open): fetch says so, open then
    reports the missing queue."""
    url, name = rabbitmq_server.url(), f"q-{next(_names)}"
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_queue(name)
        source = _source(rabbitmq_server, name)
        await source.open()
        try:
            assert await source.fetch(10, 0.1) == []
            await channel.queue_delete(name)
            with pytest.raises(SourceUnavailable, match="cancelled our consumer"):
                await source.fetch(10, 10.0)
            await source.close()
            with pytest.raises(SourceUnavailable, match="NOT_FOUND"):
                await source.open()
        finally:
            await source.close()


def test_pure_parts() -> None:
    assert java_date(datetime.datetime(1970, 1, 1, 0, 33, 41, tzinfo=datetime.UTC)) == "Jan 1, 1970, 12:33:41 AM"
    assert java_date(datetime.datetime(2026, 3, 9, 12, 0, 1, tzinfo=datetime.UTC)) == "Mar 9, 2026, 12:00:01 PM"
    assert header_value({"a": [b"\x01", 2.5, None, {"b": "x"}]}) == {
        "a": [{"bytes": [1]}, 2.5, None, {"b": {"bytes": [120]}}]
    }
    deep: Any = "end"
    for _ in range(40):  # a publisher's deeply nested table stops at a bounded depth
        deep = {"d": deep}
    assert orjson.dumps(header_value(deep))
    assert str(broker_url("amqp://u:p@h:5672/x?heartbeat=5", "/")) == "amqp://u:p@h:5672/%2F?heartbeat=5"
    assert str(broker_url("amqp://u:p@h/", "a/b")) == "amqp://u:p@h/a%2Fb"
