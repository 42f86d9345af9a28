"""gateway/execution/setup_failures.py: a pool's brake on cold starts while environments cannot be set up."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from gateway.contracts.zygote import SANDBOX_FAILED_LINE, ExitCode
from gateway.execution import setup_failures
from gateway.execution.failures import EnvironmentDied
from gateway.execution.setup_failures import (
    FIRST_PAUSE,
    LOG_EVERY,
    MAX_PAUSE,
    QUIET,
    REASON_MAX,
    ColdStartsPaused,
    SetupFailures,
    reason_of,
)
from gateway.execution.zygote import ZygoteUnavailable

FAILED = SANDBOX_FAILED_LINE + b"[Errno 54] no room on the environments' bridges\nmore\n"
#: the wait status of an environment that exited with ExitCode.SANDBOX_FAILED
SANDBOX_EXIT = ExitCode.SANDBOX_FAILED << 8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_pause_cold_starts_then_one_fork_at_a_time_tries_again() -> None:
    clock = Clock()
    brake = SetupFailures("f", clock)
    brake.start()
    brake.start()  # no failure yet: forks run side by side
    brake.end(FAILED, SANDBOX_EXIT)
    with pytest.raises(ZygoteUnavailable, match="no room on the environments' bridges"):
        brake.start()
    brake.end(None)  # the other one got past its set-up: set-up works, no pause
    brake.start()
    brake.end(FAILED, SANDBOX_EXIT)
    with pytest.raises(ZygoteUnavailable):
        brake.start()
    clock.now += brake.pause
    brake.start()  # the one that tries
    with pytest.raises(ZygoteUnavailable):
        brake.start()  # the others wait for its outcome
    brake.end(FAILED, SANDBOX_EXIT)  # failed again: a longer pause
    clock.now += brake.pause / 2
    with pytest.raises(ZygoteUnavailable):
        brake.start()
    clock.now += brake.pause / 2
    brake.start()
    brake.end(None)  # set-up worked: forks run side by side again
    brake.start()
    brake.start()


def test_the_pause_doubles_up_to_a_cap_and_starts_over_after_a_quiet_spell() -> None:
    clock = Clock()
    brake = SetupFailures("f", clock)
    pauses = []
    for _ in range(10):
        brake.start()
        brake.end(FAILED, SANDBOX_EXIT)
        pauses.append(brake.pause)
        clock.now = brake.until
    assert pauses[0] == FIRST_PAUSE and pauses[1] == 2 * FIRST_PAUSE and pauses[-1] == MAX_PAUSE
    brake.start()
    brake.end(None)
    clock.now += QUIET + 1
    brake.start()
    brake.end(FAILED, SANDBOX_EXIT)
    assert brake.pause == FIRST_PAUSE


def test_only_the_platforms_set_up_failure_brakes() -> None:
    """A function that fails its own Init (an exit, a crash, even one with status 4) is not braked: only output that
    starts with the sandbox's line and exit status 4 together are (a function doing both brakes only its own pool)."""
    brake = SetupFailures("f", Clock())
    for output, status in (
        (b"", SANDBOX_EXIT),
        (b"Traceback ...\n", SANDBOX_EXIT),
        (b"x" + SANDBOX_FAILED_LINE, SANDBOX_EXIT),
        (FAILED, None),  # how it ended is not known
        (FAILED, 1 << 8),  # the line, printed by a function that then exited 1
        (FAILED, 9),  # killed by a signal
    ):
        brake.start()
        brake.end(output, status)
    brake.start()


def test_the_reason_a_function_may_print_is_logged_without_control_characters_and_cut() -> None:
    reason = reason_of(SANDBOX_FAILED_LINE + b"\x1b[2J\x1b[31mfake\rline\x07\t\xe2\x80\xae!" + b"A" * 5000 + b"\nnext")
    assert reason.startswith("?[2J?[31mfake?line???!") and len(reason) == REASON_MAX
    assert all(c.isprintable() for c in reason)
    assert reason_of(SANDBOX_FAILED_LINE + b"\xff\xfe ok\n") == "\ufffd\ufffd ok"


def test_refused_cold_starts_are_logged_once_a_minute_not_per_invocation(caplog: pytest.LogCaptureFixture) -> None:
    """The reason is the function's text: the invoker does not log a refusal (ColdStartsPaused) and the pool says
    it, with how many were refused, once a minute at most."""
    clock = Clock()
    brake = SetupFailures("f", clock)
    caplog.set_level(logging.INFO, "gateway.pool")
    brake.start()
    brake.end(SANDBOX_FAILED_LINE + b"\x1b]0;owned\x07 spam\n", SANDBOX_EXIT)
    for _ in range(1000):
        with pytest.raises(ColdStartsPaused):
            brake.start()
        clock.now += 0.01  # ten seconds in all: pauses end, tries fail again, each refused invocation raises
        if clock.now >= brake.until and not brake.trying:
            brake.start()
            brake.end(FAILED, SANDBOX_EXIT)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\x1b" not in lines[0] and "\x07" not in lines[0], lines
    clock.now += LOG_EVERY
    brake.start()  # the pause is over: this one tries
    with pytest.raises(ColdStartsPaused):
        brake.start()  # refused while it tries: a minute has passed, so the pool says so again
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    refused = re.search(r"; (\d+) cold starts refused since the last line", lines[1])
    assert refused and int(refused.group(1)) > 900, lines[1]


def test_died_waits_for_the_exit_status_and_never_leaves_a_try_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup_failures, "EXIT_WAIT", 0.01)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        brake = SetupFailures("f", Clock())
        later: asyncio.Future[int | None] = loop.create_future()
        loop.call_soon(later.set_result, SANDBOX_EXIT)  # the zygote's word comes a moment after the death
        brake.start()
        died = EnvironmentDied("Runtime exited", later)
        died.output = FAILED
        await brake.died(died)
        assert brake.failing
        brake.until = -1.0  # the pause is over: one fork tries
        brake.start()
        never: asyncio.Future[int | None] = loop.create_future()  # no word in time: not a set-up failure
        died = EnvironmentDied("Runtime exited", never)
        died.output = FAILED
        await brake.died(died)
        assert not brake.failing and not brake.trying
        brake.failing, brake.until = True, -1.0
        brake.start()
        assert brake.trying
        task = asyncio.ensure_future(brake.died(died))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not brake.trying  # a cancelled wait does not leave the pool waiting for a try for ever

    asyncio.run(scenario())
