"""The aiohttp application: wiring of storage, runtimes, pools and routes, and their lifetimes. Wiring only: what
follows a change to the registry is `gateway.changes`; the observers are connected here (`gateway.hooks`).

Start-up order (cleanup contexts, undone in reverse): storage (code store, registry) -> runtimes
(zygotes, pools, invoker, reaper, code collector) -> deployment of `--deploy` directories. On shutdown
`gateway.shutdown.drain` first drains HTTP requests in flight (up to `drain_timeout`, then cuts them), then the
pools kill every environment and the zygotes are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.api import catalog
from gateway.api import logs as logs_api
from gateway.api import metrics as metrics_api
from gateway.api.auth import auth_middleware
from gateway.api.events import event_invoke_config, event_source_mappings
from gateway.api.functions import (
    account,
    aliases,
    code_signing,
    concurrency,
    functions,
    layer_permissions,
    layers,
    permissions,
    provisioned,
    tags,
    versions,
)
from gateway.api.functions.packages import stop_fetchers
from gateway.api.home import home_middleware
from gateway.api.http import MAX_CONTROL_BODY, error_middleware, json_response, not_routed
from gateway.api.invoke import invoke, invoke_async, invoke_stream
from gateway.api.scheduler import schedule_groups, scheduler
from gateway.api.sigv4 import Verifier
from gateway.api.urls import configs as url_configs
from gateway.api.urls.router import url_middleware
from gateway.app_keys import (
    CATALOG,
    CODE_SIGNING,
    CODESTORE,
    CONCURRENCY,
    CONCURRENCY_SETTINGS_LOCK,
    DELIVERY,
    DISPATCHER,
    EVENT_CONFIGS,
    EVENT_QUEUE,
    FUNCTION_URLS,
    INVOKER,
    LAYERS,
    MAPPINGS,
    METRICS,
    NETWORK,
    POLICIES,
    POLLERS,
    POOLS,
    REGISTRY,
    SCHEDULE_RUNNER,
    SCHEDULES,
    SESSIONS,
    SETTINGS,
    SIGNING_PROFILES,
    ZYGOTES,
)
from gateway.catalog import Catalog, Kind
from gateway.changes import ChangePolicy, provisioned_slots, provisioning
from gateway.errors import LambdaError
from gateway.events.delivery import Delivery
from gateway.events.destinations import Destinations
from gateway.events.dispatcher import Dispatcher
from gateway.events.pollers.runner import Runner
from gateway.events.schedules import ScheduleRunner
from gateway.events.sqlite_queue import SqliteQueue
from gateway.execution.admission import Concurrency
from gateway.execution.invoker import Invoker
from gateway.execution.pools import PoolManager
from gateway.execution.zygote import Zygote
from gateway.isolation.credentials import SessionAuthority
from gateway.isolation.leftovers import sweep_leftovers
from gateway.isolation.network import HostNetwork
from gateway.isolation.sandbox import Sandbox
from gateway.isolation.uids import UidRange
from gateway.nodes import node_version
from gateway.observability.logstore import LogStore
from gateway.observability.metrics import Metrics
from gateway.pythons import own_python
from gateway.settings import Settings
from gateway.store.code import CodeStore
from gateway.store.code_signing import CodeSigningConfigs
from gateway.store.codegc import CodeCollector
from gateway.store.event_configs import EventInvokeConfigs, designates
from gateway.store.function_urls import FunctionUrls
from gateway.store.layers import LayerStore
from gateway.store.mappings import Mappings
from gateway.store.policies import Policies
from gateway.store.records import LATEST, FunctionConfig
from gateway.store.registry import Registry
from gateway.store.schedules import Schedules
from gateway.store.signatures import SigningProfiles

log = logging.getLogger("gateway")


class DataDirInUse(RuntimeError):
    """Another gateway holds the data directory: two caches over one registry would drift apart."""


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / ".lock", "a+b")  # noqa: SIM115 - held for the gateway's lifetime, closed below
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DataDirInUse(f"another gateway is using the data directory {data_dir}") from None
    try:
        codestore = CodeStore(data_dir / "code")
        registry = Registry(data_dir / "registry.sqlite3", codestore, settings)
        layer_store = LayerStore(data_dir / "layers.sqlite3", codestore, settings)
        event_configs = EventInvokeConfigs(data_dir / "event-invoke.sqlite3", settings)
        event_configs.retain_existing(registry)  # a crash may have come between a delete and its configs'
        registry.on_change.connect(event_configs.follow)  # a deleted function, version or alias takes its configs
        mappings = Mappings(data_dir / "mappings.sqlite3")
        mappings.retain_existing(registry.__contains__)
        registry.on_change.connect(mappings.follow)  # FUNCTION_DELETED deletes the function's mappings
        policies = app[POLICIES] = _policies(data_dir, settings, registry, layer_store)
        app[MAPPINGS] = mappings
        app[CODESTORE] = codestore
        app[REGISTRY] = registry
        app[LAYERS] = layer_store
        app[EVENT_CONFIGS] = event_configs
        function_urls = app[FUNCTION_URLS] = FunctionUrls(data_dir / "function-urls.sqlite3", settings)
        function_urls.retain_existing(registry)  # a crash may have come between a delete and its URL's
        registry.on_change.connect(function_urls.follow)  # a deleted function or alias takes its URL
        signing = app[CODE_SIGNING] = CodeSigningConfigs(data_dir / "code-signing.sqlite3")
        signing.retain_existing(registry.__contains__)
        registry.on_change.connect(signing.follow)  # a deleted function's code signing configuration is let go
        try:
            yield
        finally:
            signing.close()
            policies.close()
            function_urls.close()
            mappings.close()
            event_configs.close()
            layer_store.close()
            registry.close()
    finally:
        lock.close()


def _policies(data_dir: Path, settings: Settings, registry: Registry, layer_store: LayerStore) -> Policies:
    """Resource policies, without those of what a crash left deleted; deleted functions, versions and aliases take
    theirs (DeleteLayerVersion drops a layer version's)."""
    policies = Policies(data_dir / "policies.sqlite3", settings)

    def layer_exists(name: str, version: int) -> bool:
        try:
            layer_store.get(name, version)
        except LambdaError:
            return False
        return True

    policies.retain_existing(lambda f, q: designates(registry, f, q), layer_exists)
    registry.on_change.connect(policies.follow)
    return policies


def _zygotes_for(settings: Settings, catalog: Catalog, sandbox: Sandbox) -> dict[str, Zygote]:
    """One zygote per distinct interpreter, shared by the runtime ids that map to it. The gateway's own interpreter's
    starts with the gateway; the others at their first fork (a Python no function uses costs nothing)."""
    zygotes: dict[str, Zygote] = {}
    own = own_python().path
    for interpreter, runtimes in catalog.by_interpreter().items():
        programs = {rt: program for rt in runtimes if (program := catalog[rt].program)}
        zygote = Zygote(
            interpreter, runtimes, settings.data_dir / "envs", sandbox, lazy=interpreter != own, programs=programs
        )
        for runtime in runtimes:
            zygotes[runtime] = zygote
        when = "" if zygote.wanted else " (started on demand)"
        log.info("runtimes %s run on %s%s", ", ".join(runtimes), interpreter, when)
    return zygotes


WILDCARDS = ("0.0.0.0", "::", "")


def environment_address(app: web.Application, settings: Settings) -> tuple[str, int] | None:
    """Where the environments' listener listens (every request on it must be signed), or None when there is none
    to start: with a network per environment, the bridge's address at the port its firewall lets environments reach
    (None when the main listener's wildcard address already covers it: `GatewayRequestHandler` then marks those
    connections by their local address); without one, `GATEWAY_ENVIRONMENT_LISTEN` if set."""
    network = app.get(NETWORK)
    if network is not None and network.gateway_address is not None:
        if settings.host in WILDCARDS and network.port == settings.port:
            return None
        return network.gateway_address, network.port
    return settings.environment_listen


def _credentials_for(
    settings: Settings, sessions: SessionAuthority, network: HostNetwork | None
) -> Callable[[FunctionConfig], dict[str, str]]:
    """What each new environment is given to call the API back: session credentials for its function's execution
    role and the endpoint to use them at, so that `boto3.client("lambda")` in a handler works unchanged. With a
    network per environment the endpoint is the bridge's address, the only one of the host's it can reach."""
    if network is not None and network.gateway_address is not None:
        endpoint = f"http://{network.gateway_address}:{network.port}"
    else:
        endpoint = settings.environment_endpoint

    def credentials(config: FunctionConfig) -> dict[str, str]:
        minted = sessions.mint(settings.function_arn(config.name), config.role)
        minted["AWS_ENDPOINT_URL_LAMBDA"] = endpoint
        return minted

    return credentials


async def _sandbox(settings: Settings, envs_root: Path) -> Sandbox:
    """The strongest isolation this host allows, once what environments of an earlier run left is killed."""
    killed = sweep_leftovers(envs_root)
    if killed:
        log.warning("killed %d processes left by environments of an earlier run", killed)
    envs_root.mkdir(parents=True, exist_ok=True)
    env_port = settings.environment_listen[1] if settings.environment_listen else settings.port
    uids = UidRange(settings.uid_base, settings.uid_count)
    return await asyncio.to_thread(Sandbox.choose, settings.sandbox, env_port, uids)


def _admission(settings: Settings, registry: Registry) -> Concurrency:
    """Admission with the account's limits, every function's reservation and what its provisioned concurrency
    serves (it counts against the reservation)."""
    concurrency = Concurrency(settings.account_concurrency, settings.unreserved_min)
    for name, reserved in registry.all_reserved().items():
        concurrency.set_reserved(name, reserved)
    for name in {prov.function for prov in registry.provisioned_configs()}:
        concurrency.set_provisioned(name, provisioned_slots(registry, name))
    return concurrency


def _connect(app: web.Application, zygotes: Iterable[Zygote], logstore: LogStore, policy: ChangePolicy) -> None:
    """The observers: of every invocation (log store, metrics), of the zygotes, of the registry's changes."""
    app[INVOKER].on_outcome.connect(logstore.record)
    app[INVOKER].on_outcome.connect(app[METRICS].observe)
    for zygote in zygotes:
        zygote.on_fork.connect(app[METRICS].forked)
        zygote.on_ready.connect(policy.runtime_ready)
    app[REGISTRY].on_change.connect(policy.follow)


async def _runtimes(app: web.Application) -> AsyncIterator[None]:
    """Sandbox, zygotes, pools, invoker, log store, admission, metrics and code collector, with the observers that
    join them and the tasks they run; on the way out, every environment and zygote is stopped."""
    settings, registry = app[SETTINGS], app[REGISTRY]
    envs_root = settings.data_dir / "envs"
    sandbox = await _sandbox(settings, envs_root)
    app[NETWORK] = sandbox.network
    zygotes = app[ZYGOTES] = _zygotes_for(settings, app[CATALOG], sandbox)
    unique = set(zygotes.values())
    credentials = _credentials_for(settings, app[SESSIONS], sandbox.network)
    pools = app[POOLS] = PoolManager(settings, zygotes, provisioning(registry), credentials)
    app[INVOKER] = Invoker(pools)
    app[INVOKER].always_log = True  # every invocation's START … REPORT is stored
    logstore = LogStore(settings.data_dir / "logs", settings.log_max_bytes, settings.log_retention_files)
    app[logs_api.LOGSTORE] = logstore
    concurrency = app[CONCURRENCY] = _admission(settings, registry)
    metrics = Metrics(CollectorRegistry(), pools, concurrency, zygotes.values(), registry.all_reserved, registry.exists)
    app[METRICS] = metrics
    metrics.urls.alive = lambda function, qualifier: designates(registry, function, qualifier)  # a URL's alias too
    collector = CodeCollector(app[CODESTORE], registry, app[LAYERS], pools.code_in_use)
    slots = partial(provisioned_slots, registry)
    policy = ChangePolicy(asyncio.get_running_loop(), pools, metrics, logstore, collector, concurrency, slots)
    _connect(app, unique, logstore, policy)
    tasks = [asyncio.create_task(z.supervise()) for z in unique]
    tasks.append(asyncio.create_task(pools.reap_forever()))
    tasks.append(asyncio.create_task(collector.run(settings.reap_interval)))
    try:
        yield
    finally:
        pools.close()
        await asyncio.gather(*(z.close() for z in unique), return_exceptions=True)
        await asyncio.to_thread(sweep_leftovers, envs_root, True)
        await asyncio.to_thread(sandbox.close)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        logstore.close()


async def _events(app: web.Application) -> AsyncIterator[None]:
    """The queue of asynchronous invocations and the dispatcher that runs it; on the way out, attempts still running
    are cancelled (their events stay on file) and the queue's last writes are flushed."""
    settings, registry, metrics = app[SETTINGS], app[REGISTRY], app[METRICS]
    queue = app[EVENT_QUEUE] = SqliteQueue(settings.data_dir / "events.sqlite3")
    delivery = app[DELIVERY] = Delivery(settings)

    def exists(name: str, qualifier: str | None) -> bool:
        return designates(registry, name, qualifier or LATEST)

    destinations = Destinations(queue, delivery, metrics, exists, settings)
    dispatcher = app[DISPATCHER] = Dispatcher(
        settings, queue, registry, app[EVENT_CONFIGS], app[CONCURRENCY], app[INVOKER], destinations, metrics
    )
    registry.on_change.connect(dispatcher.follow)
    metrics.watch_queue(queue.depths)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        await dispatcher.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await delivery.close()
        await queue.close()


async def _schedules(app: web.Application) -> AsyncIterator[None]:
    """The schedules (their own SQLite file) and the loop that fires them into the event queue; on the way out the
    loop is stopped before the queue closes."""
    settings = app[SETTINGS]
    store = app[SCHEDULES] = Schedules(settings.data_dir / "schedules.sqlite3")
    runner = app[SCHEDULE_RUNNER] = ScheduleRunner(
        settings, store, app[EVENT_QUEUE], app[REGISTRY], app[METRICS], app[DELIVERY]
    )
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        runner.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def _pollers(app: web.Application) -> AsyncIterator[None]:
    """The event source mappings' pollers (after `_events`: OnFailure records go through its delivery); on the way
    out they stop first, their unsettled records left to the brokers."""
    mappings = app[MAPPINGS]
    runner = app[POLLERS] = Runner(
        app[SETTINGS], mappings, app[REGISTRY], app[CONCURRENCY], app[INVOKER], app[DELIVERY].send,
        app[METRICS].mappings,
    )  # fmt: skip
    mappings.on_change.connect(runner.follow)
    runner.start()
    try:
        yield
    finally:
        await runner.close()


async def _deploy(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.deploy_dirs:
        from gateway.deploy import UrlDeployment, deploy_directories

        deployer = functions.Deployer.from_app(app)
        urls = UrlDeployment(app[FUNCTION_URLS], settings, app[POLICIES])
        await deploy_directories(app[REGISTRY], deployer, settings.deploy_dirs, urls)
    yield


async def healthz(request: web.Request) -> web.Response:
    """200 once every runtime zygote is ready to fork, 503 before (and while one restarts). Each runtime says what
    runs it (its zygote's `interpreter`; for nodejs* the Node.js `program` and its `version`, for provided.* the
    function's "bootstrap"); `unavailable` names the runtimes this host cannot run, with the reason."""
    zygotes = request.app[ZYGOTES]
    catalog = request.app[CATALOG]

    def runs(runtime: str) -> dict[str, str | None]:
        """What runs the runtime besides its zygote's Python: the Node.js (`program`, its `version`), the function's
        own "bootstrap"; nothing more for the Python fast path."""
        choice = catalog.get(runtime)
        if choice is None or choice.kind is Kind.PYTHON:
            return {}
        if choice.kind is Kind.PROVIDED:
            return {"program": "bootstrap"}
        return {"program": choice.program, "version": node_version(choice.program) if choice.program else None}

    unique = {z for z in zygotes.values() if z.wanted}  # a lazy zygote no fork has asked for yet is not starting
    status = {
        "status": "ok" if all(z.ready for z in unique) else "starting",
        "runtimes": {
            rt: {"ready": z.ready, "interpreter": z.interpreter, "pid": z.pid, "started": z.wanted, **runs(rt)}
            for rt, z in sorted(zygotes.items())
        },
        "unavailable": dict(sorted(catalog.refusals().items())),
        "environments": request.app[POOLS].count(),
        "isolation": {
            **next(iter(unique)).sandbox.describe(all(z.jailed for z in unique), all(z.seccomp for z in unique)),
            "private_tmp": all(z.private_tmp for z in unique),
            "no_new_privs": True,
        },
        "auth": "sigv4" if request.app[SETTINGS].auth_required else "off",
        "inflight": request.app[CONCURRENCY].inflight(),
    }
    queue = request.app.get(EVENT_QUEUE)
    if queue is not None:  # a queue that cannot store events refuses every Event invoke: not healthy
        described: dict[str, int | str] = {"events": sum(queue.depths().values()), "bytes": queue.size()}
        if queue.broken is not None:
            described["error"] = str(queue.broken)
            status["status"] = "degraded"
        status["async_queue"] = described
    return json_response(status, 200 if status["status"] == "ok" else 503)


def create_app(settings: Settings) -> web.Application:
    sessions = SessionAuthority(settings.session_ttl)  # functions' credentials; its key lives in memory only
    # function URLs first: a URL request is answered by its function, never by the API's routes and middlewares
    middlewares = [url_middleware(settings, sessions), error_middleware]
    # Environments may reach the API (their own listener, or a wildcard main one) wherever they may be jailed with a
    # network of their own: their requests must be signed then, whatever the operator configured.
    if settings.auth_required or settings.environment_listen is not None or Sandbox.may_jail(settings.sandbox):
        verifier = Verifier(settings.credentials, settings.region, sessions)
        middlewares.append(auth_middleware(verifier, settings.auth_required))
    middlewares.append(home_middleware(settings))  # innermost: ARNs of another region or account are refused
    app = web.Application(middlewares=middlewares, client_max_size=MAX_CONTROL_BODY)
    app[SETTINGS] = settings
    app[CATALOG] = Catalog.discover(settings)
    app[SIGNING_PROFILES] = SigningProfiles.load(settings.signing_profiles)  # ValueError: `main` says which
    app[SESSIONS] = sessions
    app[CONCURRENCY_SETTINGS_LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_runtimes)
    app.cleanup_ctx.append(_events)
    app.cleanup_ctx.append(_schedules)
    app.cleanup_ctx.append(_pollers)
    app.cleanup_ctx.append(_deploy)
    app.cleanup_ctx.append(stop_fetchers)  # last, so cleaned up first: no fetch stores code after this
    app.router.add_get("/healthz", healthz)
    invoke.add_routes(app)
    invoke_async.add_routes(app)
    invoke_stream.add_routes(app)
    functions.add_routes(app)
    code_signing.add_routes(app)
    versions.add_routes(app)
    aliases.add_routes(app)
    concurrency.add_routes(app)
    provisioned.add_routes(app)
    event_invoke_config.add_routes(app)
    event_source_mappings.add_routes(app)
    layers.add_routes(app)
    permissions.add_routes(app)
    layer_permissions.add_routes(app)
    tags.add_routes(app)
    account.add_routes(app)
    scheduler.add_routes(app)
    schedule_groups.add_routes(app)
    url_configs.add_routes(app)
    logs_api.add_routes(app)
    metrics_api.add_routes(app)
    catalog.add_routes(app)  # last: every operation of the model not served above answers "not implemented"
    app.router.add_route("*", "/{tail:.*}", not_routed)  # after everything: see not_routed
    return app
