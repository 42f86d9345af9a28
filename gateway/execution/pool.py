"""Environments of one function version: acquire, release, provision, reap, retire.

A `Pool` holds the environments of exactly one configuration snapshot (name, version, revision).
`acquire()` serves, in this order: an idle provisioned environment, the most recently used idle on-demand
one (a stack, O(1)), or a newly forked one (a cold start). Provisioned environments are forked ahead of
traffic up to `provisioned_target`, never reaped and never evicted for on-demand work. For functions that
opt in to several invocations per environment (`max_concurrency` > 1), environments stay shareable while
they have free slots. Idle environments go to the freeze queue (isolation/freezer.py): when they go back on a stack,
when a shared one's last invocation ends, and when a provisioned one is ready. A retired pool takes no new invocations:
idle environments are shut at once, busy ones when released, so no invocation that resolved newer configuration
runs the old code or settings.

Concurrency: everything runs on the event loop; only `_spawn()` and `ensure_provisioned()` await.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable

from gateway.errors import TooManyRequestsException
from gateway.execution.environment import Environment, connect
from gateway.execution.spec import environment_spec
from gateway.execution.zygote import READY_WAIT, Zygote, ZygoteUnavailable
from gateway.isolation.freezer import FreezeQueue, Freezer
from gateway.settings import Settings
from gateway.store.records import FunctionConfig

log = logging.getLogger("gateway.pool")

ON_DEMAND = "on-demand"
PROVISIONED = "provisioned-concurrency"


class Pool:
    """The environments of one configuration snapshot."""

    def __init__(
        self,
        config: FunctionConfig,
        settings: Settings,
        zygote: Zygote,
        make_room: Callable[[Pool], None],
        freezing: FreezeQueue | None = None,
    ) -> None:
        self.config = config
        self.freezing = freezing  # where idle environments go to be frozen; None: never frozen
        self.settings = settings
        self.zygote = zygote
        self.make_room = make_room  # before a fork: free node memory for one more environment, or raise
        self.idle: list[Environment] = []  # on-demand, most recently used last
        self.warm: list[Environment] = []  # idle provisioned environments
        self.shared: list[Environment] = []  # max_concurrency > 1: every live environment, newest last
        self.environments: set[Environment] = set()
        self.provisioned: set[Environment] = set()
        self.provisioned_target = 0
        self.provisioning = 0  # provisioned environments being forked now
        self.provisioning_error: str | None = None
        self.retired = False
        self.spawning = 0
        #: what lets a new environment call the API back (`PoolManager.credentials`), minted per environment
        self.credentials: Callable[[FunctionConfig], dict[str, str]] | None = None
        #: environments started before this (monotonic) are shut when idle: their credentials are about to expire
        self.born_before = -math.inf

    # -- serving -----------------------------------------------------------------------------------

    async def acquire(self) -> tuple[Environment, bool]:
        """An environment for one invocation, and whether it was just created (a cold start)."""
        if self.config.max_concurrency > 1:
            return await self._acquire_shared()
        for stack in (self.warm, self.idle):
            while stack:
                env = stack.pop()
                if not env.dead:
                    return env, False
                self._forget(env)
        return await self._spawn(), True

    async def _acquire_shared(self) -> tuple[Environment, bool]:
        for env in reversed(self.shared):
            if not env.dead and env.load < env.capacity:
                env.load += 1
                return env, False
        env = await self._spawn()
        env.load += 1
        self.shared.append(env)
        return env, True

    def release(self, env: Environment) -> None:
        """Give an environment back after an invocation; dead, failed-init or retired ones are discarded."""
        if self.config.max_concurrency > 1:
            env.load -= 1
            surplus = env.provisioned and len(self.provisioned) > self.provisioned_target
            aged = env.started < self.born_before
            if env.dead or self.retired or env.init_error is not None or aged or (surplus and env.load <= 0):
                if env in self.shared:
                    self.shared.remove(env)
                if env.load <= 0:
                    self._discard(env)
            elif env.load <= 0:  # its last invocation ended: idle until the next
                self._went_idle(env)
            return
        if env.dead or self.retired or env.init_error is not None or env.started < self.born_before:
            self._discard(env)
        elif env.provisioned:
            if len(self.provisioned) > self.provisioned_target:
                self._discard(env)  # provisioned concurrency was lowered while it ran
            else:
                self.warm.append(env)
                self._went_idle(env)
        else:
            self.idle.append(env)
            self._went_idle(env)

    def _went_idle(self, env: Environment) -> None:
        if self.freezing is not None:
            self.freezing.idle(env)

    async def _spawn(self, init_type: str = ON_DEMAND) -> Environment:
        config = self.config
        self.make_room(self)
        if not self.zygote.ready:  # whether it jails (the spec's paths depend on it) is known once it said HELLO
            with contextlib.suppress(TimeoutError):  # fork() then waits again, and says ZygoteUnavailable
                await self.zygote.wait_ready(READY_WAIT)
        credentials = self.credentials(config) if self.credentials else None
        spec = environment_spec(config, self.settings, init_type, self.zygote.jailed, credentials)
        self.spawning += 1  # counted as starting until it is one of `environments`: never both
        try:
            env = await connect((config.name, config.version), await self.zygote.fork(spec))
        except BaseException:
            self.spawning -= 1
            raise
        env.initialization_type = init_type
        self.environments.add(env)
        self.spawning -= 1
        try:
            await env.wait_ready()
        except BaseException:
            self.environments.discard(env)
            env.kill("init failed")
            raise
        if self.freezing is not None and self.zygote.jailed and self.zygote.sandbox.freezes and not env.dead:
            env.freezer = Freezer.open(self.zygote.sandbox.cgroups, os.path.basename(env.env_dir))
        return env

    # -- provisioned concurrency -------------------------------------------------------------------

    async def ensure_provisioned(self) -> None:
        """Fork and initialize provisioned environments until `provisioned_target` are live.

        An Init failure stops provisioning (`provisioning_error`; the config's status is FAILED) rather
        than retrying in a loop; setting a target again clears it.
        """
        missing = self.provisioned_target - len(self.provisioned) - self.provisioning
        if missing <= 0 or self.retired or self.provisioning_error is not None:
            return
        self.provisioning += missing
        results = await asyncio.gather(*(self._spawn(PROVISIONED) for _ in range(missing)), return_exceptions=True)
        self.provisioning -= missing
        for result in results:
            if isinstance(result, ZygoteUnavailable | TooManyRequestsException):
                continue  # transient (runtime restarting, node full): the next reconcile tries again
            if isinstance(result, BaseException):
                self.provisioning_error = f"{type(result).__name__}: {result}"
                continue
            env = result
            if env.init_error is not None:
                self.provisioning_error = f"{env.init_error['errorType']}: {env.init_error['errorMessage']}"
                self._discard(env)
            elif self.retired or len(self.provisioned) >= self.provisioned_target:
                self._discard(env)
            else:
                self.provisioned.add(env)
                if self.config.max_concurrency > 1:
                    self.shared.append(env)
                else:
                    self.warm.append(env)
                self._went_idle(env)
        if self.provisioning_error is not None:
            log.warning("provisioning %s:%s failed: %s", self.config.name, self.config.version, self.provisioning_error)

    def set_provisioned_target(self, target: int, retry_failed: bool = False) -> None:
        """Change how many provisioned environments this pool keeps; idle extras are shut at once.

        A new target (or `retry_failed`, for a Put of the same value) clears a provisioning failure.
        """
        if target != self.provisioned_target or retry_failed:
            self.provisioning_error = None
        self.provisioned_target = target
        while len(self.provisioned) > target and self.warm:
            self._discard(self.warm.pop(0))
        idle_shared = [e for e in self.shared if e.provisioned and e.load <= 0]
        while len(self.provisioned) > target and idle_shared:  # busy ones go when released
            env = idle_shared.pop(0)
            self.shared.remove(env)
            self._discard(env)

    @property
    def provisioned_available(self) -> int:
        return sum(1 for env in self.provisioned if not env.dead)

    # -- housekeeping ------------------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return not self.environments and not self.spawning and not self.provisioned_target

    def evictable(self) -> list[Environment]:
        """Idle on-demand environments, which may be shut to make room on the node (never provisioned ones)."""
        if self.config.max_concurrency > 1:
            return [e for e in self.shared if e.load <= 0 and not e.provisioned]
        return list(self.idle)

    def evict(self, env: Environment) -> None:
        if env in self.idle:
            self.idle.remove(env)
        if env in self.shared:
            self.shared.remove(env)
        self._discard(env)

    def reap(self, cutoff: float) -> int:
        """Shut idle on-demand environments unused since `cutoff` (monotonic seconds); return how many."""
        old = self.born_before
        stale = [e for e in self.evictable() if e.dead or e.last_used < cutoff or e.started < old]
        for env in stale:
            self.evict(env)
        for stack in (self.warm, self.shared):  # provisioned ones that died or aged: forget them, provisioning replaces
            for env in [e for e in stack if (e.dead or e.started < old) and e.load <= 0]:
                stack.remove(env)
                self._discard(env)
        return len(stale)

    def retire(self) -> None:
        """No new invocations here: shut idle environments now, busy ones when they are released."""
        self.retired = True
        self.provisioned_target = 0
        for env in [*self.idle, *self.warm, *(e for e in self.shared if e.load <= 0)]:
            self._discard(env)
        self.idle.clear()
        self.warm.clear()
        self.shared = [e for e in self.shared if e.load > 0]

    def kill_all(self) -> None:
        self.retire()
        for env in list(self.environments):
            env.kill("gateway stopping")
        self.environments.clear()
        self.provisioned.clear()

    def _discard(self, env: Environment) -> None:
        self._forget(env)
        env.shutdown()

    def _forget(self, env: Environment) -> None:
        self.environments.discard(env)
        self.provisioned.discard(env)
