"""Function logs over HTTP: `GET /gateway/v1/functions/{FunctionName}/logs?since=…&follow=true`.

Not part of the Lambda API (Lambda's logs live in CloudWatch): a gateway extension, read by `gateway logs`.
The answer is chunked `text/plain`, the stored log lines oldest first; with `follow=true` the response stays
open and new lines are sent as the log store flushes them (about every 0.1 s) until the client goes away
or the gateway stops.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from aiohttp import web

from gateway.app_keys import REGISTRY
from gateway.errors import InvalidParameterValueException, ResourceNotFoundException
from gateway.observability.logstore import LogStore

LOGSTORE: web.AppKey[LogStore] = web.AppKey("logstore")
#: how often an idle follower checks that its client is still connected, seconds
ALIVE_CHECK = 1.0


def parse_since(value: str | None) -> float | None:
    """`since` as epoch seconds: a number of seconds since the epoch, or an ISO-8601 time (UTC if unzoned)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParameterValueException(
            f"since must be epoch seconds or an ISO-8601 time, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def get_logs(request: web.Request) -> web.StreamResponse:
    name = request.match_info["FunctionName"]
    store = request.app[LOGSTORE]
    try:
        request.app[REGISTRY].get(name)
    except ResourceNotFoundException:
        if not store.known(name):  # a deleted function's logs stay readable, as a log group outlives it
            raise
    since = parse_since(request.query.get("since"))
    follow = request.query.get("follow", "").lower() in ("1", "true", "yes")
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)

    def alive() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    chunks = store.read(name, since, follow, alive, ALIVE_CHECK)
    try:
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()
    return response


async def _stop_following(app: web.Application) -> None:
    """On shutdown, before the runner waits for handlers: end the followed log streams."""
    store = app.get(LOGSTORE)
    if store is not None:
        store.stop_following()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/gateway/v1/functions/{FunctionName}/logs", get_logs)
    app.on_shutdown.append(_stop_following)
