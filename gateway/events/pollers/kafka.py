"""Self-managed Apache Kafka as an event source: one consumer of the mapping's consumer group on its one topic.

What the function sees is Lambda's `SelfManagedKafka` event: `{"eventSource": "SelfManagedKafka",
"bootstrapServers": "h1:9092,h2:9092", "records": {"<topic>-<partition>": [{"topic", "partition", "offset",
"timestamp", "timestampType", "key", "value", "headers"}]}}` with key and value in base64 (each left out when the
record has none, as Lambda does) and headers as `[{"name": [byte, ...]}]`.

Offsets (at least once, order kept per partition):
- auto-commit is off; an offset is committed only in `settle` (the records that succeeded) and `discard` (the
  records whose OnFailure destination got them), and never past a record that has not: per partition the commit
  point is the lowest offset still in flight (fetched, not settled), or, with none in flight, the next one to fetch.
  The commit is sent by `settle` and completes while the runner invokes the next batch (the next `settle`, and
  `close`, wait for it first): a crash before it completes delivers those records again, as at least once allows.
- a failed record is fetched again: `settle` seeks its partition back to the first failed offset and forgets the
  later records in flight there (a success reported later for one of those is ignored: it comes back too).
- where the group has no committed offset for a partition, StartingPosition says where to begin (TRIM_HORIZON:
  the oldest record, LATEST: the end as of the assignment, AT_TIMESTAMP: the first record at or after the time).
- partitions taken away by a rebalance get their commit point committed first; records of theirs still in flight
  are then another consumer's to deliver again.

Concurrency model: the runner owns one `KafkaSource` and awaits each call before the next (source.py), all on the
event loop; aiokafka's coordinator task calls the rebalance listener on the same loop, between those awaits, and
both only touch the per-partition dicts at points without an `await` in the middle.

Client: aiokafka (pure Python over asyncio, maintained under aio-libs; its consumer groups, manual commits and
seeks are what this needs, and it runs on the gateway's loop without threads or a C library).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError

from gateway.events.pollers.source import Record, SourceUnavailable
from gateway.settings import Settings
from gateway.store.mappings import Mapping

log = logging.getLogger("gateway.pollers.kafka")

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_TIMESTAMP = "AT_TIMESTAMP"
BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
#: Kafka's timestamp types by aiokafka's number (-1: a record without one, from before message format 1)
TIMESTAMP_TYPES = {0: "CREATE_TIME", 1: "LOG_APPEND_TIME"}
#: how long `open` waits to be assigned partitions (so that LATEST is fixed when it returns); a group that is
#: slower than this still gets them later, in the background
ASSIGNMENT_WAIT = 15.0
#: how long `open` may take to reach a broker before the mapping is told it is unavailable
CONNECT_TIMEOUT = 10.0
#: aiokafka reconnects by itself and a fetch from brokers that are gone just comes back empty: after this many
#: seconds without a record, a fetch asks a broker for metadata, so that brokers gone away are reported
#: (SourceUnavailable: the runner shows why and reopens with back-off) and not mistaken for a quiet topic
PROBE_EVERY = 10.0


#: SourceAccessConfigurations that say where Lambda's poller runs, not how to authenticate: nothing to do here
PLACEMENT = ("VPC_SUBNET", "VPC_SECURITY_GROUP")


def source_for(mapping: Mapping, settings: Settings) -> KafkaSource:
    """The source of a self-managed Kafka mapping (no I/O: `open` connects)."""
    del settings  # nothing of the gateway's configuration applies: the mapping names its brokers
    return KafkaSource(
        servers=list(mapping.self_managed.get(BOOTSTRAP, [])),
        topic=mapping.topics[0] if mapping.topics else "",
        group_id=mapping.group_id,
        starting_position=mapping.starting_position or TRIM_HORIZON,
        starting_timestamp=mapping.starting_position_timestamp,
        unsupported=sorted({c.get("Type", "") for c in mapping.source_access} - set(PLACEMENT)),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def record_event(message: Any) -> dict[str, Any]:
    """One consumer record in Lambda's shape (its key and value only where the record has them)."""
    event: dict[str, Any] = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": message.timestamp,
        "timestampType": TIMESTAMP_TYPES.get(message.timestamp_type, "NO_TIMESTAMP_TYPE"),
    }
    if message.key is not None:
        event["key"] = _b64(message.key)
    if message.value is not None:
        event["value"] = _b64(message.value)
    event["headers"] = [{name: list(value or b"")} for name, value in message.headers]
    return event


def filter_view(event: dict[str, Any]) -> dict[str, Any]:
    """What FilterCriteria see: `value` decoded from base64, then from JSON where it is JSON, else the UTF-8 text
    (Lambda filters Kafka records on `value` only); a value that is neither stays base64."""
    value = event.get("value")
    if value is None:
        return event
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return event
    decoded: Any
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            return event
    return {**event, "value": decoded}


