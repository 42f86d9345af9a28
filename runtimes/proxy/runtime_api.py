"""Lambda's Runtime API (2018-06-01) for one runtime process, on the proxy's HTTP server; one invocation at a time.

    GET  /2018-06-01/runtime/invocation/next            long poll: the next invocation's payload and headers
    POST /2018-06-01/runtime/invocation/{id}/response   its result -> RESULT frame
    POST /2018-06-01/runtime/invocation/{id}/error      its error (Lambda-Runtime-Function-Error-Type) -> ERROR frame
    POST /2018-06-01/runtime/init/error                 Init failed -> READY with the error (its body as posted)

The runtime's first `next` ends Init (READY); an INVOKE answers the waiting `next` (or waits for it). Answers follow
Lambda's (its runtime interface emulator's `rapi`): 202 {"status": "OK"}; a response for another request id while an
invocation is in flight, 400 InvalidRequestID; a response, an error or a `next` out of turn (nothing in flight, an
answer already given, a second `next`), 403 InvalidStateTransition; a body over Lambda's 6 MB response limit, 413
RequestEntityTooLarge to the runtime and Function.ResponseSizeTooLarge for the invocation. Nothing the runtime sends
reaches the gateway but one reply per invocation, as bytes: a hostile runtime can only fail its own invocations.

Streamed responses (`Lambda-Runtime-Function-Response-Mode: streaming`, a chunked body): `stream_sink`, when set,
gets the body's pieces as they arrive (a hook for CHUNK frames, see `RuntimeApi.stream_sink`); unset, the body is
buffered and becomes one RESULT, or an ERROR when its trailers carry Lambda-Runtime-Function-Error-Type (with the
error document, base64, in Lambda-Runtime-Function-Error-Body), as Lambda reports a stream that failed midway.

A runtime that exits after answering is started again by the proxy (runtimes/proxy/main.py): `handed` counts the
invocations a runtime process took (none: no restart, never a loop), `reinit` marks a restarted one until its first
`next` (its init/error is its re-Init's: `on_reinit_error`), and `fail` answers what waits, or comes, once a re-Init
failed.

Concurrency: callbacks of the proxy's event loop (runtimes/proxy/main.py), one thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import Callable

from gateway.contracts.environment import MAX_STREAM, MAX_SYNC_RESPONSE, Invoke, error_head, result_head
from runtimes.proxy.link import GatewayLink
from runtimes.proxy.server import BodySink, Exchange, Router, error_document

PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "lambda-runtime-function-error-type"
ERROR_BODY_TRAILER = "lambda-runtime-function-error-body"
RESPONSE_MODE_HEADER = "lambda-runtime-function-response-mode"
#: Lambda's response limit (the figure its messages name)
MAX_RESPONSE = 6291556
#: how much of an error's type, message and stack the gateway is given (Lambda's limits are of this order)
MAX_ERROR_TYPE = 1024
MAX_ERROR_MESSAGE = 256 * 1024
_ACCEPTED = json.dumps({"status": "OK"}).encode()
_INVALID_ID = error_document("InvalidRequestID", "Invalid request ID")
_TOO_LARGE = error_document("RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({MAX_RESPONSE} bytes).")
_getrandbits = random.Random().getrandbits


def trace_id() -> str:
    """An X-Ray trace header as Lambda passes one (Lambda-Runtime-Trace-Id): a new root, a parent, not sampled."""
    return f"Root=1-{int(time.time()):08x}-{_getrandbits(96):024x};Parent={_getrandbits(64):016x};Sampled=0"


def header_safe(value: bytes) -> str:
    """`value` (JSON text) as one header line's value, in ASCII: JSON whitespace that is a line break would end the
    header (and let a caller write the runtime's headers), and a header is Latin-1 on the wire, so text with either
    is re-encoded on one line with non-ASCII characters escaped (the same JSON value)."""
    text = value.decode("utf-8", "replace")
    if text.isascii() and text.isprintable():
        return text
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return "".join(c for c in text if " " <= c < "\x7f")


class RuntimeApi:
    """The Runtime API's state for one runtime (see the module's docstring). `memory` gives the runtime's peak RSS
    (KB) and `pending` the bytes its output pipe holds, for each reply; `init_start` is perf_counter() at the seal."""

    def __init__(
        self, link: GatewayLink, init_start: float, pending: Callable[[], int], memory: Callable[[], int]
    ) -> None:
        self.link = link
        self.init_start = init_start
        self.pending = pending
        self.memory = memory
        self.waiter: Exchange | None = None  # the runtime's `next`, waiting for an invocation
        self.queued: Invoke | None = None  # an invocation that came before the runtime asked for it
        self.current: Invoke | None = None  # the invocation the runtime has and has not answered
        self.started = 0.0  # perf_counter() when `current` arrived
        self.handed = 0  # invocations handed to this runtime process (the proxy restarts one only if it got some)
        self.reinit = False  # a restarted runtime has not asked for `next` yet: init/error is its re-Init's error
        #: re-Init failed: (error type, body) of the error every invocation gets from now on (the environment is reset)
        self.failure: Callable[[Invoke], tuple[str, bytes]] | None = None
        #: a restarted runtime posted init/error (type, message, its document: `init_document`): its re-Init failed
        #: (runtimes/proxy/main.py)
        self.on_reinit_error: Callable[[str, str, bytes], None] = lambda error_type, message, document: None
        self.on_init_error: Callable[[], None] = lambda: None  # Init failed and was reported: end the environment
        #: streamed responses: called with the exchange and its invocation when a runtime starts one (the id checked);
        #: the sink it returns takes the body as it arrives; `response` answers once it is complete (see streaming.py)
        self.stream_sink: Callable[[Exchange, Invoke], BodySink | None] | None = None

    def add_routes(self, router: Router) -> None:
        router.add("GET", f"{PREFIX}/invocation/next", self.next, max_body=64 * 1024)
        for kind, handler in (("response", self.response), ("error", self.error)):
            router.add(
                "POST",
                f"{PREFIX}/invocation/{{}}/{kind}",
                handler,
                on_head=self._response_head if kind == "response" else None,
                on_too_large=self.too_large,
                max_body=MAX_RESPONSE,
            )
        router.add("POST", f"{PREFIX}/init/error", self.init_error, max_body=MAX_RESPONSE)

    # -- invocations in ---------------------------------------------------------------------------------------
    def invoke(self, invoke: Invoke) -> None:
        """An INVOKE from the gateway (which sends one at a time: capacity 1)."""
        self.started = time.perf_counter()
        if self.failure is not None:  # the runtime could not be started again: Lambda's Init failure, at once
            self.current = invoke
            self._reply_error(invoke, *self.failure(invoke))
            return
        waiter = self.waiter
        if waiter is not None and not waiter.closed:  # closed: its runtime is gone (the proxy starts it again)
            self.waiter = None
            self._deliver(waiter, invoke)
        else:
            self.queued = invoke

    def _deliver(self, exchange: Exchange, invoke: Invoke) -> None:
        self.current = invoke
        self.handed += 1
        lines = (
            f"Lambda-Runtime-Aws-Request-Id: {invoke.request_id}\r\n"
            f"Lambda-Runtime-Deadline-Ms: {invoke.deadline_ms}\r\n"
            f"Lambda-Runtime-Invoked-Function-Arn: {invoke.invoked_arn}\r\n"
            f"Lambda-Runtime-Trace-Id: {trace_id()}\r\n"
        )
        if invoke.client_context is not None:
            lines += f"Lambda-Runtime-Client-Context: {header_safe(invoke.client_context)}\r\n"
        exchange.respond(200, invoke.payload, lines)

    # -- routes -----------------------------------------------------------------------------------------------
    def next(self, exchange: Exchange) -> None:
        if not self.link.ready_sent:  # the runtime's first `next`: Init is over
            self.link.ready((time.perf_counter() - self.init_start) * 1000.0)
        self.reinit = False
        if self.current is not None or (self.waiter is not None and not self.waiter.closed):
            self._refuse_transition(exchange, "Running" if self.current is not None else "Ready", "Ready")
            return
        queued = self.queued
        if queued is not None:
            self.queued = None
            self._deliver(exchange, queued)
            return
        self.waiter = exchange
        exchange.on_close = self._waiter_gone

    def _waiter_gone(self, exchange: Exchange) -> None:
        if self.waiter is exchange:
            self.waiter = None

    def _check(self, exchange: Exchange, target: str) -> Invoke | None:
        """The invocation a response or error is for, or None after answering the runtime why not."""
        current = self.current
        if current is None:
            self._refuse_transition(exchange, "Ready" if self.link.ready_sent else "Started", target)
            return None
        if exchange.param != current.request_id:
            exchange.respond(400, _INVALID_ID)
            return None
        return current

    def _response_head(self, exchange: Exchange) -> BodySink | None:
        """A response's head: a streamed one goes to `stream_sink` when there is one (else it is buffered)."""
        hook, current = self.stream_sink, self.current
        if hook is None or not _streaming(exchange):
            return None
        if current is None or exchange.param != current.request_id:
            return None  # refused once complete, by `response`
        return hook(exchange, current)

    def response(self, exchange: Exchange) -> None:
        current = self._check(exchange, "InvocationResponse")
        if current is None:
            return
        error_type = exchange.trailers.get(ERROR_TYPE_HEADER)
        if error_type:  # a streamed response that failed midway (buffered here: no stream_sink)
            body = _trailer_document(exchange.trailers.get(ERROR_BODY_TRAILER, ""), error_type)
            self._reply_error(current, error_type, body)
        else:
            self._reply_result(current, exchange.body)
        exchange.respond(202, _ACCEPTED)

    def error(self, exchange: Exchange) -> None:
        current = self._check(exchange, "InvocationErrorResponse")
        if current is None:
            return
        body = exchange.body
        header = exchange.request.headers.get(ERROR_TYPE_HEADER)
        error_type = header or _field(body, "errorType") or "Runtime.Unknown"
        if not body:
            body = error_document(error_type[:MAX_ERROR_TYPE], "")
        self._reply_error(current, error_type, body)
        exchange.respond(202, _ACCEPTED)

    def too_large(self, exchange: Exchange, size: int) -> None:
        """A response or error body over MAX_RESPONSE (`size`: its declared length, or just over the limit)."""
        current = self._check(exchange, "InvocationResponse")
        if current is None:
            return
        if exchange.request.length > 0:
            what = f"Response payload size ({size} bytes) exceeded"
        else:
            what = "Response payload size exceeded"
        streamed = self.stream_sink is not None and _streaming(exchange)  # its limit is a streamed response's
        message = f"{what} maximum allowed payload size ({MAX_STREAM if streamed else MAX_RESPONSE} bytes)."
        self._reply_error(
            current, "Function.ResponseSizeTooLarge", error_document("Function.ResponseSizeTooLarge", message)
        )
        exchange.respond(413, _TOO_LARGE)

    def init_error(self, exchange: Exchange) -> None:
        if self.link.ready_sent and not self.reinit:
            self._refuse_transition(exchange, "Ready", "InitError")
            return
        body = exchange.body
        header = exchange.request.headers.get(ERROR_TYPE_HEADER)
        error_type = (header or _field(body, "errorType") or "Runtime.Unknown")[:MAX_ERROR_TYPE]
        message = (_field(body, "errorMessage") or "")[:MAX_ERROR_MESSAGE]  # for the log and the gateway's notes
        document = init_document(body, error_type)
        exchange.respond(202, _ACCEPTED)
        if self.reinit:
            self.reinit = False
            self.on_reinit_error(error_type, message, document)
            return
        self.link.ready((time.perf_counter() - self.init_start) * 1000.0, error_type, message, document)
        self.on_init_error()

    def fail(self, failure: Callable[[Invoke], tuple[str, bytes]]) -> None:
        """The runtime cannot serve again (its re-Init failed): the invocation waiting for it, and any that still
        comes, gets `failure(invoke)` (error type, body) at once."""
        self.failure = failure
        self.waiter = None
        queued, self.queued = self.queued, None
        if queued is not None:
            self.current = queued
            self._reply_error(queued, *failure(queued))

    # -- replies out ------------------------------------------------------------------------------------------
    def _reply_result(self, current: Invoke, payload: bytes) -> None:
        self.current = None
        duration_ms = (time.perf_counter() - self.started) * 1000.0
        self.link.reply(result_head(current.inv_id, payload), duration_ms, self.memory(), self.pending())

    def _reply_error(self, current: Invoke, error_type: str, body: bytes) -> None:
        self.current = None
        duration_ms = (time.perf_counter() - self.started) * 1000.0
        head = error_head(current.inv_id, error_type[:MAX_ERROR_TYPE], body)
        self.link.reply(head, duration_ms, self.memory(), self.pending())

    @staticmethod
    def _refuse_transition(exchange: Exchange, state: str, target: str) -> None:
        message = (
            f"State transition from {state} to {target} failed for runtime. Error: State transition is not allowed"
        )
        exchange.respond(403, error_document("InvalidStateTransition", message))


