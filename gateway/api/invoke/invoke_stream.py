"""InvokeWithResponseStream: `POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations`.

The request is Invoke's (the same headers, limits, admission before the body, the same invoker, metrics and logs),
with `X-Amz-Invocation-Type` RequestResponse (default) or DryRun (204, nothing runs). The answer is 200 with
`Content-Type: application/vnd.amazon.eventstream` and `X-Amz-Executed-Version`, whose body is a stream of events
(gateway/api/invoke/eventstream.py), written as they come:

- a `PayloadChunk` per piece a streaming function (a Runtime API runtime in streaming response mode) sends, as the
  piece arrives; a function that does not stream (the Python fast path, as Lambda's buffered runtimes) gets its
  whole response as one `PayloadChunk`;
- then `InvokeComplete`: `LogResult` (base64 of the log's last 4 KB) when `X-Amz-Log-Type: Tail`; and for a
  function error (raised, timed out, crashed, out of memory, too large), `ErrorCode` = its errorType (e.g.
  `Sandbox.Timedout`) and `ErrorDetails` = the error document Invoke would return, with no `PayloadChunk` of it.

What fails before the invocation reaches an environment is an ordinary Lambda error (404 unknown function, 429
throttled, 413, 500 no runtime, ...). The status line and headers go out when it does (after Init, on a cold start):
a gateway error after that (the gateway stopping) can only be an `InvokeComplete` with its name as `ErrorCode`.

Concurrency: the invocation runs in a task of its own, feeding a `Stream` (gateway/execution/streams.py) that this
handler drains into the response; a slow client holds the function back (its socket is paused), never the gateway's
memory. A client that leaves mid-stream does not stop the function (as on Lambda): the rest is discarded. A client
that stops reading without leaving (its receive window at zero) is left after `Settings.body_timeout` seconds
(GATEWAY_BODY_TIMEOUT) without progress on a write: its connection is aborted and the rest discarded. The
concurrency slot is the invocation's: released when the function ends, however long its answer takes to write.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from aiohttp import web

from gateway.api.invoke import eventstream
from gateway.api.invoke.invoke import invalid_types, read_payload, throttled
from gateway.app_keys import CONCURRENCY, INVOKER, METRICS, REGISTRY, SETTINGS
from gateway.errors import LambdaError, TooManyRequestsException
from gateway.execution.invoker import Outcome, new_request_id
from gateway.execution.streams import Stream
from gateway.store.names import parse_function_name
from gateway.store.states import check_invocable

PATH = "/2021-11-15/functions/{FunctionName}/response-streaming-invocations"
INVOCATION_TYPES = ("RequestResponse", "DryRun")


async def invoke_with_response_stream(request: web.Request) -> web.StreamResponse:
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
    if inv_type == "DryRun":
        await read_payload(request)
        config = registry.resolve(ref.name, ref.qualifier)
        return web.Response(status=204, headers={"X-Amz-Executed-Version": config.version})
    concurrency = app[CONCURRENCY]
    metrics = app[METRICS]
    try:  # admission before the body is read, as for Invoke
        token = concurrency.admit(ref.name, ref.qualifier)
    except TooManyRequestsException as exc:
        return throttled(metrics, ref.name, exc)
    run: asyncio.Future[Outcome] | None = None
    try:
        payload, client_context = await read_payload(request)
        config = registry.resolve(ref.name, ref.qualifier, route=True)
        check_invocable(config)  # Pending: AWS's ResourceConflictException (gateway.store.states)
        invoked_arn = app[SETTINGS].function_arn(ref.name, ref.qualifier)
        stream = Stream(new_request_id())
        run = asyncio.ensure_future(
            app[INVOKER].invoke(config, invoked_arn, payload, client_context, log_type == "Tail", stream)
        )

        def ended(_: object) -> None:  # the slot is the invocation's, not the answer's: a stuck reader holds none
            stream.close()
            concurrency.release(token)

        run.add_done_callback(ended)
        deadline = app[SETTINGS].body_timeout
        response, outcome = await _answer(request, run, stream, config.version, log_type == "Tail", deadline)
    except TooManyRequestsException as exc:  # no room on the node for another environment
        metrics.throttled(ref.name, exc.reason)
        raise
    finally:
        if run is None:  # it never started: nothing else releases the slot
            concurrency.release(token)
    if outcome is not None:
        stamps = (outcome.written_at, outcome.replied_at)
        sent = stream.total + len(outcome.payload)
        metrics.exchanged(received, stamps, len(payload), sent, outcome.init_ms is not None)
    return response


async def _answer(
    request: web.Request, run: asyncio.Future[Outcome], stream: Stream, version: str, tail: bool, deadline: float
) -> tuple[web.StreamResponse, Outcome | None]:
    """Stream the pieces as they come, then the end, each write within `deadline` seconds (see `write_piece`). Raises
    the invocation's LambdaError if it failed before it reached an environment (the status line goes out when it
    does)."""
    try:
        await stream.begun()
        if run.done() and run.exception() is not None:  # failed before its function ran: an HTTP error
            raise run.exception()  # type: ignore[misc]
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": eventstream.CONTENT_TYPE,
                "X-Amz-Executed-Version": version,
                "x-amzn-RequestId": stream.request_id,
            },
        )
        await response.prepare(request)
        connected = True
        data = await stream.read()
        while data:
            if connected:
                connected = await write_piece(request, response, stream, eventstream.payload_chunk(data), deadline)
            data = await stream.read()
        outcome: Outcome | None = None
        try:
            outcome = await run
            end = _end(outcome, tail)
        except LambdaError as exc:  # the gateway failed it (stopping): the caller has the status line already
            end = eventstream.invoke_complete(exc.name, exc.message)
        if connected and await write_piece(request, response, stream, end, deadline):
            await write_piece(request, response, stream, None, deadline)
        return response, outcome
    except asyncio.CancelledError:
        run.cancel()  # the gateway stops and cuts this request: the invocation goes with it
        raise


def _end(outcome: Outcome, tail: bool) -> bytes:
    """What follows the streamed pieces: a function that did not stream has its whole response as one piece."""
    log = outcome.log_result() if tail else None
    if outcome.function_error is not None:
        details = outcome.payload.decode(errors="replace")
        return eventstream.invoke_complete(outcome.error_type, details, log)
    last = eventstream.payload_chunk(outcome.payload) if outcome.payload else b""
    return last + eventstream.invoke_complete(log_result=log)


async def write_piece(
    request: web.Request, response: web.StreamResponse, stream: Stream, data: bytes | None, deadline: float
) -> bool:
    """Write `data` to the caller (None: the body's end); False once it is gone, and what the function still sends
    is then dropped. A caller that takes none of it for `deadline` seconds (it stopped reading, the connection open)
    is gone too: its connection is aborted, so that it holds neither the gateway's memory nor a task forever.
    Public: the function URLs' streamed answers (gateway/api/urls/serving.py) are written through it too."""
    try:
        async with asyncio.timeout(deadline):
            if data is None:
                await response.write_eof()
            else:
                await response.write(data)
    except TimeoutError:
        stream.discard()
        transport = request.transport
        if transport is not None:
            transport.abort()
        return False
    except (ConnectionError, RuntimeError):  # reset, or aiohttp's "cannot write to closing transport"
        stream.discard()
        return False
    return True


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, invoke_with_response_stream)
