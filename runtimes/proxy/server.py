"""The proxy's HTTP/1.1 server: an asyncio.Protocol per connection over the parser of runtimes/proxy/http.py, and a
router of fixed routes. No task of its own: everything runs in callbacks of the event loop (one thread).

A route's handler is called once a request's body is complete, with an `Exchange`; it answers with
`exchange.respond()` then or later (a long poll: `invocation/next` waits for an invocation). Requests on one
connection are answered in order: while one waits for its answer, the next is not parsed (its bytes stay buffered,
and reading pauses once they pass MAX_HEAD). Keep-alive by default (HTTP/1.1), `Expect: 100-continue` answered when
the body is wanted, a malformed request answered 400 (or 413, 431, 501, 505) and the connection closed.

Seams for what comes later, without a change here: more routes (`Router.add`: the Extensions API
/2020-01-01/extension, the Telemetry API /2022-07-01/telemetry); a route's `on_head`, called with the head before the
body is read, may return a `BodySink` that takes the body's pieces as they arrive instead of the buffer (a streamed
response: chunks out as CHUNK frames, trailers at the end); `on_too_large` answers a body over the route's
`max_body` (Lambda fails the invocation: Function.ResponseSizeTooLarge).
"""

from __future__ import annotations

import asyncio
import json
import socket
import traceback
from collections.abc import Callable

from runtimes.proxy.http import BODY, END, HEAD, MAX_BODY, MAX_HEAD, HttpError, Request, RequestParser

REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = "Connection: close\r\n\r\n"
_INTERNAL_ERROR = b'{"errorMessage": "Internal Server Error", "errorType": "InternalServerError"}'
#: after answering 413 to a body declared (or grown) too large, at most this much more of it is read and dropped
#: before the connection closes: a client that sends the whole body before it reads the answer (most do) then reads
#: the 413 instead of a reset connection
DISCARD_LIMIT = 64 * 1024 * 1024
#: ... and the connection closes when none of it came for this long (a client that waits for the answer first)
DISCARD_IDLE = 1.0


def error_document(error_type: str, message: str) -> bytes:
    """The Runtime API's error answer: {"errorMessage", "errorType"}."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


class BodySink:
    """Takes a request's body as it arrives (see `Router.add`'s `on_head`). `max_body`, when set, replaces the
    route's limit on the body (a streamed response may be larger than a buffered one)."""

    max_body: int | None = None

    def data(self, piece: bytes) -> None:
        raise NotImplementedError

    def end(self, trailers: dict[str, str]) -> None:
        """The body is complete (`trailers`: a chunked body's trailer fields); the route's handler runs next."""


Handler = Callable[["Exchange"], None]
OnHead = Callable[["Exchange"], "BodySink | None"]
OnTooLarge = Callable[["Exchange", int], None]


class Route:
    __slots__ = ("handler", "max_body", "on_head", "on_too_large")

    def __init__(self, handler: Handler, on_head: OnHead | None, on_too_large: OnTooLarge | None, max_body: int):
        self.handler = handler
        self.on_head = on_head
        self.on_too_large = on_too_large
        self.max_body = max_body


