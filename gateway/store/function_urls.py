"""Function URL configs (Create/Get/Update/Delete/ListFunctionUrlConfigs): one per function's `$LATEST` or alias,
persisted in SQLite (`function-urls.sqlite3`), cached in memory and found by their URL id on the hot path.

One table, `function_urls(url_id PRIMARY KEY, function, qualifier, record JSON)` with (function, qualifier) unique:
Lambda allows one URL per unqualified function and one per alias (never a version). A URL id is 32 characters of
`[a-z0-9]` drawn from `secrets` (165 bits): the first label of `<url-id>.lambda-url.<region>.<domain>`, guessable by
nobody, never handed to another function (a collision with a live id is drawn again; with 165 bits a retired one
coming back is not a practical concern).

Writes go to SQLite first (one transaction), then to the caches; reads only touch the caches. A deleted function or
alias takes its URL with it: `follow` is connected to `Registry.on_change`, and `retain_existing` drops at start-up
what a crash between the two writes left behind.

Concurrency model: `by_id`, `get` and `configs` run on the event loop thread (`by_id` once per URL request: one dict
lookup, no I/O, never raises). Writes (`create`, `update`, `delete`, `forget`) block on SQLite and run in worker
threads (the API's `asyncio.to_thread`, the registry's writer thread for `follow`); a lock makes each one atomic.
Cache entries are replaced, never mutated, so a reader sees a URL before or after a write, never half of one.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.settings import Settings
from gateway.store import sqlite
from gateway.store.event_configs import designates, qualifier_order
from gateway.store.records import Change, Changed
from gateway.store.registry import Registry

log = logging.getLogger("gateway.function_urls")

SCHEMA_VERSION = 1
URL_ID_LENGTH = 32
URL_ID_ALPHABET = string.ascii_lowercase + string.digits
AUTH_TYPES = ("NONE", "AWS_IAM")
INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")

_EMPTY: Mapping[str, FunctionUrl] = {}


@dataclass(frozen=True, slots=True)
class FunctionUrl:
    """One function URL: who it invokes and how it is called."""

    url_id: str  # 32 characters [a-z0-9], random (secrets), unique, never reused for another function
    function: str  # function name
    qualifier: str  # "$LATEST" (the unqualified function) or an alias name (AWS allows no version number)
    auth_type: str  # "NONE" | "AWS_IAM"
    invoke_mode: str  # "BUFFERED" | "RESPONSE_STREAM"
    #: the API's Cors object as given (AllowCredentials, AllowHeaders, AllowMethods, AllowOrigins, ExposeHeaders,
    #: MaxAge), None when not set
    cors: Mapping[str, Any] | None
    created: float  # epoch seconds
    modified: float

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, raw: str | bytes) -> FunctionUrl:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)


def new_url_id() -> str:
    """A fresh URL id: 32 characters of [a-z0-9] from the system's CSPRNG."""
    return "".join(secrets.choice(URL_ID_ALPHABET) for _ in range(URL_ID_LENGTH))


def is_url_id(text: str) -> bool:
    """Whether `text` has the form of a URL id (32 of [a-z0-9]); no lookup."""
    return len(text) == URL_ID_LENGTH and text.isascii() and text.isalnum() and text.islower()