def _streaming(exchange: Exchange) -> bool:
    """Whether a response's head asks for Lambda's streaming mode."""
    return exchange.request.headers.get(RESPONSE_MODE_HEADER, "").lower() == "streaming"


def _trailer_document(encoded: str, error_type: str) -> bytes:
    """The error document a streamed response's trailer carries (base64), or one made of its type."""
    try:
        body = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, ValueError):
        body = b""
    return body if _document(body) is not None else error_document(error_type[:MAX_ERROR_TYPE], "")


def _document(body: bytes) -> dict[str, object] | None:
    try:
        doc = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _field(body: bytes, name: str) -> str | None:
    """A string field of a JSON object body (an error document's errorType, errorMessage), if it has one."""
    doc = _document(body)
    value = doc.get(name) if doc is not None else None
    return value if isinstance(value, str) and value else None


def init_document(body: bytes, error_type: str) -> bytes:
    """What the caller of an invocation whose Init failed gets: the body the runtime posted to init/error, as it is
    (Lambda passes it on unchanged, JSON or not), as READY's `stack_trace` carries a runtime's document (see
    gateway/contracts/environment.py): never empty (an empty body becomes {"errorMessage": "", "errorType": ...}, as
    for /error) and never starting with "[" (such a body gets one leading space: the same JSON, if it is JSON)."""
    if not body:
        return error_document(error_type, "")
    return (b" " + body)[:MAX_SYNC_RESPONSE] if body[:1] == b"[" else body  # within READY's limit, as the body is
