"""Lambda's retry rules for asynchronous invocations (gateway.events.retries)."""

from __future__ import annotations

from gateway.events.queue import QueuedEvent
from gateway.events.retries import Condition, after_function_error, after_throttle, expired

DAY = 86400.0


def _event(attempts: int = 0, backoff: float = 0.0) -> QueuedEvent:
    return QueuedEvent("r", "f", None, b"{}", received=0.0, due=0.0, attempts=attempts, backoff=backoff)


def test_function_errors_wait_one_then_two_minutes_then_give_up() -> None:
    event = _event(attempts=1)
    assert after_function_error(event, 2, 21600, now=10.0, scale=1.0) is None and event.due == 70.0
    event.attempts = 2
    assert after_function_error(event, 2, 21600, now=80.0, scale=1.0) is None and event.due == 200.0
    event.attempts = 3
    assert after_function_error(event, 2, 21600, now=210.0, scale=1.0) is Condition.RETRIES_EXHAUSTED
    assert after_function_error(_event(attempts=1), 0, 21600, now=1.0, scale=1.0) is Condition.RETRIES_EXHAUSTED


def test_the_scale_shortens_delays_not_limits() -> None:
    event = _event(attempts=1)
    assert after_function_error(event, 2, 60, now=0.0, scale=0.01) is None and event.due == 0.6
    event = _event(attempts=1)
    assert after_function_error(event, 2, 60, now=10.0, scale=1.0) is Condition.EVENT_AGE_EXCEEDED  # 70 s > 60 s


def test_throttles_back_off_from_one_second_to_five_minutes_until_the_age_limit() -> None:
    event = _event()
    delays = []
    for _ in range(12):
        assert after_throttle(event, 21600, now=100.0, scale=1.0) is None
        delays.append(event.due - 100.0)
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == 300.0
    assert after_throttle(event, 21600, now=21500.0, scale=1.0) is Condition.EVENT_AGE_EXCEEDED
    assert event.attempts == 0  # throttles never count as attempts


def test_expired() -> None:
    assert not expired(_event(), 60, now=60.0)
    assert expired(_event(), 60, now=60.5)
