"""`GET /metrics` (Prometheus text format) and the count of HTTP responses per API operation.

Every response the application prepares, whatever produced it (a handler, the error middleware, a raised
`HTTPException`), is counted by an `on_response_prepare` hook under the name of the operation its route serves:
the Lambda API model's name when the route's method and path are an operation of the model (`Invoke`,
`CreateFunction`), else the handler's name in CamelCase (`Healthz`, `Metrics`), so the label set is bounded by
the routes. Routes shared by several operations told apart by a static query (`?List=ALL`) are named per request.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.catalog import Operation, load_operations, route_shape
from gateway.app_keys import METRICS

#: the operation of a request that matched no route
UNMATCHED = "Unmatched"


async def metrics(request: web.Request) -> web.Response:
    """The registry's metrics; rendered on the event loop, where every metric is updated."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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
        if resource is None:  # the router's own answer: no route matched (404, 405)
            return UNMATCHED
        ops = self._by_shape.get((route.method, route_shape(resource.canonical)))
        if ops:
            return ops[0].name if len(ops) == 1 else tuple(ops)
        handler = getattr(route.handler, "__name__", "") or "Other"
        return "".join(part.capitalize() for part in handler.split("_"))


def add_routes(app: web.Application) -> None:
    """Register `GET /metrics` and the response counter; call before `catalog.add_routes`."""
    names = OperationNames(load_operations())

    async def count_response(request: web.Request, response: web.StreamResponse) -> None:
        registry = request.app.get(METRICS)  # absent only if start-up failed before the runtimes came up
        if registry is not None:
            registry.http(names(request), response.status)

    app.on_response_prepare.append(count_response)
    app.router.add_get("/metrics", metrics)
