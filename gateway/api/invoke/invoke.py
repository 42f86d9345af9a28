"""Invoke: `POST /2015-03-31/functions/{FunctionName}/invocations` (RequestResponse, DryRun; Event: invoke_async)."""

from __future__ import annotations

import base64
import binascii
from time import perf_counter

import orjson
from aiohttp import web

from gateway.api.http import check_json, read_body
from gateway.api.invoke import invoke_async
from gateway.app_keys import CONCURRENCY, INVOKER, METRICS, REGISTRY, SETTINGS
from gateway.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    TooManyRequestsException,
    ValidationException,
)
from gateway.execution.admission import ACCOUNT_EXCEEDED, RATE_EXCEEDED, RESERVED_EXCEEDED
from gateway.execution.invoker import MAX_SYNC_PAYLOAD
from gateway.observability.metrics import Metrics
from gateway.store.names import FunctionRef, parse_function_name
from gateway.store.records import ACTIVE
from gateway.store.states import check_invocable

MAX_CLIENT_CONTEXT = 3583
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
#: bodies and headers of 429 answers, built once: a throttle must cost less than any real request
THROTTLED = {
    reason: (
        orjson.dumps(TooManyRequestsException(RATE_EXCEEDED, reason).to_dict()),
        {"x-amzn-ErrorType": TooManyRequestsException.name, "Content-Type": "application/json"},
    )
    for reason in (ACCOUNT_EXCEEDED, RESERVED_EXCEEDED)
}
_TOO_LARGE = f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"


# The checks of Invoke's and InvokeWithResponseStream's headers and their admission stay inline in each route (no
# call on the hot path); what follows a failure is shared.


def invalid_types(inv_type: str, allowed: tuple[str, ...], log_type: str) -> ValidationException:
    """Lambda's error for an invocation type not in `allowed` or a log type other than None and Tail (either failed)."""
    if inv_type not in allowed:
        listed = ", ".join(sorted(allowed, key=("Event", "RequestResponse", "DryRun").index))  # Lambda's order
        return ValidationException(
            f"1 validation error detected: Value '{inv_type}' at 'invocationType' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{listed}]"
        )
    return ValidationException(
        f"1 validation error detected: Value '{log_type}' at 'logType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [None, Tail]"
    )


def throttled(metrics: Metrics, name: str, exc: TooManyRequestsException) -> web.Response:
    """The 429 for an invocation of `name` that admission refused with `exc`, counted as a throttle."""
    metrics.throttled(name, exc.reason)
    body, throttle_headers = THROTTLED[exc.reason]
    return web.Response(body=body, status=429, headers=throttle_headers)


def _client_context(header: str | None) -> bytes | None:
    """The decoded `X-Amz-Client-Context` (base64 of a JSON object), validated."""
    if header is None:
        return None
    if len(header) > MAX_CLIENT_CONTEXT:
        raise InvalidParameterValueException(
            f"Client context must be smaller than {MAX_CLIENT_CONTEXT} bytes, but was {len(header)} bytes."
        )
    try:
        raw = base64.b64decode(header, validate=True)
        if not isinstance(orjson.loads(raw), dict):
            raise ValueError("not an object")
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.") from None
    return raw


async def invoke(request: web.Request) -> web.Response:
    received = perf_counter()
    app = request.app
    headers = request.headers
    ref = parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))
    registry = app[REGISTRY]
    registry.resolve(ref.name, ref.qualifier)  # 404 before reading a body for nothing

    inv_type = headers.get("X-Amz-Invocation-Type", "RequestResponse")
    log_type = headers.get("X-Amz-Log-Type", "None")
    if inv_type not in INVOCATION_TYPES or log_type not in ("None", "Tail"):  # a constant: no global lookup
        raise invalid_types(inv_type, INVOCATION_TYPES, log_type)
    if inv_type != "RequestResponse":
        return await _not_synchronous(request, ref, inv_type)
    concurrency = app[CONCURRENCY]
    metrics = app[METRICS]
    # Admission before the body is read or parsed: throttling stays cheaper than any real request.
    try:
        token = concurrency.admit(ref.name, ref.qualifier)  # provisioned slots are the qualifier's
    except TooManyRequestsException as exc:
        return throttled(metrics, ref.name, exc)
    try:
        payload, client_context = await read_payload(request)
        # Resolve again now that the body is in: no await may separate this from the pool choice, so an
        # invocation never runs configuration older than the last update that returned before it started.
        config = registry.resolve(ref.name, ref.qualifier, route=True)
        if config.state != ACTIVE:  # Pending: AWS's ResourceConflictException (gateway.store.states)
            check_invocable(config)
        invoked_arn = app[SETTINGS].function_arn(ref.name, ref.qualifier)
        outcome = await app[INVOKER].invoke(config, invoked_arn, payload, client_context, log_type == "Tail")
    except TooManyRequestsException as exc:  # no room on the node for another environment
        metrics.throttled(ref.name, exc.reason)
        raise
    finally:
        concurrency.release(token)
    out_headers = {
        "Content-Type": "application/json",
        "X-Amz-Executed-Version": outcome.executed_version,
        "x-amzn-RequestId": outcome.request_id,
    }
    if outcome.function_error is not None:
        out_headers["X-Amz-Function-Error"] = outcome.function_error
    if log_type == "Tail":
        out_headers["X-Amz-Log-Result"] = outcome.log_result()
    response = web.Response(body=outcome.payload, status=200, headers=out_headers)
    stamps = (outcome.written_at, outcome.replied_at)
    metrics.exchanged(received, stamps, len(payload), len(outcome.payload), outcome.init_ms is not None)
    return response


async def read_payload(request: web.Request) -> tuple[bytes, bytes | None]:
    """The validated event (`{}` for an empty body) and decoded client context of an Invoke request."""
    length = request.content_length
    if length is not None and length > MAX_SYNC_PAYLOAD:
        raise RequestTooLargeException(_TOO_LARGE)
    payload = await read_body(request)
    if len(payload) > MAX_SYNC_PAYLOAD:
        raise RequestTooLargeException(_TOO_LARGE)
    if payload:
        check_json(payload)
    else:
        payload = b"{}"
    return payload, _client_context(request.headers.get("X-Amz-Client-Context"))


async def _not_synchronous(request: web.Request, ref: FunctionRef, inv_type: str) -> web.Response:
    """Event: queued (durably) and answered 202 (gateway.api.invoke.invoke_async); DryRun: validated, answered 204."""
    if inv_type == "Event":
        return await invoke_async.event(request, ref)
    await read_payload(request)
    request.app[REGISTRY].resolve(ref.name, ref.qualifier)  # ResourceNotFoundException
    return web.Response(status=204)  # AWS's DryRun answer has no X-Amz-Executed-Version


def add_routes(app: web.Application) -> None:
    app.router.add_post("/2015-03-31/functions/{FunctionName}/invocations", invoke)
