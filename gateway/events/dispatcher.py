"""The dispatcher: runs queued asynchronous invocations through the same admission and pools as synchronous ones.

Per function, events run in order of arrival, at most `GATEWAY_ASYNC_CONCURRENCY` at once (and never more than its
reserved concurrency), so that queued work never takes the concurrency synchronous callers need; a function whose
reserved concurrency is 0 is paused (its events wait, and age out), as on Lambda. Each attempt: admission (a throttle
puts the event back with back-off), `Invoker.invoke` with the event's own request id, then by outcome (see
gateway.events.retries): success -> OnSuccess destination; function error -> retried after 1 and 2 minutes up to
MaximumRetryAttempts, then OnFailure destination and dead-letter queue; too old -> likewise, EventAgeExceeded. An
event leaves the queue (`finish`) only after its outcome was delivered: a crash anywhere before means one more run.

Wake-ups, not polling: `ready(function)` (a new event, a finished attempt) and a timer per function for its next
retry. Concurrency: everything on the event loop; one task per attempt, owned here and cancelled by `close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Protocol

from gateway.errors import LambdaError, ResourceNotFoundException, TooManyRequestsException
from gateway.events.destinations import Destinations
from gateway.events.queue import EventQueue, QueuedEvent
from gateway.events.records import Response
from gateway.events.retries import Condition, after_function_error, after_throttle, expired
from gateway.execution.admission import Concurrency
from gateway.execution.invoker import Invoker
from gateway.settings import Settings
from gateway.store.records import LATEST, Change, Changed, FunctionConfig
from gateway.store.registry import Registry

log = logging.getLogger("gateway.events")

#: how often a paused function (reserved concurrency 0) is looked at, to resume
PAUSED_CHECK = 1.0
#: how often the oldest events of a paused function are aged out
EXPIRY_SCAN = 10.0
#: how soon a function whose dispatch failed (a bug, an unreadable queue) is tried again
DISPATCH_RETRY = 1.0
DROPPED_REASON = {Condition.RETRIES_EXHAUSTED: "retries_exhausted", Condition.EVENT_AGE_EXCEEDED: "event_age_exceeded"}


class EventConfig(Protocol):
    """gateway.store.event_configs.EventInvokeConfig, as read here."""

    @property
    def maximum_retry_attempts(self) -> int: ...

    @property
    def maximum_event_age(self) -> int: ...

    @property
    def on_success(self) -> str | None: ...

    @property
    def on_failure(self) -> str | None: ...


class EventConfigs(Protocol):
    def effective(self, function: str, qualifier: str | None) -> EventConfig: ...


class Observer(Protocol):
    """What the dispatcher reports (gateway.observability.metrics.Metrics)."""

    def async_event_age(self, function: str, seconds: float) -> None: ...

    def async_dropped(self, function: str, reason: str) -> None: ...

    def throttled(self, function: str, reason: str) -> None: ...


class Dispatcher:
    """Runs the queue's events (see the module docstring). `run()` is its background task."""

    def __init__(
        self,
        settings: Settings,
        queue: EventQueue,
        registry: Registry,
        configs: EventConfigs,
        admission: Concurrency,
        invoker: Invoker,
        destinations: Destinations,
        metrics: Observer,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._registry = registry
        self._configs = configs
        self._admission = admission
        self._invoker = invoker
        self._destinations = destinations
        self._metrics = metrics
        self._inflight: dict[str, int] = {}
        self._ready: set[str] = set(queue.functions())  # at start-up: every function with events on file
        self._timers: list[tuple[float, str]] = []  # heap of (when, function); the live one is in _timer_at
        self._timer_at: dict[str, float] = {}  # function -> when it is to be looked at again (one timer each)
        self._held_until: dict[str, float] = {}  # function -> no attempt before this (it was throttled)
        self._expiry_scan: dict[str, float] = {}  # paused function -> when its events were last aged out
        self._starved: set[str] = set()  # functions that waited for the account-wide async cap
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._taking = True
        self._loop = asyncio.get_running_loop()
        queue.on_ready = self.ready

    def follow(self, change: Change) -> None:
        """The registry's change hook (any thread): a deleted function's queued events are dropped, as on Lambda."""
        if change.what is Changed.FUNCTION_DELETED and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._drop, change.function)

    def _drop(self, function: str) -> None:
        dropped = self._queue.drop(function)
        for state in (self._timer_at, self._held_until, self._expiry_scan):
            state.pop(function, None)
        if dropped:
            log.warning("function %s was deleted: dropped its %d queued asynchronous invocations", function, dropped)

    def ready(self, function: str) -> None:
        """`function` may have an event to run now."""
        self._ready.add(function)
        self._wake.set()

    def inflight(self) -> int:
        """Attempts running now."""
        return len(self._tasks)

    async def run(self) -> None:
        """Dispatch until cancelled."""
        while True:
            await self._wait()
            if not self._taking:  # stopping: what is queued waits on file for the next start
                self._ready.clear()
                self._timers.clear()
                self._timer_at.clear()
                continue
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                when, function = heapq.heappop(self._timers)
                if self._timer_at.get(function) == when:  # not a stale entry
                    del self._timer_at[function]
                    self._ready.add(function)
            ready, self._ready = self._ready, set()
            for function in ready:
                try:
                    self._dispatch(function, now)
                except Exception:  # a bug or an unreadable queue must not end the dispatching of every function
                    log.exception("could not dispatch the queued events of %s; trying again shortly", function)
                    self._later(function, now + DISPATCH_RETRY)

    async def _wait(self) -> None:
        if self._ready:
            return
        timeout = max(self._timers[0][0] - time.time(), 0.0) if self._timers else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def _later(self, function: str, when: float) -> None:
        """Look at `function` again at `when` (or earlier, if it already has an earlier timer)."""
        if self._timer_at.get(function, float("inf")) > when:
            self._timer_at[function] = when
            heapq.heappush(self._timers, (when, function))

    def _dispatch(self, function: str, now: float) -> None:
        if function not in self._registry:  # deleted (its drop may not have reached the file before a crash)
            self._drop(function)
            return
        reserved = self._registry.reserved_concurrency(function)
        if reserved == 0:
            self._expire_waiting(function, now)
            self._later(function, now + PAUSED_CHECK)
            return
        held = self._held_until.get(function, 0.0)
        if held > now:  # throttled: read from its queue again only after the back-off
            self._later(function, held)
            return
        free = min(self._cap(reserved) - self._inflight.get(function, 0), self._account_room(function))
        if free > 0:
            for event in self._queue.take(function, free, now):
                self._start(event)
        due = self._queue.next_due(function)
        if due is not None and due > now:
            self._later(function, due)

    def _cap(self, reserved: int | None) -> int:
        """How many of a function's events may run at once: GATEWAY_ASYNC_CONCURRENCY, and within a reservation
        above 1, one slot less than it, so that synchronous callers always keep one."""
        cap = self._settings.async_concurrency
        return cap if reserved is None else min(cap, max(reserved - 1, 1))

    def _account_room(self, function: str) -> int:
        """Attempts the account-wide async cap still allows; 0 marks `function` to be woken when one ends."""
        room = self._settings.async_concurrency_total - len(self._tasks)
        if room <= 0:
            self._starved.add(function)
        return room

    def _expire_waiting(self, function: str, now: float) -> None:
        """Age out the oldest events of a paused function that are too old to run (they still get their OnFailure),
        at most as many at once as it may run, and look at most every EXPIRY_SCAN seconds."""
        if now - self._expiry_scan.get(function, 0.0) < EXPIRY_SCAN:
            return
        self._expiry_scan[function] = now
        room = min(self._settings.async_concurrency - self._inflight.get(function, 0), self._account_room(function))
        if room <= 0:
            return
        old = [
            event
            for event in self._queue.oldest(function, room)
            if expired(event, self._configs.effective(function, event.qualifier).maximum_event_age, now)
        ]
        for event in self._queue.claim(old):
            self._start(event)

    def _start(self, event: QueuedEvent) -> None:
        self._inflight[event.function] = self._inflight.get(event.function, 0) + 1
        task = asyncio.create_task(self._run(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, event: QueuedEvent) -> None:
        try:
            await self._attempt(event)
        except Exception:  # a bug here must not lose the event: it goes back and is tried again
            log.exception("asynchronous invocation %s of %s failed in the gateway", event.request_id, event.function)
            event.due = time.time() + self._settings.async_delay_scale
            self._queue.reschedule(event)
        finally:
            left = self._inflight.get(event.function, 1) - 1
            if left:
                self._inflight[event.function] = left
            else:
                self._inflight.pop(event.function, None)
            self.ready(event.function)
            if self._starved:  # a slot of the account-wide cap is free again
                self._ready |= self._starved
                self._starved.clear()

    async def _attempt(self, event: QueuedEvent) -> None:
        """One attempt at `event`, and what follows from its outcome."""
        function, scale = event.function, self._settings.async_delay_scale
        config = self._configs.effective(function, event.qualifier)
        now = time.time()
        if expired(event, config.maximum_event_age, now):
            await self._give_up(event, config, Condition.EVENT_AGE_EXCEEDED, None)
            return
        try:
            target = self._registry.resolve(function, event.qualifier, route=True)
        except ResourceNotFoundException:
            log.warning("dropped asynchronous invocation %s: %s is gone", event.request_id, self._arn(event))
            self._metrics.async_dropped(function, "function_deleted")
            self._queue.finish(event)
            return
        response = await self._invoke(event, target, now)
        now = time.time()
        if response is None:  # throttled, or a system error: back to the queue, not counted as an attempt
            condition = after_throttle(event, config.maximum_event_age, now, scale)
            if condition is None:  # and the function's queue is read more slowly too, as on Lambda
                self._held_until[function] = max(self._held_until.get(function, 0.0), event.due)
        else:
            self._held_until.pop(function, None)
            event.attempts += 1
            if response.function_error is None:
                await self._end(event, config, Condition.SUCCESS, response, config.on_success)
                return
            condition = after_function_error(event, config.maximum_retry_attempts, config.maximum_event_age, now, scale)
        if condition is None:
            self._queue.reschedule(event)
        else:
            await self._give_up(event, config, condition, response)

    async def _invoke(self, event: QueuedEvent, config: FunctionConfig, now: float) -> Response | None:
        """Run the attempt; None if it never reached the function (throttled, or a system error)."""
        function = event.function
        try:
            token = self._admission.admit(function, event.qualifier)
        except TooManyRequestsException as exc:
            self._metrics.throttled(function, exc.reason)
            return None
        try:
            self._metrics.async_event_age(function, now - event.received)
            arn = self._settings.function_arn(function, event.qualifier)
            assert event.payload is not None  # `take` loads it
            outcome = await self._invoker.invoke(config, arn, event.payload, None, False, request_id=event.request_id)
        except TooManyRequestsException as exc:  # no room on the node
            self._metrics.throttled(function, exc.reason)
            return None
        except LambdaError as exc:  # the runtime unavailable, the gateway stopping
            log.info("asynchronous invocation %s of %s will be retried: %s", event.request_id, function, exc)
            return None
        finally:
            self._admission.release(token)
        return Response(outcome.executed_version, outcome.payload, outcome.function_error)

    async def _give_up(
        self, event: QueuedEvent, config: EventConfig, condition: Condition, response: Response | None
    ) -> None:
        log.warning(
            "asynchronous invocation %s of %s ended without success (%s after %d attempts)",
            event.request_id,
            self._arn(event),
            condition.value,
            event.attempts,
        )
        self._metrics.async_dropped(event.function, DROPPED_REASON[condition])
        await self._end(event, config, condition, response, config.on_failure)

    async def _end(
        self,
        event: QueuedEvent,
        config: EventConfig,
        condition: Condition,
        response: Response | None,
        destination: str | None,
    ) -> None:
        dead_letter = self._dead_letter(event) if condition is not Condition.SUCCESS else None
        if destination or dead_letter:
            await self._destinations.deliver(event, self._arn(event), condition, response, destination, dead_letter)
        self._queue.finish(event)

    def _dead_letter(self, event: QueuedEvent) -> str | None:
        """The function's DeadLetterConfig.TargetArn (of the version it ran as), if it has one."""
        try:
            config = self._registry.resolve(event.function, event.qualifier)
        except ResourceNotFoundException:
            return None
        target = config.extra.get("DeadLetterConfig", {}).get("TargetArn")
        return target if isinstance(target, str) and target else None

    def _arn(self, event: QueuedEvent) -> str:
        return self._settings.function_arn(event.function, event.qualifier or LATEST)

    def stop_taking(self) -> None:
        """Start no more attempts (the gateway stops); those in flight go on."""
        self._taking = False

    async def close(self) -> None:
        """Cancel the attempts still running: their events stay on file and run again after a restart."""
        self._taking = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