class Router:
    """Fixed routes: exact paths, and paths with one `{}` segment (the request id), whose value is `Exchange.param`."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], Route] = {}
        self._param: list[tuple[str, str, str, Route]] = []  # (method, prefix, suffix, route)
        self._paths: set[str] = set()

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        on_head: OnHead | None = None,
        on_too_large: OnTooLarge | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        route = Route(handler, on_head, on_too_large, max_body)
        if "{}" in path:
            prefix, _, suffix = path.partition("{}")
            self._param.append((method, prefix, suffix, route))
        else:
            self._exact[(method, path)] = route
        self._paths.add(path)

    def find(self, method: str, path: str) -> tuple[Route | None, str]:
        """(the route, the `{}` segment's value) or (None, "") when nothing matches."""
        route = self._exact.get((method, path))
        if route is not None:
            return route, ""
        for want, prefix, suffix, route in self._param:
            if want == method and path.startswith(prefix) and path.endswith(suffix):
                param = path[len(prefix) : len(path) - len(suffix)]
                if param and "/" not in param:
                    return route, param
        return None, ""


class Exchange:
    """One request and its answer. `closed`: the connection is gone (set before `on_close` is called)."""

    __slots__ = ("_conn", "answered", "body", "closed", "on_close", "param", "request", "trailers")

    def __init__(self, conn: HttpConnection, request: Request, param: str) -> None:
        self._conn = conn
        self.request = request
        self.param = param
        self.body = b""
        self.trailers: dict[str, str] = {}
        self.answered = False
        self.closed = False
        #: called once if the connection goes away before the answer (a long poll's waiter forgets it)
        self.on_close: Callable[[Exchange], None] | None = None

    def respond(
        self, status: int, body: bytes = b"", headers: str = "", content_type: str = "application/json"
    ) -> None:
        """Answer (once; later calls are ignored). `headers`: extra header lines, each ending in CRLF."""
        if self.answered:
            return
        self.answered = True
        if not self.closed:
            self._conn.answer(self, status, body, headers, content_type)


def _not_found(exchange: Exchange) -> None:
    exchange.respond(404, error_document("NotFound", f"Path not found: {exchange.request.path}"))


_NOT_FOUND = Route(_not_found, None, None, MAX_BODY)


class HttpConnection(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None
        self._current: Exchange | None = None  # the request being read or waiting for its answer
        self._route: Route = _NOT_FOUND
        self._sink: BodySink | None = None
        self._pieces: list[bytes] = []
        self._waiting = False  # the current request is complete and waits for its answer
        self._paused = False
        self._closing = False
        self._closing_after = False  # close once the current request is answered
        self._discard = 0  # bytes still to drop before closing (after a 413)
        self._linger: asyncio.TimerHandle | None = None
        self._pumping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers are one write; never delay them

    def data_received(self, data: bytes) -> None:
        if self._closing:
            if self._discard > 0:
                self._discard -= len(data)
                self._linger_then_close(self._discard <= 0)
            return
        self._parser.feed(data)
        if self._waiting:
            if self._parser.buffered > MAX_HEAD and not self._paused and self._transport is not None:
                self._transport.pause_reading()  # a client that pipelines without end: wait for the answer
                self._paused = True
            return
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._linger is not None:
            self._linger.cancel()
        exchange, self._current = self._current, None
        if exchange is not None and not exchange.answered:
            exchange.closed = True
            if exchange.on_close is not None:
                exchange.on_close(exchange)

    def _pump(self) -> None:
        """Parse and dispatch what is buffered, until a request waits for its answer or more bytes are needed."""
        parser = self._parser
        self._pumping = True
        try:
            while not self._waiting and not self._closing:
                event = parser.next_event()
                if event is None:
                    return
                kind, value = event
                if kind == HEAD:
                    self._begin(value)
                elif kind == BODY:
                    if self._sink is not None:
                        self._sink.data(value)
                    else:
                        self._pieces.append(value)
                elif kind == END:
                    self._finish(value)
        except HttpError as exc:
            self._refuse(exc)
        finally:
            self._pumping = False

    def _begin(self, request: Request) -> None:
        route, param = self._router.find(request.method, request.path)
        route = route or _NOT_FOUND
        exchange = self._current = Exchange(self, request, param)
        self._route = route
        self._sink = sink = route.on_head(exchange) if route.on_head is not None else None
        limit = route.max_body if sink is None or sink.max_body is None else sink.max_body
        self._parser.body_limit = limit
        if request.length > limit:  # declared too large: answer before reading it, then close
            self._closing_after = True
            raise HttpError(413, "request body too large")
        if request.expect_continue and request.length and self._transport is not None:
            self._transport.write(_CONTINUE)

    def _finish(self, trailers: dict[str, str]) -> None:
        exchange = self._current
        assert exchange is not None
        pieces, self._pieces = self._pieces, []
        exchange.body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        exchange.trailers = trailers
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.end(trailers)
        self._waiting = True
        try:
            self._route.handler(exchange)  # may answer at once (then the loop in _pump goes on) or later
        except Exception:  # a bug of ours: the runtime gets Lambda's 500, the function's log the traceback
            traceback.print_exc()
            exchange.respond(500, _INTERNAL_ERROR)

    def _refuse(self, exc: HttpError) -> None:
        """A request we will not read: its route may answer a body too large (413); else a plain error. Then close."""
        exchange, route = self._current, self._route
        self._sink = None
        self._pieces = []
        if exc.status == 413 and exchange is not None:
            length = exchange.request.length
            # declared too large: none of it read yet (what is buffered is its start); else grown past the limit
            self._discard = (min(length, DISCARD_LIMIT) if length > 0 else DISCARD_LIMIT) - self._parser.buffered
            if route.on_too_large is not None and not exchange.answered:
                self._waiting = True
                self._closing_after = True
                route.on_too_large(exchange, length if length > 0 else self._parser.body_limit + 1)
                return
        body = error_document("InvalidRequest", exc.reason)
        self._write(exc.status, body, "", "application/json", close=True)

    def answer(self, exchange: Exchange, status: int, body: bytes, headers: str, content_type: str) -> None:
        """Write an exchange's answer (from Exchange.respond); then go on with the next request, or close."""
        if exchange is not self._current:
            return
        close = self._closing_after or not exchange.request.keep_alive
        self._current = None
        self._waiting = False
        self._write(status, body, headers, content_type, close)
        if close:
            return
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        if self._parser.buffered and not self._pumping:  # inside _pump (answered at once), its loop goes on
            self._pump()

    def _write(self, status: int, body: bytes, headers: str, content_type: str, close: bool) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        ending = _CLOSE if close else "\r\n"
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n{ending}"
        ).encode("latin-1")
        if len(body) < 16384:
            transport.write(head + body)  # one segment for small answers
        else:
            transport.write(head)
            transport.write(body)
        if close:
            self._closing = True
            self._linger_then_close(self._discard <= 0)

    def _linger_then_close(self, now: bool) -> None:
        """Close now, or once the body being dropped stops coming for DISCARD_IDLE seconds."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._transport is None:
            return
        if now:
            self._transport.close()
        else:
            self._linger = asyncio.get_running_loop().call_later(DISCARD_IDLE, self._transport.close)


async def listen(router: Router, host: str, port: int) -> tuple[asyncio.AbstractServer, int]:
    """Serve `router` on host:port (0: a free port); the server and the port it got."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(router), host, port, reuse_address=True, backlog=64)
    sockets = server.sockets or ()
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return server, bound
