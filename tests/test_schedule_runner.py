"""The schedules' firing loop (gateway/events/schedules.py: ScheduleRunner.tick) on a real schedule store, with an
explicit clock and small local stand-ins for the queue, registry, metrics and delivery: missed runs after a
downtime (one catch-up, within MaximumEventAgeInSeconds), FLEXIBLE windows in order, RetryPolicy and
DeadLetterConfig, ActionAfterCompletion."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ResourceNotFoundException
from gateway.events.queue import QueuedEvent
from gateway.events.schedules import ScheduleRunner, plan
from gateway.settings import Settings
from gateway.store.schedules import Schedule, Schedules

T0 = 1_800_000_000.0
INPUT = '{"at": "<aws.scheduler.scheduled-time>", "n": <aws.scheduler.attempt-number>}'
DLQ = "arn:aws:sqs:us-east-1:123456789012:dlq"


class Queue:
    def __init__(self) -> None:
        self.events: list[QueuedEvent] = []
        self.full = False

    def depth(self, function: str) -> int:
        return 10**9 if self.full else len(self.events)

    def size(self) -> int:
        return sum(len(e.payload or b"") for e in self.events)

    async def put(self, event: QueuedEvent) -> None:
        self.events.append(event)


class Registry:
    def __init__(self) -> None:
        self.functions = {"f"}

    def resolve(self, name: str, qualifier: str | None) -> None:
        if name not in self.functions:
            raise ResourceNotFoundException(f"Function not found: {name}")


class Metrics:
    def __init__(self) -> None:
        self.received: list[str] = []

    def async_received(self, function: str) -> None:
        self.received.append(function)


class Delivery:
    def __init__(self) -> None:
        self.letters: list[tuple[str, bytes, str]] = []

    async def dead_letter(self, target: Any, payload: bytes, request_id: str, code: str, message: str) -> None:
        self.letters.append((target.arn, payload, code))


class Rig:
    def __init__(self, path: Path) -> None:
        self.store = Schedules(path)
        self.queue, self.registry, self.metrics, self.delivery = Queue(), Registry(), Metrics(), Delivery()
        self.runner = ScheduleRunner(
            Settings(), self.store, self.queue, self.registry, self.metrics, self.delivery,  # type: ignore[arg-type]
            clock=lambda: self.now, rng=random.Random(3),
        )  # fmt: skip
        self.now = T0

    def add(self, expression: str, created: float = T0, **fields: Any) -> Schedule:
        target = {"Arn": "arn:aws:lambda:us-east-1:123456789012:function:f", "RoleArn": "r", "Input": INPUT}
        target.update(fields.pop("target", {}))
        base = Schedule(
            name=fields.pop("name", "s"), group="default", expression=expression, timezone="UTC", state="ENABLED",
            target=target, flexible_mode="OFF", flexible_window=None, action_after_completion="NONE",
            created=created, modified=created,
        )  # fmt: skip
        schedule = plan(replace(base, **fields), created)
        self.store.create(schedule)
        return schedule

    def set_state(self, **state: Any) -> None:
        self.store.update("default", "s", lambda s: replace(s, **state))

    async def tick(self, at: float) -> None:
        self.now = at
        await self.runner.tick(at)

    def fired(self) -> list[dict[str, Any]]:
        return [json.loads(e.payload or b"") for e in self.queue.events]

    @property
    def schedule(self) -> Schedule | None:
        return self.store.get("default", "s")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path / "schedules.sqlite3")
    yield rig
    rig.store.close()


def iso(instant: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(instant, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_downtime_with_ten_missed_runs_fires_the_latest_once_then_goes_on_on_time(rig: Rig) -> None:
    anchor = T0 - 650
    rig.add("rate(1 minute)", created=anchor)
    rig.set_state(next_due=T0 - 590, fire_at=T0 - 590)  # what a gateway stopped ten minutes ago left
    await rig.tick(T0)
    assert rig.fired() == [{"at": iso(T0 - 50), "n": 1}]  # the latest missed occurrence, once
    assert rig.schedule is not None and rig.schedule.next_due == T0 + 10 and rig.schedule.last_fired == T0
    await rig.tick(T0 + 5)
    assert len(rig.fired()) == 1
    await rig.tick(T0 + 10.2)  # on time: the next occurrence, no catching up
    assert rig.fired()[-1] == {"at": iso(T0 + 10), "n": 1} and len(rig.fired()) == 2
    assert rig.metrics.received == ["f", "f"]


async def test_missed_runs_older_than_the_event_age_are_skipped(rig: Rig) -> None:
    rig.add("rate(1 hour)", created=T0 - 7200, target={"RetryPolicy": {"MaximumEventAgeInSeconds": 60}})
    rig.set_state(next_due=T0 - 3600, fire_at=T0 - 3600)
    await rig.tick(T0 + 1800)  # the latest occurrence (T0) is half an hour old
    assert rig.fired() == []
    assert rig.schedule is not None and rig.schedule.next_due == T0 + 3600


async def test_a_missed_at_fires_once_within_the_event_age_and_then_deletes_itself(rig: Rig) -> None:
    rig.add("at(2027-01-15T08:00:00)", created=T0, action_after_completion="DELETE")
    due = rig.schedule.next_due  # type: ignore[union-attr]
    assert due is not None
    await rig.tick(due + 3000)  # the gateway was down at its time, for 50 minutes
    assert rig.fired() == [{"at": "2027-01-15T08:00:00Z", "n": 1}]
    assert rig.schedule is None
    rig.add("at(2027-01-15T08:00:00)", created=T0, target={"RetryPolicy": {"MaximumEventAgeInSeconds": 600}})
    await rig.tick(due + 3000)
    assert len(rig.fired()) == 1  # too late for its event age: skipped, and kept (ActionAfterCompletion NONE)
    assert rig.schedule is not None and rig.schedule.next_due is None


async def test_flexible_windows_fire_in_order_each_within_its_window(rig: Rig) -> None:
    rig.add("rate(1 minute)", flexible_mode="FLEXIBLE", flexible_window=5, created=T0)
    fired_at: list[float] = []
    for _ in range(30):
        schedule = rig.schedule
        assert schedule is not None and schedule.fire_at is not None and schedule.next_due is not None
        assert schedule.next_due <= schedule.fire_at <= schedule.next_due + 300
        await rig.tick(schedule.fire_at)
        fired_at.append(schedule.fire_at)
    scheduled = [e["at"] for e in rig.fired()]
    assert scheduled == [iso(T0 + 60 * k) for k in range(30)]  # every occurrence, once, in order
    assert fired_at == sorted(fired_at)


async def test_a_full_queue_is_retried_then_dead_lettered(rig: Rig) -> None:
    rig.add("rate(1 hour)", target={"RetryPolicy": {"MaximumRetryAttempts": 2}, "DeadLetterConfig": {"Arn": DLQ}})
    rig.queue.full = True
    await rig.tick(T0)
    await rig.tick(T0 + 1)  # retry 1 (after 1 s)
    assert rig.delivery.letters == []
    await rig.tick(T0 + 3)  # retry 2 (after 2 s more): the last
    assert [(arn, json.loads(body), code) for arn, body, code in rig.delivery.letters] == [
        (DLQ, {"at": iso(T0), "n": 3}, "429")
    ]
    assert rig.queue.events == []
    rig.queue.full = False
    await rig.tick(T0 + 3600)
    assert rig.fired() == [{"at": iso(T0 + 3600), "n": 1}]  # the schedule went on


async def test_a_missing_function_is_not_retried(rig: Rig) -> None:
    rig.add("rate(1 hour)", target={"DeadLetterConfig": {"Arn": DLQ}})
    rig.registry.functions.clear()
    await rig.tick(T0)
    assert [code for _, _, code in rig.delivery.letters] == ["404"]
    await rig.tick(T0 + 100)
    assert len(rig.delivery.letters) == 1 and rig.runner._retries == []


async def test_a_disabled_schedule_does_not_fire_and_a_deleted_ones_retries_are_dropped(rig: Rig) -> None:
    rig.add("rate(1 hour)", state="DISABLED")
    await rig.tick(T0 + 10)
    assert rig.fired() == []
    rig.set_state(state="ENABLED")
    rig.queue.full = True
    await rig.tick(T0 + 10)
    assert len(rig.runner._retries) == 1
    rig.store.delete("default", "s")
    rig.queue.full = False
    await rig.tick(T0 + 20)
    assert rig.fired() == [] and rig.runner._retries == []
