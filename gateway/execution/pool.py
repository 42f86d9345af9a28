"""Environments of one function version: acquire, release, provision, reap, retire, census.

A `Pool` holds the environments of exactly one configuration snapshot (name, version, revision).
`acquire()` serves, in this order: an idle provisioned environment, the most recently used idle on-demand
one (a stack, O(1)), or a newly forked one (a cold start). Provisioned environments are forked ahead of
traffic up to `provisioned_target`, never reaped and never evicted for on-demand work. For functions that
opt in to several invocations per environment (`max_concurrency` > 1), environments stay shareable while
they have free slots: how each mode holds and hands out environments is in gateway.execution.modes, which
also picks the mode (`pool_class`); this module does the rest once for both. Idle environments go to the freeze
queue (isolation/freezer.py): when they go back on a stack, when a shared one's last invocation ends, and when a
provisioned one is ready. A retired pool takes no new invocations: idle environments are shut at once, busy ones
when released, so no invocation that resolved newer configuration runs the old code or settings. What others
may read of a pool's insides is its `census()` (metrics) and `provisioned_target`.

Concurrency: everything runs on the event loop; only `_spawn()`, `acquire()` and `ensure_provisioned()` await.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

from gateway.errors import TooManyRequestsException
from gateway.execution.environment import Environment, EnvironmentDied, connect
from gateway.execution.setup_failures import SetupFailures
from gateway.execution.spec import environment_spec
from gateway.execution.zygote import READY_WAIT, Zygote, ZygoteUnavailable
from gateway.isolation.freezer import FreezeQueue, Freezer
from gateway.settings import Settings
from gateway.store.records import FunctionConfig

log = logging.getLogger("gateway.pool")

ON_DEMAND = "on-demand"
PROVISIONED = "provisioned-concurrency"
#: Lambda's shutdown phase with external extensions is 2 s; the environment ends itself within it (runtimes/proxy/
#: lifecycle.py), and is killed after this long if it has not
EXTENSIONS_SHUTDOWN_GRACE = 2.5
#: seconds the idle environments of a retired pool (new code or configuration, a deleted function) live on before they
#: are shut: the teardown of their mount and network namespaces and cgroups would otherwise run while the first
#: invocation of the new code cold-starts, contending for the kernel's locks (its sandbox took 1.5 ms to seal instead
#: of 0.7, and the first invoke right after UpdateFunctionCode 5-6.4 ms at p50 instead of 4.4: issue 19)
RETIRE_GRACE = 0.25


class PoolCensus(NamedTuple):
    """A pool's environments by state, counted when asked (metrics, at scrape time). Live environments only."""

    function: str
    version: str
    #: forks under way, Init running, and provisioned environments not handed to the pool yet
    initializing: int
    idle: int
    busy: int  # running at least one invocation
    #: invocations running, plus on-demand environments initializing for one (Lambda's ConcurrentExecutions)
    executions: int
    provisioned: int  # provisioned environments ready (allocated)
    provisioned_busy: int
    #: a provisioned target, or provisioned environments not yet released: provisioned gauges are reported
    provisioned_concurrency: bool


