"""The proxy's HTTP/1.1 parser (runtimes/proxy/http.py) and server (runtimes/proxy/server.py): framing, limits, what
is refused, and that however the bytes are split the same requests come out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtimes.proxy.http import BODY, END, HEAD, HttpError, Request, RequestParser
from runtimes.proxy.server import BodySink, Exchange, Router, listen


def events(data: bytes | list[bytes], **limits: int) -> list[tuple[int, Any]]:
    """Every event the parser makes of `data` (fed whole or in the given pieces); bodies joined per request."""
    parser = RequestParser(**limits)
    out: list[tuple[int, Any]] = []
    for piece in [data] if isinstance(data, bytes) else data:
        parser.feed(piece)
        while (event := parser.next_event()) is not None:
            if event[0] == BODY and out and out[-1][0] == BODY:
                out[-1] = (BODY, out[-1][1] + event[1])
            else:
                out.append(event)
    return out


def requests(data: bytes | list[bytes]) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, trailers) of each complete request."""
    out = []
    head: Request | None = None
    body = b""
    for kind, value in events(data):
        if kind == HEAD:
            head, body = value, b""
        elif kind == BODY:
            body = value
        elif kind == END:
            assert head is not None
            out.append((head.method, head.path, body, value))
    return out


def refused(data: bytes, **limits: int) -> int:
    with pytest.raises(HttpError) as exc:
        events(data, **limits)
    return exc.value.status


def test_content_length_and_keep_alive() -> None:
    data = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n"
    assert requests(data) == [("POST", "/a", b"hello", {}), ("GET", "/b", b"", {})]
    head = events(data)[0][1]
    assert head.keep_alive and head.length == 5 and head.headers["host"] == "x"


def test_keep_alive_by_version_and_connection() -> None:
    assert not events(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")[0][1].keep_alive
    assert not events(b"GET / HTTP/1.0\r\n\r\n")[0][1].keep_alive
    assert events(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0][1].keep_alive


def test_chunked_with_extensions_and_trailers() -> None:
    data = (
        b"POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nLambda-Runtime-Function-Error-Type: X\r\nOther: y\r\n\r\n"
    )
    assert requests(data) == [("POST", "/r", b"hello world", {"lambda-runtime-function-error-type": "X", "other": "y"})]
    assert events(data)[0][1].expect_continue


def test_repeated_headers_are_joined() -> None:
    head = events(b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n")[0][1]
    assert head.headers["a"] == "1, 2"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET nopath HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nName : x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nA: 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n", 400),
    ],
)
def test_malformed_requests_are_refused(data: bytes, status: int) -> None:
    assert refused(data) == status


