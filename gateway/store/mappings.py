"""Event source mappings (Create/Get/Update/Delete/ListEventSourceMappings), persisted in SQLite
(`mappings.sqlite3`), cached in memory.

One table, `mappings(uuid, function, record JSON)`. A `Mapping` is the whole resource as the API and the poller
runtime need it; it is immutable: a write replaces it (`dataclasses.replace`).

Writes go to SQLite first (one transaction, `synchronous=FULL` under WAL), then to the cache, then `on_change` is
called with the new record (or the deleted one, `state == "Deleting"`). Reads only touch the cache. A deleted
function takes its mappings with it (`follow` is connected to `Registry.on_change`).

Concurrency model: reads (`get`, `all`, `for_function`) run on the event loop thread; no I/O, never raise. Writes
block on SQLite and run in worker threads (the API's `asyncio.to_thread`, the registry's writer thread for
`follow`) or, for the runner's status updates (`set_status`), on the loop (one small transaction); a lock makes
each write atomic. The cache dict is replaced, never mutated, so a reader sees it before or after a write.
`on_change` observers are called on the writer's thread, after the lock is released: they must be thread-safe
(the runner's hands the change to the loop with `call_soon_threadsafe`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.hooks import Hook
from gateway.store import sqlite
from gateway.store.records import Change, Changed

log = logging.getLogger("gateway.mappings")

SCHEMA_VERSION = 1

KAFKA = "kafka"
RABBITMQ = "rabbitmq"
SQS = "sqs"
KINDS = (KAFKA, RABBITMQ, SQS)

#: Lambda's states (botocore names them only as strings)
CREATING = "Creating"
ENABLING = "Enabling"
ENABLED = "Enabled"
UPDATING = "Updating"
DISABLING = "Disabling"
DISABLED = "Disabled"
DELETING = "Deleting"

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
NO_RECORDS = "No records processed"
OK = "OK"


@dataclass(frozen=True, slots=True)
class Mapping:
    """One event source mapping: what to read, how to batch it, which function gets it, what follows a failure.

    Stream semantics (retries in the runner, bisect, record age, OnFailure, then the records are skipped) apply to
    Kafka; SQS and RabbitMQ give failed records back to their broker (visibility timeout, nack+requeue) whose own
    dead-letter mechanism ends a poison message, as on Lambda.
    """

    uuid: str
    function: str  # the function's name
    qualifier: str | None  # version or alias; None: unqualified ($LATEST)
    kind: str  # KAFKA | RABBITMQ | SQS
    event_source_arn: str | None = None  # SQS or MQ broker ARN; None for self-managed Kafka
    topics: tuple[str, ...] = ()  # Kafka
    queues: tuple[str, ...] = ()  # RabbitMQ
    starting_position: str | None = None  # TRIM_HORIZON | LATEST | AT_TIMESTAMP (Kafka)
    starting_position_timestamp: float | None = None  # epoch seconds, with AT_TIMESTAMP
    batch_size: int = 10
    batching_window: int | None = None  # MaximumBatchingWindowInSeconds as given; None: the source's default
    #: SelfManagedEventSource.Endpoints, e.g. {"KAFKA_BOOTSTRAP_SERVERS": ["host:9092"]}
    self_managed: dict[str, list[str]] = field(default_factory=dict)
    consumer_group_id: str | None = None  # SelfManagedKafkaEventSourceConfig.ConsumerGroupId (default: the UUID)
    source_access: tuple[dict[str, str], ...] = ()  # SourceAccessConfigurations [{"Type", "URI"}]
    filters: tuple[str, ...] = ()  # FilterCriteria patterns, the JSON text as given
    function_response_types: tuple[str, ...] = ()
    maximum_retry_attempts: int = -1  # -1: until it succeeds or the record expires (Kafka)
    maximum_record_age: int = -1  # seconds; -1: no limit (Kafka)
    bisect: bool = False
    on_failure: str | None = None  # destination ARN (gateway.events.targets)
    maximum_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency
    enabled: bool = True
    state: str = CREATING
    state_transition_reason: str = "USER_INITIATED"
    last_processing_result: str = NO_RECORDS
    last_modified: float = 0.0  # epoch seconds

    @property
    def stream(self) -> bool:
        """Whether failures are retried by the runner and then skipped (Kafka), not given back to the broker."""
        return self.kind == KAFKA

    @property
    def window(self) -> float:
        """The batching window in seconds: as set, else Lambda's default (500 ms for Kafka and MQ, 0 for SQS)."""
        if self.batching_window is not None:
            return float(self.batching_window)
        return 0.0 if self.kind == SQS else 0.5

    @property
    def reports_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def group_id(self) -> str:
        """The Kafka consumer group: the one set, else the mapping's UUID (as Lambda does)."""
        return self.consumer_group_id or self.uuid

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> Mapping:
        data: dict[str, Any] = orjson.loads(raw)
        for name in ("topics", "queues", "filters", "function_response_types"):
            data[name] = tuple(data.get(name, ()))
        data["source_access"] = tuple(data.get("source_access", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Mappings:
    """Event source mappings by UUID, in SQLite with an in-memory cache."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        #: uuid -> mapping; replaced on every write, never mutated
        self._mappings: dict[str, Mapping] = {}
        #: a mapping was written (created, updated, its status changed) or deleted (state DELETING)
        self.on_change: Hook[[Mapping]] = Hook("mapping changed", log)
        self._db = sqlite.connect(db_path)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        if sqlite.schema_version(self._db, SCHEMA_VERSION, "event source mapping store") < 1:
            with sqlite.transaction(self._db) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS mappings ("
                    " uuid TEXT PRIMARY KEY, function TEXT NOT NULL, record TEXT NOT NULL) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        rows = self._db.execute("SELECT record FROM mappings")
        self._mappings = {m.uuid: m for m in (Mapping.from_record(raw) for (raw,) in rows)}
        if self._mappings:
            log.info("loaded %d event source mappings", len(self._mappings))

    # -- reads (cache only, event loop) ----------------------------------------------------------------

    def get(self, uuid: str) -> Mapping | None:
        return self._mappings.get(uuid)

    def all(self) -> list[Mapping]:
        """Every mapping, by UUID (a stable order for List's paging)."""
        return sorted(self._mappings.values(), key=lambda m: m.uuid)

    def for_function(self, function: str) -> list[Mapping]:
        return [m for m in self.all() if m.function == function]

    # -- writes (SQLite first, then the cache, then on_change) -------------------------------------------

    def put(self, mapping: Mapping) -> Mapping:
        """Create or replace a mapping. Blocking."""
        with self._lock:
            self._write(mapping)
        self.on_change(mapping)
        return mapping

    def update(self, uuid: str, change: Callable[[Mapping], Mapping]) -> Mapping | None:
        """Replace the mapping with `change(current)` atomically; None (nothing written) if there is none.
        `change` may raise (a validation error): nothing is written. Blocking."""
        with self._lock:
            current = self._mappings.get(uuid)
            if current is None:
                return None
            new = change(current)
            if new.uuid != uuid:
                raise ValueError("an update may not change a mapping's UUID")
            if new != current:
                self._write(new)
        if new != current:
            self.on_change(new)
        return new

    def _write(self, mapping: Mapping) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO mappings (uuid, function, record) VALUES (?, ?, ?)",
                (mapping.uuid, mapping.function, mapping.to_record().decode()),
            )
        self._mappings = {**self._mappings, mapping.uuid: mapping}

    def delete(self, uuid: str) -> Mapping | None:
        """Remove a mapping; it is returned with state DELETING (and told to `on_change`), None if there was
        none. Blocking."""
        with self._lock:
            current = self._mappings.get(uuid)
            if current is None:
                return None
            with sqlite.transaction(self._db) as db:
                db.execute("DELETE FROM mappings WHERE uuid = ?", (uuid,))
            self._mappings = {u: m for u, m in self._mappings.items() if u != uuid}
        gone = dataclasses.replace(current, state=DELETING)
        self.on_change(gone)
        return gone

    def forget(self, function: str) -> int:
        """A function was deleted: its mappings go too; how many. Blocking."""
        uuids = [m.uuid for m in self.for_function(function)]
        for uuid in uuids:
            self.delete(uuid)
        if uuids:
            log.info("deleted the %d event source mappings of %s", len(uuids), function)
        return len(uuids)

    def follow(self, change: Change) -> None:
        """`Registry.on_change` observer (registry's writer thread): a deleted function takes its mappings."""
        if change.what is Changed.FUNCTION_DELETED:
            self.forget(change.function)

    def retain_existing(self, exists: Callable[[str], bool]) -> int:
        """At start-up: delete the mappings of functions that no longer exist (a crash between the registry's
        delete and `follow`); how many went. Blocking."""
        gone = {m.function for m in self.all() if not exists(m.function)}
        return sum(self.forget(function) for function in gone)

    def close(self) -> None:
        self._db.close()
