"""Resource-based policies of functions and layer versions (AddPermission, RemovePermission, GetPolicy and the
layer equivalents), persisted in SQLite (`policies.sqlite3`), cached in memory, evaluated on the event loop.

A function has one document per qualifier, as on Lambda: `$LATEST` (the unqualified function), each version and
each alias, independent of each other (a grant on the function does not reach `f:live`). A layer version has one
document of its own. Each document carries its statements in the order they were added (each a JSON object as
Lambda renders it: gateway.store.statements) and a RevisionId, a new uuid4 on every change.

Tables: `function_policies(function, qualifier, revision_id, statements JSON)` and
`layer_policies(layer, version, revision_id, statements JSON)`. A document whose last statement goes is deleted
(GetPolicy then answers ResourceNotFoundException, as on Lambda). A deleted function, version or alias takes its
documents with it (`follow`, connected to `Registry.on_change`); a deleted layer version its document
(`forget_layer`, called by DeleteLayerVersion); `retain_existing` drops at start-up what a crash between the two
writes left behind.

Concurrency model: `allows`, `allows_url`, `allows_layer`, `function_policy` and `layer_policy` run on the event
loop thread: a dict lookup and a scan of the document's few statements, no I/O, never raise. Writes block on SQLite
and run in worker threads (the API's `asyncio.to_thread`, the registry's writer thread for `follow`); a lock makes
each one atomic (check the RevisionId, the statement id, the size, then write). Documents are immutable and
replaced in the cache, never mutated, so a reader sees a document before or after a write, never half of one.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import PolicyLengthExceededException, PreconditionFailedException, ResourceConflictException
from gateway.settings import Settings
from gateway.store import sqlite
from gateway.store.function_urls import FunctionUrl
from gateway.store.records import LATEST, Change, Changed
from gateway.store.statements import ANONYMOUS, FUNCTION_URL_AUTH_TYPE, INVOKED_VIA_FUNCTION_URL, allowed

__all__ = ["ANONYMOUS", "Policies", "PolicyDocument"]

log = logging.getLogger("gateway.policies")

SCHEMA_VERSION = 1
#: Lambda's limit on a function's (and a layer version's) resource policy, bytes of its JSON
MAX_POLICY_BYTES = 20 * 1024
INVOKE = "lambda:InvokeFunction"
INVOKE_URL = "lambda:InvokeFunctionUrl"
GET_LAYER_VERSION = "lambda:GetLayerVersion"
#: `allows_url` decisions kept before the cache starts over (principals are few: anonymous, roles)
MAX_URL_DECISIONS = 4096
_NO_CONTEXT: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One resource's policy: its statements (Lambda's JSON objects, in order) and its RevisionId."""

    statements: tuple[Mapping[str, Any], ...]
    revision_id: str

    def to_json(self) -> str:
        """The `Policy` string GetPolicy / GetLayerVersionPolicy answer."""
        return orjson.dumps({"Version": "2012-10-17", "Id": "default", "Statement": list(self.statements)}).decode()

    def sids(self) -> set[str]:
        return {str(s.get("Sid")) for s in self.statements}


def statement_json(statement: Mapping[str, Any]) -> str:
    """The `Statement` string AddPermission / AddLayerVersionPermission answer."""
    return orjson.dumps(statement).decode()


def _new_revision() -> str:
    return str(uuid.uuid4())


def _conflict(sid: str) -> ResourceConflictException:
    return ResourceConflictException(
        f"The statement id ({sid}) provided already exists. Please provide a new statement id, or remove the "
        "existing statement."
    )


_FunctionKey = tuple[str, str]  # (function, qualifier)
_LayerKey = tuple[str, int]  # (layer name, version)


