"""Freezing idle environments, as Lambda freezes an execution environment between invocations.

An environment that has answered and holds no invocation is frozen (its cgroup: v1's freezer, v2's cgroup.freeze)
and thawed when the next INVOKE goes out, so nothing a handler left running (threads, subprocesses, timers) gets
CPU between invocations. Each environment's freeze file stays open (`Freezer`), so a freeze or a thaw is one
write(2) on the event loop, no path lookup. Who calls what (the contract execution.pool and execution.environment keep):

- the pool hands an environment to the `FreezeQueue` when it goes idle: back on its idle or warm stack, a shared
  environment (async handlers) whose last invocation ended, a provisioned one that is ready. The queue freezes it
  once it has stayed idle FREEZE_AFTER, within twice that: one timer, at most one sweep per FREEZE_AFTER, freezes
  them together, and an environment invoked again within that window (steady traffic) is never frozen at all.
  Measured here (warm invocations on one connection, ~1,700/s): freezing at once cost the gateway two writes and
  the environment a wake-up per invocation; a sweep re-armed for the next entry, one timer per invocation, ~200 us
  of the gateway's CPU each; one sweep per period, ~1 us per release (an append) and no measurable difference.
  Never frozen: one with an invocation in flight;
- `Environment.invoke` thaws it right after writing the INVOKE frame (the frame waits in the socket; the thawed
  process reads it at once, one wake-up instead of two);
- `Environment.kill` thaws it after its SIGKILL: a task in a frozen v1 group acts on a signal only once thawed;
  thawing after the signal lets no user code run. Its groups' removal (gateway.isolation.cgroups) thaws what is left.

Where the group cannot be frozen (no freezer, the group gone), `open` answers None and the environment just runs
unfrozen; a write that fails later disables freezing for that environment (logged once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING

from gateway.isolation.cgroups import FREEZE_FILES, Hierarchy

if TYPE_CHECKING:
    from gateway.execution.environment import Environment

log = logging.getLogger("gateway.freezer")

#: seconds an environment stays idle before it is frozen (it is, within twice that): what a handler's leftovers may
#: still run after it answered. 50 ms, not 5: under a closed loop of 32 connections each environment waits ~10-20 ms
#: between its invocations, and at 5 ms nearly every invocation paid a thaw and a freeze (two cgroup writes in the
#: gateway, a wake-up of the environment into the freezer): 307 -> 260 us of gateway CPU per invocation, 2,674 ->
#: 3,290 invocations/s when no environment was frozen under load (bench/profile.py, issue 19).
FREEZE_AFTER = 0.05


class Freezer:
    """The open freeze file of one environment's group. Event loop only; not thread-safe."""

    __slots__ = ("_fd", "_freeze", "_thaw", "frozen")

    def __init__(self, fd: int, version: int) -> None:
        self._fd = fd
        _, _, self._freeze, self._thaw = FREEZE_FILES[version]
        #: whether the last write froze the group (it may still be on its way to frozen: that is fine)
        self.frozen = False

    @classmethod
    def open(cls, hierarchy: Hierarchy | None, environment: str) -> Freezer | None:
        """The freezer of the environment named `environment` (its directory's name), or None."""
        if hierarchy is None:
            return None
        path = hierarchy.freeze_file(environment)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return None
        return cls(fd, hierarchy.version)

    def freeze(self) -> None:
        if not self.frozen and self._fd >= 0:
            self._write(self._freeze)
            self.frozen = self._fd >= 0

    def thaw(self) -> None:
        if self.frozen:
            self.frozen = False
            self._write(self._thaw)

    def close(self) -> None:
        """Thaw (a killed process must be able to die) and close the file. Idempotent."""
        self.thaw()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write(self, value: bytes) -> None:
        try:
            os.write(self._fd, value)
        except OSError as exc:  # the group is gone (the environment died under us): nothing to freeze any more
            log.warning("cannot freeze or thaw an environment's group: %s", exc)
            os.close(self._fd)
            self._fd = -1


class FreezeQueue:
    """Environments gone idle, in the order they did; frozen once idle `after` (within 2 * `after`). Event loop only.

    One timer at most, armed while the queue holds anything. An entry whose environment was used again since (its
    `last_used` is newer), is busy, or is dead, is dropped: its next release queues it again.
    """

    def __init__(self, after: float = FREEZE_AFTER) -> None:
        self.after = after
        self._queue: deque[tuple[float, Environment]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def idle(self, env: Environment) -> None:
        """`env` has no invocation left (call after its last one ended): freeze it unless it is used again soon."""
        if env.freezer is None:
            return
        self._queue.append((time.monotonic(), env))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.after, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        cutoff = time.monotonic() - self.after
        queue = self._queue
        while queue and queue[0][0] <= cutoff:
            _, env = queue.popleft()
            if env.last_used <= cutoff:
                env.freeze()
        if queue:  # not sooner than `after` from now: under steady traffic, one sweep per period, not per release
            self._timer = asyncio.get_running_loop().call_later(max(queue[0][0] - cutoff, self.after), self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