class Pool(ABC):
    """The environments of one configuration snapshot, whatever its mode.

    The two modes (gateway.execution.modes: one invocation per environment, or several) differ only in how they
    hold idle environments and hand them out. Each implements `acquire`/`release` (the hot path, without a branch
    on the mode) and five small hooks (`_waiting`, `_take`, `_drop_idle`, `_park`, `_running`); forking,
    provisioning, eviction, reaping, retiring and the census are written once, here, in terms of them.
    """

    def __init__(
        self,
        config: FunctionConfig,
        settings: Settings,
        zygote: Zygote,
        make_room: Callable[[Pool], None],
        freezing: FreezeQueue | None = None,
        credentials: Callable[[FunctionConfig], dict[str, str]] | None = None,
    ) -> None:
        self.config = config
        self.freezing = freezing  # where idle environments go to be frozen; None: never frozen
        self.settings = settings
        self.zygote = zygote
        self.make_room = make_room  # before a fork: free node memory for one more environment, or raise
        self.environments: set[Environment] = set()
        self.provisioned: set[Environment] = set()
        self.provisioned_target = 0
        self.provisioning = 0  # provisioned environments being forked now
        self.provisioning_error: str | None = None
        self.retired = False
        self.spawning = 0
        #: idle environments of a retired pool, shut once RETIRE_GRACE is over (see `retire`)
        self.leaving: set[Environment] = set()
        #: what lets a new environment call the API back (`PoolManager.credentials`), minted per environment
        self.credentials = credentials
        #: environments started before this (monotonic) are shut when idle: their credentials are about to expire
        self.born_before = -math.inf
        #: no fork per invocation while environments cannot be set up (gateway/execution/setup_failures.py)
        self.setup_failures = SetupFailures(config.name)
        self._hold_idle()

    # -- serving: what each mode implements --------------------------------------------------------

    @abstractmethod
    def _hold_idle(self) -> None:
        """Create the containers this mode keeps its idle (or shareable) environments in (from the constructor)."""

    @abstractmethod
    def take(self) -> Environment | None:
        """A warm environment for one invocation, handed out now; None if a cold start is needed (`acquire`)."""

    @abstractmethod
    async def acquire(self) -> tuple[Environment, bool]:
        """An environment for one invocation, and whether it was just created (a cold start)."""

    @abstractmethod
    def release(self, env: Environment) -> None:
        """Give an environment back after an invocation; dead, failed-init, aged or retired ones are discarded."""

    @abstractmethod
    def _waiting(self) -> list[Environment]:
        """The idle environments (ready, running nothing) this pool holds, oldest first; dead ones included."""

    @abstractmethod
    def _take(self, env: Environment) -> None:
        """Take `env` out of the idle ones, if it is there (before it is discarded)."""

    @abstractmethod
    def _drop_idle(self) -> list[Environment]:
        """Take every idle environment out and return them."""

    @abstractmethod
    def _park(self, env: Environment) -> None:
        """A provisioned environment is ready: make it available to `acquire`."""

    @abstractmethod
    def _running(self, env: Environment) -> int:
        """How many invocations a live environment that is not idle runs (for the census)."""

    # -- shared by both modes -------------------------------------------------------------------

    def _went_idle(self, env: Environment) -> None:
        if self.freezing is not None:
            self.freezing.idle(env)

    async def _spawn(self, init_type: str = ON_DEMAND) -> Environment:
        """A new environment, READY; ZygoteUnavailable at once while this pool's environments cannot be set up."""
        self.setup_failures.start()
        try:
            env = await self._fork_and_init(init_type)
        except EnvironmentDied as exc:
            await self.setup_failures.died(exc)
            raise
        except BaseException:
            self.setup_failures.end(None)
            raise
        self.setup_failures.end(None)
        return env

    async def _fork_and_init(self, init_type: str) -> Environment:
        config = self.config
        self.make_room(self)
        if not self.zygote.ready:  # whether it jails (the spec's paths depend on it) is known once it said HELLO
            with contextlib.suppress(TimeoutError):  # fork() then waits again, and says ZygoteUnavailable
                await self.zygote.wait_ready(READY_WAIT)
        credentials = self.credentials(config) if self.credentials else None
        zygote = self.zygote
        spec = environment_spec(
            config,
            self.settings,
            init_type,
            zygote.jailed,
            credentials,
            zygote.interpreter,
            program=zygote.programs.get(config.runtime),
        )
        self.spawning += 1  # counted as starting until it is one of `environments`: never both
        try:
            env = await connect((config.name, config.version), await self.zygote.fork(spec))
        except BaseException:
            self.spawning -= 1
            raise
        env.initialization_type = init_type
        if spec.extensions:  # Lambda's shutdown phase: its extensions get SHUTDOWN and this long to end
            env.shutdown_grace = EXTENSIONS_SHUTDOWN_GRACE
        self.environments.add(env)
        self.spawning -= 1
        try:
            await env.wait_ready()
        except BaseException:
            self.environments.discard(env)
            env.kill("init failed")
            raise
        # Extensions run between invocations (they finish one after the caller has its answer, deliver telemetry):
        # an environment that has them is never frozen, as Lambda freezes one only once its extensions are idle.
        freezable = not spec.extensions and not env.dead
        if self.freezing is not None and self.zygote.jailed and self.zygote.sandbox.freezes and freezable:
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
                self._park(env)
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
        spare = [env for env in self._waiting() if env.provisioned]
        while len(self.provisioned) > target and spare:  # the longest idle first; busy ones go when released
            env = spare.pop(0)
            self._take(env)
            self._discard(env)

    @property
    def provisioned_available(self) -> int:
        return sum(1 for env in self.provisioned if not env.dead)

    # -- housekeeping ------------------------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Whether an environment of this pool is live or starting (its code and layers are in use)."""
        return bool(self.environments) or self.spawning > 0

    @property
    def empty(self) -> bool:
        return not self.environments and not self.spawning and not self.provisioned_target

    def evictable(self) -> list[Environment]:
        """Idle on-demand environments, which may be shut to make room on the node (never provisioned ones), those of
        a retired pool that are `leaving` first."""
        return [*self.leaving, *(env for env in self._waiting() if not env.provisioned)]

    def evict(self, env: Environment) -> None:
        self._take(env)
        self.leaving.discard(env)
        self._discard(env)

    def reap(self, cutoff: float) -> int:
        """Shut idle on-demand environments unused since `cutoff` (monotonic seconds); return how many."""
        old = self.born_before
        stale = [e for e in self.evictable() if e.dead or e.last_used < cutoff or e.started < old]
        for env in stale:
            self.evict(env)
        for env in [e for e in self._waiting() if e.dead or e.started < old]:  # provisioned ones that died or aged:
            self._take(env)  # forget them, provisioning replaces them
            self._discard(env)
        return len(stale)

    def retire(self, replaced: bool = False) -> None:
        """No new invocations here: shut idle environments now, busy ones when they are released. `replaced` (new code
        or configuration: the next invocation cold-starts its successor) shuts the idle ones `RETIRE_GRACE` from now
        instead; until then they are `leaving`: idle, never handed out again, evicted first if room is needed."""
        self.retired = True
        self.provisioned_target = 0
        idle = self._drop_idle()
        try:
            loop = asyncio.get_running_loop() if replaced else None
        except RuntimeError:
            loop = None
        if loop is None or not idle:
            for env in idle:
                self._discard(env)
            return
        self.leaving.update(idle)
        loop.call_later(RETIRE_GRACE, self.shut_leaving)

    def shut_leaving(self) -> None:
        """Shut the `leaving` environments now (RETIRE_GRACE is over, or the function was deleted meanwhile)."""
        leaving, self.leaving = self.leaving, set()
        for env in leaving:
            self._discard(env)

    def kill_all(self) -> None:
        self.retire()
        for env in list(self.environments):
            env.kill("gateway stopping")
        self.leaving.clear()
        self.environments.clear()
        self.provisioned.clear()

    def _discard(self, env: Environment) -> None:
        self._forget(env)
        env.shutdown()

    def _forget(self, env: Environment) -> None:
        self.environments.discard(env)
        self.provisioned.discard(env)

    def census(self) -> PoolCensus:
        """Count the live environments by state (for metrics, at scrape time: one pass over them)."""
        waiting = set(self._waiting())
        initializing = self.spawning
        idle = busy = executions = provisioned = provisioned_busy = 0
        for env in self.environments:
            if env.dead:
                continue
            if not env.ready or (env.provisioned and env not in self.provisioned):
                initializing += 1  # Init running, or a provisioned one not handed to the pool yet
                continue
            running = 0 if env in waiting or env in self.leaving else self._running(env)
            if running > 0:
                busy += 1
                executions += running
            else:
                idle += 1
            if env in self.provisioned:
                provisioned += 1
                provisioned_busy += running > 0
        executions += max(initializing - self.provisioning, 0)  # on-demand ones start for an invocation
        return PoolCensus(
            self.config.name,
            self.config.version,
            initializing,
            idle,
            busy,
            executions,
            provisioned,
            provisioned_busy,
            self.provisioned_target > 0 or bool(self.provisioned),
        )
