"""Event invoke configs: how the asynchronous invocations of a function, version or alias are retried and where
their outcomes go (Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s)), persisted in SQLite
(`event-invoke.sqlite3`), cached in memory.

One table, `event_invoke_configs(function, qualifier, record JSON)`; `qualifier` is `$LATEST`, a version number or
an alias name, each with its own config as on Lambda: an event for an alias without one gets the defaults, not
`$LATEST`'s. A config names what the caller set: Lambda answers only the members that were given (a Put of
MaximumRetryAttempts alone answers no MaximumEventAgeInSeconds), while the dispatcher needs values, so each
`EventInvokeConfig` carries both (`given`, and the defaults for the others).

Writes go to SQLite first (one transaction, `synchronous=FULL` under WAL), then to the cache; reads only touch the
cache. A deleted function, version or alias takes its configs with it: `follow` is connected to
`Registry.on_change`, and `retain_existing` drops at start-up what a crash between the two writes left behind.

Concurrency model: `effective`, `get` and `configs` run on the event loop thread (`effective` once per event: two
dict lookups, no I/O, never raises). Writes (`put`, `update`, `delete`, `forget`) block on SQLite and run in worker
threads (the API's `asyncio.to_thread`, the registry's writer thread for `follow`); a lock makes each one atomic.
A function's entry in the cache is replaced, never mutated, so a reader sees a function's configs before or after
a write, never half of one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import ResourceNotFoundException
from gateway.settings import Settings
from gateway.store import sqlite
from gateway.store.records import LATEST, Change, Changed
from gateway.store.registry import Registry

log = logging.getLogger("gateway.event_configs")

SCHEMA_VERSION = 1
#: Lambda's defaults: two retries after a function error, events kept six hours
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_EVENT_AGE = 21600
#: the members of a config a caller may leave out (`EventInvokeConfig.given` names those that were set)
RETRIES = "MaximumRetryAttempts"
EVENT_AGE = "MaximumEventAgeInSeconds"

_EMPTY: Mapping[str, EventInvokeConfig] = {}


@dataclass(frozen=True, slots=True)
class EventInvokeConfig:
    """A function's (version's, alias's) async settings, with Lambda's defaults for what was not set."""

    function: str
    qualifier: str  # "$LATEST", a version number, or an alias name
    maximum_retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    maximum_event_age: int = DEFAULT_EVENT_AGE  # seconds
    on_success: str | None = None  # destination ARN
    on_failure: str | None = None
    last_modified: float = 0.0  # epoch seconds
    #: which of RETRIES / EVENT_AGE the caller set; the others hold the defaults and are left out of answers
    given: frozenset[str] = frozenset()

    def to_record(self) -> bytes:
        return orjson.dumps({**dataclasses.asdict(self), "given": sorted(self.given)})

    @classmethod
    def from_record(cls, raw: str | bytes) -> EventInvokeConfig:
        data: dict[str, Any] = orjson.loads(raw)
        data["given"] = frozenset(data.get("given", ()))
        return cls(**data)


def qualifier_order(qualifier: str) -> tuple[int, int, str]:
    """How List sorts a function's configs: `$LATEST`, then versions by number, then aliases by name."""
    if qualifier == LATEST:
        return (0, 0, "")
    if qualifier.isascii() and qualifier.isdigit():
        return (1, int(qualifier), "")
    return (2, 0, qualifier)


