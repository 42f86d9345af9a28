"""Asynchronous invocation: Invoke with `X-Amz-Invocation-Type: Event`, and the deprecated InvokeAsync.

Both answer 202 with the event's `x-amzn-RequestId` once the event is durable in the queue (gateway.events.queue):
a SIGKILL of the gateway right after the 202 loses nothing. The payload limit is Lambda's: 1 MB for Event (raised
from 256 KB in 2025), 256 KB for InvokeAsync; over it, 413 RequestEntityTooLargeException in Lambda's words. The
client context is not passed on (Lambda passes it to synchronous invocations only). If the queue cannot store the
event (a full disk), the answer is a 500 ServiceException and the event is not accepted: the client may retry.
A function with `GATEWAY_ASYNC_QUEUE_MAX` events on file gets no more, nor does anyone once the queue holds
`GATEWAY_ASYNC_QUEUE_MAX_BYTES` (429 TooManyRequestsException): a function that invokes itself in a loop cannot fill
the disk.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from aiohttp import web

from gateway.api.http import check_json, read_body
from gateway.app_keys import EVENT_QUEUE, METRICS, REGISTRY, SETTINGS
from gateway.errors import RequestTooLargeException, ServiceException, TooManyRequestsException
from gateway.events.queue import CALLER_RATE, MAX_EVENT_PAYLOAD, QueuedEvent, full
from gateway.execution.invoker import new_request_id
from gateway.store.names import FunctionRef, parse_function_name

log = logging.getLogger("gateway.events")

#: InvokeAsync's own, older limit
MAX_INVOKE_ASYNC_PAYLOAD = 256 * 1024


def _too_large(size: int, limit: int, what: str) -> RequestTooLargeException:
    return RequestTooLargeException(f"{size} byte payload is too large for the {what} (limit {limit} bytes)")


async def accept(request: web.Request, ref: FunctionRef, limit: int, what: str) -> QueuedEvent:
    """Read, check and queue the event of an asynchronous invocation of `ref`; return it once it is durable."""
    app = request.app
    app[REGISTRY].resolve(ref.name, ref.qualifier)  # 404 before reading a body for nothing
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit, what)
    payload = await read_body(request)
    if len(payload) > limit:
        raise _too_large(len(payload), limit, what)
    if payload:
        check_json(payload)
    else:
        payload = b"{}"
    app[REGISTRY].resolve(ref.name, ref.qualifier)  # it may have been deleted while the body came in
    refusal = full(app[EVENT_QUEUE], app[SETTINGS], ref.name, len(payload))
    if refusal:
        raise TooManyRequestsException(refusal, CALLER_RATE)
    now = time.time()
    event = QueuedEvent(new_request_id(), ref.name, ref.qualifier, payload, now, now)
    try:
        await app[EVENT_QUEUE].put(event)
    except (OSError, sqlite3.Error) as exc:
        log.error("could not store an asynchronous invocation of %s: %s", ref.name, exc)
        raise ServiceException("The event could not be stored, so it was not accepted. Retry.") from None
    app[METRICS].async_received(ref.name)
    return event


async def event(request: web.Request, ref: FunctionRef) -> web.Response:
    """Invoke with InvocationType=Event (gateway.api.invoke.invoke has checked the headers)."""
    queued = await accept(request, ref, MAX_EVENT_PAYLOAD, "Event invocation type")
    return web.Response(status=202, headers={"x-amzn-RequestId": queued.request_id})


async def invoke_async(request: web.Request) -> web.Response:
    """InvokeAsync: `POST /2014-11-13/functions/{FunctionName}/invoke-async/` -> 202 `{"Status": 202}`."""
    ref = parse_function_name(request.match_info["FunctionName"])
    queued = await accept(request, ref, MAX_INVOKE_ASYNC_PAYLOAD, "InvokeAsync operation")
    return web.json_response({"Status": 202}, status=202, headers={"x-amzn-RequestId": queued.request_id})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/2014-11-13/functions/{FunctionName}/invoke-async", invoke_async)
    app.router.add_post("/2014-11-13/functions/{FunctionName}/invoke-async/", invoke_async)
