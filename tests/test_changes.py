"""gateway.changes: what follows each change to the registry, against a real registry and fakes of the rest."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from gateway.changes import ChangePolicy, provisioned_slots, provisioning
from gateway.store.records import LATEST, AliasConfig, Change, Changed, ProvisionedConfig, now_last_modified
from gateway.store.registry import Registry
from tests.conftest import FUNCTION_ARN, FakeFollowers, function_config, open_registry

Calls = list[tuple[object, ...]]

RETIRED_LATEST: Calls = [
    ("pools", "retire", "f", LATEST, True),  # replaced: its idle environments leave after RETIRE_GRACE
    ("metrics", "forget", "f", LATEST),
    ("collector", "request"),
]
RETIRED_1: Calls = [
    ("pools", "retire", "f", "1", False),
    ("metrics", "forget", "f", "1"),
    ("logs", "forget", "f", "1"),
    ("collector", "request"),
]
RETIRED_ALL: Calls = [
    ("pools", "retire", "f", None, False),
    ("metrics", "forget", "f", None),
    ("logs", "forget", "f", None),
    ("collector", "request"),
    ("reservations", "set", "f", None),
]
RECONCILED: Calls = [("pools", "reconcile", False)]

#: what follows each kind of change (every kind is here: a new one needs a decision)
FOLLOWS: dict[Changed, tuple[str | None, Calls]] = {
    Changed.FUNCTION_CREATED: (LATEST, []),
    Changed.LATEST_UPDATED: (LATEST, RETIRED_LATEST),  # $LATEST keeps its log stream, and cannot be provisioned
    Changed.VERSION_PUBLISHED: ("2", []),
    Changed.VERSION_DELETED: ("1", RETIRED_1 + RECONCILED),
    Changed.FUNCTION_DELETED: (None, RETIRED_ALL + RECONCILED),
    Changed.ALIAS_PUT: ("live", RECONCILED),
    Changed.ALIAS_DELETED: ("live", RECONCILED),
    Changed.PROVISIONED_PUT: ("live", [("pools", "reconcile", True)]),  # a Put of the same value retries FAILED
    Changed.PROVISIONED_DELETED: ("live", RECONCILED),
}


def _policy(fakes: FakeFollowers, loop: asyncio.AbstractEventLoop) -> ChangePolicy:
    return ChangePolicy(loop, fakes.pools, fakes.metrics, fakes.logs, fakes.collector, fakes.reservations)


def test_every_kind_of_change_has_a_rule() -> None:
    assert set(FOLLOWS) == set(Changed)


@pytest.mark.parametrize("what", list(Changed), ids=lambda c: c.name)
def test_what_follows_a_change(what: Changed) -> None:
    fakes = FakeFollowers()
    loop = asyncio.new_event_loop()
    try:
        qualifier, expected = FOLLOWS[what]
        _policy(fakes, loop).apply(Change(what, "f", qualifier))
    finally:
        loop.close()
    assert fakes.calls == expected


def test_a_runtime_that_becomes_ready_reconciles() -> None:
    fakes = FakeFollowers()
    loop = asyncio.new_event_loop()
    try:
        _policy(fakes, loop).runtime_ready()
    finally:
        loop.close()
    assert fakes.calls == RECONCILED


async def _writes(registry: Registry, fakes: FakeFollowers) -> None:
    """Writes as the routes make them, each in a worker thread: when its `await` returns, the policy has run."""
    registry.on_change.connect(_policy(fakes, asyncio.get_running_loop()).follow)
    codestore = registry.codestore
    await asyncio.to_thread(registry.create, function_config(codestore, "f"), publish=True)
    assert fakes.calls == []
    alias = AliasConfig("f", "live", FUNCTION_ARN + "f:live", "1", "r1")
    await asyncio.to_thread(registry.create_alias, alias)
    assert fakes.calls == RECONCILED
    await asyncio.to_thread(registry.put_provisioned, ProvisionedConfig("f", "live", 2, now_last_modified()))
    assert fakes.calls[1:] == [("pools", "reconcile", True)]
    await asyncio.to_thread(registry.update, "f", lambda c: dataclasses.replace(c, timeout=9), publish=True)
    assert fakes.calls[2:] == RETIRED_LATEST
    await asyncio.to_thread(registry.update_alias, "f", "live", lambda a: dataclasses.replace(a, function_version="2"))
    await asyncio.to_thread(registry.delete_version, "f", "1")
    assert fakes.calls[5:] == RECONCILED + RETIRED_1 + RECONCILED
    await asyncio.to_thread(registry.delete, "f")
    assert fakes.calls[11:] == RETIRED_ALL + RECONCILED


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_write_in_a_thread_is_followed_before_its_await_returns(
    tmp_path: Path, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    registry = open_registry(tmp_path)
    fakes = FakeFollowers()
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(_writes(registry, fakes))
    finally:
        registry.close()


def test_provisioning_wants_the_version_an_alias_names(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    try:
        registry.create(function_config(registry.codestore, "f"), publish=True)
        registry.update("f", lambda c: dataclasses.replace(c, timeout=9), publish=True)
        registry.create(function_config(registry.codestore, "g"), publish=True)
        registry.create_alias(AliasConfig("f", "live", FUNCTION_ARN + "f:live", "2", "r1"))
        registry.put_provisioned(ProvisionedConfig("f", "live", 3, now_last_modified()))
        registry.put_provisioned(ProvisionedConfig("g", "1", 1, now_last_modified()))
        wanted = provisioning(registry)
        assert sorted((c.name, c.version, n) for c, n in wanted()) == [("f", "2", 3), ("g", "1", 1)]
        registry.update_alias("f", "live", lambda a: dataclasses.replace(a, function_version="1"))
        assert sorted((c.name, c.version, n) for c, n in wanted()) == [("f", "1", 3), ("g", "1", 1)]
        registry.delete("g")
        assert [(c.name, c.version, n) for c, n in wanted()] == [("f", "1", 3)]
    finally:
        registry.close()


def test_provisioned_slots_name_what_each_config_serves(tmp_path: Path) -> None:
    """What admission counts as provisioned (issue 18, cause 6): a config's own qualifier, the version it
    provisions and the other aliases of that version; nothing for a function without configs or one gone."""
    registry = open_registry(tmp_path)
    try:
        registry.create(function_config(registry.codestore, "f"), publish=True)
        registry.update("f", lambda c: dataclasses.replace(c, timeout=9), publish=True)
        registry.create_alias(AliasConfig("f", "live", FUNCTION_ARN + "f:live", "2", "r1"))
        registry.create_alias(AliasConfig("f", "also", FUNCTION_ARN + "f:also", "2", "r2"))
        registry.create_alias(AliasConfig("f", "old", FUNCTION_ARN + "f:old", "1", "r3"))
        assert provisioned_slots(registry, "f") == {}
        registry.put_provisioned(ProvisionedConfig("f", "live", 3, now_last_modified()))
        registry.put_provisioned(ProvisionedConfig("f", "1", 1, now_last_modified()))
        assert provisioned_slots(registry, "f") == {
            "live": ("live", 3), "2": ("live", 3), "also": ("live", 3), "1": ("1", 1), "old": ("1", 1)
        }  # fmt: skip
        registry.delete("f")
        assert provisioned_slots(registry, "f") == {}
    finally:
        registry.close()
