"""EventBridge Scheduler schedules (Create/Get/Update/Delete/ListSchedules) and schedule groups
(Create/Get/Delete/ListScheduleGroups), persisted in SQLite (`schedules.sqlite3`), cached in memory, with each
schedule's firing state.

Two tables, `schedules(grp, name, record JSON)` and `schedule_groups(name, record JSON)`. The group `default`
always exists and is not stored; a schedule is created only in a group that exists (checked under the write lock,
so a group being deleted cannot gain a schedule), and deleting a group deletes its schedules in the same
transaction, as Scheduler does. A `Schedule` holds what the caller set, as Scheduler answers it
(the target as a JSON object with Scheduler's defaults filled in), and the firing state the loop
(gateway.events.schedules) keeps: `next_due`, the nominal time of the next occurrence not yet fired (None: none is
left), `fire_at`, when it is to fire (`next_due` plus a FLEXIBLE window's random delay), and `last_fired`. Both are
written before anything acts on them, so a restart resumes from the file (see gateway/events/schedules.py for what
happens to runs missed while the gateway was down).

Writes go to SQLite first (one transaction, `synchronous=FULL` under WAL), then to the cache; reads only touch the
cache. Concurrency model: reads on the event loop (dict lookups, no I/O); writes block on SQLite and run in worker
threads (`asyncio.to_thread`); a lock makes each one atomic (`create` checks and inserts under it). Records are
frozen and replaced, never mutated, so a reader sees a schedule before or after a write, never half of one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.store import sqlite

log = logging.getLogger("gateway.schedules")

SCHEMA_VERSION = 1
DEFAULT_GROUP = "default"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule as set (Scheduler's members, defaults filled in) and its firing state."""

    name: str
    group: str
    expression: str
    timezone: str  # "UTC" when not set
    state: str  # ENABLED | DISABLED
    target: dict[str, Any]  # Scheduler's Target: Arn, RoleArn, Input?, RetryPolicy, DeadLetterConfig?
    flexible_mode: str  # OFF | FLEXIBLE
    flexible_window: int | None  # minutes (FLEXIBLE only)
    action_after_completion: str  # NONE | DELETE
    created: float  # epoch seconds
    modified: float
    start: float | None = None
    end: float | None = None
    description: str | None = None
    kms_key_arn: str | None = None
    client_token: str | None = None  # CreateSchedule's idempotency token: a retried Create answers as the first did
    #: firing state (gateway.events.schedules): the next occurrence's nominal time, when it fires, the last firing
    next_due: float | None = None
    fire_at: float | None = None
    last_fired: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.name)

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> Schedule:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ScheduleGroup:
    """A schedule group other than `default`; `tags` as CreateScheduleGroup took them ([{"Key", "Value"}])."""

    name: str
    created: float
    modified: float
    tags: tuple[tuple[str, str], ...] = ()
    client_token: str | None = None

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> ScheduleGroup:
        data: dict[str, Any] = orjson.loads(raw)
        data["tags"] = tuple(tuple(tag) for tag in data.get("tags", ()))
        return cls(**data)


class GroupNotFound(LookupError):
    """The schedule's group does not exist (it was never created, or was deleted meanwhile)."""


