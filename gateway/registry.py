"""Functions and their configurations, persisted in SQLite, cached in memory.

Every configuration is a row of `function_versions(name, version, config JSON)`; `$LATEST` is the
version `'$LATEST'`, published versions (a later issue) will be further rows of the same table. Writes go
to SQLite first (one transaction, `synchronous=FULL` under WAL), then to the in-memory cache. Reads —
including `resolve()` on the invoke path — only touch the cache.

Concurrency model: methods are synchronous and fast; they are called from the event loop thread. A lock
makes each write (check, persist, publish to the cache) atomic should another thread call in as well.
Listeners run after the write, on the caller's thread.
"""

from __future__ import annotations

import base64
import bisect
import builtins
import dataclasses
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.codestore import CodeStore
from gateway.config import Settings
from gateway.errors import PreconditionFailedException, ResourceConflictException, ResourceNotFoundException

log = logging.getLogger("gateway.registry")

LATEST = "$LATEST"
SCHEMA_VERSION = 1

REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)


def new_revision_id() -> str:
    return str(uuid.uuid4())


def now_last_modified() -> str:
    """The current time as Lambda writes LastModified: `2026-11-23T14:38:00.000+0000`."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """An immutable snapshot of one function version's configuration.

    Every update produces a new object with a new `revision_id`; the pools key environments by
    (name, version, revision_id), so an invocation never runs code or settings older than the
    snapshot it resolved.
    """

    name: str
    arn: str  # unqualified function ARN
    runtime: str
    handler: str
    role: str
    code_sha256: str  # hex digest of the zip
    code_size: int  # bytes of the zip
    code_dir: Path  # extracted, read-only code directory (LAMBDA_TASK_ROOT)
    last_modified: str  # ISO-8601 with +0000, e.g. 2026-11-23T14:38:00.000+0000
    revision_id: str  # uuid4 string, new on every change
    version: str = LATEST
    description: str = ""
    timeout: int = 3  # seconds
    memory_size: int = 128  # MB
    environment: dict[str, str] = field(default_factory=dict)
    ephemeral_storage: int = 512  # MB
    architectures: tuple[str, ...] = ("x86_64",)
    extra: dict[str, Any] = field(default_factory=dict)  # other FunctionConfiguration fields kept verbatim
    tags: dict[str, str] = field(default_factory=dict)  # function-level; not part of FunctionConfiguration

    @property
    def code_sha256_b64(self) -> str:
        """Lambda's CodeSha256: base64 of the raw digest."""
        return base64.b64encode(bytes.fromhex(self.code_sha256)).decode("ascii")

    @property
    def qualified_arn(self) -> str:
        return f"{self.arn}:{self.version}"

    def to_wire(self) -> dict[str, Any]:
        """The FunctionConfiguration JSON object as Lambda returns it.

        `$LATEST` is shown with the unqualified ARN, a published version with its qualified one. As on
        AWS, `Environment` and `Layers` are left out when empty.
        """
        wire: dict[str, Any] = {
            "FunctionName": self.name,
            "FunctionArn": self.arn if self.version == LATEST else self.qualified_arn,
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256_b64,
            "Version": self.version,
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": list(self.architectures),
            "EphemeralStorage": {"Size": self.ephemeral_storage},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.name}"},
        }
        if self.environment:
            wire["Environment"] = {"Variables": dict(self.environment)}
        wire.update(self.extra)
        return wire

    def to_record(self) -> bytes:
        """JSON for the `config` column. `code_dir` is not stored: it follows from the digest."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "code_dir"}
        return orjson.dumps(data)

    @classmethod
    def from_record(cls, raw: str | bytes, code_dir: Path) -> FunctionConfig:
        data = orjson.loads(raw)
        data["architectures"] = tuple(data.get("architectures", ("x86_64",)))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(code_dir=code_dir, **{k: v for k, v in data.items() if k in known})


Listener = Callable[[str], None]


class Registry:
    """Functions by name (and, later, by version), in SQLite with an in-memory cache."""

    def __init__(self, db_path: Path, codestore: CodeStore, settings: Settings) -> None:
        self.settings = settings
        self.codestore = codestore
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        # name -> version -> config; `_names` is kept sorted for paging
        self._functions: dict[str, dict[str, FunctionConfig]] = {}
        self._names: list[str] = []
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if not db_path.exists():
            db_path.touch(mode=0o600)  # it holds environment variables, often secrets
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=2.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        (current,) = self._db.execute("PRAGMA user_version").fetchone()
        if current > SCHEMA_VERSION:
            raise RuntimeError(f"registry schema {current} is newer than this gateway ({SCHEMA_VERSION})")
        if current < 1:
            with self._tx() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS function_versions ("
                    " name TEXT NOT NULL, version TEXT NOT NULL, config TEXT NOT NULL,"
                    " PRIMARY KEY (name, version)) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        for name, version, raw in self._db.execute("SELECT name, version, config FROM function_versions"):
            sha = orjson.loads(raw)["code_sha256"]
            if not self.codestore.ensure_extracted(sha):
                log.warning("code %s of function %s:%s is missing from the code store", sha, name, version)
            cfg = FunctionConfig.from_record(raw, self.codestore.path_for(sha))
            self._functions.setdefault(name, {})[version] = cfg
        self._names = sorted(self._functions)
        log.info("registry loaded %d functions", len(self._names))

    def _tx(self) -> _Transaction:
        self._db.execute("BEGIN IMMEDIATE")
        return _Transaction(self._db)

    # -- reads (cache only) ------------------------------------------------------------------------

    def get(self, name: str) -> FunctionConfig:
        """The `$LATEST` configuration. Raises ResourceNotFoundException."""
        versions = self._functions.get(name)
        if versions is None:
            raise ResourceNotFoundException(f"Function not found: {self.settings.function_arn(name)}")
        return versions[LATEST]

    def resolve(self, name: str, qualifier: str | None) -> FunctionConfig:
        """The configuration a (name, qualifier) designates; no I/O. Raises ResourceNotFoundException."""
        if qualifier is None or qualifier == LATEST:
            return self.get(name)
        cfg = self._functions.get(name, {}).get(qualifier)
        if cfg is None:
            raise ResourceNotFoundException(f"Function not found: {self.settings.function_arn(name, qualifier)}")
        return cfg

    def list(self) -> list[FunctionConfig]:
        """Every function's `$LATEST`, sorted by name."""
        return [self._functions[n][LATEST] for n in self._names]

    def list_page(self, after: str | None, limit: int) -> tuple[builtins.list[FunctionConfig], bool]:
        """Up to `limit` functions whose names sort after `after`; the flag says whether more follow."""
        start = 0 if after is None else bisect.bisect_right(self._names, after)
        names = self._names[start : start + limit]
        return [self._functions[n][LATEST] for n in names], start + limit < len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __len__(self) -> int:
        return len(self._functions)

    # -- writes (SQLite first, then the cache) -----------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(name)` after every successful update or delete of a function."""
        self._listeners.append(callback)

    def create(self, config: FunctionConfig) -> FunctionConfig:
        """Add a new function's `$LATEST`. Raises ResourceConflictException if the name is taken."""
        with self._lock:
            if config.name in self._functions:
                raise ResourceConflictException(f"Function already exist: {config.name}")
            with self._tx() as db:
                db.execute(
                    "INSERT INTO function_versions (name, version, config) VALUES (?, ?, ?)",
                    (config.name, config.version, config.to_record().decode()),
                )
            self._functions[config.name] = {config.version: config}
            bisect.insort(self._names, config.name)
        return config

    def replace(self, name: str, new_config: FunctionConfig, *, if_revision: str | None = None) -> FunctionConfig:
        """Store `new_config` as the function's `$LATEST` as given.

        With `if_revision`, only if the current revision id equals it (PreconditionFailedException).
        Raises ResourceNotFoundException if the function is gone.
        """
        if new_config.name != name or new_config.version != LATEST:
            raise ValueError("replace() changes the $LATEST of the same function only")
        with self._lock:
            current = self.get(name)
            if if_revision is not None and if_revision != current.revision_id:
                raise PreconditionFailedException(REVISION_MISMATCH)
            self._write_latest(new_config)
        self._notify(name)
        return new_config

    def update(
        self,
        name: str,
        change: Callable[[FunctionConfig], FunctionConfig],
        *,
        if_revision: str | None = None,
    ) -> FunctionConfig:
        """Apply `change` to the current `$LATEST` atomically, with a new RevisionId and LastModified.

        `change` must be pure and fast (it runs under the lock). Errors as for `replace`.
        """
        with self._lock:
            current = self.get(name)
            if if_revision is not None and if_revision != current.revision_id:
                raise PreconditionFailedException(REVISION_MISMATCH)
            new = dataclasses.replace(change(current), revision_id=new_revision_id(), last_modified=now_last_modified())
            if new.name != name or new.version != LATEST:
                raise ValueError("update() changes the $LATEST of the same function only")
            self._write_latest(new)
        self._notify(name)
        return new

    def delete(self, name: str) -> None:
        """Remove a function with all its versions. Raises ResourceNotFoundException."""
        with self._lock:
            self.get(name)
            with self._tx() as db:
                db.execute("DELETE FROM function_versions WHERE name = ?", (name,))
            del self._functions[name]
            self._names.pop(bisect.bisect_left(self._names, name))
        self._notify(name)

    def _write_latest(self, config: FunctionConfig) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE function_versions SET config = ? WHERE name = ? AND version = ?",
                (config.to_record().decode(), config.name, LATEST),
            )
        self._functions[config.name][LATEST] = config

    def close(self) -> None:
        self._db.close()

    def _notify(self, name: str) -> None:
        for callback in self._listeners:
            try:
                callback(name)
            except Exception:
                log.exception("registry listener %r failed for %s", callback, name)


class _Transaction:
    """`with` body runs inside BEGIN IMMEDIATE; COMMIT on success, ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()  # e.g. disk full at COMMIT: never leave the connection inside a transaction
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may have rolled back on its own already
            self._db.execute("ROLLBACK")
