"""A response in Lambda's streaming mode: `POST /runtime/invocation/{id}/response` with
`Lambda-Runtime-Function-Response-Mode: streaming` (`RuntimeApi.stream_sink` makes a `StreamedResponse` for it).

Its body's pieces go to the gateway as CHUNK frames as they arrive (gateway/contracts/environment.py); then
`RuntimeApi.response` ends the invocation as the trailers say (an ERROR with Lambda-Runtime-Function-Error-Type and
the base64 document of Lambda-Runtime-Function-Error-Body; else a RESULT with an empty payload: the pieces were the
response).

- What arrives together (the pieces one read of the runtime's connection yields) goes out as one frame, split at
  MAX_CHUNK, at the end of the event loop's current iteration (`call_soon`): as soon as it came, yet not a frame
  per tiny HTTP chunk (each frame costs the gateway a decode, and it counts a piece as at least MIN_CHUNK_COST bytes
  toward MAX_STREAM). The body's end sends what is pending at once, before the reply.
- The body may be chunked (as runtimes send it) or of a declared length, up to MAX_STREAM bytes (Lambda's limit for
  a streamed response; a buffered one stops at 6 MB): beyond, the invocation fails with Function.ResponseSizeTooLarge
  (`RuntimeApi.too_large`).
- Its `Content-Type` (`application/octet-stream` when the runtime sent none or one the contract refuses) goes first,
  as a HEAD frame, when the response's head arrives: a function URL answers with it.
- Pieces go out only while the invocation is the runtime's current one: once it is answered (a runtime that gave up
  on the stream and posted /error on another connection), the rest is dropped, since a CHUNK after the reply is a
  broken peer's to the gateway, which kills the environment.

Concurrency: callbacks of the proxy's event loop (one thread).
"""

from __future__ import annotations

import asyncio

from gateway.contracts.environment import MAX_CHUNK, MAX_STREAM, Invoke, valid_content_type
from runtimes.proxy.link import GatewayLink
from runtimes.proxy.runtime_api import RuntimeApi
from runtimes.proxy.server import BodySink, Exchange

#: the content type of a streamed response whose runtime declared none (or one no header may carry)
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class StreamedResponse(BodySink):
    """The body of one streamed response, relayed as CHUNK frames for `invoke` (see the module's docstring)."""

    #: the body may be this large (the route's own limit is a buffered response's)
    max_body = MAX_STREAM

    def __init__(self, api: RuntimeApi, link: GatewayLink, invoke: Invoke) -> None:
        self._api = api
        self._link = link
        self._invoke = invoke
        self._pending = bytearray()
        self._scheduled = False

    def data(self, piece: bytes) -> None:
        self._pending += piece
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what is pending, a frame per MAX_CHUNK bytes (nothing once the invocation is answered)."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        if self._api.current is self._invoke:
            inv_id = self._invoke.inv_id
            for start in range(0, len(pending), MAX_CHUNK):
                self._link.chunk(inv_id, bytes(pending[start : start + MAX_CHUNK]))
        pending.clear()

    def end(self, trailers: dict[str, str]) -> None:
        self.flush()


def install(api: RuntimeApi, link: GatewayLink) -> None:
    """Relay `api`'s streamed responses to the gateway through `link`."""

    def sink(exchange: Exchange, invoke: Invoke) -> StreamedResponse:
        content_type = exchange.request.headers.get("content-type", "")
        link.head(invoke.inv_id, content_type if valid_content_type(content_type) else DEFAULT_CONTENT_TYPE)
        return StreamedResponse(api, link, invoke)

    api.stream_sink = sink
