"""The event queue on one node (the default): a SQLite file in the data directory, `events.sqlite3`.

Durability: WAL with `synchronous=FULL`, every write through one writer thread that commits whatever has accumulated
in one transaction (a group commit: under load one fsync serves many 202s). `put` returns once its commit is done;
`finish`, `reschedule` and `drop` queue their writes and return (see gateway.events.queue for why that is safe).

Memory: an index of every event on file (a heap per function by due time, then arrival) and the payloads of waiting
events up to `memory_budget` bytes; beyond it payloads stay on disk and `take` reads them back. The data directory is
held by one gateway (its lock), so what is in flight needs no lease on disk: after a restart everything on file is
waiting again, due at once if its time has passed.

Concurrency: the public methods run on the event loop; the writer thread owns its own connection and settles the
futures of `put` on the loop. The loop reads payloads through a second connection (WAL lets it read while the writer
writes).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.events.queue import QueuedEvent
from gateway.store import sqlite

log = logging.getLogger("gateway.events")

SCHEMA = 1
#: payload bytes of waiting events held in memory; the rest are read from the file when taken
MEMORY_BUDGET = 64 * 1024 * 1024
_INSERT = (
    "INSERT INTO events (id, request_id, function, qualifier, payload, received, due, attempts, backoff)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = "id, request_id, function, qualifier, received, due, attempts, backoff, length(payload)"

#: one write: SQL, its parameters, and what to call on the loop with its transaction's error (None: committed)
_Write = tuple[str, tuple[Any, ...], Callable[[BaseException | None], None] | None]


class _Writer:
    """The writer thread: runs writes in order, as many as are waiting in one transaction."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._path = path
        self._loop = loop
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        #: set when the thread could not go on: writes fail at once with it
        self.failed: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="event-queue-writer", daemon=True)
        self._thread.start()

    def submit(self, sql: str, params: tuple[Any, ...], done: Callable[[BaseException | None], None] | None) -> None:
        if self.failed is not None:
            if done is not None:
                self._loop.call_soon(done, self.failed)
            return
        self._writes.put((sql, params, done))

    async def close(self) -> None:
        """Write what is queued, then end the thread."""
        self._writes.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        try:
            db = sqlite.connect(self._path)
        except BaseException as exc:  # whatever it is, every write must hear of it
            self._fail(exc)
            return
        try:
            stop = False
            while not stop:
                batch: list[_Write] = []
                item = self._writes.get()
                while True:
                    if item is None:
                        stop = True
                    else:
                        batch.append(item)
                    try:
                        item = self._writes.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._commit(db, batch)
        except BaseException as exc:  # the thread ends: fail what waits and what comes
            self._fail(exc)
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[_Write]) -> None:
        error: BaseException | None = None
        try:
            with sqlite.transaction(db):
                for sql, params, _ in batch:
                    db.execute(sql, params)
        except (sqlite3.Error, OSError) as exc:
            log.error("the event queue could not write %d changes: %s", len(batch), exc)
            error = exc
        self._settle(batch, error)

    def _settle(self, batch: list[_Write], error: BaseException | None) -> None:
        for _, _, done in batch:
            if done is not None:
                try:
                    self._loop.call_soon_threadsafe(done, error)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _fail(self, exc: BaseException) -> None:
        """The writer cannot go on: every write queued or submitted from now on fails with `exc`."""
        log.critical("the event queue's writer stopped: %r; asynchronous invocations are refused", exc)
        self.failed = exc if isinstance(exc, Exception) else RuntimeError(f"the event queue's writer stopped: {exc!r}")
        pending: list[_Write] = []
        while True:
            try:
                item = self._writes.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item)
        self._settle(pending, self.failed)


def _migrate(db: sqlite3.Connection) -> None:
    if sqlite.schema_version(db, SCHEMA, "event queue") < 1:
        with sqlite.transaction(db):
            db.execute(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL,"
                " function TEXT NOT NULL, qualifier TEXT, payload BLOB NOT NULL, received REAL NOT NULL,"
                " due REAL NOT NULL, attempts INTEGER NOT NULL, backoff REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS events_function ON events (function)")
            db.execute(f"PRAGMA user_version = {SCHEMA}")


