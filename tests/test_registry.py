"""Registry (SQLite + cache) and the Deployer used for start-up deployment, without HTTP."""

from __future__ import annotations

import base64
import dataclasses
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.api.functions.functions import Deployer
from gateway.catalog import Catalog
from gateway.errors import PreconditionFailedException, ResourceConflictException, ResourceNotFoundException
from gateway.settings import Settings
from gateway.store.code import CodeStore
from gateway.store.layers import LayerStore
from gateway.store.records import (
    AliasConfig,
    Change,
    Changed,
    LayerRef,
    ProvisionedConfig,
    new_revision_id,
    now_last_modified,
)
from gateway.store.registry import Registry
from tests.conftest import HANDLER, ROLE, RUNTIME, make_zip
from tests.conftest import function_config as _config

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, runtimes={RUNTIME: sys.executable})


@pytest.fixture
def codestore(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def _open(settings: Settings, codestore: CodeStore) -> Registry:
    return Registry(settings.data_dir / "registry.sqlite3", codestore, settings)


def test_create_get_resolve_delete(settings: Settings, codestore: CodeStore) -> None:
    registry = _open(settings, codestore)
    created = registry.create(_config(codestore, "f", environment={"KEY": "v"}))
    cfg = registry.get("f")
    # answered Pending, stored Active with a new RevisionId (gateway/store/states.py)
    assert (created.state, cfg.state, cfg.last_update) == ("Pending", "Active", "Successful")
    assert created.revision_id != cfg.revision_id and created.environment == cfg.environment
    assert registry.resolve("f", None) is cfg and registry.resolve("f", "$LATEST") is cfg
    with pytest.raises(ResourceNotFoundException, match=f"Function not found: {ARN}f:1$"):
        registry.resolve("f", "1")
    with pytest.raises(ResourceConflictException, match="Function already exist: f"):
        registry.create(_config(codestore, "f"))
    registry.delete("f")
    with pytest.raises(ResourceNotFoundException, match=f"Function not found: {ARN}f$"):
        registry.get("f")
    with pytest.raises(ResourceNotFoundException):
        registry.delete("f")
    registry.close()


def test_update_checks_revision_and_notifies(settings: Settings, codestore: CodeStore) -> None:
    registry = _open(settings, codestore)
    seen: list[Change] = []
    registry.on_change.connect(seen.append)
    registry.create(_config(codestore, "f"))
    cfg = registry.get("f")
    assert seen == [Change(Changed.FUNCTION_CREATED, "f", "$LATEST")]
    seen.clear()
    new = registry.update("f", lambda c: dataclasses.replace(c, timeout=9), if_revision=cfg.revision_id)
    assert (new.timeout, seen) == (9, [Change(Changed.LATEST_UPDATED, "f", "$LATEST")])
    assert new.revision_id != cfg.revision_id
    # answered InProgress; stored Successful with yet another RevisionId
    assert (new.last_update, registry.get("f").last_update) == ("InProgress", "Successful")
    assert registry.get("f").revision_id not in (new.revision_id, cfg.revision_id)
    with pytest.raises(PreconditionFailedException):
        registry.update("f", lambda c: dataclasses.replace(c, timeout=10), if_revision=cfg.revision_id)
    registry.update_tags("f", lambda tags: {"t": "1"})  # tags are not configuration: nobody is told
    assert registry.get("f").timeout == 9 and seen == [Change(Changed.LATEST_UPDATED, "f", "$LATEST")]
    registry.delete("f")
    assert seen[1:] == [Change(Changed.FUNCTION_DELETED, "f", None)]
    registry.close()


def test_every_write_that_changes_what_runs_is_told(settings: Settings, codestore: CodeStore) -> None:
    """Versions, aliases and provisioned configs: one Change per write, none for a write that changed nothing."""
    registry = _open(settings, codestore)
    registry.create(_config(codestore, "f"), publish=True)
    seen: list[Change] = []
    registry.on_change.connect(seen.append)
    assert registry.publish("f").version == "1" and seen == []  # nothing changed since version 1: nothing told
    registry.update("f", lambda c: dataclasses.replace(c, timeout=9), publish=True)
    alias = AliasConfig("f", "live", ARN + "f:live", "1", new_revision_id())
    registry.create_alias(alias)
    registry.update_alias("f", "live", lambda a: dataclasses.replace(a, function_version="2"))
    registry.put_provisioned(ProvisionedConfig("f", "live", 2, now_last_modified()))
    assert registry.delete_provisioned("f", "live") and not registry.delete_provisioned("f", "live")
    registry.delete_alias("f", "live")
    registry.delete_alias("f", "live")  # not there: succeeds, changes nothing
    registry.delete_version("f", "1")
    registry.delete_version("f", "9")
    assert seen == [
        Change(Changed.VERSION_PUBLISHED, "f", "2"),  # published under the update's lock, told first
        Change(Changed.LATEST_UPDATED, "f", "$LATEST"),
        Change(Changed.ALIAS_PUT, "f", "live"),
        Change(Changed.ALIAS_PUT, "f", "live"),
        Change(Changed.PROVISIONED_PUT, "f", "live"),
        Change(Changed.PROVISIONED_DELETED, "f", "live"),
        Change(Changed.ALIAS_DELETED, "f", "live"),
        Change(Changed.VERSION_DELETED, "f", "1"),
    ]
    registry.close()


def test_an_observer_that_fails_does_not_fail_the_write(
    settings: Settings, codestore: CodeStore, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _open(settings, codestore)
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("observer bug")

    registry.on_change.connect(broken)
    registry.on_change.connect(seen.append)
    registry.create(_config(codestore, "f"))
    assert registry.get("f").name == "f" and [c.what for c in seen] == [Changed.FUNCTION_CREATED]
    assert "registry change: observer" in caplog.text and "observer bug" in caplog.text
    registry.close()


def test_persistence_and_paging(settings: Settings, codestore: CodeStore) -> None:
    registry = _open(settings, codestore)
    for name in ("c", "a", "b"):
        registry.create(_config(codestore, name, tags={"t": name}, architectures=("arm64",)))
    registry.update("b", lambda c: dataclasses.replace(c, environment={"KEY": "1"}))
    before = registry.list()
    registry.close()

    reopened = _open(settings, codestore)
    assert reopened.list() == before
    assert [c.name for c in before] == ["a", "b", "c"]
    assert reopened.get("b").environment == {"KEY": "1"} and reopened.get("a").architectures == ("arm64",)
    page, more = reopened.list_page(None, 2)
    assert ([c.name for c in page], more) == (["a", "b"], True)
    page, more = reopened.list_page("b", 2)
    assert ([c.name for c in page], more) == (["c"], False)
    reopened.close()


def test_to_wire(codestore: CodeStore) -> None:
    cfg = _config(codestore, "f")
    wire = cfg.to_wire()
    assert wire["CodeSha256"] == base64.b64encode(bytes.fromhex(cfg.code_sha256)).decode()
    assert wire["FunctionArn"] == ARN + "f" and wire["Version"] == "$LATEST"
    assert "Environment" not in wire and "Layers" not in wire
    ref = LayerRef("arn:aws:lambda:us-east-1:123456789012:layer:l:1", 10, "0" * 64)
    assert dataclasses.replace(cfg, layers=(ref,)).to_wire()["Layers"] == [{"Arn": ref.arn, "CodeSize": 10}]
    assert dataclasses.replace(cfg, version="3").to_wire()["FunctionArn"] == ARN + "f:3"


async def test_deployer_create_or_update(settings: Settings, codestore: CodeStore) -> None:
    registry = _open(settings, codestore)
    layer_store = LayerStore(settings.data_dir / "layers.sqlite3", codestore, settings)
    deployer = Deployer(settings, Catalog.discover(settings), registry, codestore, layer_store)
    zip_b64 = base64.b64encode(make_zip({"lambda_function.py": "X = 1\n"})).decode()
    body: dict[str, Any] = {
        "FunctionName": "f", "Runtime": RUNTIME, "Role": ROLE, "Handler": HANDLER,
        "Code": {"ZipFile": zip_b64},
    }  # fmt: skip
    assert await deployer.create_or_update(body) == "created"
    revision = registry.get("f").revision_id
    assert await deployer.create_or_update(body) == "unchanged"
    assert registry.get("f").revision_id == revision
    assert await deployer.create_or_update({**body, "Timeout": 10}) == "updated"
    assert registry.get("f").timeout == 10
    assert await deployer.create_or_update(body) == "updated"  # members left out return to defaults
    assert registry.get("f").timeout == 3
    new_zip = base64.b64encode(make_zip({"lambda_function.py": "X = 2\n"})).decode()
    assert await deployer.create_or_update({**body, "Code": {"ZipFile": new_zip}}) == "updated"
    assert (registry.get("f").code_dir / "lambda_function.py").read_text() == "X = 2\n"
    layer_store.close()
    registry.close()


def test_a_version_1_registry_is_migrated(settings: Settings, codestore: CodeStore) -> None:
    """A database written before versions and aliases existed opens, and gains them."""
    cfg = _config(codestore, "old")
    path = settings.data_dir / "registry.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE function_versions (name TEXT NOT NULL, version TEXT NOT NULL, config TEXT NOT NULL,"
        " PRIMARY KEY (name, version)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO function_versions VALUES (?, ?, ?)", ("old", "$LATEST", cfg.to_record().decode()))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    registry = _open(settings, codestore)
    assert registry.get("old").code_sha256 == cfg.code_sha256
    assert registry.publish("old").version == "1"
    assert registry.reserved_concurrency("old") is None
    registry.close()
    registry = _open(settings, codestore)
    assert [v.version for v in registry.versions("old")] == ["$LATEST", "1"]
    registry.close()