def test_limits() -> None:
    assert refused(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000, max_head=65536) == 431
    assert refused(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world", body_limit=10) == 413
    assert refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n", body_limit=10) == 413
    assert requests(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")[0][2] == b"0123456789"


def test_leading_empty_lines_are_ignored() -> None:
    assert requests(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n") == [("GET", "/", b"", {})]


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = [], 0
    for size in sizes:
        piece = body[pos : pos + size]
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        pos += size
    if pos < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:]))
    return b"".join(out) + b"0\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    chunked=st.lists(st.booleans(), min_size=4, max_size=4),
    sizes=st.lists(st.integers(1, 50), max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_split_gives_the_same_requests(
    bodies: list[bytes], chunked: list[bool], sizes: list[int], cuts: list[int]
) -> None:
    stream = b""
    for i, body in enumerate(bodies):
        if chunked[i]:
            stream += f"POST /{i} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + _chunked(body, sizes)
        else:
            stream += f"POST /{i} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    want = [("POST", f"/{i}", body, {}) for i, body in enumerate(bodies)]
    assert requests(stream) == want
    assert requests(_splits(stream, cuts)) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_garbage_only_ever_raises_http_error(data: bytes, cuts: list[int]) -> None:
    try:
        events(_splits(b"POST / HTTP/1.1\r\n" + data, cuts), max_head=256, body_limit=128)
    except HttpError as exc:
        assert exc.status in (400, 413, 431, 501, 505)


# -- the server ------------------------------------------------------------------------------------------------


class Collect(BodySink):
    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.trailers: dict[str, str] | None = None

    def data(self, piece: bytes) -> None:
        self.pieces.append(piece)

    def end(self, trailers: dict[str, str]) -> None:
        self.trailers = trailers


@pytest.fixture
def served() -> Iterator[dict[str, Any]]:
    """A server on a free port with routes that echo, wait (long poll), stream and refuse large bodies."""
    state: dict[str, Any] = {"waiting": [], "closed": [], "sinks": [], "too_large": []}
    router = Router()

    def echo(ex: Exchange) -> None:
        ex.respond(200, ex.body + ex.param.encode(), "X-Echo: 1\r\n", "text/plain")

    def wait(ex: Exchange) -> None:
        state["waiting"].append(ex)
        ex.on_close = state["closed"].append

    def stream_head(ex: Exchange) -> BodySink:
        sink = Collect()
        state["sinks"].append(sink)
        return sink

    def too_large(ex: Exchange, size: int) -> None:
        state["too_large"].append(size)
        ex.respond(413, b"too large")

    router.add("POST", "/echo/{}/x", echo, max_body=100, on_too_large=too_large)
    router.add("GET", "/wait", wait)
    router.add("GET", "/boom", lambda ex: 1 / 0)  # type: ignore[func-returns-value]
    router.add("POST", "/stream", lambda ex: ex.respond(202), on_head=stream_head)
    state["router"] = router
    yield state


async def _serve(state: dict[str, Any]) -> tuple[asyncio.AbstractServer, int]:
    return await listen(state["router"], "127.0.0.1", 0)


def _exchange(port: int, data: bytes, then: bytes = b"", timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if then and b"100 Continue" in out:
                    s.sendall(then)
                    then = b""
        except TimeoutError:
            pass
        return out


async def _in_thread(*args: Any) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, _exchange, *args)


async def test_routes_params_keep_alive_and_close(served: dict[str, Any]) -> None:
    server, port = await _serve(served)
    async with server:
        out = await _in_thread(
            port,
            b"POST /echo/abc/x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /nowhere HTTP/1.1\r\n\r\n"
            b"POST /echo/d/x HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
    assert out.count(b"HTTP/1.1 ") == 3
    first, rest = out.split(b"HTTP/1.1 404", 1)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Echo: 1\r\n" in first and first.endswith(b"\r\n\r\nhiabc")
    assert b"Connection: close\r\n\r\nd" in rest


async def test_expect_continue_and_a_body_too_large(served: dict[str, Any]) -> None:
    server, port = await _serve(served)
    async with server:
        out = await _in_thread(
            port,
            b"POST /echo/a/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            b"ok",
        )
        assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") and out.endswith(b"oka")
        out = await _in_thread(port, b"POST /echo/a/x HTTP/1.1\r\nContent-Length: 101\r\n\r\n" + b"x" * 101)
        assert out.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in out
        out = await _in_thread(
            port, b"POST /echo/a/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"x" * 101
        )
        assert out.startswith(b"HTTP/1.1 413 ")
    assert served["too_large"] == [101, 101]


async def test_a_long_poll_is_answered_later_or_forgotten_when_its_client_goes(served: dict[str, Any]) -> None:
    server, port = await _serve(served)
    async with server:
        task = asyncio.ensure_future(_in_thread(port, b"GET /wait HTTP/1.1\r\nConnection: close\r\n\r\n"))
        while not served["waiting"]:
            await asyncio.sleep(0.01)
        served["waiting"][0].respond(200, b"late")
        assert (await task).endswith(b"\r\n\r\nlate")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /wait HTTP/1.1\r\n\r\n")
            while len(served["waiting"]) < 2:
                await asyncio.sleep(0.01)
        while not served["closed"]:
            await asyncio.sleep(0.01)
        assert served["closed"] == [served["waiting"][1]] and served["waiting"][1].closed
        served["waiting"][1].respond(200, b"nobody")  # ignored


async def test_a_sink_gets_the_body_as_it_comes(served: dict[str, Any]) -> None:
    server, port = await _serve(served)
    async with server:
        out = await _in_thread(
            port,
            b"POST /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
        )
    assert out.startswith(b"HTTP/1.1 202 Accepted")
    sink = served["sinks"][0]
    assert b"".join(sink.pieces) == b"abcde" and sink.trailers == {"t": "1"}


async def test_malformed_request_is_answered_400_and_closed(served: dict[str, Any]) -> None:
    server, port = await _serve(served)
    async with server:
        out = await _in_thread(port, b"\x16\x03\x01 TLS hello\r\n\r\nGET /wait HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request") and out.count(b"HTTP/1.1") == 1
    assert served["waiting"] == []


async def test_a_handler_that_fails_is_a_500_and_the_connection_goes_on(served: dict[str, Any]) -> None:
    server, port = await _serve(served)
    async with server:
        out = await _in_thread(port, b"GET /boom HTTP/1.1\r\n\r\nGET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error") and b'"errorType": "InternalServerError"' in out
    assert b"HTTP/1.1 404 Not Found" in out
