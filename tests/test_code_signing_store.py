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


def test_readers_see_snapshots_while_writers_change_the_mapping(tmp_path: Path) -> None:
    """Reads (on the event loop, or under the registry's lock) iterate the caches while worker threads write: the
    caches are copy-on-write, so an iteration never fails with "dictionary changed size"."""
    import threading

    store = CodeSigningConfigs(tmp_path / "cs.sqlite3")
    config = store.create(_make)
    for i in range(200):
        store.attach(f"f{i}", config.arn)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            store.attach(f"g{i % 50}", config.arn) if i % 2 == 0 else store.detach(f"g{i % 50}")
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(300):
            assert len(store.functions_of(config.arn)) >= 200
            assert store.all() == [config]
    finally:
        stop.set()
        writer.join()
    store.close()


def test_attach_new_never_takes_over_a_mapping(tmp_path: Path) -> None:
    import dataclasses

    store = CodeSigningConfigs(tmp_path / "cs.sqlite3")
    config = store.create(_make)
    assert store.attach_new("f", config, lambda name: False) == "attached"
    assert store.attach_new("f", config, lambda name: False) == "taken"
    assert store.attach_new("g", config, lambda name: name == "g") == "taken"
    loosened = dataclasses.replace(config, untrusted_artifact_on_deployment="Warn")
    assert store.attach_new("h", loosened, lambda name: False) == "changed"
    store.update(config.arn, lambda c: dataclasses.replace(c, description="only the description"))
    assert store.attach_new("h", config, lambda name: False) == "attached"  # the rules are the same
    store.detach("f")
    store.detach("h")
    assert store.delete(config.arn) == "deleted"
    assert store.attach_new("f", config, lambda name: False) == "missing"
    store.close()