class EventInvokeConfigs:
    """Event invoke configs by (function, qualifier), in SQLite with an in-memory cache."""

    def __init__(self, db_path: Path, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        #: function -> qualifier -> config; a function's inner dict is replaced on every write, never mutated
        self._functions: dict[str, Mapping[str, EventInvokeConfig]] = {}
        self._db = sqlite.connect(db_path)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        if sqlite.schema_version(self._db, SCHEMA_VERSION, "event invoke config store") < 1:
            with sqlite.transaction(self._db) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS event_invoke_configs ("
                    " function TEXT NOT NULL, qualifier TEXT NOT NULL, record TEXT NOT NULL,"
                    " PRIMARY KEY (function, qualifier)) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        loaded: dict[str, dict[str, EventInvokeConfig]] = {}
        rows = self._db.execute("SELECT function, qualifier, record FROM event_invoke_configs")
        for function, qualifier, raw in rows:
            loaded.setdefault(function, {})[qualifier] = EventInvokeConfig.from_record(raw)
        self._functions = dict(loaded)
        if loaded:
            log.info("loaded the event invoke configs of %d functions", len(loaded))

    # -- reads (cache only, event loop) ----------------------------------------------------------------

    def effective(self, function: str, qualifier: str | None) -> EventInvokeConfig:
        """What governs an event for (function, qualifier): its config, or Lambda's defaults if it has none.

        `qualifier` None is `$LATEST`. Never raises; no I/O: called once per event on the event loop.
        """
        key = LATEST if qualifier is None else qualifier
        found = self._functions.get(function, _EMPTY).get(key)
        return found if found is not None else EventInvokeConfig(function, key)

    def get(self, function: str, qualifier: str) -> EventInvokeConfig | None:
        """The config set on (function, qualifier), None if there is none."""
        return self._functions.get(function, _EMPTY).get(qualifier)

    def configs(self, function: str) -> list[EventInvokeConfig]:
        """The function's configs in List's order (`qualifier_order`)."""
        found = self._functions.get(function, _EMPTY)
        return [found[q] for q in sorted(found, key=qualifier_order)]

    # -- writes (SQLite first, then the cache; worker threads) ---------------------------------------------

    def put(self, config: EventInvokeConfig) -> EventInvokeConfig:
        """Create or replace the config of (config.function, config.qualifier). Blocking."""
        with self._lock:
            self._write(config)
        return config

    def update(
        self, function: str, qualifier: str, change: Callable[[EventInvokeConfig], EventInvokeConfig]
    ) -> EventInvokeConfig | None:
        """Replace the config with `change(current)` atomically; None (nothing written) if there is none. Blocking."""
        with self._lock:
            current = self.get(function, qualifier)
            if current is None:
                return None
            new = change(current)
            if (new.function, new.qualifier) != (function, qualifier):
                raise ValueError("an update may not move a config to another function or qualifier")
            self._write(new)
        return new

    def _write(self, config: EventInvokeConfig) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO event_invoke_configs (function, qualifier, record) VALUES (?, ?, ?)",
                (config.function, config.qualifier, config.to_record().decode()),
            )
        current = self._functions.get(config.function, _EMPTY)
        self._functions[config.function] = {**current, config.qualifier: config}

    def delete(self, function: str, qualifier: str) -> bool:
        """Remove the config of (function, qualifier); False (nothing done) if there was none. Blocking."""
        with self._lock:
            return self._remove(function, qualifier)

    def forget(self, function: str, qualifier: str | None = None) -> None:
        """A function (qualifier None), version or alias was deleted: its configs go too. Blocking."""
        with self._lock:
            if self._remove(function, qualifier):
                log.info("forgot the event invoke configs of %s%s", function, f":{qualifier}" if qualifier else "")

    def _remove(self, function: str, qualifier: str | None) -> bool:
        current = self._functions.get(function)
        if current is None or (qualifier is not None and qualifier not in current):
            return False
        with sqlite.transaction(self._db) as db:
            if qualifier is None:
                db.execute("DELETE FROM event_invoke_configs WHERE function = ?", (function,))
            else:
                db.execute(
                    "DELETE FROM event_invoke_configs WHERE function = ? AND qualifier = ?", (function, qualifier)
                )
        rest = {q: c for q, c in current.items() if qualifier is not None and q != qualifier}
        if rest:
            self._functions[function] = rest
        else:
            del self._functions[function]
        return True

    # -- following the registry ------------------------------------------------------------------------------

    def follow(self, change: Change) -> None:
        """`Registry.on_change` observer (on the registry's writer thread): a deleted function, version or alias
        takes its configs with it, as on Lambda."""
        if change.what is Changed.FUNCTION_DELETED:
            self.forget(change.function)
        elif change.what in (Changed.VERSION_DELETED, Changed.ALIAS_DELETED) and change.qualifier is not None:
            self.forget(change.function, change.qualifier)

    def retain_existing(self, registry: Registry) -> int:
        """At start-up: drop the configs of functions, versions and aliases the registry no longer has (a crash
        between the registry's delete and `follow`); how many went. Blocking."""
        gone = [
            (function, qualifier)
            for function, configs in list(self._functions.items())
            for qualifier in configs
            if not designates(registry, function, qualifier)
        ]
        for function, qualifier in gone:
            self.forget(function, qualifier)
        return len(gone)

    def close(self) -> None:
        self._db.close()


def designates(registry: Registry, function: str, qualifier: str) -> bool:
    """Whether (function, qualifier) names a function's `$LATEST`, version or alias that exists now."""
    try:
        registry.resolve(function, qualifier)
    except ResourceNotFoundException:
        return False
    return True
