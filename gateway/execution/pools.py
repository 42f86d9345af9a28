"""All the pools of the node: which pool serves a version, node memory, provisioning, reaping.

`PoolManager.pool_for(config)` is the invoke path's one dict lookup. Before every fork a pool asks
`make_room()`: the sum of MemorySize over live environments stays within the node's memory budget, by
evicting idle on-demand environments of other functions, least recently used first; if that is not
enough the invocation is throttled (429). `reconcile()` makes each version's provisioned environments
match the registry's provisioned concurrency configs (an alias's config applies to the version it names);
it runs after every change to them (gateway.changes), when a zygote becomes ready, and on every reaper tick,
which also replaces provisioned environments that died and reaps idle on-demand ones after the idle timeout.

Concurrency: event loop only; provisioning runs in tasks the manager owns and cancels on close().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from gateway.errors import TooManyRequestsException
from gateway.execution.admission import ACCOUNT_EXCEEDED, RATE_EXCEEDED
from gateway.execution.modes import pool_class
from gateway.execution.pool import Pool, PoolCensus
from gateway.execution.setup_failures import SetupFailures
from gateway.execution.zygote import Zygote, ZygoteUnavailable
from gateway.isolation.credentials import max_environment_age
from gateway.isolation.freezer import FreezeQueue
from gateway.settings import Settings
from gateway.store.records import FunctionConfig

log = logging.getLogger("gateway.pool")

#: what the registry wants provisioned: (the version's configuration, environments)
Provisioning = Callable[[], Iterable[tuple[FunctionConfig, int]]]
#: the variables that let a new environment call the API back (session credentials)
Credentials = Callable[[FunctionConfig], dict[str, str]]


class PoolManager:
    """Maps each function version to its current pool; owns node memory and provisioning.

    Providers, given by the application: `provisioning` (without it nothing is provisioned) and `credentials` (without
    it environments get none).
    """

    def __init__(
        self,
        settings: Settings,
        zygotes: Mapping[str, Zygote],
        provisioning: Provisioning | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.zygotes = zygotes
        self.memory_budget = settings.memory_budget_mb
        self.pools: dict[tuple[str, str], Pool] = {}
        #: retired pools whose busy environments have not been released yet
        self.retired: list[Pool] = []
        self.provisioning = provisioning
        self.credentials = credentials
        #: environments are retired at this age, before their session credentials expire (gateway.isolation.credentials)
        self.max_age = max_environment_age(settings.session_ttl)
        self._tasks: set[asyncio.Task[None]] = set()
        #: freezes the idle environments of every pool (gateway/isolation/freezer.py)
        self.freezing = FreezeQueue()
        #: each function's brake on cold starts while its environments cannot be set up, shared by its pools
        self.setup_failures: dict[str, SetupFailures] = {}

    def pool_for(self, config: FunctionConfig) -> Pool:
        """The pool serving exactly this configuration snapshot (hot path: one dict lookup)."""
        key = (config.name, config.version)
        pool = self.pools.get(key)
        if pool is None or pool.config.revision_id != config.revision_id:
            if pool is not None:  # a newer revision (new code or configuration): its successor cold-starts now
                self._retire(pool, replaced=True)
            zygote = self.zygotes.get(config.runtime)
            if zygote is None:
                raise ZygoteUnavailable(f"no zygote serves runtime {config.runtime}")
            pool = self.pools[key] = pool_class(config)(
                config, self.settings, zygote, self.make_room, self.freezing, self.credentials
            )
            # one brake per function, whichever of its pools (versions, replaced code) hits a set-up failure
            pool.setup_failures = self.setup_failures.setdefault(config.name, pool.setup_failures)
        return pool

    def retire_function(self, name: str, version: str | None = None, replaced: bool = False) -> None:
        """Retire the pool of one version of a function, or of all its versions (after an update or delete);
        `replaced`: by new code or configuration (`Pool.retire`)."""
        for key in [k for k in self.pools if k[0] == name and version in (None, k[1])]:
            self._retire(self.pools.pop(key), replaced)
        if version is None:  # the function is gone: its brake with it
            self.setup_failures.pop(name, None)
        if not replaced:  # deleted: what an earlier update left leaving goes now too
            for pool in self.retired:
                if pool.config.name == name and version in (None, pool.config.version):
                    pool.shut_leaving()

    def _retire(self, pool: Pool, replaced: bool = False) -> None:
        pool.retire(replaced)
        if not pool.empty:
            self.retired.append(pool)

    def _all(self) -> list[Pool]:
        return [*self.pools.values(), *self.retired]

    # -- node memory -------------------------------------------------------------------------------

    def memory_in_use(self) -> int:
        """MB of MemorySize over live and starting environments."""
        return sum((len(p.environments) + p.spawning) * p.config.memory_size for p in self._all())

    def make_room(self, pool: Pool) -> None:
        """Make room for one more environment of `pool`, or raise TooManyRequestsException."""
        need = pool.config.memory_size
        used = self.memory_in_use()
        if used + need <= self.memory_budget:
            return
        candidates = sorted(  # a replaced pool's `leaving` environments first (shut soon anyway), then LRU
            (
                (env not in other.leaving, env.last_used, id(env), other, env)
                for other in self._all()
                if other is not pool
                for env in other.evictable()
            ),
        )
        for evicted, (_, _, _, other, env) in enumerate(candidates, 1):
            other.evict(env)
            used -= other.config.memory_size
            if used + need <= self.memory_budget:
                log.info("evicted %d idle environments to make room for %s", evicted, pool.config.name)
                return
        raise TooManyRequestsException(
            f"{RATE_EXCEEDED} No room on this node for another {need} MB environment "
            f"({used} of {self.memory_budget} MB in use).",
            ACCOUNT_EXCEEDED,
        )

    # -- provisioned concurrency ----------------------------------------------------------------------

    def reconcile(self, retry_failed: bool = False) -> None:
        """Set every pool's provisioned target from the registry and start forking what is missing.

        `retry_failed` also retries pools whose provisioning failed (a new PutProvisionedConcurrencyConfig).
        """
        if self.provisioning is None:
            return
        desired: dict[Pool, int] = {}
        for config, count in self.provisioning():
            try:
                pool = self.pool_for(config)
            except ZygoteUnavailable:
                continue
            desired[pool] = desired.get(pool, 0) + count
        for pool in list(self.pools.values()):
            pool.set_provisioned_target(desired.get(pool, 0), retry_failed)
            if pool.provisioned_target > len(pool.provisioned) + pool.provisioning:
                task = asyncio.get_running_loop().create_task(pool.ensure_provisioned())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def provisioned_target(self, name: str, version: str) -> int:
        """How many provisioned environments the version's current pool keeps (0: none, or no pool)."""
        pool = self.pools.get((name, version))
        return 0 if pool is None else pool.provisioned_target

    def provisioned_available(self, config: FunctionConfig) -> tuple[int, str | None]:
        """(live provisioned environments, provisioning error) of a version."""
        pool = self.pools.get((config.name, config.version))
        if pool is None or pool.config.revision_id != config.revision_id:
            return 0, None
        return pool.provisioned_available, pool.provisioning_error

    # -- housekeeping ------------------------------------------------------------------------------

    def reap(self) -> int:
        now = time.monotonic()
        cutoff = now - self.settings.idle_timeout
        for pool in self._all():
            pool.born_before = now - self.max_age
        reaped = sum(pool.reap(cutoff) for pool in self.pools.values())
        for key in [k for k, p in self.pools.items() if p.empty]:
            del self.pools[key]
        self.retired = [p for p in self.retired if not p.empty]
        return reaped

    async def reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval)
            try:
                reaped = self.reap()
                if reaped:
                    log.debug("reaped %d idle environments", reaped)
                self.reconcile()
            except Exception:
                log.exception("reaper tick failed")

    def censuses(self) -> Iterator[PoolCensus]:
        """Every pool's census, retired pools included (their busy environments still run)."""
        for pool in self._all():
            yield pool.census()

    def code_in_use(self) -> set[str]:
        """The code digests (function code and layers) live or starting environments run from, retired pools'
        included: the code collector keeps them."""
        digests: set[str] = set()
        for pool in self._all():
            if pool.in_use:
                digests.add(pool.config.code_sha256)
                digests.update(layer.code_sha256 for layer in pool.config.layers)
        return digests

    def count(self) -> int:
        return sum(len(p.environments) for p in self._all())

    def close(self) -> None:
        """Kill every environment, busy or idle (call after draining)."""
        for task in self._tasks:
            task.cancel()
        self.freezing.close()
        for pool in self._all():
            pool.kill_all()
        self.pools.clear()
        self.retired.clear()
        with contextlib.suppress(RuntimeError):
            self._tasks.clear()