def to_record(message: Any) -> Record:
    event = record_event(message)
    return Record(
        item_id=str(message.offset),
        event=event,
        filter_view=filter_view(event),
        # a record without a time (-1) is taken as received now: not as 56 years old (MaximumRecordAgeInSeconds)
        timestamp=message.timestamp / 1000 if message.timestamp and message.timestamp > 0 else time.time(),
        size=len(orjson.dumps(event)) + 1,  # + the comma between records
        group=f"{message.topic}-{message.partition}",
    )


@dataclass(slots=True)
class _Partition:
    """What one assigned partition has in flight: fetched and not yet settled."""

    next_fetch: int = -1  # the offset after the last record fetched; -1: none fetched since the assignment
    in_flight: set[int] = field(default_factory=set)
    committed: int = -1  # the last offset committed by us (the next to process)

    def commit_point(self) -> int:
        """The offset it is safe to commit: the lowest one in flight, else the next to fetch (-1: nothing yet)."""
        return min(self.in_flight) if self.in_flight else self.next_fetch


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._source._revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._source._assigned(assigned)


class KafkaSource:
    """One consumer in the mapping's group (see the module docstring for offsets and the concurrency model)."""

    kind = "kafka"

    def __init__(
        self,
        servers: list[str],
        topic: str,
        group_id: str,
        starting_position: str = TRIM_HORIZON,
        starting_timestamp: float | None = None,
        unsupported: list[str] | None = None,
    ) -> None:
        self.servers = servers
        #: SourceAccessConfigurations types asking for authentication or TLS (secrets in Secrets Manager), which
        #: this source does not speak: such a mapping is told so rather than connected in plaintext
        self.unsupported = unsupported or []
        self.topic = topic
        self.group_id = group_id
        self.starting_position = starting_position
        self.starting_timestamp = starting_timestamp
        self._consumer: Any = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._assigned_once = asyncio.Event()
        #: partitions placed by StartingPosition LATEST / AT_TIMESTAMP whose position is not committed yet: the next
        #: fetch commits it, so that a restart (or a rebalance) starts from the same place, not from a later "latest"
        self._placed: list[TopicPartition] = []
        self.probe_every = PROBE_EVERY
        self._committing: asyncio.Future[None] | None = None  # the commit in flight (see _commit)
        self._heard = 0.0  # time.monotonic() when a broker last answered with records or metadata

    async def open(self) -> None:
        """Connect, join the group and wait (up to ASSIGNMENT_WAIT) for partitions and their starting positions."""
        if not self.servers:
            raise SourceUnavailable(f"no {BOOTSTRAP} in SelfManagedEventSource.Endpoints")
        if not self.topic:
            raise SourceUnavailable("no topic: Topics names none")
        if self.unsupported:
            raise SourceUnavailable(
                f"SourceAccessConfigurations {', '.join(self.unsupported)} not supported: PLAINTEXT brokers only"
            )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            # only a fallback: _assigned seeks where the group has no committed offset
            auto_offset_reset="earliest" if self.starting_position == TRIM_HORIZON else "latest",
            client_id=f"lambda-gateway-{self.group_id}",
            request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
            # one invocation may run 900 s (and a stream batch is retried until it succeeds) between two fetches:
            # past this the consumer would leave the group and its records be delivered twice
            max_poll_interval_ms=1_000_000,
        )
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        try:
            await asyncio.wait_for(self._consumer.start(), CONNECT_TIMEOUT)
        except (KafkaError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SourceUnavailable(f"Kafka brokers {','.join(self.servers)} unreachable: {reason}") from exc
        self._heard = time.monotonic()
        try:
            await asyncio.wait_for(self._assigned_once.wait(), ASSIGNMENT_WAIT)
        except TimeoutError:
            log.warning(
                "group %s: no partition of %s assigned after %.0f s", self.group_id, self.topic, ASSIGNMENT_WAIT
            )

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        """Where the group has no committed offset, seek to StartingPosition (runs in aiokafka's coordinator)."""
        consumer = self._consumer
        fresh: list[TopicPartition] = []
        for tp in assigned:
            committed = await consumer.committed(tp)
            self._partitions[tp] = _Partition(committed=committed if committed is not None else -1)
            if committed is None:
                fresh.append(tp)
        if fresh and self.starting_position == LATEST:
            await consumer.seek_to_end(*fresh)
        elif fresh and self.starting_position == AT_TIMESTAMP:
            millis = int((self.starting_timestamp or 0) * 1000)
            found = await consumer.offsets_for_times({tp: millis for tp in fresh})
            for tp in fresh:
                at = found.get(tp)
                if at is None:  # nothing at or after that time yet: the next record to come
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, at.offset)
        elif fresh:
            await consumer.seek_to_beginning(*fresh)
        for tp in assigned:  # fix each position now, so that LATEST means "as of the assignment"
            position = await consumer.position(tp)
            if tp in fresh and self.starting_position != TRIM_HORIZON:
                self._partitions[tp].next_fetch = position
                self._placed.append(tp)
        log.info("group %s: assigned %s", self.group_id, sorted(tp.partition for tp in assigned))
        self._assigned_once.set()

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what is safe of the partitions going away, then forget them (runs in aiokafka's coordinator)."""
        try:
            await self._commit(revoked, wait=True)
        except SourceUnavailable as exc:  # theirs to fetch again: at least once
            log.warning("group %s: commit before rebalance failed: %s", self.group_id, exc)
        for tp in revoked:
            self._partitions.pop(tp, None)

    async def fetch(self, max_records: int, max_wait: float) -> list[Record]:
        """Up to `max_records` records, in offset order per partition; waits up to `max_wait` for the first."""
        if self._placed:  # outside the rebalance callback: a commit there could wait on the rebalance itself
            placed, self._placed = self._placed, []
            await self._commit(placed, wait=True)
        try:
            batches = await self._consumer.getmany(timeout_ms=int(max_wait * 1000), max_records=max_records)
        except (KafkaError, IllegalStateError) as exc:
            raise SourceUnavailable(f"Kafka fetch failed: {exc or type(exc).__name__}") from exc
        records: list[Record] = []
        for tp, messages in batches.items():
            state = self._partitions.get(tp)
            if state is None or not messages:  # revoked meanwhile: another consumer's now
                continue
            state.in_flight.update(m.offset for m in messages)
            state.next_fetch = messages[-1].offset + 1
            records.extend(to_record(m) for m in messages)
        if records:
            self._heard = time.monotonic()
        elif time.monotonic() - self._heard >= self.probe_every:
            await self._probe()
        return records

    async def _probe(self) -> None:
        try:
            await asyncio.wait_for(self._consumer.topics(), CONNECT_TIMEOUT)
        except (KafkaError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SourceUnavailable(f"Kafka brokers {','.join(self.servers)} unreachable: {reason}") from exc
        self._heard = time.monotonic()

    def event(self, records: list[Record]) -> bytes:
        """Lambda's SelfManagedKafka event: the records grouped by "<topic>-<partition>", in their order."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            grouped.setdefault(record.group, []).append(record.event)
        return orjson.dumps(
            {"eventSource": "SelfManagedKafka", "bootstrapServers": ",".join(self.servers), "records": grouped}
        )

    async def settle(self, succeeded: list[Record], failed: list[Record]) -> None:
        """Commit up to the first failed record of each partition; seek those partitions back to it."""
        touched = self._done(succeeded)
        first_failed: dict[TopicPartition, int] = {}
        for record in failed:
            tp, offset = self._where(record)
            state = self._partitions.get(tp)
            # only a record still in flight: one forgotten after an earlier seek back is coming again anyway
            if state is not None and offset in state.in_flight:
                first_failed[tp] = min(offset, first_failed.get(tp, offset))
        for tp, offset in first_failed.items():
            state = self._partitions[tp]
            state.in_flight = {o for o in state.in_flight if o < offset}
            state.next_fetch = offset
            self._consumer.seek(tp, offset)
            touched.add(tp)
        await self._commit(list(touched))

    async def discard(self, records: list[Record]) -> None:
        """The records' OnFailure destination has them: commit past them."""
        await self._commit(list(self._done(records)))

    def _done(self, records: list[Record]) -> set[TopicPartition]:
        touched: set[TopicPartition] = set()
        for record in records:
            tp, offset = self._where(record)
            state = self._partitions.get(tp)
            if state is not None:
                state.in_flight.discard(offset)
                touched.add(tp)
        return touched

    @staticmethod
    def _where(record: Record) -> tuple[TopicPartition, int]:
        return TopicPartition(record.event["topic"], record.event["partition"]), int(record.item_id)

    async def _commit(self, partitions: list[TopicPartition], wait: bool = False) -> None:
        """Commit the partitions' commit points. The commit runs in the background while the runner invokes the
        next batch (one at a time: the next commit waits for it; `wait` waits for this one too); a commit that
        failed on the connection raises SourceUnavailable from the next call."""
        await self.flush()
        offsets: dict[TopicPartition, int] = {}
        for tp in partitions:
            state = self._partitions.get(tp)
            if state is not None and state.commit_point() > state.committed:
                offsets[tp] = state.commit_point()
        if offsets:
            self._committing = asyncio.ensure_future(self._send(offsets))
            if wait:
                await self.flush()

    async def flush(self) -> None:
        """Wait for the commit in flight, if any (raises SourceUnavailable if it failed on the connection)."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _send(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # the partitions moved to another member: it starts from the last commit (at least once)
            log.warning("group %s: commit refused by a rebalance: %s", self.group_id, exc)
            return
        except (KafkaError, IllegalStateError) as exc:
            raise SourceUnavailable(f"Kafka commit failed: {exc or type(exc).__name__}") from exc
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._partitions[tp].committed = max(offset, self._partitions[tp].committed)

    async def close(self) -> None:
        """Leave the group after the commit in flight (records not settled are fetched again)."""
        with contextlib.suppress(SourceUnavailable):
            await self.flush()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except (KafkaError, OSError) as exc:
                log.warning("group %s: closing the consumer: %s", self.group_id, exc)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # with its broker gone, aiokafka's fetcher re-raises the cancellation of its own retry task from
                # stop() before the client is closed: finish the stop so that no connection or task is left
                for pending in getattr(consumer._fetcher, "_pending_tasks", ()):
                    pending.cancel()
                await consumer._client.close()
        self._partitions.clear()
