"""Functions, their versions and aliases, persisted in SQLite, cached in memory.

Tables: `function_versions(name, version, config)` — `$LATEST` is the version `'$LATEST'`, published
versions are `'1'`, `'2'`, ...; `aliases(name, alias, config)`; `function_meta(name, last_version,
reserved)`, which keeps version numbers monotonic (never reused while the function exists) and the
function's reserved concurrency; `provisioned(name, qualifier, config)`, provisioned concurrency configs.
Writes go to SQLite first (one transaction, `synchronous=FULL` under WAL), then to the in-memory cache.
Reads — including `resolve()` on the invoke path — only touch the cache.

Concurrency model: reads run on the event loop thread; writes may run in a worker thread (they block on
SQLite). A lock makes each write (check, persist, publish to the cache) atomic. Every write but tags and reserved
concurrency then calls `on_change` (a gateway.hooks.Hook) with a `Change`, on the writer's thread, possibly with
the lock still held: its observers must be quick and must not wait for another thread that uses the registry.
"""

from __future__ import annotations

import bisect
import builtins
import dataclasses
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from gateway.hooks import Hook
from gateway.settings import Settings
from gateway.store import sqlite, states
from gateway.store.code import CodeStore
from gateway.store.publishing import unchanged_since
from gateway.store.records import (
    LATEST,
    AliasConfig,
    Change,
    Changed,
    FunctionConfig,
    ProvisionedConfig,
    new_revision_id,
    now_last_modified,
)

log = logging.getLogger("gateway.registry")

SCHEMA_VERSION = 3

REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)


class _Function:
    """The cache entry of one function."""

    __slots__ = ("aliases", "last_version", "provisioned", "reserved", "versions")

    def __init__(self, last_version: int = 0, reserved: int | None = None) -> None:
        self.versions: dict[str, FunctionConfig] = {}
        self.aliases: dict[str, AliasConfig] = {}
        self.provisioned: dict[str, ProvisionedConfig] = {}
        self.last_version = last_version
        self.reserved = reserved


def _version_key(config: FunctionConfig) -> int:
    return -1 if config.version == LATEST else int(config.version)


