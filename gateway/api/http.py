"""HTTP plumbing shared by every route: JSON bodies, Lambda-shaped errors, app keys.

Only this module turns a `LambdaError` into a response. Anything else raised by a handler becomes a
500 ServiceException (logged with its traceback) and never takes the gateway down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.app_keys import SETTINGS
from gateway.errors import (
    InvalidRequestContentException,
    LambdaError,
    NotImplementedException,
    RequestTimeoutException,
    RequestTooLargeException,
    ServiceException,
)
from gateway.execution.invoker import new_request_id

log = logging.getLogger("gateway.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: the largest JSON body a control-plane call accepts: AWS's figure for CreateFunction and UpdateFunctionCode (a
#: 50 MB zip, base64 encoded, plus room for the other fields): "Request must be smaller than 70167211 bytes for the
#: CreateFunction operation" (LocalStack's LAMBDA_LIMITS_CREATE_FUNCTION_REQUEST_SIZE, recorded against AWS)
MAX_CONTROL_BODY = 70167211


#: the header naming a request on every answer of the API (boto3's `ResponseMetadata.RequestId`), successes and errors
REQUEST_ID = "x-amzn-RequestId"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(err: LambdaError) -> web.Response:
    headers = {"x-amzn-ErrorType": err.name, REQUEST_ID: new_request_id()}
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    response = web.Response(
        body=orjson.dumps(err.to_dict()),
        status=err.status,
        headers=headers,
        content_type="application/json",
    )
    if isinstance(err, RequestTimeoutException):  # the rest of the body may still trickle in: never read it
        response.force_close()
    return response


async def read_body(request: web.Request) -> bytes:
    """The request body, which must arrive within `Settings.body_timeout` seconds (else 408 RequestTimeoutException).

    Every handler and middleware reads bodies through here (aiohttp keeps the bytes: a second call is free). A body
    that came in with the request head, as small ones do, is returned at once; only a body still arriving costs a
    timer, so the invoke hot path pays one method call.
    """
    if request.content.is_eof():
        return await request.read()
    timeout = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeoutException(f"The request body did not arrive within {timeout:g} seconds") from None


async def read_json_object(request: web.Request, limit: int = MAX_CONTROL_BODY, operation: str = "") -> dict[str, Any]:
    """The request body as a JSON object; `{}` when empty. Raises InvalidRequestContentException, and
    RequestEntityTooLargeException over `limit` (worded as AWS words it, naming `operation` when given)."""
    if request.content_length is not None and request.content_length > limit:
        what = f"the {operation} operation" if operation else "the operation"
        raise RequestTooLargeException(f"Request must be smaller than {limit} bytes for {what}")
    body = await read_body(request)
    if not body:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestContentException(f"Could not parse request body into json: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestContentException(
            "Could not parse request body into json: expected a JSON object at the top level"
        )
    return data


async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`handler`'s answer to `request`: a `LambdaError` (or aiohttp's 404, 405, 413) as Lambda words it, any other
    exception as a 500 ServiceException; and each answer not yet sent carries `x-amzn-RequestId` (errors get theirs
    from `error_response`; the invoke routes set the invocation's own; a streamed answer, sent already, sets its own
    before it starts)."""
    try:
        response = await handler(request)
    except LambdaError as err:
        return error_response(err)
    except web.HTTPRequestEntityTooLarge:
        return error_response(RequestTooLargeException("Request must be smaller than the operation's limit"))
    except web.HTTPNotFound:
        return error_response(
            NotImplementedException(
                f"{request.method} {request.path} is not an operation of the Lambda API this gateway serves"
            )
        )
    except web.HTTPMethodNotAllowed:
        return error_response(NotImplementedException(f"{request.method} is not supported on {request.path}"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ServiceException("An internal error occurred in the gateway"))
    if not response.prepared and REQUEST_ID not in response.headers:
        response.headers[REQUEST_ID] = new_request_id()
    return response


#: the middleware that answers every request of the API (gateway.api.front_door calls `guarded` itself)
error_middleware = web.middleware(guarded)


def check_json(payload: bytes) -> None:
    """400 unless `payload` is JSON. orjson is strict (no lone surrogates, no 1e400): ask json before refusing.

    Nesting deeper than orjson's limit (1024) is refused too, as Lambda refuses it (its parser stops at 1000):
    json's C decoder then stops at the interpreter's recursion limit with a RecursionError, which is the caller's
    fault (400), not ours (500)."""
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            json.loads(payload)
        except (ValueError, RecursionError):
            why = jackson_utf8_error(payload) or str(exc)
            raise InvalidRequestContentException(
                f"Could not parse request body into json: Could not parse payload into json: {why}"
            ) from None


#: where AWS's parser (Jackson) says it stopped; it does not quote the payload
_SOURCE = "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: {}, column: {}]"


def _inside_string(payload: bytes, end: int) -> bool:
    """Whether byte `end` of a JSON text is inside a string (quotes counted, escaped ones skipped)."""
    inside = escaped = False
    for byte in payload[:end]:
        if escaped:
            escaped = False
        elif inside and byte == 0x5C:  # a backslash escapes the next byte
            escaped = True
        elif byte == 0x22:
            inside = not inside
    return inside


def jackson_utf8_error(payload: bytes) -> str | None:
    """AWS's words for a payload whose first bad UTF-8 sequence is inside a JSON string, as its parser (Jackson) says
    them: "Invalid UTF-8 start byte 0xaf" for a byte that cannot begin a sequence, "Invalid UTF-8 middle byte 0x2d"
    for a lead byte followed by a byte that cannot continue it, then where (line, and column: one past the bad byte,
    counted from 1). None where Jackson would say something else (a bad byte outside a string, a sequence cut short,
    one only Python refuses: overlong, surrogate)."""
    try:
        payload.decode()
        return None
    except UnicodeDecodeError as exc:
        start = exc.start
    if not _inside_string(payload, start):
        return None
    lead = payload[start]
    follow = 1 if lead & 0xE0 == 0xC0 else 2 if lead & 0xF0 == 0xE0 else 3 if lead & 0xF8 == 0xF0 else 0
    bad, kind = start, "start"
    if follow:
        tail = payload[start + 1 : start + 1 + follow]
        wrong = [i for i, b in enumerate(tail) if b & 0xC0 != 0x80]
        if not wrong or len(tail) < follow:
            return None
        bad, kind = start + 1 + wrong[0], "middle"
    line_start = payload.rfind(b"\n", 0, bad) + 1
    where = _SOURCE.format(payload.count(b"\n", 0, bad) + 1, bad - line_start + 2)
    return f"Invalid UTF-8 {kind} byte 0x{payload[bad]:02x}{where}"


#: a request refused before its body was read whose body may still bring more than this has its connection closed
SMALL_BODY = 64 * 1024


def refuse_unread(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """`response` to a request refused before its body was read. A large body still to come (or one of unknown size)
    closes the connection unread: read and discarded it would cost the gateway its transfer; a small one is drained
    so keep-alive goes on."""
    if not request.content.is_eof() and (request.content_length is None or request.content_length > SMALL_BODY):
        response.force_close()
        refuse_body = getattr(request.protocol, "refuse_body", None)  # a GatewayRequestHandler's (gateway.api.server)
        if refuse_body is not None:
            refuse_body()
    return response


async def not_routed(request: web.Request) -> web.StreamResponse:
    """The last route, `/{tail:.*}` for every method: a path no operation has.

    aiohttp resolves a route before any middleware runs, and a miss costs it an `HTTPNotFound` built and the
    middleware chain wrapped again; a function URL's requests (answered by the URL middleware before any handler,
    whatever their path) would pay that every time. With this route they resolve like any other request. Requests
    that do reach it are answered as a miss is: 405 when another route has the path with other methods, else 404
    (the error middleware words both). This is the error path: it may look at every route."""
    allowed: set[str] = set()
    this = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not this:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
