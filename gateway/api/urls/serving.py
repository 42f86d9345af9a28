"""One request through a function URL: CORS, the 2.0 event, admission, the invocation, the HTTP answer, metrics.

`serve(request, url, path)` is called by the URL router (gateway/api/urls/router.py) once the request is recognised
and its caller authorised (`request["url_caller"]`: the SigV4 `Identity` of an AWS_IAM URL's caller, None for NONE).
It takes the path the function sees (`/` and what follows the URL's root); the query string is the request's as sent
(from `raw_path`: aiohttp's `query_string` is percent-decoded).

1. CORS (gateway/api/urls/cors.py): with a Cors configuration, a preflight is answered here, nothing invoked.
2. The body (at most 6 MB, else 413, read within `Settings.body_timeout`, else 408), read BEFORE admission: unlike
   Invoke's callers (operators and functions, who hold credentials), a NONE URL's caller is anyone, and a slow body
   read after admission would hold one of the function's concurrency slots for as long as the client likes. What
   URL bodies being read hold at once is bounded instead: at most `BODY_BUDGET` bytes over every URL request (a
   declared Content-Length is reserved whole before anything is read, a chunked body piece by piece); a request
   that does not fit is refused with the URL's 429 (`Rate Exceeded.`, what clients retry) and its connection
   closed, its body unread. A client that leaves while its body is read (a reset, a close before the body's end)
   is no error of the gateway's: a debug line, `CLIENT_GONE` (499) in the access log, nothing in the URL's metrics.
3. Admission, as Invoke: `Concurrency.admit`; a refusal is the URL's 429. The body and the request become the event
   (events.py), with a new request id: the invocation's (`requestContext.requestId`, `x-amzn-RequestId`).
4. The invocation runs through the same `Invoker` as Invoke, with the URL's function and qualifier (`$LATEST` or an
   alias), invoked as its ARN (so metrics and logs name the alias as Lambda's `Resource` does).
5. BUFFERED: the result is mapped (responses.py: `map_result`); a function error, a timeout or a result that is no
   response is 502. RESPONSE_STREAM: the invocation gets a `Stream` (gateway/execution/streams.py), and the status
   line goes out when the function's first bytes arrive: a stream whose content type is Lambda's
   `application/vnd.awslambda.http-integration-response` starts with the prelude `HttpResponseStream.from` wrote
   (status, headers, cookies; 8 NUL bytes; a malformed one, bad JSON or no delimiter within `MAX_PRELUDE` bytes, is
   a 502 at once: the function runs on to its end, what it still sends dropped, and its end releases its slot), any
   other is 200 of the content type the function set. A function that
   does not stream (the Python fast path, as Lambda's buffered runtimes) has its result sent as it is, 200
   `application/json`, without the BUFFERED mapping (what Lambda does for a RESPONSE_STREAM URL); its error is a 502.
   A function error after the head went out cannot change it: the connection is cut before the body's end (chunked:
   the client sees an incomplete response, not a complete one).
6. `Metrics.urls.request` counts the answer by status class, with the time until its head went out.

Concurrency: on the event loop; the streamed invocation runs in a task of its own, as InvokeWithResponseStream's
does, and its admission slot is released when it ends, not when its answer is written. A client that leaves or stops
reading mid-stream is left after `Settings.body_timeout` without progress (`invoke_stream.write_piece`): what
the function still sends is discarded, and it runs to its end as on Lambda.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from time import perf_counter
from typing import Any

import orjson
from aiohttp import ClientPayloadError, web

from gateway.api.invoke.invoke_stream import write_piece
from gateway.api.urls import cors as url_cors
from gateway.api.urls import responses
from gateway.api.urls.events import build_event
from gateway.app_keys import CONCURRENCY, INVOKER, METRICS, REGISTRY, SETTINGS
from gateway.errors import LambdaError, RequestTimeoutException, ResourceNotFoundException, TooManyRequestsException
from gateway.execution.invoker import MAX_SYNC_PAYLOAD, Outcome, new_request_id
from gateway.execution.streams import Stream
from gateway.store.function_urls import FunctionUrl
from gateway.store.records import LATEST

log = logging.getLogger("gateway.api.urls")

STREAMING = "RESPONSE_STREAM"
#: the status of a request whose client left before it was answered (nginx's 499): in the access log, not in metrics
CLIENT_GONE = 499
_READ_PIECE = 256 * 1024


async def serve(request: web.Request, url: FunctionUrl, path: str) -> web.StreamResponse:
    """The answer to `request` through `url` (see the module's docstring); `path` is what the function sees."""
    received = perf_counter()
    resource = url.function if url.qualifier == LATEST else f"{url.function}:{url.qualifier}"
    status = 500
    try:
        response = await _serve(request, url, path)
        status = response.status
        return response
    finally:
        if status != CLIENT_GONE:  # nobody is there to see the answer: neither the URL's error nor its success
            request.app[METRICS].urls.request(url.function, resource, status, perf_counter() - received)


async def _serve(request: web.Request, url: FunctionUrl, path: str) -> web.StreamResponse:
    """`serve` without the metrics: steps 1 to 5 of the module's docstring. Returns the answer (a URL error, the
    function's response, `CLIENT_GONE`) and never raises a LambdaError: each failure is answered as a URL answers it.
    The admission slot is released here for a buffered invocation, by the run's end for a streamed one."""
    app = request.app
    config_cors = url_cors.Cors.of(url.cors)
    if config_cors is not None and url_cors.is_preflight(request.method, request.headers):
        return web.Response(status=200, headers=url_cors.preflight(config_cors, request.headers))
    request_id = new_request_id()
    try:
        body = await _read_body(request, request_id)
    except RequestTimeoutException as exc:  # the rest may still trickle in: never read it
        return _closing(request, responses.url_error(408, exc.message, exc.name, request_id))
    if isinstance(body, web.Response):
        return body
    payload = orjson.dumps(_event(request, url, path, body, request_id))
    if len(payload) > MAX_SYNC_PAYLOAD:  # base64 and the request's fields count: the event is the payload
        return responses.too_large(MAX_SYNC_PAYLOAD, request_id)
    concurrency = app[CONCURRENCY]
    try:  # admission once the body is in: a slow client holds none of the function's slots
        token = concurrency.admit(url.function, None if url.qualifier == LATEST else url.qualifier)
    except TooManyRequestsException as exc:
        app[METRICS].throttled(url.function, exc.reason)
        return responses.throttled(request_id)
    streamed = False
    try:
        qualifier = None if url.qualifier == LATEST else url.qualifier
        config = app[REGISTRY].resolve(url.function, qualifier, route=True)
        invoked_arn = app[SETTINGS].function_arn(url.function, qualifier)
        origin = request.headers.get("Origin")
        if url.invoke_mode == STREAMING:
            streamed = True
            stream = Stream(request_id)
            run = asyncio.ensure_future(app[INVOKER].invoke(config, invoked_arn, payload, None, False, stream))

            def ended(done: asyncio.Future[Outcome]) -> None:  # the slot is the invocation's, not the answer's
                stream.close()
                concurrency.release(token)
                if not done.cancelled():
                    done.exception()  # retrieved: an answer given before the end (a 502) does not await it

            run.add_done_callback(ended)
            return await _streamed(request, run, stream, config_cors, origin)
        outcome = await app[INVOKER].invoke(config, invoked_arn, payload, None, False, request_id=request_id)
        return _buffered(outcome, config_cors, origin)
    except LambdaError as exc:
        return _failed(url, exc, request_id)
    finally:
        if not streamed:
            concurrency.release(token)


def _failed(url: FunctionUrl, exc: LambdaError, request_id: str) -> web.Response:
    """A failure before the function answered, as the URL answers it."""
    if isinstance(exc, TooManyRequestsException):  # no room on the node for another environment
        return responses.throttled(request_id)
    if isinstance(exc, ResourceNotFoundException):  # its function or alias went while the request was read
        return responses.unknown_url(request_id)
    return responses.bad_gateway(request_id)


def _buffered(outcome: Outcome, config_cors: url_cors.Cors | None, origin: str | None) -> web.Response:
    if outcome.function_error is not None:
        return responses.bad_gateway(outcome.request_id)
    mapped = responses.map_result(outcome.payload)
    if mapped is None:
        return responses.bad_gateway(outcome.request_id)
    if config_cors is not None:
        mapped.headers = url_cors.apply(config_cors, origin, mapped.headers)
    return responses.response(mapped, outcome.request_id)


#: the bytes URL request bodies being read may hold at once, per application (see the module's docstring, 2): ten
#: bodies of 6 MB, or thousands of small ones
BODY_BUDGET = 64 * 1024 * 1024


class BodyBudget:
    """The bytes of URL request bodies being read, over every URL request of one application. On the event loop:
    plain numbers, no lock."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = BODY_BUDGET) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve `size` more bytes; False, with nothing reserved, when they do not fit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Give back bytes `take` reserved."""
        self.used -= size


_BUDGETS: weakref.WeakKeyDictionary[web.Application, BodyBudget] = weakref.WeakKeyDictionary()


def body_budget(app: web.Application) -> BodyBudget:
    """The application's budget (the main listener and the environments' listener each have one)."""
    found = _BUDGETS.get(app)
    if found is None:
        found = _BUDGETS[app] = BodyBudget()
    return found


def _closing(request: web.Request, response: web.Response) -> web.Response:
    """`response`, after which the connection closes without reading what is left of the body."""
    response.force_close()
    refuse_body = getattr(request.protocol, "refuse_body", None)  # a GatewayRequestHandler's (gateway.api.server)
    if refuse_body is not None:
        refuse_body()
    return response


async def _read_body(request: web.Request, request_id: str) -> bytes | web.Response:
    """The request's body within the body timeout (else RequestTimeoutException), or the answer that refuses it:
    413 beyond MAX_SYNC_PAYLOAD bytes, 429 beyond the `BodyBudget` (the connection then closes, the rest unread)."""
    length = request.content_length
    if length is not None and length > MAX_SYNC_PAYLOAD:
        return _closing(request, responses.too_large(MAX_SYNC_PAYLOAD, request_id))
    if request.content.is_eof():  # all there already, or read before (an AWS_IAM signature covers the body): kept
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = None
        if body is None or len(body) > MAX_SYNC_PAYLOAD:
            return _closing(request, responses.too_large(MAX_SYNC_PAYLOAD, request_id))
        return body
    budget = body_budget(request.app)
    reserved = length or 0  # a declared length is reserved whole: a slow body cannot creep past the budget
    if not budget.take(reserved):
        return _closing(request, responses.throttled(request_id))
    timeout = request.app[SETTINGS].body_timeout
    pieces = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                piece = await request.content.read(_READ_PIECE)
                if not piece:
                    return bytes(pieces)
                size = len(pieces) + len(piece)
                if size > MAX_SYNC_PAYLOAD:
                    return _closing(request, responses.too_large(MAX_SYNC_PAYLOAD, request_id))
                if size > reserved:  # chunked (or more than declared, which aiohttp refuses anyway)
                    if not budget.take(size - reserved):
                        return _closing(request, responses.throttled(request_id))
                    reserved = size
                pieces += piece
    except TimeoutError:
        raise RequestTimeoutException(f"The request body did not arrive within {timeout:g} seconds") from None
    except (ConnectionError, ClientPayloadError) as exc:  # reset, or the connection closed before the body's end
        log.debug("URL request %s: the client left while its body was read (%s)", request_id, exc)
        return _closing(request, web.Response(status=CLIENT_GONE))
    finally:
        budget.give(reserved)


def _event(request: web.Request, url: FunctionUrl, path: str, body: bytes, request_id: str) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    caller = request.get("url_caller") if url.auth_type == "AWS_IAM" else None
    peer = request.remote or ""
    version = request.version
    return build_event(
        url_id=url.url_id,
        method=request.method,
        raw_path=path,
        raw_query=request.raw_path.partition("?")[2],  # aiohttp's query_string is decoded: the function sees it raw
        header_lines=request.headers.items(),
        body=body,
        source_ip=peer,
        protocol=f"HTTP/{version.major}.{version.minor}",
        scheme=request.scheme,
        host=request.headers.get("Host", ""),
        request_id=request_id,
        account_id=settings.account_id,
        iam=None if caller is None else iam_of(caller, settings.account_id),
        epoch=time.time(),
    )


def iam_of(caller: Any, account_id: str) -> dict[str, Any]:
    """`requestContext.authorizer.iam` of an AWS_IAM caller (a `gateway.api.sigv4.Identity`): an operator is the
    account's root user (its user id is the account id); a function's session is its role's assumed-role session."""
    session = getattr(caller, "session", None)
    if session is None:
        user_arn, user_id = f"arn:aws:iam::{account_id}:root", account_id
    else:
        role_id = "AROA" + hashlib.sha256(session.role_arn.encode()).hexdigest()[:17].upper()
        user_arn, user_id = session.assumed_role_arn, f"{role_id}:{session.function_name}"
    return {
        "accessKey": caller.access_key_id,
        "accountId": account_id,
        "callerId": user_id,
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": user_arn,
        "userId": user_id,
    }


async def _streamed(
    request: web.Request,
    run: asyncio.Future[Outcome],
    stream: Stream,
    config_cors: url_cors.Cors | None,
    origin: str | None,
) -> web.StreamResponse:
    """A RESPONSE_STREAM URL's answer (see the module's docstring, 5)."""
    try:
        await stream.begun()
        if run.done() and run.exception() is not None:  # failed before its function ran
            raise run.exception()  # type: ignore[misc]
        first = await stream.read()
        if not first:  # nothing streamed: the function answered at once (or failed)
            return _unstreamed(await run, config_cors, origin)
        head, first = await _head(stream, first)
        if head is None:  # malformed: answered now, not when the function ends; what it still sends is dropped,
            stream.discard()  # and its end releases its slot (the run's done-callback)
            return responses.bad_gateway(stream.request_id)
        if config_cors is not None:
            head.headers = url_cors.apply(config_cors, origin, head.headers)
        response = web.StreamResponse(status=head.status, headers=responses.header_lines(head, stream.request_id))
        await response.prepare(request)
        return await _pump(request, response, run, stream, first)
    except asyncio.CancelledError:
        run.cancel()  # the gateway stops and cuts this request: the invocation goes with it
        raise


def _unstreamed(outcome: Outcome, config_cors: url_cors.Cors | None, origin: str | None) -> web.Response:
    """A RESPONSE_STREAM URL's answer when the function did not stream: its result as it is."""
    if outcome.function_error is not None:
        return responses.bad_gateway(outcome.request_id)
    head = responses.Mapped(200, [("Content-Type", responses.JSON)], outcome.payload)
    if config_cors is not None:
        head.headers = url_cors.apply(config_cors, origin, head.headers)
    return responses.response(head, outcome.request_id)


async def _head(stream: Stream, data: bytes) -> tuple[responses.Mapped | None, bytes]:
    """The response's head (from the prelude when the stream has one) and the first body bytes; None if malformed."""
    if stream.content_type != responses.PRELUDE_CONTENT_TYPE:
        return responses.Mapped(200, [("Content-Type", stream.content_type or "application/octet-stream")]), data
    parsed = responses.parse_prelude(data)
    while parsed is None:
        more = await stream.read()
        if not more:  # ended without the delimiter: a prelude alone
            parsed = responses.parse_prelude(data + responses.PRELUDE_DELIMITER)
            break
        data += more
        parsed = responses.parse_prelude(data)
    assert parsed is not None
    return parsed


async def _pump(
    request: web.Request, response: web.StreamResponse, run: asyncio.Future[Outcome], stream: Stream, data: bytes
) -> web.StreamResponse:
    """Write the body as it comes, each write within the body timeout; then its end, or a cut for a failure."""
    deadline = request.app[SETTINGS].body_timeout
    connected = True
    while data:
        if connected:
            connected = await write_piece(request, response, stream, data, deadline)
        data = await stream.read()
    try:
        outcome = await run
        failed = outcome.function_error is not None
        if not failed and outcome.payload and connected:  # the reply's last piece
            connected = await write_piece(request, response, stream, outcome.payload, deadline)
    except LambdaError:
        failed = True
    if failed:  # the head is out: cut the connection so that the client cannot take the body for complete
        transport = request.transport
        if transport is not None:
            transport.abort()
    elif connected:
        await write_piece(request, response, stream, None, deadline)
    return response
