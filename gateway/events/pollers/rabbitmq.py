"""Amazon MQ for RabbitMQ as an event source: Lambda's `aws:rmq` events, from any RabbitMQ broker (AMQP 0-9-1).

Where a broker is: a mapping's EventSourceArn is an Amazon MQ broker ARN (arn:aws:mq:REGION:ACCOUNT:broker:NAME:ID)
that must be a key of GATEWAY_MQ_BROKERS (`Settings.mq_brokers`), whose value is the AMQP URL the gateway connects
to. So an API caller can only point a mapping at a broker the operator listed, never at a host of their choosing;
an ARN that is not listed leaves the mapping Enabled with the reason in its StateTransitionReason (as an unreachable
broker does). The virtual host is the mapping's SourceAccessConfigurations VIRTUAL_HOST (default "/"; it replaces
the URL's path); the queue is its `Queues` (one), which must exist (passive declare: a missing queue is reported).

Credentials: the user and password are the AMQP URL's. On Lambda a mapping's BASIC_AUTH names a Secrets Manager
secret holding them; this gateway has no Secrets Manager, so a BASIC_AUTH entry is accepted and kept (GetEvent-
SourceMapping shows it) but not resolved: the URL's user logs in. Reasons shown to API callers never carry the
password.

Delivery: one connection and one channel per mapping, `basic.consume` on the queue with prefetch = BatchSize, so
the broker never has more than one batch out with us. Deliveries wait in an in-memory inbox for `fetch`. Acks follow
`Source`'s rule, durable before acknowledged: `settle` acks the succeeded and nacks the failed with requeue (the
broker delivers them again, `redelivered: true`); `discard` rejects without requeue, which is an ack for a plain
queue and hands the message to the queue's dead-letter exchange where it has one (x-dead-letter-exchange; a quorum
queue's x-delivery-limit also ends a poison message there). A connection or channel that closes (the broker went
away, a heartbeat missed, the queue deleted) makes the next `fetch` raise SourceUnavailable with the reason; its
unacknowledged messages are requeued by the broker itself, so nothing is lost (a batch that ran but whose ack was
lost runs again: at least once). Reconnecting is the runner's back-off: `close`, then `open` again.

Concurrency model: the runner's one task calls the methods in turn, on the event loop; aio-pika's reader task only
appends to the inbox and sets the broken reason (plain assignments on the same loop).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import decimal
import logging
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import orjson
from aiormq.abc import DeliveredMessage
from yarl import URL

from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.settings import Settings
from gateway.store.mappings import Mapping

log = logging.getLogger("gateway.pollers.rabbitmq")

KIND = "rabbitmq"
EVENT_SOURCE = "aws:rmq"
DEFAULT_VHOST = "/"
#: seconds to connect, log in and open the channel before the broker counts as unreachable
CONNECT_TIMEOUT = 10.0
#: seconds `close` waits for the broker to confirm
CLOSE_TIMEOUT = 5.0
#: how deep a header table may nest before the rest is shown as a string (a publisher controls headers)
MAX_HEADER_DEPTH = 16


@dataclass(slots=True)
class Delivery(Record):
    """A Record with the AMQP delivery `settle`/`discard` acknowledge (on the channel it came on)."""

    tag: int = 0
    channel: int = 0  # which `open` it came from: a later channel cannot acknowledge it


def virtual_host(mapping: Mapping) -> str:
    """The mapping's SourceAccessConfigurations VIRTUAL_HOST, else "/"."""
    for entry in mapping.source_access:
        if entry.get("Type") == "VIRTUAL_HOST" and entry.get("URI"):
            return entry["URI"]
    return DEFAULT_VHOST


def source_for(mapping: Mapping, settings: Settings) -> RabbitMQSource:
    """The source of a RabbitMQ mapping; no I/O (`open` connects)."""
    arn = mapping.event_source_arn or ""
    return RabbitMQSource(
        arn=arn,
        url=settings.mq_brokers.get(arn),
        queue=mapping.queues[0] if mapping.queues else "",
        vhost=virtual_host(mapping),
        prefetch=mapping.batch_size,
        name=f"lambda-gateway event source mapping {mapping.uuid} ({mapping.function})",
    )


def broker_url(url: str, vhost: str) -> URL:
    """`url` with its path replaced by `vhost`, percent-encoded as aiormq reads it ("/" is "%2F"); query kept."""
    base = URL(url)
    quoted = vhost.replace("%", "%25").replace("/", "%2F").replace("?", "%3F").replace("#", "%23")
    return base.with_path("/" + quoted, encoded=True).with_query(base.query)


