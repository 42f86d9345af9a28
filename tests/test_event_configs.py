"""EventInvokeConfigs: defaults, put/update/delete, persistence, following the registry, on a temporary directory."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from gateway.store.event_configs import (
    DEFAULT_EVENT_AGE,
    DEFAULT_RETRY_ATTEMPTS,
    EVENT_AGE,
    RETRIES,
    EventInvokeConfig,
    EventInvokeConfigs,
    qualifier_order,
)
from gateway.store.records import LATEST, AliasConfig, Change, Changed, new_revision_id
from tests.conftest import function_config, open_registry


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def open_store(data_dir: Path) -> EventInvokeConfigs:
    return EventInvokeConfigs(data_dir / "event-invoke.sqlite3", Settings(data_dir=data_dir))


@pytest.fixture
def store(data_dir: Path) -> Iterator[EventInvokeConfigs]:
    s = open_store(data_dir)
    yield s
    s.close()


def config(function: str = "f", qualifier: str = LATEST, **fields: object) -> EventInvokeConfig:
    return EventInvokeConfig(function, qualifier, **fields)  # type: ignore[arg-type]


def test_effective_is_lambda_s_defaults_without_a_config(store: EventInvokeConfigs) -> None:
    for qualifier in (None, LATEST):
        got = store.effective("nobody", qualifier)
        assert (got.function, got.qualifier) == ("nobody", LATEST)
        assert (
            (got.maximum_retry_attempts, got.maximum_event_age)
            == (2, 21600)
            == (
                DEFAULT_RETRY_ATTEMPTS,
                DEFAULT_EVENT_AGE,
            )
        )
        assert got.on_success is None and got.on_failure is None
    assert store.effective("nobody", "live").qualifier == "live"
    assert store.get("nobody", LATEST) is None and store.configs("nobody") == []


def test_each_qualifier_has_its_own_config(store: EventInvokeConfigs) -> None:
    store.put(config(maximum_retry_attempts=0, given=frozenset({RETRIES})))
    store.put(config(qualifier="live", maximum_event_age=60, on_failure="arn:x", given=frozenset({EVENT_AGE})))
    assert store.effective("f", None).maximum_retry_attempts == 0
    assert store.effective("f", LATEST).maximum_event_age == DEFAULT_EVENT_AGE
    live = store.effective("f", "live")
    assert (live.maximum_retry_attempts, live.maximum_event_age, live.on_failure) == (2, 60, "arn:x")
    assert store.effective("f", "1") == EventInvokeConfig("f", "1")  # an alias's config is not $LATEST's, nor v1's


def test_put_replaces_and_update_changes_atomically(store: EventInvokeConfigs) -> None:
    store.put(config(maximum_retry_attempts=1, on_success="arn:a", last_modified=1.0))
    store.put(config(maximum_event_age=120, last_modified=2.0))
    assert store.get("f", LATEST) == config(maximum_event_age=120, last_modified=2.0)
    new = store.update("f", LATEST, lambda c: EventInvokeConfig(c.function, c.qualifier, 0, c.maximum_event_age))
    assert new is not None and store.get("f", LATEST) == new
    assert (new.maximum_retry_attempts, new.maximum_event_age) == (0, 120)
    assert store.update("f", "live", lambda c: c) is None  # nothing to update: nothing written
    assert store.get("f", "live") is None
    with pytest.raises(ValueError):
        store.update("f", LATEST, lambda c: config(function="g"))


def test_list_order_is_latest_then_versions_by_number_then_aliases(store: EventInvokeConfigs) -> None:
    for qualifier in ("prod", "10", LATEST, "2", "blue"):
        store.put(config(qualifier=qualifier))
    assert [c.qualifier for c in store.configs("f")] == [LATEST, "2", "10", "blue", "prod"]
    assert sorted(["10", "9", LATEST, "a"], key=qualifier_order) == [LATEST, "9", "10", "a"]


def test_delete_and_forget(store: EventInvokeConfigs) -> None:
    for qualifier in (LATEST, "1", "live"):
        store.put(config(qualifier=qualifier))
    store.put(config(function="g"))
    assert store.delete("f", "1") and not store.delete("f", "1")
    store.forget("f", "nothing")  # a deleted version without a config
    assert [c.qualifier for c in store.configs("f")] == [LATEST, "live"]
    store.forget("f")
    assert store.configs("f") == [] and store.get("f", "live") is None
    assert store.get("g", LATEST) is not None  # other functions keep theirs
    store.forget("nobody")


def test_configs_survive_a_restart_and_the_file_is_private(data_dir: Path) -> None:
    store = open_store(data_dir)
    wanted = config(
        qualifier="3", maximum_retry_attempts=1, on_success="arn:s", last_modified=1.5, given=frozenset({RETRIES})
    )
    store.put(wanted)
    store.put(config(function="gone"))
    store.forget("gone")
    store.close()
    reopened = open_store(data_dir)
    try:
        assert reopened.get("f", "3") == wanted
        assert reopened.effective("f", "3") == wanted
        assert reopened.configs("gone") == []
    finally:
        reopened.close()
    assert stat.S_IMODE(os.stat(data_dir / "event-invoke.sqlite3").st_mode) == 0o600


def test_follow_forgets_what_the_registry_deleted(store: EventInvokeConfigs) -> None:
    for qualifier in (LATEST, "1", "live"):
        store.put(config(qualifier=qualifier))
    store.follow(Change(Changed.ALIAS_PUT, "f", "live"))
    store.follow(Change(Changed.LATEST_UPDATED, "f", LATEST))
    assert len(store.configs("f")) == 3
    store.follow(Change(Changed.VERSION_DELETED, "f", "1"))
    store.follow(Change(Changed.ALIAS_DELETED, "f", "live"))
    assert [c.qualifier for c in store.configs("f")] == [LATEST]
    store.follow(Change(Changed.FUNCTION_DELETED, "f", None))
    assert store.configs("f") == []


def test_a_real_registry_s_deletions_take_the_configs_and_restart_drops_orphans(data_dir: Path) -> None:
    registry = open_registry(data_dir)
    store = open_store(data_dir)
    try:
        registry.on_change.connect(store.follow)
        registry.create(function_config(registry.codestore, "f"))
        v1 = registry.publish("f")
        registry.create_alias(AliasConfig("f", "live", "arn:live", v1.version, revision_id=new_revision_id()))
        for qualifier in (LATEST, v1.version, "live"):
            store.put(config(qualifier=qualifier))
        registry.delete_alias("f", "live")
        registry.delete_version("f", v1.version)
        assert [c.qualifier for c in store.configs("f")] == [LATEST]
        store.put(config(qualifier="ghost"))  # as if a crash came between a delete and its configs'
        store.put(config(function="never"))
        assert store.retain_existing(registry) == 2
        assert [c.qualifier for c in store.configs("f")] == [LATEST] and store.configs("never") == []
        registry.delete("f")
        assert store.configs("f") == []
    finally:
        store.close()
        registry.close()


def test_readers_never_see_half_a_write(store: EventInvokeConfigs) -> None:
    """`effective` and `configs` on one thread while another writes and forgets: always whole entries."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(300):
                store.put(config(qualifier=str(i % 7), maximum_retry_attempts=i % 3))
                if i % 11 == 0:
                    store.forget("f")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        for c in store.configs("f"):
            assert c.function == "f"
        assert store.effective("f", "3").maximum_retry_attempts in (0, 1, 2)
    thread.join()
    assert not errors
