"""The durable queue of asynchronous invocations: what a backend must do (`EventQueue`), and one event.

An event is *accepted* when `put()` returns: it is then on disk (the 202 is answered only after), and it stays there
until `finish()` removes it, after its last attempt and the delivery of its outcome. Whatever happens in between (the
gateway killed mid-invocation, a retry scheduled but not written) it is run again after a restart: delivery is at
least once, as on Lambda, never at most once.

Backends: `gateway.events.sqlite_queue.SqliteQueue` (one node, the default: a file in the data directory). A cluster
backend (PostgreSQL, `FOR UPDATE SKIP LOCKED` for `take`, a lease column for what a node has taken) implements the same
methods. The dispatcher (gateway.events.dispatcher) is the only caller of everything but `put`, `drop` and
`depths`.

Concurrency: every method is called on the event loop. `put` awaits the disk; the others queue their writes and
return (the writes follow, in order, with the next group commit), so a lost `finish` or `reschedule` means one more
run of the event, never a lost one. `take` and `claim` may read a payload that is not held in memory (SQLite, one
row by primary key, from the page cache as a rule).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.settings import Settings


@dataclass(slots=True)
class QueuedEvent:
    """One accepted asynchronous invocation, as stored."""

    request_id: str  # the 202's x-amzn-RequestId; every attempt runs with it, as on Lambda
    function: str
    qualifier: str | None  # as invoked: a version, an alias, or None (unqualified: $LATEST)
    payload: bytes | None  # the event (JSON); None while not held in memory (`take` loads it)
    received: float  # epoch seconds when it was accepted (its age counts from here)
    due: float  # epoch seconds from which it may run (again)
    attempts: int = 0  # attempts that reached the function: the record's approximateInvokeCount
    backoff: float = 0.0  # seconds of the last delay after a throttle or a system error (0: none yet)
    id: int = 0  # order of arrival, assigned by `put`
    size: int = 0  # bytes of payload, kept when the payload is not held in memory


class EventQueue(Protocol):
    """A durable, per-function queue of events ordered by arrival (see the module docstring)."""

    #: called with a function's name when it has an event that may be due now (a `put`, a `reschedule` into the past)
    on_ready: Callable[[str], None]

    async def put(self, event: QueuedEvent) -> None:
        """Store `event` (assigning its `id`); returns once it is durable. Raises OSError/sqlite3.Error if it is not."""

    def take(self, function: str, limit: int, now: float) -> list[QueuedEvent]:
        """Up to `limit` of `function`'s events due by `now`, oldest first, payloads loaded; they are in flight
        until `finish` or `reschedule`: no other `take` returns them."""

    def claim(self, events: list[QueuedEvent]) -> list[QueuedEvent]:
        """Take some of one function's waiting events out of turn (aged out while it was paused), payloads loaded;
        those not waiting any more are left out."""

    def oldest(self, function: str, limit: int) -> list[QueuedEvent]:
        """Up to `limit` of `function`'s waiting events, oldest first, without payloads."""

    def next_due(self, function: str) -> float | None:
        """When `function`'s earliest waiting event is due (None: none waits)."""

    def functions(self) -> list[str]:
        """The functions that have waiting events."""

    def finish(self, event: QueuedEvent) -> None:
        """Forget an event for good (it succeeded, or its outcome was delivered)."""

    def reschedule(self, event: QueuedEvent) -> None:
        """Put an event taken back in the queue with its new `due`, `attempts` and `backoff`."""

    def drop(self, function: str) -> int:
        """Forget every waiting event of `function` (it was deleted); how many. Events in flight finish as they may."""

    def depths(self) -> Mapping[str, int]:
        """Events waiting per function (in flight not counted)."""

    def depth(self, function: str) -> int:
        """Events of `function` on file (waiting or in flight); O(1)."""

    def size(self) -> int:
        """Payload bytes of every event on file; O(1)."""

    @property
    def broken(self) -> Exception | None:
        """Why the queue cannot store events any more, or None."""

    async def close(self) -> None:
        """Write what is pending and release the storage."""


#: Lambda's asynchronous payload limit (Invoke with InvocationType=Event; a record for a function destination too)
MAX_EVENT_PAYLOAD = 1024 * 1024
QUEUE_FULL = (
    "Rate Exceeded. The function's queue of asynchronous invocations is full (GATEWAY_ASYNC_QUEUE_MAX); retry later."
)
QUEUE_BYTES = (
    "Rate Exceeded. The queue of asynchronous invocations is full (GATEWAY_ASYNC_QUEUE_MAX_BYTES); retry later."
)
CALLER_RATE = "CallerRateLimitExceeded"


def full(queue: EventQueue, settings: Settings, function: str, size: int) -> str:
    """Why one more event of `size` bytes for `function` may not be queued now (the answer of a 429), "" if it may:
    the bounds that keep a function invoking itself in a loop, or a flood of Event invokes, from filling the disk."""
    if queue.depth(function) >= settings.async_queue_max:
        return QUEUE_FULL
    if queue.size() + size > settings.async_queue_max_bytes:
        return QUEUE_BYTES
    return ""
