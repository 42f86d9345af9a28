"""The schedules' firing loop: each occurrence of an enabled schedule becomes an asynchronous invocation of its target
function, queued exactly as an `Event` invoke is (gateway/api/invoke/invoke_async.py), so the dispatcher runs it with
the function's own retries, destinations and dead-letter queue, as Lambda runs what Scheduler hands it.

**When.** One task (`ScheduleRunner.run`, owned by the app) sleeps until the earliest `fire_at` of the enabled
schedules (at most `MAX_SLEEP` s, so a wall-clock jump is noticed), or until `changed()` wakes it after an API
write; never a hot loop. A schedule's firing state (`next_due`, `fire_at`, gateway/store/schedules.py) is written
in the store: `plan()` computes it at Create and Update (the API writes it with the schedule), the loop after
each firing. Occurrences fire one at a time, in order. With a FLEXIBLE window each fires at a random time within
its window, never before the previous one fired.

**Late and missed runs (a restart).** An occurrence whose `fire_at` is more than `LATE` seconds past when the loop
gets to it was missed (the gateway was down, or the host asleep). Then only the latest occurrence due by now fires,
once, if it is no older than the schedule's `RetryPolicy.MaximumEventAgeInSeconds` (Scheduler's own limit on how late
an event may still be delivered: 24 h by default); the ones before it are skipped (logged), and the schedule goes on
from its next occurrence after now. So a restart fires at most one catch-up run per schedule, never a burst. A
one-time `at()` schedule missed during a downtime shorter than that age fires once at restart.

**What a firing is.** The payload is the target's `Input` with Scheduler's context attributes replaced
(`<aws.scheduler.schedule-arn>`, `<aws.scheduler.scheduled-time>`, `<aws.scheduler.execution-id>`,
`<aws.scheduler.attempt-number>`), or, without `Input`, Scheduler's default notification: `{"version": "0", "id",
"detail-type": "Scheduled Event", "source": "aws.scheduler", "account", "time" (the scheduled time), "region",
"resources": [the schedule's ARN], "detail": "{}"}`. It is queued (durably) *before* the firing state moves on, so a
crash between the two fires that occurrence again after the restart: at least once, never lost.

**RetryPolicy and DeadLetterConfig.** Scheduler's policy governs its delivery to the target: here, the queueing.
That fails only if the function is gone (not retried, as Scheduler does not retry a missing target), the queue is
full (`GATEWAY_ASYNC_QUEUE_MAX` for the function, `GATEWAY_ASYNC_QUEUE_MAX_BYTES` in all) or the disk refuses the
write: those are retried with back-off (1 s doubling to
`MAX_BACKOFF`) up to `MaximumRetryAttempts` and `MaximumEventAgeInSeconds`. Then the payload goes to the
DeadLetterConfig's SQS queue (through gateway.events.delivery, with Lambda's dead-letter attributes: RequestID is the
execution's id, ErrorCode 404/429/500, ErrorMessage), or, without one, is dropped with a log line. Retries wait in
memory: a restart forgets them (the schedule itself goes on). Once queued, what the function does with the event is
the function's event invoke config's business (its retries, destinations, dead-letter queue).

**Completion.** A schedule with no occurrence left (an `at()` that fired, a recurring one past its EndDate) keeps
`next_due` None; with ActionAfterCompletion DELETE it is deleted.

Concurrency: everything runs on the event loop; store writes go to a worker thread. A schedule replaced or deleted
through the API while it fires keeps the API's version: the loop writes its state only over the record it fired.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson

from gateway.errors import ResourceNotFoundException
from gateway.events.delivery import Delivery, DeliveryFailed
from gateway.events.queue import EventQueue, QueuedEvent, full
from gateway.events.schedule_expressions import Expression, parse
from gateway.events.targets import Service, Target, parse_target
from gateway.observability.metrics import Metrics
from gateway.settings import Settings
from gateway.store.registry import Registry
from gateway.store.schedules import Schedule, Schedules

log = logging.getLogger("gateway.schedules")

ENABLED = "ENABLED"
#: seconds past its fire time after which an occurrence counts as missed (Scheduler's precision is a minute)
LATE = 60.0
#: the longest the loop sleeps without looking at the clock again
MAX_SLEEP = 60.0
MAX_BACKOFF = 60.0
#: Scheduler's RetryPolicy defaults
DEFAULT_EVENT_AGE = 86400
DEFAULT_RETRY_ATTEMPTS = 185


def schedule_arn(settings: Settings, group: str, name: str) -> str:
    return f"arn:{settings.partition}:scheduler:{settings.region}:{settings.account_id}:schedule/{group}/{name}"


def expression_of(schedule: Schedule) -> Expression:
    """The schedule's parsed expression (it was checked when written)."""
    return parse(schedule.expression, schedule.timezone, schedule.start, schedule.end, schedule.created)


