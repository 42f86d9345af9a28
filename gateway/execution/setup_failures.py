"""A pool's brake for environments that cannot be set up: no fork per invocation while every fork fails.

An environment whose sandbox cannot be set up (the host has no room: no port left on the environments' bridges, no
free uid, a cgroup it cannot make) exits before any user code, its output starting with SANDBOX_FAILED_LINE. Without
a brake, a loaded function forks one per invocation, each dies in milliseconds, and the zygote forks in a loop
(issue 19: ~40 forks a second, the zygote at 70 % of a CPU). With it, after such a death the pool forks nothing for
a pause (FIRST_PAUSE, doubling with each further failure up to MAX_PAUSE); then one fork at a time tries again until
one gets past its set-up (a READY, or a death of the function's own: set-up worked). Meanwhile its cold starts fail
at once with ZygoteUnavailable (Invoke: ServiceException, "try again"). The log says why once a minute at most.

Per pool, not per zygote: a function can print the line itself and exit, and so brakes only its own cold starts.
Concurrency: the event loop's thread only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from gateway.contracts.zygote import SANDBOX_FAILED_LINE
from gateway.execution.zygote import ZygoteUnavailable

log = logging.getLogger("gateway.pool")

FIRST_PAUSE = 0.1
MAX_PAUSE = 5.0
#: a failure this long after the last (or after a set-up that worked) starts over at FIRST_PAUSE
QUIET = 30.0
#: seconds between two log lines about one pool's failures
LOG_EVERY = 60.0


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

    def start(self) -> None:
        """Before a fork: raise ZygoteUnavailable while paused, or while another fork tries after failures."""
        now = self.clock()
        if self.failing and (now < self.until or self.trying):
            wait = max(self.until - now, 0.0)
            raise ZygoteUnavailable(f"environments could not be set up ({self.reason}); next try in {wait:.1f} s")
        self.trying = self.failing

    def end(self, output: bytes | None) -> None:
        """After `start`: None, the environment got past its set-up (or the fork failed otherwise); else it died in
        Init having printed `output`."""
        self.trying = False
        if output is None or not output.startswith(SANDBOX_FAILED_LINE):
            self.failing = False
            return
        now = self.clock()
        fresh = not self.failing and now - self.until > QUIET
        self.pause = FIRST_PAUSE if fresh else min(max(self.pause, FIRST_PAUSE) * 2, MAX_PAUSE)
        self.failing, self.until = True, now + self.pause
        self.reason = output[len(SANDBOX_FAILED_LINE) :].split(b"\n", 1)[0].decode(errors="replace")[:200]
        if now - self.logged >= LOG_EVERY:
            self.logged = now
            log.error("environments of %s cannot be set up (%s): no cold start for %.1f s, then one at a time "
                      "until one works (said once a minute)", self.name, self.reason, self.pause)  # fmt: skip
