"""What follows a change to the registry: the gateway's update and delete policy, in one place.

The registry tells `Registry.on_change` of every write (a `gateway.store.records.Change`) on the writer's thread;
`ChangePolicy.follow` is connected there and hops to the event loop, where pools, metrics and the log store live.
There, `apply()`:

- retires what ran the old code: after `$LATEST` is updated, a version deleted or a function deleted, the pools
  of that version (of every version) are retired (their environments finish what they run, then go), the
  metrics series and log streams of a deleted version or function are forgotten (an update keeps `$LATEST`'s),
  the code collector is asked to look for packages nothing uses now, and a deleted function's reserved
  concurrency is dropped from admission;
- tells admission what each function's provisioned concurrency serves (`provisioned_slots`: it counts against
  the reservation) and reconciles provisioned concurrency (`PoolManager.reconcile`) after every change but those
  that cannot move it
  (`KEEPS_PROVISIONING`: a new function, a new `$LATEST`, a new version; a provisioned config names a published
  version or an alias, and neither changes then). A put of a config also retries a FAILED one. The routes do not
  reconcile by hand: this is the one place; the reaper's tick and a runtime's readiness (`runtime_ready`) are
  the others, for what a change does not cause (environments that died, a zygote that restarted).

Ordering, which lets a route answer with the state its write caused (e.g. PutProvisionedConcurrencyConfig's
counts) and a test read it right after: a route writes with `await asyncio.to_thread(registry.write, ...)`. The
registry calls `follow` inside the write, before the worker thread returns, so `call_soon_threadsafe(apply)` is
queued on the loop before `to_thread`'s own completion callback (queued by the same thread, later); the loop
runs its callbacks in that order (asyncio and uvloop alike), so `apply` has run when the route's `await`
resumes. A write made on the loop thread itself (none today) would see `apply` run at the next loop iteration.

`provisioning(registry)` is the provider `PoolManager.reconcile` reads the wanted state from.

Concurrency: `follow` from any thread; everything else on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Protocol

from gateway.errors import ResourceNotFoundException
from gateway.execution.pools import Provisioning
from gateway.store.records import LATEST, Change, Changed, FunctionConfig
from gateway.store.registry import Registry

#: changes after which the pools of `Change.qualifier` (None: of every version) run code or settings that are gone
RETIRES = frozenset({Changed.LATEST_UPDATED, Changed.VERSION_DELETED, Changed.FUNCTION_DELETED})
#: changes that cannot add, move or remove a provisioned config's environments: no reconcile after them
KEEPS_PROVISIONING = frozenset({Changed.FUNCTION_CREATED, Changed.LATEST_UPDATED, Changed.VERSION_PUBLISHED})


class Pools(Protocol):
    """What the policy needs of `gateway.execution.pools.PoolManager`."""

    def retire_function(self, name: str, version: str | None = None, replaced: bool = False) -> None: ...

    def reconcile(self, retry_failed: bool = False) -> None: ...


class Forgets(Protocol):
    """A keeper of per-version state: `gateway.observability.metrics.Metrics`, `...logstore.LogStore`."""

    def forget(self, function: str, version: str | None = None) -> None: ...


class Collector(Protocol):
    """`gateway.store.codegc.CodeCollector`: `request()` asks for a collection soon."""

    def request(self) -> None: ...


class Reservations(Protocol):
    """`gateway.execution.admission.Concurrency`: the reservations admission enforces."""

    def set_reserved(self, name: str, value: int | None) -> None: ...

    def set_provisioned(self, name: str, served: dict[str, tuple[str, int]]) -> None: ...


class ChangePolicy:
    """Keeps pools, metrics, logs, code and admission in step with the registry (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pools: Pools,
        metrics: Forgets,
        logs: Forgets,
        collector: Collector,
        reservations: Reservations,
        slots: Callable[[str], dict[str, tuple[str, int]]] | None = None,
    ) -> None:
        """`slots(function)` is `provisioned_slots` over the registry: what admission counts as provisioned."""
        self.loop = loop
        self.slots = slots
        self.pools = pools
        self.metrics = metrics
        self.logs = logs
        self.collector = collector
        self.reservations = reservations

    def follow(self, change: Change) -> None:
        """`Registry.on_change` observer, on the writer's thread: `apply` the change on the event loop."""
        self.loop.call_soon_threadsafe(self.apply, change)

    def apply(self, change: Change) -> None:
        """Do what follows `change` (event loop only)."""
        if change.what in RETIRES:
            self._retire(change.function, change.qualifier, replaced=change.what is Changed.LATEST_UPDATED)
            if change.what is Changed.FUNCTION_DELETED:  # the function is gone, and its reservation with it
                self.reservations.set_reserved(change.function, None)
        if change.what not in KEEPS_PROVISIONING:
            if self.slots is not None:
                self.reservations.set_provisioned(change.function, self.slots(change.function))
            self.pools.reconcile(retry_failed=change.what is Changed.PROVISIONED_PUT)  # a Put retries a FAILED one

    def _retire(self, name: str, version: str | None, replaced: bool = False) -> None:
        self.pools.retire_function(name, version, replaced)
        self.metrics.forget(name, version)  # a deleted function's (version's) series and log files go with it
        if version != LATEST:
            self.logs.forget(name, version)
        self.collector.request()  # and its code, once nothing else uses it

    def runtime_ready(self) -> None:
        """`Zygote.on_ready` observer: provisioned environments come back as soon as a runtime can fork."""
        self.pools.reconcile()


def provisioning(registry: Registry) -> Provisioning:
    """What the registry wants provisioned, for `PoolManager.reconcile`: (a version's configuration, environments)
    for each provisioned concurrency config; an alias's config provisions the version the alias names."""

    def wanted() -> Iterator[tuple[FunctionConfig, int]]:
        for prov in registry.provisioned_configs():
            try:
                yield registry.resolve(prov.function, prov.qualifier), prov.requested
            except ResourceNotFoundException:
                continue

    return wanted


def provisioned_slots(registry: Registry, name: str) -> dict[str, tuple[str, int]]:
    """What the function's provisioned concurrency serves, for `Concurrency.set_provisioned`: {a qualifier an
    invocation may name: (the config's qualifier, its environments)}. A config serves its own qualifier, the
    version it provisions and the aliases that name that version; empty when the function has none (or is gone)."""
    served: dict[str, tuple[str, int]] = {}
    try:
        configs = registry.provisioned_configs(name)
        aliases = registry.aliases(name) if configs else []
        for prov in configs:
            slot = (prov.qualifier, prov.requested)
            version = registry.resolve(name, prov.qualifier).version
            served[prov.qualifier] = served[version] = slot
            served.update((a.name, slot) for a in aliases if a.function_version == version and a.name not in served)
    except ResourceNotFoundException:
        return {}
    return served