def retry_policy(schedule: Schedule) -> tuple[int, int]:
    """(MaximumRetryAttempts, MaximumEventAgeInSeconds) of the schedule's target."""
    policy = schedule.target.get("RetryPolicy") or {}
    return (
        int(policy.get("MaximumRetryAttempts", DEFAULT_RETRY_ATTEMPTS)),
        int(policy.get("MaximumEventAgeInSeconds", DEFAULT_EVENT_AGE)),
    )


def fire_time(schedule: Schedule, due: float | None, previous: float | None, rng: random.Random) -> float | None:
    """When the occurrence `due` fires: at once (Mode OFF), or at a random time in its FLEXIBLE window, never before
    the previous firing (`previous`), so occurrences keep their order."""
    if due is None:
        return None
    if schedule.flexible_mode != "FLEXIBLE" or not schedule.flexible_window:
        return due
    window = schedule.flexible_window * 60.0
    low = min(max(0.0, (previous or 0.0) - due), window)
    return due + rng.uniform(low, window)


def plan(schedule: Schedule, now: float, rng: random.Random | None = None) -> Schedule:
    """`schedule` with fresh firing state, as Create and Update write it: its first occurrence at or after `now`
    (a new rate schedule's is now: it fires at once); a one-time schedule's is its time, even if a little past."""
    expression = expression_of(schedule)
    due = expression.rule.next_after(-math.inf) if not expression.recurring else expression.next_after(now - 1e-3)
    return replace(schedule, next_due=due, fire_at=fire_time(schedule, due, None, rng or random.Random()))


def payload(settings: Settings, schedule: Schedule, occurrence: float, execution_id: str, attempt: int) -> bytes:
    """What the function receives: the target's Input with the context attributes replaced, or Scheduler's default
    notification."""
    arn = schedule_arn(settings, schedule.group, schedule.name)
    scheduled = datetime.fromtimestamp(occurrence, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    given = schedule.target.get("Input")
    if given is None:
        return orjson.dumps(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.scheduler",
                "account": settings.account_id,
                "time": scheduled,
                "region": settings.region,
                "resources": [arn],
                "detail": "{}",
            }
        )
    text = str(given)
    for attribute, value in (
        ("schedule-arn", arn),
        ("scheduled-time", scheduled),
        ("execution-id", execution_id),
        ("attempt-number", str(attempt)),
    ):
        text = text.replace(f"<aws.scheduler.{attribute}>", value)
    return text.encode()


