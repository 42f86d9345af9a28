"""Code signing configurations (Create/Get/Update/Delete/ListCodeSigningConfigs) and which function uses which
(Put/Get/DeleteFunctionCodeSigningConfig, ListFunctionsByCodeSigningConfig), persisted in SQLite
(`code-signing.sqlite3`), cached in memory.

Two tables: `configs(arn PRIMARY KEY, record JSON)` and `functions(function PRIMARY KEY, arn)`: a function has at most
one configuration; a configuration may serve many functions and cannot be deleted while it does (AWS: "You can delete
the code signing configuration only if no function is using it"). A configuration id is `csc-` and 17 characters of
`[a-z0-9]` (the model's CodeSigningConfigArn pattern) drawn from `secrets`.

Writes go to SQLite first (one transaction), then to the caches; reads only touch the caches. A deleted function
takes its mapping with it: `follow` is connected to `Registry.on_change`, and `retain_existing` drops at start-up what
a crash between the two writes left behind.

Concurrency model: reads run on the event loop, and in worker threads (a deployment's last check, under the
registry's lock): dict lookups and iterations, no I/O. Writes block on SQLite and run in worker threads (the API's
`asyncio.to_thread`, the registry's writer thread for `follow`); a lock makes each atomic, and the check that a
configuration is unused happens under it, so a delete never races a Put into a dangling mapping. The two caches are
copy-on-write (a write builds a new dict and swaps it in), so a reader iterating one never sees it change size.
Records are replaced, never mutated.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.store import sqlite
from gateway.store.records import Change, Changed

log = logging.getLogger("gateway.code_signing")

SCHEMA_VERSION = 1
ID_ALPHABET = string.ascii_lowercase + string.digits
POLICIES = ("Warn", "Enforce")


@dataclass(frozen=True, slots=True)
class CodeSigningConfig:
    """One code signing configuration: which signing profiles it trusts and what an untrusted package gets."""

    csc_id: str  # csc-[a-z0-9]{17}
    arn: str
    description: str
    allowed: tuple[str, ...]  # signing-profile-version ARNs, in the order given
    untrusted_artifact_on_deployment: str  # "Warn" | "Enforce"
    last_modified: str  # as Lambda writes LastModified
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def enforce(self) -> bool:
        return self.untrusted_artifact_on_deployment == "Enforce"

    def rules(self) -> tuple[str, tuple[str, ...], str]:
        """What decides a deployment's fate (not the description, tags or LastModified): equal rules, equal checks."""
        return self.arn, self.allowed, self.untrusted_artifact_on_deployment

    def to_wire(self) -> dict[str, Any]:
        """The CodeSigningConfig structure of botocore's model."""
        return {
            "CodeSigningConfigId": self.csc_id,
            "CodeSigningConfigArn": self.arn,
            "Description": self.description,
            "AllowedPublishers": {"SigningProfileVersionArns": list(self.allowed)},
            "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": self.untrusted_artifact_on_deployment},
            "LastModified": self.last_modified,
        }

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> CodeSigningConfig:
        data: dict[str, Any] = orjson.loads(raw)
        data["allowed"] = tuple(data["allowed"])
        return cls(**data)


def new_id() -> str:
    return "csc-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(17))


