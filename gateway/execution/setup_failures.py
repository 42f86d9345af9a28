"""A pool's brake for environments that cannot be set up: no fork per invocation while every fork fails.

An environment whose sandbox cannot be set up (the host has no room: no port left on the environments' bridges, no
free uid, a cgroup it cannot make) exits before any user code with ExitCode.SANDBOX_FAILED, its output starting with
SANDBOX_FAILED_LINE (both are required: a function would have to print the line and exit with that status). Without
a brake, a loaded function forks one per invocation, each dies in milliseconds, and the zygote forks in a loop
(issue 19: ~40 forks a second, the zygote at 70 % of a CPU). With it, after such a death the pool forks nothing for
a pause (FIRST_PAUSE, doubling with each further failure up to MAX_PAUSE); then one fork at a time tries again until
one gets past its set-up (a READY, or a death of the function's own: set-up worked). Meanwhile its cold starts fail
at once with ColdStartsPaused, a ZygoteUnavailable (Invoke: ServiceException, "try again"; the invoker does not log
it). The log says why, and how many cold starts were refused, in one line per pool a minute at most.

Per pool, not per zygote: a function can print the line itself and exit 4, and so brakes only its own cold starts.
What it printed is the reason: text a function may control, so it is logged with its control characters replaced and
cut to REASON_MAX characters, and never more than once a minute (it is not a channel to flood the gateway's log).
Concurrency: the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable

from gateway.contracts.zygote import SANDBOX_FAILED_LINE, ExitCode
from gateway.execution.failures import EnvironmentDied
from gateway.execution.zygote import ZygoteUnavailable

log = logging.getLogger("gateway.pool")

FIRST_PAUSE = 0.1
MAX_PAUSE = 5.0
#: a failure this long after the last (or after a set-up that worked) starts over at FIRST_PAUSE
QUIET = 30.0
#: seconds between two log lines about one pool's failures (and the cold starts refused meanwhile)
LOG_EVERY = 60.0
#: the most of the reason (the rest of SANDBOX_FAILED_LINE's line) kept and logged, in characters
REASON_MAX = 200
#: how long `died` waits for the zygote's word on how an environment that printed SANDBOX_FAILED_LINE ended
EXIT_WAIT = 0.2


class ColdStartsPaused(ZygoteUnavailable):
    """A fork refused: this pool's environments cannot be set up. Its pool logs that (once a minute); nobody else
    should, per invocation."""


def failed_in_set_up(output: bytes, wait_status: int | None) -> bool:
    """Whether an environment that printed `output` and ended with `wait_status` failed its sandbox's set-up: the
    status is exit ExitCode.SANDBOX_FAILED and the output starts with SANDBOX_FAILED_LINE."""
    if wait_status is None or not os.WIFEXITED(wait_status) or os.WEXITSTATUS(wait_status) != ExitCode.SANDBOX_FAILED:
        return False
    return output.startswith(SANDBOX_FAILED_LINE)


def reason_of(output: bytes) -> str:
    """The reason an environment's SANDBOX_FAILED_LINE gives, safe to log: one line, control characters (and any
    other non-printable character: escapes, bidirectional overrides) as "?", at most REASON_MAX characters."""
    line = output[len(SANDBOX_FAILED_LINE) : len(SANDBOX_FAILED_LINE) + 4 * REASON_MAX].split(b"\n", 1)[0]
    text = line.decode(errors="replace")
    return "".join(c if c.isprintable() else "?" for c in text)[:REASON_MAX]


class SetupFailures:
    """One pool's record of its environments' set-up failures: `start` before a fork, `end` when it is known how
    the environment's set-up went."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.pause = 0.0
        self.until = -math.inf  # no fork before this
        self.failing = False  # since the last failure, no set-up has worked
        self.trying = False  # a fork is under way while failing: the others wait for its outcome
        self.reason = ""
        self.logged = -math.inf
        self.refused = 0  # cold starts refused since the last log line

    def start(self) -> None:
        """Before a fork: raise ColdStartsPaused while paused, or while another fork tries after failures."""
        now = self.clock()
        if self.failing and (now < self.until or self.trying):
            self.refused += 1
            self._say(now)
            wait = max(self.until - now, 0.0)
            raise ColdStartsPaused(f"environments could not be set up ({self.reason}); next try in {wait:.1f} s")
        self.trying = self.failing

    async def died(self, exc: EnvironmentDied) -> None:
        """After `start`: the environment died before it was READY. `end`, with how it exited when it printed
        SANDBOX_FAILED_LINE (waited for EXIT_WAIT at most: not known by then, it is not taken for a set-up
        failure)."""
        status: int | None = None
        try:
            if exc.output.startswith(SANDBOX_FAILED_LINE) and exc.exit_status is not None:
                status = await asyncio.wait_for(asyncio.shield(exc.exit_status), EXIT_WAIT)
        except Exception:  # not in time, or the zygote was lost: no status
            status = None
        finally:  # even when cancelled: `trying` must not stay set
            self.end(exc.output, status)

    def end(self, output: bytes | None, wait_status: int | None = None) -> None:
        """After `start`: None, the environment got past its set-up (or the fork failed otherwise); else it died in
        Init having printed `output`, and ended with `wait_status` (None: not known)."""
        self.trying = False
        if output is None or not failed_in_set_up(output, wait_status):
            self.failing = False
            return
        now = self.clock()
        fresh = not self.failing and now - self.until > QUIET
        self.pause = FIRST_PAUSE if fresh else min(max(self.pause, FIRST_PAUSE) * 2, MAX_PAUSE)
        self.failing, self.until = True, now + self.pause
        self.reason = reason_of(output)
        self._say(now)

    def _say(self, now: float) -> None:
        """Log why cold starts are paused, and how many were refused since: one line a minute at most."""
        if now - self.logged < LOG_EVERY:
            return
        self.logged = now
        log.error("environments of %s cannot be set up (%s): no cold start for %.1f s, then one at a time until one "
                  "works; %d cold starts refused since the last line (said once a minute)", self.name, self.reason,
                  self.pause, self.refused)  # fmt: skip
        self.refused = 0
