"""Removes function code nothing uses any more: the code store's garbage collector.

A package (zip and extracted tree, by SHA-256) is kept while a function version or a live layer version references
it (an alias references a version, so its code is kept through the version) and while a live environment runs from
it (a deleted function's environments still finishing a call, being killed). The collector lists those references
on the event loop, the only thread that reads pools, and removes the rest in a worker thread
(`CodeStore.collect`, which also honours the leases of packages stored but not registered yet).

It runs at start-up (what a crash or an older version left), soon after every change of a function (`request()`),
and every `SWEEP_INTERVAL` seconds in any case (deleted layer versions, environments that finished since).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.store.code import CodeStore
from gateway.store.layers import LayerStore
from gateway.store.registry import Registry

log = logging.getLogger("gateway.codestore")

#: seconds between two collections when nothing asked for one
SWEEP_INTERVAL = 60.0
#: seconds a request waits, so that a burst of deletions makes one collection
DEBOUNCE = 0.2


class CodeCollector:
    """Owns the collection task (`run()`); `request()` asks for a collection soon. Event loop only."""

    def __init__(
        self, codestore: CodeStore, registry: Registry, layers: LayerStore, in_use: Callable[[], set[str]]
    ) -> None:
        """`in_use`: the digests live environments run from (`PoolManager.code_in_use`), read on the event loop."""
        self.codestore = codestore
        self.registry = registry
        self.layers = layers
        self.in_use = in_use
        self._wake = asyncio.Event()
        self._wake.set()  # the first collection runs at start-up
        #: a package was kept only because an environment still runs from it: look again on the next reap tick
        self._in_use = False

    def request(self) -> None:
        self._wake.set()

    def references(self) -> set[str]:
        """Every digest referenced now: by function versions, live layer versions and live environments."""
        return self.registry.code_digests() | self.layers.code_digests() | self.in_use()

    async def collect(self) -> list[str]:
        """One collection: references listed here, removal in a thread; the removed digests."""
        taken_at = time.monotonic()
        keep = self.references()
        registered = self.registry.code_digests() | self.layers.code_digests()
        self._in_use = bool(keep - registered)
        return await asyncio.to_thread(self.codestore.collect, keep, taken_at)

    async def run(self, recheck_interval: float) -> None:
        """Collect when asked, every `recheck_interval` s while an environment holds unreferenced code, and every
        SWEEP_INTERVAL s. Never raises (a failed collection is logged and retried later)."""
        while True:
            timeout = recheck_interval if self._in_use else SWEEP_INTERVAL
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
                await asyncio.sleep(DEBOUNCE)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.collect()
            except Exception:
                log.exception("code collection failed")
