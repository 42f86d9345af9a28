"""Typed aiohttp application keys: the gateway's shared state, set once at start-up."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.catalog import Catalog
    from gateway.execution.admission import Concurrency
    from gateway.execution.invoker import Invoker
    from gateway.execution.pools import PoolManager
    from gateway.execution.zygote import Zygote
    from gateway.isolation.credentials import SessionAuthority
    from gateway.isolation.network import HostNetwork
    from gateway.observability.metrics import Metrics
    from gateway.settings import Settings
    from gateway.store.code import CodeStore
    from gateway.store.layers import LayerStore
    from gateway.store.registry import Registry

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
#: the runtimes this gateway runs (gateway/catalog.py), found once at start-up
CATALOG: web.AppKey[Catalog] = web.AppKey("catalog")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
CODESTORE: web.AppKey[CodeStore] = web.AppKey("codestore")
INVOKER: web.AppKey[Invoker] = web.AppKey("invoker")
CONCURRENCY: web.AppKey[Concurrency] = web.AppKey("concurrency")
#: serializes changes to reserved and provisioned concurrency: each checks the account-wide floor, then writes
CONCURRENCY_SETTINGS_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("concurrency_settings_lock")
LAYERS: web.AppKey[LayerStore] = web.AppKey("layers")
POOLS: web.AppKey[PoolManager] = web.AppKey("pools")
ZYGOTES: web.AppKey[dict[str, Zygote]] = web.AppKey("zygotes")
#: the Prometheus metrics (their registry is `METRICS.registry`), set with the runtimes
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
#: mints and verifies functions' session credentials (gateway.isolation.credentials)
SESSIONS: web.AppKey[SessionAuthority] = web.AppKey("sessions")
#: jail mode: the environments' network (`gateway_address`: where environments reach the gateway); None otherwise
NETWORK: web.AppKey[HostNetwork | None] = web.AppKey("network")
