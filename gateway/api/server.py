"""The HTTP server under the routes: the connection cap, limits on request heads, idle and slow clients.

`GatewaySite` listens with `ConnectionLimiter` as its protocol factory, which makes each accepted connection a
`GatewayRequestHandler` (aiohttp's `RequestHandler` with Lambda-shaped answers to what its parser refuses):

- At most `Settings.max_connections` connections are open at once. A slot is taken when a connection is accepted and
  given back when it is lost, so the cap costs nothing per request. A connection beyond it is answered a 503
  `ServiceUnavailableException` (`Retry-After: 1`) and closed; the established ones never notice.
- One client address holds at most `Settings.max_connections_per_client` of them, so that no address can take every
  slot and lock the others out. A client at its cap that opens another connection gets it in exchange for its oldest
  idle one (no request in progress: a keep-alive connection between requests, or one still sending its head), which
  is closed as the keep-alive timeout would close it; with none idle, the new one gets the same 503.
- aiohttp's parser refuses a URL over `MAX_URL_BYTES`, a header field over `Settings.max_header_bytes` (it counts
  the value, and the name separately) and more than `Settings.max_headers` header fields. Its own answer is a
  plain-text 400; here they are a Lambda-shaped 414 `URITooLongException` or 431
  `RequestHeaderFieldsTooLargeException`, and any other malformed request a 400 `BadRequestException`. The connection
  is closed after the answer.
- A connection that has not delivered a complete request head `Settings.keepalive_timeout` seconds after it opened,
  or after its previous response, is closed: that bounds idle keep-alive connections and clients that trickle their
  headers alike. This is aiohttp's keep-alive timer, which runs while no request is being handled and is armed at
  the connection's start since aiohttp 3.14.4 (hence the dependency's floor). A request being handled is never cut.
- Bodies must arrive within `Settings.body_timeout` seconds: see `gateway.api.http.read_body`.

Everything here runs on the event loop, as aiohttp's protocols do.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from yarl import URL

from gateway.api.http import error_response
from gateway.app_keys import RESPONSE_COUNTER
from gateway.errors import (
    BadRequestException,
    LambdaError,
    RequestHeaderFieldsTooLargeException,
    ServiceException,
    ServiceUnavailableException,
    URITooLongException,
)
from gateway.settings import Settings

log = logging.getLogger("gateway.http")

#: the longest URL a request line may carry (Lambda's longest paths, with an ARN and a query, take a few hundred)
MAX_URL_BYTES = 8192
#: seconds a refused connection may keep sending before it is closed (see `_Refusal`)
REFUSAL_LINGER = 1.0
#: the connection-limit warning is logged at most this often, seconds
WARN_INTERVAL = 10.0
#: what is echoed of a malformed request in the 400's message
MAX_ECHO = 200


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's protocol for one connection; gives its slot back to the limiter when the connection is lost.

    `environment_facing`: accepted on the environments' listener, or on a wildcard listener at the address only
    environments reach (`environment_address`, the bridge's): every request on it must be signed
    (`gateway.api.auth`)."""

    __slots__ = ("_client", "_environment_address", "_limiter", "environment_facing")

    def __init__(
        self,
        manager: web.Server,
        *,
        limiter: ConnectionLimiter,
        environment_facing: bool = False,
        environment_address: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(manager, **options)
        self._limiter: ConnectionLimiter | None = limiter
        self.environment_facing = environment_facing
        self._environment_address = environment_address
        self._client: str | None = None  # the peer's address once admitted under the per-client cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limiter = self._limiter
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if limiter is not None and not limiter.admit_client(self, client):
            # over its address's cap: the canned 503 takes over the transport; aiohttp never sees this connection
            self._limiter = None
            limiter.release(self)
            refusal = _Refusal(limiter.client_answer, limiter.loop)
            transport.set_protocol(refusal)
            refusal.connection_made(transport)
            return
        self._client = client
        super().connection_made(transport)
        if self._environment_address is not None and not self.environment_facing:
            sockname = transport.get_extra_info("sockname")
            if isinstance(sockname, tuple) and str(sockname[0]).removeprefix("::ffff:") == self._environment_address:
                self.environment_facing = True

    @property
    def idle(self) -> bool:
        """No request is being handled (between keep-alive requests, or before the first head is complete)."""
        return not self._request_in_progress

    def refuse_body(self) -> None:
        """Close this connection after the current response without reading what is left of the request's body
        (aiohttp would otherwise read and discard it for up to 10 s to keep the connection alive)."""
        self._lingering_time = 0.0

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        """Once per answered request (aiohttp calls it when the answer went out): count it for the metrics
        (`RESPONSE_COUNTER`), then write the access log. A request that never reached the app (refused by the parser)
        has no route, and is not counted."""
        match_info = getattr(request, "_match_info", None)  # a web.Request the app routed (or the front door)
        if match_info is not None:
            count = match_info.current_app.get(RESPONSE_COUNTER)
            if count is not None:
                try:
                    count(request, response)
                except Exception:  # a metric must not cost the access log line or the connection
                    log.exception("cannot count the answer to %s %s", request.method, request.path)
        super().log_access(request, response, time)

    def connection_lost(self, exc: BaseException | None) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:  # once, however often aiohttp calls this
            limiter.release(self)
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (or, never here, a handler's escaped exception).

        Same contract as aiohttp's: log, refuse if a response has begun, close the connection after the answer.
        """
        err = self._error_for(status, exc, message)
        if err.status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:  # the client's fault: one line, no traceback, as the access log would have it
            log.info("refused a request from %s: %d %s", request.remote, err.status, err.message)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = error_response(err)
        response.force_close()
        return response

    def _error_for(self, status: int, exc: BaseException | None, message: str | None) -> LambdaError:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_line_size and limit != self.max_field_size:
                return URITooLongException(f"The request's URL is longer than {self.max_line_size} bytes")
            if limit == self.max_field_size and limit != self.max_line_size:
                return RequestHeaderFieldsTooLargeException(
                    f"A request header field is longer than {self.max_field_size} bytes"
                )
            return RequestHeaderFieldsTooLargeException(
                f"The request's URL or a header field is longer than {limit} bytes"
            )
        if isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers"):
            return RequestHeaderFieldsTooLargeException(f"The request has more than {self.max_headers} header fields")
        if status < 500:
            detail = (exc.message if isinstance(exc, BadHttpMessage) else message) or "not HTTP/1.x"
            return BadRequestException(f"Malformed HTTP request: {detail[:MAX_ECHO]}")
        return ServiceException("An internal error occurred in the gateway")


class _Refusal(asyncio.Protocol):
    """A connection over the cap: the canned 503 goes out at once and the connection is closed.

    The gateway half-closes after the answer and discards what the client sends, then closes when the client does or
    after REFUSAL_LINGER seconds: closing with request bytes unread would reset the connection, and the client could
    lose the answer.
    """

    def __init__(self, answer: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self._answer = answer
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        transport.write(self._answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self._loop.call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class ConnectionLimiter:
    """Protocol factory of the listening socket: a `GatewayRequestHandler` per connection while fewer than `limit`
    are open, a `_Refusal` beyond that; then at most `per_client` of them per client address (`admit_client`).
    `active` counts the open ones, `refused` those turned away, `evicted` idle ones closed for their own client."""

    def __init__(
        self, server: web.Server, limit: int, options: Mapping[str, Any], per_client: int | None = None
    ) -> None:
        self.server = server
        self.limit = limit
        self.per_client = limit if per_client is None else per_client
        self.active = 0
        self.refused = 0
        self.evicted = 0
        #: client address -> its admitted connections, oldest first
        self.clients: dict[str, dict[GatewayRequestHandler, None]] = {}
        self._options = dict(options)
        self.loop = asyncio.get_running_loop()
        self._answer = _refusal_answer(f"its limit of {limit} connections")
        self.client_answer = _refusal_answer(f"this client address its limit of {self.per_client} connections")
        self._warned_at = -math.inf
        self._refused_at_warning = 0

    def __call__(self) -> asyncio.Protocol:
        if self.active >= self.limit:
            self._note_refusal("GATEWAY_MAX_CONNECTIONS")
            return _Refusal(self._answer, self.loop)
        self.active += 1
        return GatewayRequestHandler(self.server, limiter=self, loop=self.loop, **self._options)

    def admit_client(self, handler: GatewayRequestHandler, client: str) -> bool:
        """Count `handler` against its client's cap; at the cap, close the client's oldest idle connection to make
        room, or refuse (False) when all of them are busy."""
        held = self.clients.get(client)
        if held is None:
            held = self.clients[client] = {}
        elif len(held) >= self.per_client:
            victim = next((h for h in held if h.idle), None)
            if victim is None:
                self._note_refusal(f"GATEWAY_MAX_CONNECTIONS_PER_CLIENT, from {client}")
                return False
            del held[victim]  # its slot is the new connection's now; the global one is given back when it closes
            victim._client = None
            victim.force_close()  # idle: nothing of a response can be lost
            self.evicted += 1
        held[handler] = None
        return True

    def release(self, handler: GatewayRequestHandler) -> None:
        self.active -= 1
        client = handler._client
        if client is not None:
            handler._client = None
            held = self.clients.get(client)
            if held is not None:
                held.pop(handler, None)
                if not held:
                    del self.clients[client]

    def _note_refusal(self, limit: str) -> None:
        self.refused += 1
        now = self.loop.time()
        if now - self._warned_at >= WARN_INTERVAL:
            log.warning(
                "refusing connections: %d open, the limit (%s); %d refused since the last warning",
                self.active,
                limit,
                self.refused - self._refused_at_warning,
            )
            self._warned_at = now
            self._refused_at_warning = self.refused


def _refusal_answer(what: str) -> bytes:
    """The whole HTTP response to a connection over a cap, built once."""
    err = ServiceUnavailableException(f"The gateway is serving {what}; retry later")
    body = orjson.dumps(err.to_dict())
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"x-amzn-ErrorType: {err.name}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def handler_options(settings: Settings) -> dict[str, Any]:
    """aiohttp `RequestHandler` arguments for the settings' limits."""
    return {
        "keepalive_timeout": settings.keepalive_timeout,
        "max_line_size": MAX_URL_BYTES,
        "max_field_size": settings.max_header_bytes,
        "max_headers": settings.max_headers,
    }


class GatewaySite(web.BaseSite):
    """A TCP site like aiohttp's `TCPSite` whose connections go through a `ConnectionLimiter`.

    `options` are further `RequestHandler` arguments (the access log's); `limiter` exists once the site started.
    It listens on `address` (default: the settings' host and port). `environment_facing`: its connections are
    marked so that every request on them must be signed (the environments' listener).
    """

    __slots__ = ("_host", "_options", "_port", "_settings", "limiter")

    def __init__(
        self,
        runner: web.BaseRunner,
        settings: Settings,
        *,
        backlog: int = 1024,
        address: tuple[str, int] | None = None,
        environment_facing: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._settings = settings
        self._host, self._port = address or (settings.host, settings.port)
        if environment_facing:
            options["environment_facing"] = True
        self._options = handler_options(settings) | options
        self.limiter: ConnectionLimiter | None = None

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "the runner is set up before a site starts"
        settings = self._settings
        self.limiter = ConnectionLimiter(
            server, settings.max_connections, self._options, settings.max_connections_per_client
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.limiter, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