class SqliteQueue:
    """`gateway.events.queue.EventQueue` on a SQLite file (see the module docstring). Create it on the event loop."""

    def __init__(self, path: Path, memory_budget: int = MEMORY_BUDGET) -> None:
        self.on_ready: Callable[[str], None] = lambda function: None
        self._budget = memory_budget
        self._read = sqlite.connect(path)
        _migrate(self._read)
        self._events: dict[int, QueuedEvent] = {}  # every event on file, waiting or in flight
        self._waiting: dict[str, list[tuple[float, int]]] = {}  # function -> heap of (due, id)
        self._inflight: set[int] = set()
        self._counts: dict[str, int] = {}  # function -> events on file (indexed), for `depth`
        self._bytes = 0  # payload bytes on file (indexed)
        self._held = 0  # payload bytes held in memory
        self._next_id = 1
        self._load()
        self._writer = _Writer(path, asyncio.get_running_loop())

    def _load(self) -> None:
        for row in self._read.execute(f"SELECT {_COLUMNS} FROM events ORDER BY id"):
            ident, request_id, function, qualifier, received, due, attempts, backoff, size = row
            event = QueuedEvent(request_id, function, qualifier, None, received, due, attempts, backoff, ident, size)
            self._events[ident] = event
            self._counts[function] = self._counts.get(function, 0) + 1
            self._bytes += size
            self._waiting.setdefault(function, []).append((due, ident))
            self._next_id = ident + 1
        for heap in self._waiting.values():
            heapq.heapify(heap)
        if self._events:
            log.info("the event queue holds %d events from before the restart", len(self._events))

    async def put(self, event: QueuedEvent) -> None:
        event.id, self._next_id = self._next_id, self._next_id + 1
        payload = event.payload or b"{}"
        event.size = len(payload)
        future = asyncio.get_running_loop().create_future()

        def committed(error: BaseException | None) -> None:
            if error is None:  # indexed even if the caller stopped waiting: the event is accepted all the same
                self._index(event)
                self.on_ready(event.function)
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

        params = (event.id, event.request_id, event.function, event.qualifier, payload, event.received, event.due)
        self._writer.submit(_INSERT, (*params, event.attempts, event.backoff), committed)
        await future

    def _index(self, event: QueuedEvent) -> None:
        if event.payload is not None:
            if self._held + event.size > self._budget:
                event.payload = None
            else:
                self._held += event.size
        self._events[event.id] = event
        self._counts[event.function] = self._counts.get(event.function, 0) + 1
        self._bytes += event.size
        heapq.heappush(self._waiting.setdefault(event.function, []), (event.due, event.id))

    def take(self, function: str, limit: int, now: float) -> list[QueuedEvent]:
        heap = self._waiting.get(function)
        taken: list[QueuedEvent] = []
        while heap and len(taken) < limit and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            event = self._events.get(entry[1])
            if event is None or event.id in self._inflight:
                continue
            try:
                loaded = self._loaded(event)
            except BaseException:  # an unreadable file: it stays waiting, and what was taken goes ahead
                heapq.heappush(heap, entry)
                if taken:
                    break
                raise
            if loaded:
                self._inflight.add(event.id)
                taken.append(event)
        if not heap:
            self._waiting.pop(function, None)
        return taken

    def oldest(self, function: str, limit: int) -> list[QueuedEvent]:
        """Up to `limit` of `function`'s waiting events, oldest first, without payloads."""
        ids = heapq.nsmallest(limit, (ident for _, ident in self._waiting.get(function, [])))
        return [self._events[i] for i in ids if i in self._events and i not in self._inflight]

    def claim(self, events: list[QueuedEvent]) -> list[QueuedEvent]:
        """Take these waiting events out of turn (aged out while their function was paused), payloads loaded; those
        not waiting any more are left out."""
        if not events:
            return []
        function = events[0].function
        heap = self._waiting.get(function, [])
        wanted = {e.id for e in events if e.function == function and e.id in self._events}
        wanted -= self._inflight
        heap[:] = [entry for entry in heap if entry[1] not in wanted]
        heapq.heapify(heap)
        if not heap:
            self._waiting.pop(function, None)
        claimed = []
        for event in events:
            if event.id in wanted and self._loaded(event):
                self._inflight.add(event.id)
                claimed.append(event)
        return claimed

    def _loaded(self, event: QueuedEvent) -> bool:
        """Make sure the payload is in memory (read it from the file if not); False if the row is gone."""
        if event.payload is not None:
            return True
        row = self._read.execute("SELECT payload FROM events WHERE id = ?", (event.id,)).fetchone()
        if row is None:
            if self._events.pop(event.id, None) is not None:
                self._count_down(event)
            return False
        event.payload = row[0] if isinstance(row[0], bytes) else str(row[0]).encode()
        self._held += event.size
        return True

    def next_due(self, function: str) -> float | None:
        heap = self._waiting.get(function)
        return heap[0][0] if heap else None

    def functions(self) -> list[str]:
        return list(self._waiting)

    def finish(self, event: QueuedEvent) -> None:
        self._inflight.discard(event.id)
        if self._events.pop(event.id, None) is not None:
            self._count_down(event)
            if event.payload is not None:
                self._held -= event.size
        self._writer.submit("DELETE FROM events WHERE id = ?", (event.id,), None)

    def _count_down(self, event: QueuedEvent) -> None:
        self._bytes -= event.size
        function = event.function
        left = self._counts.get(function, 1) - 1
        if left > 0:
            self._counts[function] = left
        else:
            self._counts.pop(function, None)

    def reschedule(self, event: QueuedEvent) -> None:
        self._inflight.discard(event.id)
        if event.id not in self._events:  # its function was deleted while it ran
            self._writer.submit("DELETE FROM events WHERE id = ?", (event.id,), None)
            return
        if event.payload is not None and self._held > self._budget:
            event.payload = None
            self._held -= event.size
        update = "UPDATE events SET due = ?, attempts = ?, backoff = ? WHERE id = ?"
        self._writer.submit(update, (event.due, event.attempts, event.backoff, event.id), None)
        heapq.heappush(self._waiting.setdefault(event.function, []), (event.due, event.id))

    def drop(self, function: str) -> int:
        self._waiting.pop(function, None)
        self._counts.pop(function, None)
        dropped = 0
        for ident, event in list(self._events.items()):
            if event.function == function:
                del self._events[ident]  # in flight too: it will not be put back
                self._bytes -= event.size
                dropped += ident not in self._inflight
                if event.payload is not None:
                    self._held -= event.size
        self._writer.submit("DELETE FROM events WHERE function = ?", (function,), None)
        return dropped

    def depths(self) -> dict[str, int]:
        return {function: len(heap) for function, heap in self._waiting.items()}

    def depth(self, function: str) -> int:
        return self._counts.get(function, 0)

    def size(self) -> int:
        return self._bytes

    @property
    def broken(self) -> Exception | None:
        """Why the queue cannot store events any more (its writer stopped), or None."""
        return self._writer.failed

    async def close(self) -> None:
        await self._writer.close()
        self._read.close()
