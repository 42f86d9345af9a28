"""The front door: a plain synchronous Invoke goes straight to its route; every other request takes the app's path.

aiohttp answers each request by resolving its route, then running it through the app's middlewares (function URLs,
errors, authentication, home region and account: gateway/app.py), one coroutine frame each. A synchronous Invoke of
a function named by its plain name, on a gateway that needs no signature from this caller, gets nothing from the
URL, authentication and home middlewares (each would pass it on unchanged), and its route is known from its path.
`FrontDoor` recognizes such a request from its method, path and a few headers, does the router's job for that one
route, and keeps the error middleware's contract (a `LambdaError` becomes Lambda's error answer, anything else a
500, every answer carries `x-amzn-RequestId`) through the same function. Anything else — another route, a qualified
name or ARN (home checks), a signed or environment-facing request, a URL's Host, `Expect`, an Event or DryRun
invocation — goes to the app (`Application._handle`), exactly as before.

It is installed as the server's request handler (`install`) after `AppRunner.setup()` and before any site starts;
it runs on the event loop like every handler. The measured saving is in BENCHMARKS.md (issue 19).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo

from gateway.api.http import guarded
from gateway.api.urls.router import looks_like_url
from gateway.app_keys import SETTINGS

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

INVOKE_PATH = "/2015-03-31/functions/{FunctionName}/invocations"
#: a plain function name (no qualifier, no ARN: those need the home checks) and an optional query
_PLAIN_INVOKE = re.compile(r"/2015-03-31/functions/([A-Za-z0-9_-]{1,64})/invocations(?:\?.*)?", re.DOTALL)


class FrontDoor:
    """The server's request handler: plain synchronous Invokes to their route, the rest to `app_handler`."""

    __slots__ = ("_app", "_app_handler", "_handler", "_open", "_route")

    def __init__(self, app: web.Application, app_handler: Handler) -> None:
        self._app = app
        self._app_handler = app_handler
        self._route = _invoke_route(app)
        self._handler = self._route.handler
        # Only where the authentication middleware would pass every request from a client that is not an
        # environment: no signature required of anyone (environments' connections are told apart per request).
        self._open = not app[SETTINGS].auth_required

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "POST" or not self._open:
            return await self._app_handler(request)
        match = _PLAIN_INVOKE.fullmatch(request.raw_path)
        headers = request.headers
        if (
            match is None
            or getattr(request.protocol, "environment_facing", False)
            or headers.get("X-Amz-Invocation-Type", "RequestResponse") != "RequestResponse"
            or "Expect" in headers
            or looks_like_url(headers.get("Host", ""), "")
        ):
            return await self._app_handler(request)
        # What Application._handle does once the router has matched this route: the handler then sees the same
        # `match_info` and `app` as on the app's path.
        match_info = UrlMappingMatchInfo({"FunctionName": match.group(1)}, self._route)
        match_info.add_app(self._app)
        match_info.freeze()
        request._match_info = match_info  # type: ignore[attr-defined]  # what aiohttp's own _handle sets
        return await guarded(request, self._handler)  # type: ignore[arg-type]  # a web.Request: the app made it


def _invoke_route(app: web.Application) -> AbstractRoute:
    for route in app.router.routes():
        if route.method == "POST" and route.resource is not None and route.resource.canonical == INVOKE_PATH:
            return route
    raise LookupError(f"no POST route for {INVOKE_PATH}")


def install(runner: web.AppRunner) -> None:
    """Put a `FrontDoor` before the runner's app (call after `runner.setup()`, before a site starts)."""
    server = runner.server
    assert server is not None, "the runner is set up first"
    server.request_handler = FrontDoor(runner.app, server.request_handler)
