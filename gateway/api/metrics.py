"""`GET /metrics` (Prometheus text format) and the count of HTTP responses per API operation.

A scrape never stalls invocations: the numbers are copied on the event loop (`Metrics.snapshot`, cheap), the text
is rendered in a worker thread, and renders are spaced at least `MIN_INTERVAL` seconds apart: scrapes that arrive
meanwhile wait for the next render, and every scrape waiting when a snapshot is taken shares it. So a client polling
in a tight loop costs at most one render per interval, and an answer never shows numbers older than its request.

With `Settings.metrics_token` set (`GATEWAY_METRICS_AUTH=bearer`), a scrape must carry `Authorization: Bearer
<token>` (Prometheus: `authorization: {credentials: ...}` in its scrape config); otherwise 401.

Every response the application answers, whatever produced it (a handler, the error middleware, a raised
`HTTPException`), is counted once it went out (`RESPONSE_COUNTER`, called by the server's `log_access`: one plain
call per request, where a response signal would cost a coroutine) under the name of the operation its route serves:
the Lambda API model's name when the route's method and path are an operation of the model (`Invoke`,
`CreateFunction`), else the handler's name in CamelCase (`Healthz`, `Metrics`), so the label set is bounded by
the routes. Routes shared by several operations told apart by a static query (`?List=ALL`) are named per request.
"""

from __future__ import annotations

import asyncio
import hmac
import math

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.catalog import Operation, load_operations, route_shape
from gateway.api.http import error_response, not_routed
from gateway.app_keys import METRICS, RESPONSE_COUNTER, SETTINGS
from gateway.errors import LambdaError
from gateway.observability.metrics import Metrics

#: the operation of a request that matched no route
UNMATCHED = "Unmatched"
#: seconds between the starts of two renders
MIN_INTERVAL = 0.25


class UnauthorizedScrapeException(LambdaError):
    """A /metrics request without the configured bearer token."""

    name = "UnrecognizedClientException"
    status = 401


class Scraper:
    """Renders scrapes off the loop, one at a time and at most one per `min_interval`; shares fresh results."""

    def __init__(self, metrics: Metrics, min_interval: float = MIN_INTERVAL) -> None:
        self.metrics = metrics
        self.min_interval = min_interval
        self._lock = asyncio.Lock()
        self._started = -math.inf  # loop time of the last snapshot
        self._body = b""

    async def scrape(self) -> bytes:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        async with self._lock:
            if self._started >= arrived:  # a snapshot taken after this request arrived: share its text
                return self._body
            wait = self._started + self.min_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._started = loop.time()
            snapshot = self.metrics.snapshot()  # on the loop: the only place pool state is read
            self._body = await asyncio.to_thread(snapshot.render)
            return self._body


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def metrics(request: web.Request) -> web.Response:
    """The registry's metrics in Prometheus text format (see the module's docstring for auth and pacing)."""
    token = request.app[SETTINGS].metrics_token
    if token and not _authorized(request, token):
        response = error_response(
            UnauthorizedScrapeException("/metrics needs the bearer token (GATEWAY_METRICS_TOKEN)")
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = await request.app[SCRAPER].scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


SCRAPER = web.AppKey("scraper", Scraper)


class OperationNames:
    """Route -> the operation it serves, computed once per route."""

    def __init__(self, operations: tuple[Operation, ...]) -> None:
        self._by_shape: dict[tuple[str, str], list[Operation]] = {}
        for op in operations:
            self._by_shape.setdefault((op.method, route_shape(op.path)), []).append(op)
        self._names: dict[AbstractRoute, str | tuple[Operation, ...]] = {}

    def __call__(self, request: web.Request) -> str:
        route = request.match_info.route
        name = self._names.get(route)
        if name is None:
            name = self._names[route] = self._lookup(route)
        if isinstance(name, str):
            return name
        query = request.query  # the most specific static query that matches wins, as in the catalog
        matching = [op for op in name if all(query.get(k) == v for k, v in op.query.items())]
        return max(matching or name, key=lambda op: len(op.query)).name

    def _lookup(self, route: AbstractRoute) -> str | tuple[Operation, ...]:
        resource = route.resource
        if resource is None or route.handler is not_routed:  # no operation has the path (404, 405; a URL's)
            return UNMATCHED
        ops = self._by_shape.get((route.method, route_shape(resource.canonical)))
        if ops:
            return ops[0].name if len(ops) == 1 else tuple(ops)
        handler = getattr(route.handler, "__name__", "") or "Other"
        return "".join(part.capitalize() for part in handler.split("_"))


def add_routes(app: web.Application) -> None:
    """Register `GET /metrics` and the response counter; call before `catalog.add_routes`."""
    names = OperationNames(load_operations())

    def count_response(request: web.Request, response: web.StreamResponse) -> None:
        registry = request.app.get(METRICS)  # absent only if start-up failed before the runtimes came up
        if registry is not None:
            registry.http(names(request), response.status)

    async def make_scraper(app: web.Application) -> None:  # runs after the cleanup contexts made METRICS
        app[SCRAPER] = Scraper(app[METRICS])

    app[RESPONSE_COUNTER] = count_response
    app.on_startup.append(make_scraper)
    app.router.add_get("/metrics", metrics)
