"""Typed aiohttp application keys: the gateway's shared state, set once at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.catalog import Catalog
    from gateway.events.delivery import Delivery
    from gateway.events.dispatcher import Dispatcher
    from gateway.events.pollers.runner import Runner
    from gateway.events.queue import EventQueue
    from gateway.events.schedules import ScheduleRunner
    from gateway.execution.admission import Concurrency
    from gateway.execution.invoker import Invoker
    from gateway.execution.pools import PoolManager
    from gateway.execution.zygote import Zygote
    from gateway.isolation.credentials import SessionAuthority
    from gateway.isolation.network import HostNetwork
    from gateway.observability.metrics import Metrics
    from gateway.settings import Settings
    from gateway.store.code import CodeStore
    from gateway.store.code_signing import CodeSigningConfigs
    from gateway.store.event_configs import EventInvokeConfigs
    from gateway.store.function_urls import FunctionUrls
    from gateway.store.layers import LayerStore
    from gateway.store.mappings import Mappings
    from gateway.store.policies import Policies
    from gateway.store.registry import Registry
    from gateway.store.schedules import Schedules
    from gateway.store.signatures import SigningProfiles

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
#: Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s): per function, version or alias (gateway.store.event_configs)
EVENT_CONFIGS: web.AppKey[EventInvokeConfigs] = web.AppKey("event_configs")
#: the durable queue of asynchronous invocations (gateway.events.queue; SQLite by default)
EVENT_QUEUE: web.AppKey[EventQueue] = web.AppKey("event_queue")
#: runs queued events through admission and the pools, retries them, delivers their outcomes (gateway.events)
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
#: sends destination records and dead letters to SQS, SNS and EventBridge endpoints (gateway.events.delivery)
DELIVERY: web.AppKey[Delivery] = web.AppKey("delivery")
#: EventBridge Scheduler schedules (gateway.store.schedules) and the loop that fires them (gateway.events.schedules)
SCHEDULES: web.AppKey[Schedules] = web.AppKey("schedules")
SCHEDULE_RUNNER: web.AppKey[ScheduleRunner] = web.AppKey("schedule_runner")
#: event source mappings (gateway.store.mappings) and their pollers (gateway.events.pollers.runner)
MAPPINGS: web.AppKey[Mappings] = web.AppKey("mappings")
POLLERS: web.AppKey[Runner] = web.AppKey("pollers")
#: resource-based policies of functions (per qualifier) and layer versions (gateway.store.policies)
POLICIES: web.AppKey[Policies] = web.AppKey("policies")
#: function URL configs by (function, qualifier) and by URL id (gateway.store.function_urls)
FUNCTION_URLS: web.AppKey[FunctionUrls] = web.AppKey("function_urls")
#: code signing configurations and which function uses which (gateway.store.code_signing)
CODE_SIGNING: web.AppKey[CodeSigningConfigs] = web.AppKey("code_signing")
#: the signing profiles (public keys) the operator registered (GATEWAY_SIGNING_PROFILES; gateway.store.signatures)
SIGNING_PROFILES: web.AppKey[SigningProfiles] = web.AppKey("signing_profiles")
#: counts one answered request of the API: (request, response), called by the server once the answer went out
#: (gateway.api.server's `GatewayRequestHandler.log_access`; set by gateway.api.metrics)
RESPONSE_COUNTER: web.AppKey[Callable[[web.Request, web.StreamResponse], None]] = web.AppKey("response_counter")