class Schedules:
    """Schedules by (group, name), in SQLite with an in-memory cache."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._schedules: dict[tuple[str, str], Schedule] = {}
        self._groups: dict[str, ScheduleGroup] = {}
        self._db = sqlite.connect(db_path)
        self._migrate()
        for group, name, raw in self._db.execute("SELECT grp, name, record FROM schedules"):
            self._schedules[(group, name)] = Schedule.from_record(raw)
        for name, raw in self._db.execute("SELECT name, record FROM schedule_groups"):
            self._groups[name] = ScheduleGroup.from_record(raw)
        if self._schedules:
            log.info("loaded %d schedules", len(self._schedules))

    def _migrate(self) -> None:
        if sqlite.schema_version(self._db, SCHEMA_VERSION, "schedule store") < 1:
            with sqlite.transaction(self._db) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schedules (grp TEXT NOT NULL, name TEXT NOT NULL,"
                    " record TEXT NOT NULL, PRIMARY KEY (grp, name)) WITHOUT ROWID"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schedule_groups (name TEXT NOT NULL PRIMARY KEY, record TEXT NOT NULL)"
                    " WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- reads (cache only, event loop) ----------------------------------------------------------------

    def get(self, group: str, name: str) -> Schedule | None:
        return self._schedules.get((group, name))

    def all(self) -> list[Schedule]:
        """Every schedule, by group then name (ListSchedules' order)."""
        return [self._schedules[k] for k in sorted(self._schedules)]

    def __len__(self) -> int:
        return len(self._schedules)

    def group(self, name: str) -> ScheduleGroup | None:
        """A group other than `default` (which always exists: `has_group`)."""
        return self._groups.get(name)

    def has_group(self, name: str) -> bool:
        return name == DEFAULT_GROUP or name in self._groups

    def groups(self) -> list[ScheduleGroup]:
        """The groups other than `default`, by name."""
        return [self._groups[name] for name in sorted(self._groups)]

    # -- writes (SQLite first, then the cache; worker threads) ---------------------------------------------

    def create(self, schedule: Schedule) -> bool:
        """Insert `schedule`; False (nothing written) if one of that group and name exists; GroupNotFound if its
        group does not. Blocking."""
        with self._lock:
            if not self.has_group(schedule.group):
                raise GroupNotFound(schedule.group)
            if schedule.key in self._schedules:
                return False
            self._write(schedule)
        return True

    def replace(self, schedule: Schedule) -> bool:
        """Replace the schedule of that group and name; False (nothing written) if there is none. Blocking."""
        with self._lock:
            if schedule.key not in self._schedules:
                return False
            self._write(schedule)
        return True

    def update(self, group: str, name: str, change: Callable[[Schedule], Schedule]) -> Schedule | None:
        """Replace the schedule with `change(current)` atomically; None if there is none. Blocking. A `change` that
        returns `current` itself writes nothing."""
        with self._lock:
            current = self._schedules.get((group, name))
            if current is None:
                return None
            new = change(current)
            if new is current:
                return current
            if new.key != current.key:
                raise ValueError("an update may not move a schedule to another group or name")
            self._write(new)
        return new

    def _write(self, schedule: Schedule) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO schedules (grp, name, record) VALUES (?, ?, ?)",
                (schedule.group, schedule.name, schedule.to_record().decode()),
            )
        self._schedules[schedule.key] = schedule

    def delete(self, group: str, name: str, only_if: Schedule | None = None) -> bool:
        """Remove the schedule; False if there is none (or, with `only_if`, if it is not that record any more: it
        was replaced meanwhile). Blocking."""
        with self._lock:
            current = self._schedules.get((group, name))
            if current is None or (only_if is not None and current is not only_if):
                return False
            with sqlite.transaction(self._db) as db:
                db.execute("DELETE FROM schedules WHERE grp = ? AND name = ?", (group, name))
            del self._schedules[(group, name)]
        return True

    def create_group(self, group: ScheduleGroup) -> bool:
        """Insert `group`; False (nothing written) if it exists (`default` always does). Blocking."""
        with self._lock:
            if self.has_group(group.name):
                return False
            with sqlite.transaction(self._db) as db:
                db.execute(
                    "INSERT INTO schedule_groups (name, record) VALUES (?, ?)", (group.name, group.to_record().decode())
                )
            self._groups[group.name] = group
        return True

    def delete_group(self, name: str) -> int | None:
        """Delete a group (not `default`) and its schedules in one transaction; how many schedules went, None if
        there is no such group. Blocking."""
        with self._lock:
            if name not in self._groups:
                return None
            with sqlite.transaction(self._db) as db:
                db.execute("DELETE FROM schedules WHERE grp = ?", (name,))
                db.execute("DELETE FROM schedule_groups WHERE name = ?", (name,))
            gone = [key for key in self._schedules if key[0] == name]
            for key in gone:
                del self._schedules[key]
            del self._groups[name]
        return len(gone)

    def close(self) -> None:
        with self._lock:  # after a write still running in a worker thread
            self._db.close()
