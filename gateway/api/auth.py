"""The authentication middleware: every API request must carry a valid SigV4 signature (see gateway.auth).

Installed only when `Settings.auth_required`; then only `GET /healthz` and `GET /metrics` are open (probes and
Prometheus do not sign). It runs inside the error middleware, so a refusal is a Lambda-shaped 403, and before
routing, as AWS checks the signature before it looks at the operation. The body is read first, within the body
timeout (the signature covers its SHA-256); aiohttp keeps it for the handler.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.http import Handler, read_body
from gateway.auth import Verifier

OPEN_PATHS = frozenset({"/healthz", "/metrics"})


def auth_middleware(verifier: Verifier) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" and request.path in OPEN_PATHS:
            return await handler(request)
        body = await read_body(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        verifier.verify(request.method, request.raw_path, headers, body)
        return await handler(request)

    return authenticate
