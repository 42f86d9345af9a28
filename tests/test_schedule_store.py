"""The schedule store (gateway/store/schedules.py): written first, read back after a reopen; groups and their
schedules; a record replaced meanwhile is not deleted by a stale hand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.store.schedules import GroupNotFound, Schedule, ScheduleGroup, Schedules


def schedule(name: str, group: str = "default") -> Schedule:
    return Schedule(
        name=name, group=group, expression="rate(1 hour)", timezone="UTC", state="ENABLED",
        target={"Arn": "arn:aws:lambda:us-east-1:123456789012:function:f", "RoleArn": "r"}, flexible_mode="OFF",
        flexible_window=None, action_after_completion="NONE", created=1.0, modified=1.0, next_due=5.0, fire_at=6.0,
    )  # fmt: skip


def test_schedules_and_groups_survive_a_reopen_and_a_group_takes_its_schedules(tmp_path: Path) -> None:
    path = tmp_path / "schedules.sqlite3"
    store = Schedules(path)
    assert store.create(schedule("a")) and not store.create(schedule("a"))
    with pytest.raises(GroupNotFound):
        store.create(schedule("b", "team"))
    assert store.create_group(ScheduleGroup("team", 2.0, 2.0, (("k", "v"),))) and not store.create_group(
        ScheduleGroup("default", 2.0, 2.0)
    )
    assert store.create(schedule("b", "team")) and store.create(schedule("c", "team"))
    store.update("default", "a", lambda s: replace(s, next_due=7.0))
    store.close()
    store = Schedules(path)
    assert [s.key for s in store.all()] == [("default", "a"), ("team", "b"), ("team", "c")]
    assert store.get("default", "a") == replace(schedule("a"), next_due=7.0)
    assert store.group("team") == ScheduleGroup("team", 2.0, 2.0, (("k", "v"),))
    assert store.delete_group("team") == 2 and store.delete_group("team") is None
    store.close()
    store = Schedules(path)
    assert [s.key for s in store.all()] == [("default", "a")] and store.groups() == []
    stale = store.get("default", "a")
    store.replace(replace(schedule("a"), expression="rate(2 hours)"))
    assert not store.delete("default", "a", only_if=stale)  # replaced meanwhile: kept
    assert store.delete("default", "a") and not store.delete("default", "a")
    store.close()
