"""Typed aiohttp application keys: the gateway's shared state, set once at start-up."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.codestore import CodeStore
    from gateway.concurrency import Concurrency
    from gateway.config import Settings
    from gateway.invoker import Invoker
    from gateway.layers import LayerStore
    from gateway.metrics import Metrics
    from gateway.pool_manager import PoolManager
    from gateway.registry import Registry
    from gateway.sessions import SessionAuthority
    from gateway.zygote import Zygote

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
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
#: mints and verifies functions' session credentials (gateway.sessions)
SESSIONS: web.AppKey[SessionAuthority] = web.AppKey("sessions")
