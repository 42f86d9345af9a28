"""gateway.hooks: observers connected in order, called with the owner's arguments, one that fails logged and skipped."""

from __future__ import annotations

import logging
import threading

import pytest

from gateway.hooks import Hook

log = logging.getLogger("gateway.test")


def test_observers_are_called_in_the_order_they_were_connected() -> None:
    hook: Hook[[str, int]] = Hook("event", log)
    seen: list[tuple[str, str, int]] = []
    hook("nobody listens", 0)  # no observer: nothing happens
    hook.connect(lambda name, n: seen.append(("first", name, n)))
    hook.connect(lambda name, n: seen.append(("second", name, n)))
    hook("f", 1)
    hook("g", 2)
    assert seen == [("first", "f", 1), ("second", "f", 1), ("first", "g", 2), ("second", "g", 2)]
    assert repr(hook) == "Hook('event', 2 observers)"


def test_an_observer_that_raises_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    hook: Hook[[]] = Hook("zygote ready", log)
    seen: list[str] = []

    def broken() -> None:
        raise ValueError("observer bug")

    hook.connect(broken)
    hook.connect(lambda: seen.append("after"))
    with caplog.at_level(logging.ERROR, logger="gateway.test"):
        hook()  # does not raise
    assert seen == ["after"]
    (record,) = caplog.records
    assert record.name == "gateway.test"  # the owner's logger: its name is what operators filter on
    assert "zygote ready: observer" in record.getMessage() and "broken" in record.getMessage()
    assert record.exc_info is not None and "observer bug" in str(record.exc_info[1])


def test_an_observer_that_raises_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    """What the invoker relies on, once per invocation: observers are a tuple, a failing one does not stop the rest."""
    hook: Hook[[int]] = Hook("outcome", log)
    seen: list[int] = []
    hook.connect(lambda n: 1 // n)
    hook.connect(seen.append)
    assert isinstance(hook.observers, tuple)
    hook(0)
    assert seen == [0] and "outcome: observer" in caplog.text and "ZeroDivisionError" in caplog.text


def test_connecting_replaces_the_tuple_so_a_call_in_progress_is_not_disturbed() -> None:
    hook: Hook[[]] = Hook("event", log)
    seen: list[str] = []

    def first() -> None:
        seen.append("first")
        hook.connect(lambda: seen.append("late"))  # connected during a call: from the next call on

    hook.connect(first)
    before = hook.observers
    hook()
    assert seen == ["first"] and before == (first,) and len(hook.observers) == 2
    hook()
    assert seen == ["first", "first", "late"]


def test_a_hook_may_be_called_from_another_thread() -> None:
    """The registry's hook is called on the writer's thread (a route's `asyncio.to_thread`)."""
    hook: Hook[[str]] = Hook("registry change", log)
    seen: list[tuple[str, bool]] = []
    hook.connect(lambda name: seen.append((name, threading.current_thread() is threading.main_thread())))
    thread = threading.Thread(target=hook, args=("f",))
    thread.start()
    thread.join()
    assert seen == [("f", False)]
