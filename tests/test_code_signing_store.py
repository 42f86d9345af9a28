"""gateway.store.code_signing: configurations and function mappings in SQLite, the in-use rule, following the
registry's deletions, and what survives reopening."""

from __future__ import annotations

from pathlib import Path

from gateway.store.code_signing import CodeSigningConfig, CodeSigningConfigs
from gateway.store.records import Change, Changed

PROFILE = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/Team/abcdef1234"


def _make(csc_id: str) -> CodeSigningConfig:
    arn = f"arn:aws:lambda:us-east-1:123456789012:code-signing-config:{csc_id}"
    return CodeSigningConfig(csc_id, arn, "", (PROFILE,), "Enforce", "2026-12-07T00:00:00.000+0000")


def test_ids_are_the_model_s_and_configs_persist(tmp_path: Path) -> None:
    store = CodeSigningConfigs(tmp_path / "cs.sqlite3")
    first, second = store.create(_make), store.create(_make)
    assert first.csc_id != second.csc_id
    assert all(len(c.csc_id) == 21 and c.csc_id[4:].isalnum() and c.csc_id[4:].islower() for c in (first, second))
    assert store.attach("f", first.arn)
    assert not store.attach("g", first.arn.replace(first.csc_id, "csc-00000000000000000"))
    store.close()
    reopened = CodeSigningConfigs(tmp_path / "cs.sqlite3")
    assert reopened.get(first.arn) == first
    assert reopened.of_function("f") == first
    assert reopened.all() == sorted([first, second], key=lambda c: c.csc_id)
    reopened.close()


def test_a_config_in_use_is_not_deleted_and_deleted_functions_let_go(tmp_path: Path) -> None:
    store = CodeSigningConfigs(tmp_path / "cs.sqlite3")
    config = store.create(_make)
    store.attach("f", config.arn)
    store.attach("g", config.arn)
    assert store.functions_of(config.arn) == ["f", "g"]
    assert store.delete(config.arn) == "in use"
    store.follow(Change(Changed.FUNCTION_DELETED, "f", None))
    store.follow(Change(Changed.VERSION_DELETED, "g", "1"))  # a version going takes nothing
    assert store.functions_of(config.arn) == ["g"]
    assert store.retain_existing(lambda name: name != "g") == 1
    assert store.delete(config.arn) == "deleted"
    assert store.delete(config.arn) == "missing"
    store.close()