class NotDelivered(Exception):
    """The firing could not be queued; `retryable` says whether Scheduler would try again, `code` the 3-digit status
    the dead letter carries."""

    def __init__(self, message: str, code: str, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass(slots=True)
class _Retry:
    """A firing whose queueing failed and is to be tried again at `due`."""

    schedule: Schedule
    occurrence: float
    execution_id: str
    attempt: int  # the attempt to make next (1 was the first)
    due: float
    backoff: float


class ScheduleRunner:
    """Fires the schedules of a `Schedules` store into the asynchronous invocation queue (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: Schedules,
        queue: EventQueue,
        registry: Registry,
        metrics: Metrics,
        delivery: Delivery,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.registry = registry
        self.metrics = metrics
        self.delivery = delivery
        self.clock = clock
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._retries: list[_Retry] = []
        #: schedule -> the occurrence fired whose next fire time could not be written yet (a disk refusing writes):
        #: it is not fired again while the write is retried
        self._fired: dict[tuple[str, str], float] = {}
        self._closed = False

    def changed(self) -> None:
        """A schedule was written or deleted: look again at what is due (called on the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        """The loop: fire what is due, then sleep until the next fire time or a change. Cancelled on shutdown; an
        unexpected error is logged and the loop goes on a second later (it never dies, and never spins)."""
        while not self._closed:
            try:
                await self.tick(self.clock())
                await self._sleep(self.clock())
            except Exception:
                log.exception("the schedules' loop failed; going on in a second")
                await asyncio.sleep(1.0)

    async def tick(self, now: float) -> None:
        """Fire every enabled schedule due by `now` (in order of group and name), then the retries due."""
        for schedule in self.store.all():
            if schedule.state != ENABLED:
                continue
            if schedule.fire_at is not None and schedule.fire_at <= now:
                await self._guarded(schedule, now)
            elif schedule.next_due is None and schedule.action_after_completion == "DELETE":
                await self._complete(schedule)
        await self._retry_due(now)

    async def _sleep(self, now: float) -> None:
        times = [s.fire_at for s in self.store.all() if s.state == ENABLED and s.fire_at is not None]
        times += [r.due for r in self._retries]
        delay = min([MAX_SLEEP, *(t - now for t in times)])
        self._wake.clear()
        if delay > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    async def _guarded(self, schedule: Schedule, now: float) -> None:
        """Fire one schedule; a failure of one (a store write refused) is logged and does not stop the others."""
        try:
            await self._fire(schedule, now)
        except (OSError, sqlite3.Error) as exc:
            log.error("schedule %s/%s: could not record its firing: %s", schedule.group, schedule.name, exc)
            await asyncio.sleep(1.0)  # the disk refuses writes: do not spin on it
        except Exception:
            log.exception("schedule %s/%s: its firing failed", schedule.group, schedule.name)
            await asyncio.sleep(1.0)

    async def _fire(self, schedule: Schedule, now: float) -> None:
        expression = expression_of(schedule)
        occurrence = schedule.next_due
        assert occurrence is not None and schedule.fire_at is not None
        late = now - schedule.fire_at > LATE
        fire = True
        if late:
            occurrence = max(occurrence, expression.latest_by(now) or occurrence)
            _, max_age = retry_policy(schedule)
            if now - occurrence > max_age:
                fire = False
                log.warning(
                    "schedule %s/%s: runs missed since %s are older than its MaximumEventAgeInSeconds (%d): skipped",
                    schedule.group, schedule.name, _iso(schedule.next_due or occurrence), max_age,
                )  # fmt: skip
            elif occurrence != schedule.next_due:
                log.warning(
                    "schedule %s/%s: runs missed since %s (the gateway was not running): firing the latest (%s) once",
                    schedule.group, schedule.name, _iso(schedule.next_due or occurrence), _iso(occurrence),
                )  # fmt: skip
        if fire and self._fired.get(schedule.key) != occurrence:  # not fired already, with only the write failing
            execution_id = uuid.uuid4().hex[:16]
            self._fired[schedule.key] = occurrence
            await self._attempt(_Retry(schedule, occurrence, execution_id, 1, now, 0.0))
        following = expression.next_after(max(occurrence, now) if late else occurrence)
        fired_at = now if fire else schedule.last_fired
        state = replace(
            schedule,
            next_due=following,
            fire_at=fire_time(schedule, following, now, self.rng),
            last_fired=fired_at,
        )
        current = await asyncio.to_thread(
            self.store.update, schedule.group, schedule.name, lambda cur: state if cur is schedule else cur
        )
        self._fired.pop(schedule.key, None)  # written: the store now says what comes next
        if current is state and following is None:
            await self._complete(state)

    async def _complete(self, schedule: Schedule) -> None:
        """No occurrence left: ActionAfterCompletion DELETE deletes it (unless it was replaced meanwhile)."""
        if schedule.action_after_completion == "DELETE" and await asyncio.to_thread(
            self.store.delete, schedule.group, schedule.name, schedule
        ):
            log.info("schedule %s/%s completed and was deleted (ActionAfterCompletion DELETE)", *schedule.key)

    async def _attempt(self, pending: _Retry) -> None:
        """Queue one firing; on failure retry later per the RetryPolicy, or dead-letter it."""
        schedule = pending.schedule
        body = payload(self.settings, schedule, pending.occurrence, pending.execution_id, pending.attempt)
        try:
            request_id = await self._queue(schedule, body)
        except NotDelivered as exc:
            attempts, max_age = retry_policy(schedule)
            now = self.clock()
            backoff = min(MAX_BACKOFF, max(1.0, pending.backoff * 2))
            queued = any(r.schedule.key == schedule.key and r.occurrence == pending.occurrence for r in self._retries)
            if queued:  # this occurrence already waits for a retry
                return
            if exc.retryable and pending.attempt <= attempts and now + backoff - pending.occurrence <= max_age:
                log.warning("schedule %s/%s: %s; retrying in %.0f s", *schedule.key, exc, backoff)
                self._retries.append(
                    _Retry(schedule, pending.occurrence, pending.execution_id, pending.attempt + 1, now + backoff,
                           backoff)
                )  # fmt: skip
                return
            await self._dead_letter(schedule, body, pending.execution_id, exc)
            return
        log.info(
            "schedule %s/%s fired %s for %s (request %s)",
            *schedule.key, schedule.target.get("Arn"), _iso(pending.occurrence), request_id,
        )  # fmt: skip

    async def _queue(self, schedule: Schedule, body: bytes) -> str:
        """Queue the invocation as `invoke_async.accept` does; its request id. NotDelivered if it was not queued."""
        target = parse_target(str(schedule.target.get("Arn", "")))
        if target is None or target.service is not Service.LAMBDA:
            raise NotDelivered(f"the target {schedule.target.get('Arn')} is not a function", "400", False)
        try:
            self.registry.resolve(target.name, target.qualifier)
        except ResourceNotFoundException as exc:
            raise NotDelivered(f"the target function does not exist: {exc.message}", "404", False) from None
        refusal = full(self.queue, self.settings, target.name, len(body))
        if refusal:
            raise NotDelivered(refusal, "429", True)
        now = self.clock()
        event = QueuedEvent(str(uuid.uuid4()), target.name, target.qualifier, body, now, now)
        try:
            await self.queue.put(event)
        except (OSError, sqlite3.Error) as exc:
            raise NotDelivered(f"the event could not be stored: {exc}", "500", True) from None
        self.metrics.async_received(target.name)
        return event.request_id

    async def _retry_due(self, now: float) -> None:
        due = [r for r in self._retries if r.due <= now]
        if not due:
            return
        self._retries = [r for r in self._retries if r.due > now]
        for pending in due:
            current = self.store.get(*pending.schedule.key)
            if current is None or current.created != pending.schedule.created:
                continue  # deleted (or deleted and created again) meanwhile: Scheduler drops its retries too
            await self._attempt(replace(pending, schedule=current))

    async def _dead_letter(self, schedule: Schedule, body: bytes, execution_id: str, exc: NotDelivered) -> None:
        arn = (schedule.target.get("DeadLetterConfig") or {}).get("Arn")
        target: Target | None = parse_target(arn) if arn else None
        if target is None:
            log.error("schedule %s/%s: a firing was dropped: %s (no DeadLetterConfig)", *schedule.key, exc)
            return
        try:
            await self.delivery.dead_letter(target, body, execution_id, exc.code, str(exc))
            log.warning("schedule %s/%s: %s; the firing went to its dead-letter queue %s", *schedule.key, exc, arn)
        except DeliveryFailed as failed:
            log.error("schedule %s/%s: a firing was dropped: %s, and its dead letter failed: %s", *schedule.key, exc,
                      failed)  # fmt: skip

    def close(self) -> None:
        self._closed = True
        self._wake.set()


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