class Registry:
    """Functions by name, with their versions and aliases, in SQLite with an in-memory cache."""

    def __init__(self, db_path: Path, codestore: CodeStore, settings: Settings) -> None:
        self.settings = settings
        self.codestore = codestore
        self._lock = threading.RLock()
        #: told of every write (gateway.store.records.Change), once it is persisted and cached
        self.on_change: Hook[[Change]] = Hook("registry change", log)
        self._functions: dict[str, _Function] = {}
        self._names: list[str] = []  # sorted, for paging
        self._db = sqlite.connect(db_path)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        current = sqlite.schema_version(self._db, SCHEMA_VERSION, "registry")
        if current == SCHEMA_VERSION:
            return
        with self._tx() as db:
            if current < 1:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS function_versions ("
                    " name TEXT NOT NULL, version TEXT NOT NULL, config TEXT NOT NULL,"
                    " PRIMARY KEY (name, version)) WITHOUT ROWID"
                )
            if current < 2:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS aliases ("
                    " name TEXT NOT NULL, alias TEXT NOT NULL, config TEXT NOT NULL,"
                    " PRIMARY KEY (name, alias)) WITHOUT ROWID"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS function_meta (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL)"
                )
                db.execute(
                    "INSERT OR IGNORE INTO function_meta (name, last_version)"
                    " SELECT DISTINCT name, 0 FROM function_versions"
                )
            if current < 3:
                db.execute("ALTER TABLE function_meta ADD COLUMN reserved INTEGER")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS provisioned ("
                    " name TEXT NOT NULL, qualifier TEXT NOT NULL, config TEXT NOT NULL,"
                    " PRIMARY KEY (name, qualifier)) WITHOUT ROWID"
                )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        for name, last_version, reserved in self._db.execute("SELECT name, last_version, reserved FROM function_meta"):
            self._functions[name] = _Function(last_version, reserved)
        for name, _version, raw in self._db.execute("SELECT name, version, config FROM function_versions"):
            data = orjson.loads(raw)
            for sha in (data["code_sha256"], *(layer["code_sha256"] for layer in data.get("layers", ()))):
                if not self.codestore.ensure_extracted(sha):
                    log.warning("code %s of function %s is missing from the code store", sha, name)
            cfg = FunctionConfig.from_record(raw, self.codestore.path_for)
            self._functions.setdefault(name, _Function()).versions[cfg.version] = cfg
        for name, _alias, raw in self._db.execute("SELECT name, alias, config FROM aliases"):
            alias = AliasConfig.from_record(raw)
            self._functions[name].aliases[alias.name] = alias
        for name, _qualifier, raw in self._db.execute("SELECT name, qualifier, config FROM provisioned"):
            prov = ProvisionedConfig.from_record(raw)
            self._functions[name].provisioned[prov.qualifier] = prov
        self._names = sorted(self._functions)
        log.info("registry loaded %d functions", len(self._names))

    def _tx(self) -> sqlite.transaction:
        return sqlite.transaction(self._db)

    # -- reads (cache only) ------------------------------------------------------------------------

    def _function(self, name: str) -> _Function:
        fn = self._functions.get(name)
        if fn is None:
            raise ResourceNotFoundException(f"Function not found: {self.settings.function_arn(name)}")
        return fn

    def get(self, name: str) -> FunctionConfig:
        """The `$LATEST` configuration. Raises ResourceNotFoundException."""
        return self._function(name).versions[LATEST]

    def get_version(self, name: str, version: str) -> FunctionConfig:
        """A version (`$LATEST` or a number). Raises ResourceNotFoundException."""
        cfg = self._function(name).versions.get(version)
        if cfg is None:
            raise ResourceNotFoundException(f"Function not found: {self.settings.function_arn(name, version)}")
        return cfg

    def exists(self, name: str, version: str) -> bool:
        """Whether the function has this version (`$LATEST` or a number) now."""
        fn = self._functions.get(name)
        return fn is not None and version in fn.versions

    def get_alias(self, name: str, alias: str) -> AliasConfig:
        found = self._function(name).aliases.get(alias)
        if found is None:
            raise ResourceNotFoundException(f"Cannot find alias arn: {self.settings.function_arn(name, alias)}")
        return found

    def resolve(self, name: str, qualifier: str | None, route: bool = False) -> FunctionConfig:
        """The configuration a (name, qualifier) designates; no I/O. Raises ResourceNotFoundException.

        An alias designates its version; with `route`, an alias with routing weights picks its additional
        version with that probability (once per call: the invoke path calls with route=True).
        """
        fn = self._functions.get(name)
        if fn is not None:
            if qualifier is None:
                return fn.versions[LATEST]
            cfg = fn.versions.get(qualifier)
            if cfg is not None:
                return cfg
            alias = fn.aliases.get(qualifier)
            if alias is not None:
                version = alias.function_version
                if route and alias.additional_weights:
                    ((extra, weight),) = alias.additional_weights.items()
                    if random.random() < weight:
                        version = extra
                return fn.versions[version]
        raise ResourceNotFoundException(f"Function not found: {self.settings.function_arn(name, qualifier)}")

    def list(self) -> list[FunctionConfig]:
        """Every function's `$LATEST`, sorted by name."""
        return [self._functions[n].versions[LATEST] for n in self._names]

    def list_page(self, after: str | None, limit: int) -> tuple[builtins.list[FunctionConfig], bool]:
        """Up to `limit` functions whose names sort after `after`; the flag says whether more follow."""
        start = 0 if after is None else bisect.bisect_right(self._names, after)
        names = self._names[start : start + limit]
        return [self._functions[n].versions[LATEST] for n in names], start + limit < len(self._names)

    def versions(self, name: str) -> builtins.list[FunctionConfig]:
        """`$LATEST`, then the published versions in ascending order."""
        return sorted(self._function(name).versions.values(), key=_version_key)

    def aliases(self, name: str) -> builtins.list[AliasConfig]:
        """The function's aliases, sorted by name."""
        fn = self._function(name)
        return [fn.aliases[a] for a in sorted(fn.aliases)]

    def total_code_size(self) -> int:
        """Bytes of zipped code over every version of every function (GetAccountSettings' usage)."""
        return sum(cfg.code_size for fn in list(self._functions.values()) for cfg in list(fn.versions.values()))

    def code_digests(self) -> set[str]:
        """Every package a version of a function uses: its code and its layers' (sha256 hex)."""
        found: set[str] = set()
        for fn in list(self._functions.values()):
            for cfg in list(fn.versions.values()):
                found.add(cfg.code_sha256)
                found.update(layer.code_sha256 for layer in cfg.layers)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __len__(self) -> int:
        return len(self._functions)

    # -- writes (SQLite first, then the cache) -----------------------------------------------------

    def create(
        self, config: FunctionConfig, *, publish: bool = False, guard: Callable[[], None] | None = None
    ) -> FunctionConfig:
        """Add a new function's `$LATEST` (and with `publish`, version 1 of it, returned instead).

        Its code is ready: it is stored Active (gateway.store.states); the answer is the Pending snapshot the call
        made. Raises ResourceConflictException if the name is taken. `guard` (pure and fast: it runs under the lock,
        like `update`'s `change`) may raise to refuse the creation at the moment it would commit.
        """
        with self._lock:
            if config.name in self._functions:
                raise ResourceConflictException(f"Function already exist: {config.name}")
            if guard is not None:
                guard()
            answer, config = states.created(config), states.settled(config)
            with self._tx() as db:
                db.execute(
                    "INSERT INTO function_versions (name, version, config) VALUES (?, ?, ?)",
                    (config.name, LATEST, config.to_record().decode()),
                )
                db.execute("INSERT OR REPLACE INTO function_meta (name, last_version) VALUES (?, 0)", (config.name,))
            fn = _Function()
            fn.versions[LATEST] = config
            self._functions[config.name] = fn
            bisect.insort(self._names, config.name)
            self.codestore.adopt(config.code_sha256)  # referenced now: its package is kept for as long as it is
            self.on_change(Change(Changed.FUNCTION_CREATED, config.name, LATEST))
            return states.created(self.publish(config.name)) if publish else answer

    def update(
        self,
        name: str,
        change: Callable[[FunctionConfig], FunctionConfig],
        *,
        if_revision: str | None = None,
        publish: bool = False,
    ) -> FunctionConfig:
        """Apply `change` to the current `$LATEST` atomically, with a new RevisionId and LastModified.

        With `publish`, the new `$LATEST` is published in the same atomic step and that version is
        returned (so it holds exactly this change). `change` must be pure and fast (it runs under the
        lock). Stored Successful, answered InProgress (gateway.store.states). Raises ResourceNotFoundException,
        ResourceConflictException while the function is busy, and PreconditionFailedException when `if_revision`
        is not the current revision.
        """
        with self._lock:
            current = self.get(name)
            states.check_changeable(current)
            if if_revision is not None and if_revision != current.revision_id:
                raise PreconditionFailedException(REVISION_MISMATCH)
            new = dataclasses.replace(change(current), revision_id=new_revision_id(), last_modified=now_last_modified())
            if new.name != name or new.version != LATEST:
                raise ValueError("update() changes the $LATEST of the same function only")
            self._write_latest(states.settled(new))
            if new.code_sha256 != current.code_sha256:
                self.codestore.adopt(new.code_sha256)
            new = self.publish(name) if publish else states.updating(new)
        self.on_change(Change(Changed.LATEST_UPDATED, name, LATEST))
        return new

    def update_tags(self, name: str, change: Callable[[dict[str, str]], dict[str, str]]) -> dict[str, str]:
        """Replace the function's tags with `change(current tags)`, atomically; return them.

        Tags are not configuration: the RevisionId stays. `change` may raise to refuse (nothing written).
        """
        with self._lock:
            current = self.get(name)
            tags = change(dict(current.tags))
            if tags != current.tags:
                self._write_latest(dataclasses.replace(current, tags=dict(tags)))
            return tags

    def publish(
        self,
        name: str,
        description: str | None = None,
        code_sha256_b64: str | None = None,
        if_revision: str | None = None,
    ) -> FunctionConfig:
        """PublishVersion: snapshot `$LATEST` as the next version number.

        If nothing changed since the latest published version, that version is returned instead. A
        `code_sha256_b64` that is not `$LATEST`'s is InvalidParameterValueException; a stale `if_revision`
        PreconditionFailedException.
        """
        with self._lock:
            fn = self._function(name)
            latest = fn.versions[LATEST]
            states.check_changeable(latest)
            if if_revision is not None and if_revision != latest.revision_id:
                raise PreconditionFailedException(REVISION_MISMATCH)
            if code_sha256_b64 is not None and code_sha256_b64 != latest.code_sha256_b64:
                raise InvalidParameterValueException(
                    f"CodeSHA256 ({code_sha256_b64}) is different from current CodeSHA256 in $LATEST "
                    f"({latest.code_sha256_b64}). Please try again with the current CodeSHA256."
                )
            newest = max(fn.versions.values(), key=_version_key)
            if newest.version != LATEST and unchanged_since(newest, latest):
                return newest
            number = fn.last_version + 1
            version = dataclasses.replace(
                latest,
                version=str(number),
                revision_id=new_revision_id(),
                last_modified=now_last_modified(),
                description=latest.description if description is None else description,
                tags={},
                published_from_description=latest.description,
            )
            with self._tx() as db:
                db.execute(
                    "INSERT INTO function_versions (name, version, config) VALUES (?, ?, ?)",
                    (name, version.version, version.to_record().decode()),
                )
                db.execute("UPDATE function_meta SET last_version = ? WHERE name = ?", (number, name))
            fn.versions[version.version] = version
            fn.last_version = number
            self.on_change(Change(Changed.VERSION_PUBLISHED, name, version.version))
        return version

    def delete(self, name: str) -> None:
        """Remove a function with all its versions and aliases. Raises ResourceNotFoundException."""
        with self._lock:
            self._function(name)
            with self._tx() as db:
                for table in ("function_versions", "aliases", "function_meta", "provisioned"):
                    db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
            del self._functions[name]
            self._names.pop(bisect.bisect_left(self._names, name))
        self.on_change(Change(Changed.FUNCTION_DELETED, name, None))

    def delete_version(self, name: str, version: str) -> None:
        """Remove one published version. ResourceConflictException while an alias points at it."""
        with self._lock:
            fn = self._function(name)
            if version not in fn.versions:
                return  # deleting a version that does not exist succeeds on Lambda
            users = sorted(a.name for a in fn.aliases.values() if version in a.versions)
            if users:
                raise ResourceConflictException(
                    f"Unable to delete version because the following aliases reference it: [{', '.join(users)}]"
                )
            with self._tx() as db:
                db.execute("DELETE FROM function_versions WHERE name = ? AND version = ?", (name, version))
                db.execute("DELETE FROM provisioned WHERE name = ? AND qualifier = ?", (name, version))
            del fn.versions[version]
            fn.provisioned.pop(version, None)
        self.on_change(Change(Changed.VERSION_DELETED, name, version))

    def create_alias(self, alias: AliasConfig) -> AliasConfig:
        """Add an alias: ResourceConflictException if it exists, ResourceNotFoundException for missing versions."""
        with self._lock:
            if alias.name in self._function(alias.function).aliases:
                raise ResourceConflictException(f"Alias already exists: {alias.arn}")
            return self._put_alias(alias)

    def update_alias(
        self, name: str, alias: str, change: Callable[[AliasConfig], AliasConfig], if_revision: str | None = None
    ) -> AliasConfig:
        """Apply `change` to the current alias atomically, with a new RevisionId; `change` may raise to refuse."""
        with self._lock:
            current = self.get_alias(name, alias)
            if if_revision is not None and if_revision != current.revision_id:
                raise PreconditionFailedException(REVISION_MISMATCH)
            return self._put_alias(dataclasses.replace(change(current), revision_id=new_revision_id()))

    def _put_alias(self, alias: AliasConfig) -> AliasConfig:
        with self._lock:
            fn = self._function(alias.function)
            for version in alias.versions:
                self.get_version(alias.function, version)
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO aliases (name, alias, config) VALUES (?, ?, ?)",
                    (alias.function, alias.name, alias.to_record().decode()),
                )
            fn.aliases[alias.name] = alias
            self.on_change(Change(Changed.ALIAS_PUT, alias.function, alias.name))
        return alias

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias; removing one that does not exist succeeds, as on Lambda."""
        with self._lock:
            fn = self._function(name)
            if alias not in fn.aliases:
                return
            with self._tx() as db:
                db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
                db.execute("DELETE FROM provisioned WHERE name = ? AND qualifier = ?", (name, alias))
            del fn.aliases[alias]
            fn.provisioned.pop(alias, None)
        self.on_change(Change(Changed.ALIAS_DELETED, name, alias))

    # -- concurrency settings (function-level, not configuration: no new RevisionId) ----------------

    def reserved_concurrency(self, name: str) -> int | None:
        """The function's reserved concurrency, None when it has none. Raises ResourceNotFoundException."""
        return self._function(name).reserved

    def all_reserved(self) -> dict[str, int]:
        return {n: fn.reserved for n, fn in list(self._functions.items()) if fn.reserved is not None}

    def set_reserved_concurrency(self, name: str, value: int | None) -> None:
        with self._lock:
            fn = self._function(name)
            with self._tx() as db:
                db.execute("UPDATE function_meta SET reserved = ? WHERE name = ?", (value, name))
            fn.reserved = value

    def provisioned_configs(self, name: str | None = None) -> builtins.list[ProvisionedConfig]:
        """Provisioned concurrency configs of one function (sorted by qualifier), or of all functions."""
        names = [name] if name is not None else list(self._functions)
        out: builtins.list[ProvisionedConfig] = []
        for n in names:
            fn = self._function(n)
            out.extend(fn.provisioned[q] for q in sorted(fn.provisioned))
        return out

    def put_provisioned(self, config: ProvisionedConfig) -> None:
        with self._lock:
            fn = self._function(config.function)
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO provisioned (name, qualifier, config) VALUES (?, ?, ?)",
                    (config.function, config.qualifier, config.to_record().decode()),
                )
            fn.provisioned[config.qualifier] = config
        self.on_change(Change(Changed.PROVISIONED_PUT, config.function, config.qualifier))

    def delete_provisioned(self, name: str, qualifier: str) -> bool:
        """Remove a provisioned concurrency config; False if there was none."""
        with self._lock:
            fn = self._function(name)
            if qualifier not in fn.provisioned:
                return False
            with self._tx() as db:
                db.execute("DELETE FROM provisioned WHERE name = ? AND qualifier = ?", (name, qualifier))
            del fn.provisioned[qualifier]
        self.on_change(Change(Changed.PROVISIONED_DELETED, name, qualifier))
        return True

    def _write_latest(self, config: FunctionConfig) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE function_versions SET config = ? WHERE name = ? AND version = ?",
                (config.to_record().decode(), config.name, LATEST),
            )
        self._functions[config.name].versions[LATEST] = config

    def close(self) -> None:
        self._db.close()