class RabbitMQSource:
    """One mapping's consumer on one queue of one broker (see the module docstring)."""

    kind = KIND

    def __init__(self, arn: str, url: str | None, queue: str, vhost: str, prefetch: int, name: str = "") -> None:
        self.arn = arn
        #: the connection's name in the broker's management UI and logs
        self.name = name or "lambda-gateway event source mapping"
        self.queue = queue
        self.vhost = vhost
        self.prefetch = max(1, min(prefetch, 65535))  # basic.qos's prefetch-count is 16 bits
        self._url = broker_url(url, vhost) if url else None
        #: the password as given (percent-encoded) and decoded: neither may appear in a reason
        self._secrets = {p for p in (self._url.raw_password, self._url.password) if p} if self._url else set()
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._generation = 0
        self._inbox: asyncio.Queue[tuple[DeliveredMessage, float] | None] = asyncio.Queue()
        self._broken: str | None = None
        self._closing = False

    @property
    def key(self) -> str:
        """The key of `rmqMessagesByQueue`: "<queue>::<vhost>"."""
        return f"{self.queue}::{self.vhost}"

    def _where(self) -> str:
        host = f"{self._url.host}:{self._url.port}" if self._url is not None else "?"
        return f"broker {self.arn} ({host}, vhost {self.vhost!r}, queue {self.queue!r})"

    def _reason(self, what: str, exc: BaseException | None) -> str:
        """A reason for API callers: never the URL's password, which an error text might echo."""
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        text = f"{what} {self._where()}{detail}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def open(self) -> None:
        """Connect, log in, open a channel with prefetch = BatchSize and consume the queue. Raises
        SourceUnavailable (an unknown broker ARN, no queue, the broker unreachable or refusing us)."""
        if self._url is None:
            raise SourceUnavailable(f"the broker {self.arn} is not configured on this gateway (GATEWAY_MQ_BROKERS)")
        if not self.queue:
            raise SourceUnavailable(f"no queue to read on broker {self.arn} (Queues)")
        self._closing, self._broken = False, None
        self._generation += 1
        self._inbox = asyncio.Queue()
        generation = self._generation
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._connection = await aio_pika.connect(
                    self._url, timeout=CONNECT_TIMEOUT, client_properties={"connection_name": self.name}
                )
                self._connection.close_callbacks.add(self._on_close)
                channel = await self._connection.channel()
                channel.close_callbacks.add(self._on_close)
                await channel.set_qos(prefetch_count=self.prefetch)
                await channel.get_queue(self.queue, ensure=True)  # passive: the queue must exist
                self._channel = await channel.get_underlay_channel()
                # the queue deleted (or a quorum queue's leader lost) cancels our consumer: the channel stays open
                # but nothing comes; seen as a loss so that the runner's next `open` says why
                cancels = getattr(self._channel, "on_consumer_cancel_callbacks", None)  # aiormq >= 7.2
                if cancels is not None:
                    cancels.add(self._on_cancel)
                await self._channel.basic_consume(self.queue, lambda m: self._deliver(m, generation), no_ack=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # aiormq's, aio-pika's and the socket's errors alike mean "not now"
            await self.close()
            raise SourceUnavailable(self._reason("cannot consume from", exc)) from exc
        log.info("consuming %s, prefetch %d", self._where(), self.prefetch)

    async def _deliver(self, message: DeliveredMessage, generation: int) -> None:
        if generation == self._generation:
            self._inbox.put_nowait((message, time.time()))

    def _on_close(self, _sender: Any, exc: BaseException | None) -> None:
        self._lost(self._reason("lost the connection to", exc))

    def _on_cancel(self, _frame: Any) -> None:
        self._lost(self._reason("the broker cancelled our consumer (queue deleted?) on", None))

    def _lost(self, reason: str) -> None:
        if self._closing or self._broken is not None:
            return
        self._broken = reason
        log.warning("%s", reason)
        self._inbox.put_nowait(None)  # wakes a waiting fetch

    def _check(self) -> None:
        if self._broken is not None:
            raise SourceUnavailable(self._broken)
        if self._channel is None:
            raise SourceUnavailable(self._reason("not connected to", None))

    async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
        """Up to `max_records` deliveries, waiting at most `max_wait` seconds for the first. Raises
        SourceUnavailable once the connection is gone (its deliveries are dropped here: the broker requeues
        them)."""
        self._check()
        try:
            first = await asyncio.wait_for(self._inbox.get(), max(0.0, max_wait))
        except TimeoutError:
            self._check()
            return []
        got = [first]
        while len(got) < max_records and not self._inbox.empty():
            got.append(self._inbox.get_nowait())
        self._check()  # a None in `got` came with a broken reason
        return [self._record(*item) for item in got if item is not None]

    def _record(self, message: DeliveredMessage, received: float) -> Delivery:
        props = message.header.properties
        data = base64.b64encode(message.body).decode("ascii")
        event = {
            "basicProperties": basic_properties(props, len(message.body)),
            "redelivered": _redelivered(message),
            "data": data,
        }
        sent = props.timestamp.timestamp() if props.timestamp is not None else received
        return Delivery(
            item_id=props.message_id or str(message.delivery_tag),
            event=event,
            filter_view={**event, "data": _decoded(message.body, data)},
            timestamp=min(sent, received),  # a publisher's clock ahead of ours does not make a negative age
            size=len(orjson.dumps(event)) + 1,
            tag=message.delivery_tag or 0,
            channel=self._generation,
        )

    def event(self, records: list[Record]) -> bytes:
        """Lambda's event: {"eventSource": "aws:rmq", "eventSourceArn", "rmqMessagesByQueue": {"<queue>::<vhost>":
        [{"basicProperties", "redelivered", "data"}]}}."""
        return orjson.dumps(
            {
                "eventSource": EVENT_SOURCE,
                "eventSourceArn": self.arn,
                "rmqMessagesByQueue": {self.key: [r.event for r in records]},
            }
        )

    async def settle(self, succeeded: list[Record], failed: list[Record]) -> None:
        """Ack `succeeded`; nack `failed` with requeue (delivered again, `redelivered: true`)."""
        for record in succeeded:
            await self._acknowledge(record, "ack")
        for record in failed:
            await self._acknowledge(record, "nack")

    async def discard(self, records: list[Record]) -> None:
        """Reject without requeue: gone from the queue, or dead-lettered where the queue has a dead-letter exchange."""
        for record in records:
            await self._acknowledge(record, "reject")

    async def _acknowledge(self, record: Record, how: str) -> None:
        """One ack/nack/reject. A delivery of an earlier channel, or a channel that is gone, is left alone: the
        broker requeued it when that channel closed (the next fetch reports the loss)."""
        channel = self._channel
        if not isinstance(record, Delivery) or channel is None or record.channel != self._generation:
            return
        try:
            if how == "ack":
                await channel.basic_ack(record.tag)
            elif how == "nack":
                await channel.basic_nack(record.tag, requeue=True)
            else:
                await channel.basic_reject(record.tag, requeue=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(self._reason(f"could not {how} a message on", exc))

    async def close(self) -> None:
        """Close the connection; the broker requeues whatever was not acknowledged."""
        self._closing = True
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await connection.close()


def _redelivered(message: DeliveredMessage) -> bool:
    return bool(getattr(message.delivery, "redelivered", False))


def _decoded(body: bytes, data: str) -> Any:
    """What filter patterns see as `data`: the body parsed as JSON when it is JSON, else the base64 as in the
    event."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return data


def java_date(value: datetime.datetime) -> str:
    """A timestamp as Lambda's (Java) events print it, in UTC: "Jan 1, 1970, 12:33:41 AM"."""
    value = value.astimezone(datetime.UTC) if value.tzinfo else value
    hour = value.hour % 12 or 12
    return f"{value:%b} {value.day}, {value.year}, {hour}:{value:%M:%S} {'AM' if value.hour < 12 else 'PM'}"


def header_value(value: Any, depth: int = 0) -> Any:
    """An AMQP table value as Lambda shows it: strings and byte arrays as {"bytes": [...]}, numbers and booleans as
    they are, timestamps as dates, tables and arrays recursively."""
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, bytes | bytearray):
        return {"bytes": list(value)}
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return java_date(value)
    if depth >= MAX_HEADER_DEPTH:
        return str(value)[:1024]
    if isinstance(value, dict):
        return {str(k): header_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [header_value(v, depth + 1) for v in value]
    return str(value)


def basic_properties(props: Any, body_size: int) -> dict[str, Any]:
    """An AMQP message's Basic properties (pamqp's `Basic.Properties`) as Lambda's `basicProperties`: every field,
    null where the publisher set none."""
    return {
        "contentType": props.content_type,
        "contentEncoding": props.content_encoding,
        "headers": header_value(props.headers) if props.headers is not None else None,
        "deliveryMode": props.delivery_mode,
        "priority": props.priority,
        "correlationId": props.correlation_id,
        "replyTo": props.reply_to,
        "expiration": props.expiration,  # milliseconds, a string as on the wire
        "messageId": props.message_id,
        "timestamp": java_date(props.timestamp) if props.timestamp is not None else None,
        "type": props.message_type,
        "userId": props.user_id,
        "appId": props.app_id,
        "clusterId": props.cluster_id or None,
        "bodySize": body_size,
    }