class Policies:
    """Resource policies of functions (by function and qualifier) and layer versions, in SQLite with a cache."""

    def __init__(self, db_path: Path, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._functions: dict[_FunctionKey, PolicyDocument] = {}
        self._layers: dict[_LayerKey, PolicyDocument] = {}
        #: `allows_url`'s decisions by (function, qualifier, the document's RevisionId, auth type, principal): a
        #: document is replaced, never changed, with a new RevisionId, so a decision never outlives its document.
        #: Read and written on the loop only; emptied when it reaches MAX_URL_DECISIONS.
        self._url_decisions: dict[tuple[str, str, str, str, str | None], bool] = {}
        self._db = sqlite.connect(db_path)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        if sqlite.schema_version(self._db, SCHEMA_VERSION, "policy store") < 1:
            with sqlite.transaction(self._db) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS function_policies (function TEXT NOT NULL, qualifier TEXT NOT NULL,"
                    " revision_id TEXT NOT NULL, statements TEXT NOT NULL, PRIMARY KEY (function, qualifier))"
                    " WITHOUT ROWID"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS layer_policies (layer TEXT NOT NULL, version INTEGER NOT NULL,"
                    " revision_id TEXT NOT NULL, statements TEXT NOT NULL, PRIMARY KEY (layer, version))"
                    " WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        for function, qualifier, revision, raw in self._db.execute(
            "SELECT function, qualifier, revision_id, statements FROM function_policies"
        ):
            self._functions[(function, qualifier)] = PolicyDocument(tuple(orjson.loads(raw)), revision)
        for layer, version, revision, raw in self._db.execute(
            "SELECT layer, version, revision_id, statements FROM layer_policies"
        ):
            self._layers[(layer, int(version))] = PolicyDocument(tuple(orjson.loads(raw)), revision)
        if self._functions or self._layers:
            log.info("loaded %d function and %d layer policies", len(self._functions), len(self._layers))

    # -- reads and evaluation (cache only, event loop) -----------------------------------------------------

    def function_policy(self, function: str, qualifier: str) -> PolicyDocument | None:
        return self._functions.get((function, qualifier))

    def layer_policy(self, layer: str, version: int) -> PolicyDocument | None:
        return self._layers.get((layer, version))

    def allows(
        self,
        function: str,
        qualifier: str,
        principal: str | None,
        action: str,
        context: Mapping[str, str] = _NO_CONTEXT,
    ) -> bool:
        """Whether the document of (function, qualifier) allows `principal` (a role ARN, an account id, or
        ANONYMOUS) `action` on the function's ARN (qualified unless `$LATEST`), given the condition keys in
        `context`. No document: False. On the loop, no I/O."""
        document = self._functions.get((function, qualifier))
        if document is None:
            return False
        resource = self.settings.function_arn(function, None if qualifier == LATEST else qualifier)
        return allowed(document.statements, principal, action, resource, context)

    def allows_url(self, url: FunctionUrl, principal: str | None) -> bool:
        """Whether a request through the function URL `url` by `principal` is allowed (AWS's rule since October
        2025): the policy of the URL's (function, qualifier) allows `lambda:InvokeFunctionUrl` with
        `lambda:FunctionUrlAuthType` = the URL's auth type, AND `lambda:InvokeFunction` with
        `lambda:InvokedViaFunctionUrl` = "true" (a grant of InvokeFunction without that condition also does)."""
        document = self._functions.get((url.function, url.qualifier))
        if document is None:
            return False
        key = (url.function, url.qualifier, document.revision_id, url.auth_type, principal)
        decision = self._url_decisions.get(key)
        if decision is None:  # evaluated once per document and caller: a URL's hot path is one dict lookup
            context = {FUNCTION_URL_AUTH_TYPE: url.auth_type, INVOKED_VIA_FUNCTION_URL: "true"}
            decision = self.allows(url.function, url.qualifier, principal, INVOKE_URL, context) and self.allows(
                url.function, url.qualifier, principal, INVOKE, context
            )
            if len(self._url_decisions) >= MAX_URL_DECISIONS:
                self._url_decisions.clear()
            self._url_decisions[key] = decision
        return decision

    def allows_layer(self, layer: str, version: int, principal: str | None) -> bool:
        """Whether the layer version's policy lets `principal` (an account id or an IAM ARN) GetLayerVersion."""
        document = self._layers.get((layer, version))
        if document is None:
            return False
        settings = self.settings
        resource = f"arn:{settings.partition}:lambda:{settings.region}:{settings.account_id}:layer:{layer}:{version}"
        return allowed(document.statements, principal, GET_LAYER_VERSION, resource, _NO_CONTEXT)

    # -- writes (SQLite first, then the cache; worker threads) -----------------------------------------------

    def add_function_statement(
        self, function: str, qualifier: str, statement: Mapping[str, Any], revision_id: str | None = None,
        current_revision: Callable[[], str] | None = None,
    ) -> PolicyDocument:  # fmt: skip
        """Add `statement` to the document of (function, qualifier), creating it. Blocking.

        `revision_id`, when given, must be the document's RevisionId (or, with no document yet,
        `current_revision()`: the function version's or alias's, which Lambda's policies share): else
        PreconditionFailedException. A Sid already there: ResourceConflictException; a document over 20 KB:
        PolicyLengthExceededException."""
        with self._lock:
            key = (function, qualifier)
            current = self._functions.get(key)
            new = self._added(current, statement, revision_id, current_revision, "GetFunction/GetAlias")
            self._write("function_policies", ("function", "qualifier"), key, new)
            self._functions[key] = new
        return new

    def add_layer_statement(
        self, layer: str, version: int, statement: Mapping[str, Any], revision_id: str | None = None
    ) -> PolicyDocument:
        """As `add_function_statement`, for a layer version. Blocking."""
        with self._lock:
            key = (layer, version)
            new = self._added(self._layers.get(key), statement, revision_id, None, "GetLayerPolicy")
            self._write("layer_policies", ("layer", "version"), key, new)
            self._layers[key] = new
        return new

    @staticmethod
    def _added(
        current: PolicyDocument | None,
        statement: Mapping[str, Any],
        revision_id: str | None,
        current_revision: Callable[[], str] | None,
        read_with: str,
    ) -> PolicyDocument:
        _check_revision(current, revision_id, current_revision, read_with)
        sid = str(statement["Sid"])
        if current is not None and sid in current.sids():
            raise _conflict(sid)
        new = PolicyDocument((*(current.statements if current else ()), statement), _new_revision())
        size = len(new.to_json().encode())
        if size > MAX_POLICY_BYTES:
            raise PolicyLengthExceededException(
                f"The final policy size ({size}) is bigger than the limit ({MAX_POLICY_BYTES})."
            )
        return new

    def remove_function_statement(
        self, function: str, qualifier: str, sid: str, revision_id: str | None = None
    ) -> PolicyDocument | None:
        """Remove the statement `sid`; the document left (None: it went with its last statement). Blocking.

        Raises KeyError (no document) or LookupError subclass IndexError (no such statement) for the API to word,
        PreconditionFailedException for a RevisionId that is not the document's."""
        with self._lock:
            key = (function, qualifier)
            new = self._removed(self._functions.get(key), sid, revision_id, "GetFunction/GetAlias")
            self._store(self._functions, "function_policies", ("function", "qualifier"), key, new)
        return new

    def remove_layer_statement(
        self, layer: str, version: int, sid: str, revision_id: str | None = None
    ) -> PolicyDocument | None:
        """As `remove_function_statement`, for a layer version. Blocking."""
        with self._lock:
            key = (layer, version)
            new = self._removed(self._layers.get(key), sid, revision_id, "GetLayerPolicy")
            self._store(self._layers, "layer_policies", ("layer", "version"), key, new)
        return new

    @staticmethod
    def _removed(
        current: PolicyDocument | None, sid: str, revision_id: str | None, read_with: str
    ) -> PolicyDocument | None:
        if current is None:
            raise KeyError(sid)
        if sid not in current.sids():
            raise IndexError(sid)
        _check_revision(current, revision_id, None, read_with)
        rest = tuple(s for s in current.statements if s.get("Sid") != sid)
        return PolicyDocument(rest, _new_revision()) if rest else None

    def _store(
        self,
        cache: dict[Any, PolicyDocument],
        table: str,
        columns: tuple[str, str],
        key: tuple[Any, Any],
        document: PolicyDocument | None,
    ) -> None:
        if document is None:
            with sqlite.transaction(self._db) as db:
                db.execute(f"DELETE FROM {table} WHERE {columns[0]} = ? AND {columns[1]} = ?", key)
            cache.pop(key, None)
        else:
            self._write(table, columns, key, document)
            cache[key] = document

    def _write(self, table: str, columns: tuple[str, str], key: tuple[Any, Any], document: PolicyDocument) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute(
                f"INSERT OR REPLACE INTO {table} ({columns[0]}, {columns[1]}, revision_id, statements)"
                " VALUES (?, ?, ?, ?)",
                (*key, document.revision_id, orjson.dumps(list(document.statements)).decode()),
            )

    # -- cascades ---------------------------------------------------------------------------------------------

    def forget(self, function: str, qualifier: str | None = None) -> None:
        """A function (qualifier None), version or alias was deleted: its documents go too. Blocking."""
        with self._lock:
            gone = [k for k in self._functions if k[0] == function and (qualifier is None or k[1] == qualifier)]
            if not gone:
                return
            with sqlite.transaction(self._db) as db:
                db.executemany("DELETE FROM function_policies WHERE function = ? AND qualifier = ?", gone)
            for key in gone:
                del self._functions[key]
        log.info("forgot the policies of %s%s", function, f":{qualifier}" if qualifier else "")

    def forget_layer(self, layer: str, version: int) -> None:
        """A layer version was deleted: its document goes too. Blocking."""
        with self._lock:
            if (layer, version) not in self._layers:
                return
            with sqlite.transaction(self._db) as db:
                db.execute("DELETE FROM layer_policies WHERE layer = ? AND version = ?", (layer, version))
            del self._layers[(layer, version)]

    def follow(self, change: Change) -> None:
        """`Registry.on_change` observer (the registry's writer thread): a deleted function, version or alias
        takes its policies with it, as on Lambda."""
        if change.what is Changed.FUNCTION_DELETED:
            self.forget(change.function)
        elif change.what in (Changed.VERSION_DELETED, Changed.ALIAS_DELETED) and change.qualifier is not None:
            self.forget(change.function, change.qualifier)

    def retain_existing(
        self, function_exists: Callable[[str, str], bool], layer_exists: Callable[[str, int], bool]
    ) -> int:
        """At start-up: drop the documents of functions, versions, aliases and layer versions that are gone (a
        crash between a delete and its cascade); how many went. Blocking."""
        functions = [k for k in list(self._functions) if not function_exists(*k)]
        layers = [k for k in list(self._layers) if not layer_exists(*k)]
        for function, qualifier in functions:
            self.forget(function, qualifier)
        for layer, version in layers:
            self.forget_layer(layer, version)
        return len(functions) + len(layers)

    def close(self) -> None:
        self._db.close()


def _check_revision(
    current: PolicyDocument | None,
    revision_id: str | None,
    current_revision: Callable[[], str] | None,
    read_with: str,
) -> None:
    if revision_id is None:
        return
    if current is not None:
        expected: str | None = current.revision_id
    else:
        expected = current_revision() if current_revision is not None else None
    if revision_id != expected:
        raise PreconditionFailedException(
            "The Revision Id provided does not match the latest Revision Id. "
            f"Call the {read_with} API to retrieve the latest Revision Id"
        )
