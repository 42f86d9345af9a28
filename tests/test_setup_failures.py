"""gateway/execution/setup_failures.py: a pool's brake on cold starts while environments cannot be set up."""

from __future__ import annotations

import pytest

from gateway.contracts.zygote import SANDBOX_FAILED_LINE
from gateway.execution.setup_failures import FIRST_PAUSE, MAX_PAUSE, QUIET, SetupFailures
from gateway.execution.zygote import ZygoteUnavailable

FAILED = SANDBOX_FAILED_LINE + b"[Errno 54] no room on the environments' bridges\nmore\n"


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
    brake.end(FAILED)
    with pytest.raises(ZygoteUnavailable, match="no room on the environments' bridges"):
        brake.start()
    brake.end(None)  # the other one got past its set-up: set-up works, no pause
    brake.start()
    brake.end(FAILED)
    with pytest.raises(ZygoteUnavailable):
        brake.start()
    clock.now += brake.pause
    brake.start()  # the one that tries
    with pytest.raises(ZygoteUnavailable):
        brake.start()  # the others wait for its outcome
    brake.end(FAILED)  # failed again: a longer pause
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
        brake.end(FAILED)
        pauses.append(brake.pause)
        clock.now = brake.until
    assert pauses[0] == FIRST_PAUSE and pauses[1] == 2 * FIRST_PAUSE and pauses[-1] == MAX_PAUSE
    brake.start()
    brake.end(None)
    clock.now += QUIET + 1
    brake.start()
    brake.end(FAILED)
    assert brake.pause == FIRST_PAUSE


def test_only_the_platforms_set_up_failure_brakes() -> None:
    """A function that fails its own Init (an exit, a crash, even one with status 4) is not braked: only output that
    starts with the sandbox's line is, and a function printing it first brakes only its own pool."""
    brake = SetupFailures("f", Clock())
    for output in (b"", b"Traceback ...\n", b"x" + SANDBOX_FAILED_LINE):
        brake.start()
        brake.end(output)
    brake.start()
