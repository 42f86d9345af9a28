"""Lambda's retry rules for asynchronous invocations, as pure functions of an event, its configuration and the clock.

- A function error (raised, timed out, crashed, out of memory, Init failed) is retried `MaximumRetryAttempts` times
  (0..2, default 2): about 1 minute after the first attempt, 2 minutes after the second.
- A throttle (no concurrency, no room on the node) or a system error (the runtime unavailable, the gateway stopping)
  puts the event back with a delay that starts at 1 s and doubles up to 5 minutes; these attempts never count
  against `MaximumRetryAttempts`.
- Either way, an event older than `MaximumEventAgeInSeconds` (60..21600, default 6 h) is not run again; one whose
  next attempt would come after that age is given up at once rather than kept until then.

`scale` (GATEWAY_ASYNC_DELAY_SCALE) multiplies every delay, never the limits.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.events.queue import QueuedEvent

#: after the first and the second failed attempt (Lambda: "about 1 minute", "about 2 minutes")
FUNCTION_ERROR_DELAYS = (60.0, 120.0)
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0


class Condition(StrEnum):
    """Why an event's processing ended: the destination record's `requestContext.condition`."""

    SUCCESS = "Success"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    EVENT_AGE_EXCEEDED = "EventAgeExceeded"


def expired(event: QueuedEvent, maximum_age: float, now: float) -> bool:
    """Whether `event` is too old to be run (again)."""
    return now - event.received > maximum_age


def after_function_error(
    event: QueuedEvent, retries: int, maximum_age: float, now: float, scale: float
) -> Condition | None:
    """After an attempt that ended in a function error (`event.attempts` already counts it): None and a new
    `event.due` if it is to be retried, else the condition it ends with."""
    if event.attempts > retries:
        return Condition.RETRIES_EXHAUSTED
    delay = FUNCTION_ERROR_DELAYS[min(event.attempts, len(FUNCTION_ERROR_DELAYS)) - 1] * scale
    return _retry_at(event, now + delay, maximum_age)


def after_throttle(event: QueuedEvent, maximum_age: float, now: float, scale: float) -> Condition | None:
    """After an attempt that was throttled or met a system error: None and a new `event.due` and `event.backoff`
    to try again, or EventAgeExceeded."""
    event.backoff = min(event.backoff * 2, BACKOFF_MAX) if event.backoff else BACKOFF_FIRST
    return _retry_at(event, now + event.backoff * scale, maximum_age)


def _retry_at(event: QueuedEvent, due: float, maximum_age: float) -> Condition | None:
    if due - event.received > maximum_age:
        return Condition.EVENT_AGE_EXCEEDED
    event.due = due
    return None