class FunctionUrls:
    """Function URL configs by (function, qualifier) and by URL id, in SQLite with in-memory caches."""

    def __init__(self, db_path: Path, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        #: url id -> URL: the hot path's one lookup
        self._by_id: dict[str, FunctionUrl] = {}
        #: function -> qualifier -> URL; a function's inner dict is replaced on every write, never mutated
        self._functions: dict[str, Mapping[str, FunctionUrl]] = {}
        self._db = sqlite.connect(db_path)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        if sqlite.schema_version(self._db, SCHEMA_VERSION, "function URL store") < 1:
            with sqlite.transaction(self._db) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS function_urls ("
                    " url_id TEXT PRIMARY KEY, function TEXT NOT NULL, qualifier TEXT NOT NULL, record TEXT NOT NULL,"
                    " UNIQUE (function, qualifier))"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _load(self) -> None:
        loaded: dict[str, dict[str, FunctionUrl]] = {}
        for (raw,) in self._db.execute("SELECT record FROM function_urls"):
            url = FunctionUrl.from_record(raw)
            loaded.setdefault(url.function, {})[url.qualifier] = url
            self._by_id[url.url_id] = url
        self._functions = dict(loaded)
        if loaded:
            log.info("loaded the function URLs of %d functions", len(loaded))

    # -- reads (cache only, event loop) ----------------------------------------------------------------

    def by_id(self, url_id: str) -> FunctionUrl | None:
        """The URL whose id this is, None if there is none. O(1), no I/O, never raises: the hot path."""
        return self._by_id.get(url_id)

    def get(self, function: str, qualifier: str) -> FunctionUrl | None:
        """The URL of (function, qualifier), None if it has none."""
        return self._functions.get(function, _EMPTY).get(qualifier)

    def configs(self, function: str) -> list[FunctionUrl]:
        """The function's URLs: `$LATEST` first, then aliases by name."""
        found = self._functions.get(function, _EMPTY)
        return [found[q] for q in sorted(found, key=qualifier_order)]

    def all(self) -> list[FunctionUrl]:
        """Every URL, by function then qualifier (the start-up log lists them)."""
        return [url for function in sorted(self._functions) for url in self.configs(function)]

    # -- writes (SQLite first, then the caches; worker threads) ---------------------------------------------

    def create(
        self, function: str, qualifier: str, auth_type: str, invoke_mode: str, cors: Mapping[str, Any] | None,
        now: float,
    ) -> tuple[FunctionUrl, bool]:  # fmt: skip
        """A new URL for (function, qualifier) with a fresh id: (it, True); (the existing one, False) when the
        function or alias has one already, as Lambda allows only one. Blocking."""
        with self._lock:
            existing = self.get(function, qualifier)
            if existing is not None:
                return existing, False
            url_id = new_url_id()
            while url_id in self._by_id:  # 165 bits: never in practice, but an id is never shared
                url_id = new_url_id()
            url = FunctionUrl(url_id, function, qualifier, auth_type, invoke_mode, cors, now, now)
            self._write(url)
        return url, True

    def update(self, function: str, qualifier: str, change: Callable[[FunctionUrl], FunctionUrl]) -> FunctionUrl | None:
        """Replace the URL with `change(current)` atomically; None (nothing written) if there is none. Blocking."""
        with self._lock:
            current = self.get(function, qualifier)
            if current is None:
                return None
            new = change(current)
            if (new.url_id, new.function, new.qualifier) != (current.url_id, function, qualifier):
                raise ValueError("an update may not change a URL's id, function or qualifier")
            self._write(new)
        return new

    def _write(self, url: FunctionUrl) -> None:
        with sqlite.transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO function_urls (url_id, function, qualifier, record) VALUES (?, ?, ?, ?)",
                (url.url_id, url.function, url.qualifier, url.to_record().decode()),
            )
        current = self._functions.get(url.function, _EMPTY)
        self._functions[url.function] = {**current, url.qualifier: url}
        self._by_id[url.url_id] = url

    def delete(self, function: str, qualifier: str) -> bool:
        """Remove the URL of (function, qualifier); False (nothing done) if there was none. Blocking."""
        with self._lock:
            return self._remove(function, qualifier)

    def forget(self, function: str, qualifier: str | None = None) -> None:
        """A function (qualifier None) or alias was deleted: its URLs go too. Blocking."""
        with self._lock:
            if self._remove(function, qualifier):
                log.info("forgot the function URLs of %s%s", function, f":{qualifier}" if qualifier else "")

    def _remove(self, function: str, qualifier: str | None) -> bool:
        current = self._functions.get(function)
        if current is None or (qualifier is not None and qualifier not in current):
            return False
        gone = list(current.values()) if qualifier is None else [current[qualifier]]
        with sqlite.transaction(self._db) as db:
            db.executemany("DELETE FROM function_urls WHERE url_id = ?", [(url.url_id,) for url in gone])
        for url in gone:  # the hot path stops finding it first
            self._by_id.pop(url.url_id, None)
        rest = {q: u for q, u in current.items() if qualifier is not None and q != qualifier}
        if rest:
            self._functions[function] = rest
        else:
            del self._functions[function]
        return True

    # -- following the registry ------------------------------------------------------------------------------

    def follow(self, change: Change) -> None:
        """`Registry.on_change` observer (on the registry's writer thread): a deleted function or alias takes its
        URL with it, as on Lambda (its id is never served again)."""
        if change.what is Changed.FUNCTION_DELETED:
            self.forget(change.function)
        elif change.what is Changed.ALIAS_DELETED and change.qualifier is not None:
            self.forget(change.function, change.qualifier)

    def retain_existing(self, registry: Registry) -> int:
        """At start-up: drop the URLs of functions and aliases the registry no longer has (a crash between the
        registry's delete and `follow`); how many went. Blocking."""
        gone = [
            (function, qualifier)
            for function, urls in list(self._functions.items())
            for qualifier in urls
            if not designates(registry, function, qualifier)
        ]
        for function, qualifier in gone:
            self.forget(function, qualifier)
        return len(gone)

    def close(self) -> None:
        self._db.close()