class CodeSigningConfigs:
    """Code signing configurations by ARN, and each function's, in SQLite with in-memory caches."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._configs: dict[str, CodeSigningConfig] = {}
        self._functions: dict[str, str] = {}  # function name -> configuration ARN
        self._db = sqlite.connect(db_path)
        self._migrate()
        for (raw,) in self._db.execute("SELECT record FROM configs"):
            config = CodeSigningConfig.from_record(raw)
            self._configs[config.arn] = config
        self._functions = dict(self._db.execute("SELECT function, arn FROM functions").fetchall())

    def _migrate(self) -> None:
        if sqlite.schema_version(self._db, SCHEMA_VERSION, "code signing store") < 1:
            with sqlite.transaction(self._db) as db:
                db.execute("CREATE TABLE IF NOT EXISTS configs (arn TEXT PRIMARY KEY, record TEXT NOT NULL)")
                db.execute("CREATE TABLE IF NOT EXISTS functions (function TEXT PRIMARY KEY, arn TEXT NOT NULL)")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- reads (cache only, event loop) ----------------------------------------------------------------------------

    def get(self, arn: str) -> CodeSigningConfig | None:
        return self._configs.get(arn)

    def all(self) -> list[CodeSigningConfig]:
        """Every configuration, by id (ListCodeSigningConfigs' order and marker)."""
        return sorted(self._configs.values(), key=lambda c: c.csc_id)

    def of_function(self, function: str) -> CodeSigningConfig | None:
        """The configuration `function` uses, None if it has none."""
        arn = self._functions.get(function)
        return None if arn is None else self._configs.get(arn)

    def functions_of(self, arn: str) -> list[str]:
        """The names of the functions using the configuration, sorted (of one snapshot of the mapping)."""
        return sorted(f for f, a in self._functions.items() if a == arn)

    # -- writes (SQLite first, then the caches; worker threads) ----------------------------------------------------

    def create(self, make: Callable[[str], CodeSigningConfig]) -> CodeSigningConfig:
        """A new configuration: `make(csc_id)` with a fresh id never used by a live one. Blocking."""
        with self._lock:
            csc_id = new_id()
            while any(c.csc_id == csc_id for c in self._configs.values()):
                csc_id = new_id()
            config = make(csc_id)
            self._write(config)
        return config

    def update(self, arn: str, change: Callable[[CodeSigningConfig], CodeSigningConfig]) -> CodeSigningConfig | None:
        """Replace the configuration with `change(current)` atomically; None if there is none. Blocking."""
        with self._lock:
            current = self._configs.get(arn)
            if current is None:
                return None
            new = change(current)
            if (new.arn, new.csc_id) != (current.arn, current.csc_id):
                raise ValueError("an update may not change a configuration's id")
            self._write(new)
        return new

    def update_tags(self, arn: str, change: Callable[[dict[str, str]], dict[str, str]]) -> CodeSigningConfig | None:
        """Replace the configuration's tags with `change(current)` atomically (TagResource, UntagResource). Blocking."""
        return self.update(arn, lambda c: dataclasses.replace(c, tags=change(dict(c.tags))))

    def _write(self, config: CodeSigningConfig) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute("INSERT OR REPLACE INTO configs (arn, record) VALUES (?, ?)", (config.arn, config.to_record()))
        self._configs = {**self._configs, config.arn: config}

    def delete(self, arn: str) -> str:
        """Remove the configuration: "deleted", "missing", or "in use" (nothing done: functions use it). Blocking."""
        with self._lock:
            if arn not in self._configs:
                return "missing"
            if arn in self._functions.values():
                return "in use"
            with sqlite.transaction(self._db) as db:
                db.execute("DELETE FROM configs WHERE arn = ?", (arn,))
            self._configs = {a: c for a, c in self._configs.items() if a != arn}
        return "deleted"

    def attach(self, function: str, arn: str) -> bool:
        """`function` uses configuration `arn` from now on; False (nothing done) if it does not exist. Blocking."""
        with self._lock:
            if arn not in self._configs:
                return False
            self._map(function, arn)
        return True

    def attach_new(self, function: str, config: CodeSigningConfig, taken: Callable[[str], bool]) -> str:
        """CreateFunction's mapping, made before the function is: "attached"; or nothing done and "missing" (the
        configuration was deleted), "changed" (its rules are no longer `config`'s, which the package was checked
        against) or "taken" (`function` has a mapping already, or `taken(function)`: the name is in use). Blocking."""
        with self._lock:
            current = self._configs.get(config.arn)
            if current is None:
                return "missing"
            if current.rules() != config.rules():
                return "changed"
            if function in self._functions or taken(function):
                return "taken"
            self._map(function, config.arn)
        return "attached"

    def _map(self, function: str, arn: str) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute("INSERT OR REPLACE INTO functions (function, arn) VALUES (?, ?)", (function, arn))
        self._functions = {**self._functions, function: arn}

    def detach(self, function: str) -> None:
        """`function` uses no configuration (nothing to do if it used none). Blocking."""
        with self._lock:
            if function not in self._functions:
                return
            with sqlite.transaction(self._db) as db:
                db.execute("DELETE FROM functions WHERE function = ?", (function,))
            self._functions = {f: a for f, a in self._functions.items() if f != function}

    # -- following the registry ------------------------------------------------------------------------------------

    def follow(self, change: Change) -> None:
        """`Registry.on_change` observer (on the registry's writer thread): a deleted function's mapping goes."""
        if change.what is Changed.FUNCTION_DELETED:
            self.detach(change.function)

    def retain_existing(self, exists: Callable[[str], bool]) -> int:
        """At start-up: drop the mappings of functions that no longer exist (a crash between the registry's delete
        and `follow`); how many went. Blocking."""
        gone = [f for f in list(self._functions) if not exists(f)]
        for function in gone:
            self.detach(function)
        return len(gone)

    def close(self) -> None:
        self._db.close()
