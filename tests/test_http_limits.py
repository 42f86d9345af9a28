"""HTTP hardening against a live gateway: header limits, the connection cap, idle and slow clients.

Raw sockets, so that each test controls exactly what reaches the server and when. Every socket has a timeout and
every wait is bounded: a test takes a few seconds.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.settings import Settings
from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

#: the small timeouts the timing tests run with, seconds
SHORT = 1.0
#: how late past a timeout a connection may still be closed (a loaded CI machine), seconds
SLACK = 3.0


def connect(gw: RunningGateway, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers with lower-case names, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        body += chunk
    return int(status_line.split()[1]), headers, body


def exchange(gw: RunningGateway, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(gw) as sock:
        sock.sendall(request)
        return read_response(sock)


def get(path: str = "/healthz", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n".encode()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the gateway closes `sock` (EOF or reset) within `within` seconds; data it sends first is read."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:
            return True
    return False


def assert_lambda_error(answer: tuple[int, dict[str, str], bytes], status: int, name: str) -> dict[str, Any]:
    got_status, headers, body = answer
    assert (got_status, headers.get("x-amzn-errortype")) == (status, name), answer
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert isinstance(doc["message"], str) and doc["message"]
    return dict(doc)


# -- request heads ------------------------------------------------------------------------------------------------


def test_oversize_heads_get_lambda_shaped_4xx_and_the_gateway_keeps_serving(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    limit = Settings.max_header_bytes
    # a header field over the limit: 431, and the connection is closed after it
    with connect(gw) as sock:
        sock.sendall(get(extra=f"X-Big: {'a' * (limit + 1)}\r\n"))
        doc = assert_lambda_error(read_response(sock), 431, "RequestHeaderFieldsTooLargeException")
        assert str(limit) in doc["message"] and doc["Type"] == "User"
        assert closed_by_peer(sock, SLACK)
    # right at the limits: served (the limits are not off by one in the wrong direction)
    assert exchange(gw, get(extra=f"X-Big: {'a' * limit}\r\n"))[0] == 200  # the value counts, not the name
    many = "".join(f"X-H{i}: v\r\n" for i in range(Settings.max_headers - 1))  # and Host makes the limit
    assert exchange(gw, get(extra=many))[0] == 200
    # one header field too many
    doc = assert_lambda_error(
        exchange(gw, get(extra=many + "X-One-Too-Many: v\r\n")), 431, "RequestHeaderFieldsTooLargeException"
    )
    assert str(Settings.max_headers) in doc["message"]
    # a URL over the request line's limit
    assert_lambda_error(exchange(gw, get("/" + "a" * 9000)), 414, "URITooLongException")
    # not HTTP at all
    doc = assert_lambda_error(exchange(gw, b"\x16\x03\x01\x02\x00 / HTTP/1.1\r\n\r\n"), 400, "BadRequestException")
    assert doc["message"].startswith("Malformed HTTP request")
    assert exchange(gw, get())[0] == 200
    assert "Traceback" not in gw.log()


def test_boto3s_largest_headers_fit_the_default_limits(gateway_factory: GatewayFactory, fname: str) -> None:
    """A client context at Lambda's 3,583-byte limit, signed by boto3, is far inside the header limits."""
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, fname, "def lambda_handler(e, c):\n    return c.client_context.custom\n")
    context = {"custom": {"pad": "x" * (3583 * 3 // 4 - 30)}}
    while len(encoded := base64.b64encode(json.dumps(context).encode()).decode()) > 3583:
        context["custom"]["pad"] = context["custom"]["pad"][:-1]
    assert len(encoded) > 3575
    resp, body = invoke_json(lam, fname, {}, ClientContext=encoded)
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    assert body == context["custom"]


# -- the connection cap -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def held_connections(gw: RunningGateway, n: int) -> Iterator[list[socket.socket]]:
    """`n` keep-alive connections, each of which has been served once (so the gateway has accepted it)."""
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while len(socks) < n:
            sock = connect(gw)
            sock.sendall(get())
            status, _, _ = read_response(sock)
            if status == 200:
                socks.append(sock)
                continue
            sock.close()  # a slot still held by the fixture's health checks, released any moment
            assert time.monotonic() < deadline, f"could not open {n} connections"
            time.sleep(0.05)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_connections_over_the_cap_are_refused_and_established_ones_keep_working(
    gateway_factory: GatewayFactory,
) -> None:
    cap = 4
    gw = gateway_factory(env={"GATEWAY_MAX_CONNECTIONS": str(cap)})
    with held_connections(gw, cap) as socks:
        for _ in range(3):  # refused at once with a 503 boto3 retries, then closed
            with connect(gw) as extra:
                started = time.monotonic()
                extra.sendall(get())
                doc = assert_lambda_error(read_response(extra), 503, "ServiceUnavailableException")
                assert str(cap) in doc["message"]
                assert closed_by_peer(extra, SLACK)
                assert time.monotonic() - started < SLACK
        for sock in socks:  # every established connection is still served, on the same socket
            sock.sendall(get())
            assert read_response(sock)[0] == 200
        socks.pop().close()
        # the closed connection's slot is given back: a new one is served
        deadline = time.monotonic() + SLACK
        while True:
            status = exchange(gw, get())[0]
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200
    assert "refusing connections" in gw.log()


# -- idle and slow clients ----------------------------------------------------------------------------------------


def test_idle_keep_alive_connections_are_closed_after_the_timeout(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_KEEPALIVE_TIMEOUT": str(SHORT)})
    with connect(gw) as sock:
        sock.sendall(get())
        assert read_response(sock)[0] == 200
        served = time.monotonic()
        assert not closed_by_peer(sock, SHORT / 2)  # kept alive meanwhile ...
        sock.sendall(get())  # ... and reusable: a request restarts the clock
        assert read_response(sock)[0] == 200
        served = time.monotonic()
        assert closed_by_peer(sock, SHORT + SLACK)
        assert time.monotonic() - served >= SHORT * 0.8
    with connect(gw) as silent:  # a connection that never sends a byte is closed too
        opened = time.monotonic()
        assert closed_by_peer(silent, SHORT + SLACK)
        assert time.monotonic() - opened >= SHORT * 0.8


def test_a_client_trickling_its_headers_is_cut_off_and_others_are_served(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_KEEPALIVE_TIMEOUT": str(SHORT)})
    with connect(gw) as slow:
        opened = time.monotonic()
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        cut = False
        served_meanwhile = False
        while time.monotonic() - opened < SHORT + SLACK:  # a byte every 0.1 s: a head that never completes
            try:
                slow.sendall(b"a")
            except OSError:
                cut = True
                break
            if closed_by_peer(slow, 0.1):
                cut = True
                break
            if not served_meanwhile and time.monotonic() - opened > SHORT / 2:
                served_meanwhile = exchange(gw, get())[0] == 200
        elapsed = time.monotonic() - opened
    assert cut, "the gateway kept a connection whose request head never completed"
    assert elapsed >= SHORT * 0.8
    assert served_meanwhile
    assert exchange(gw, get())[0] == 200


SLOW_HANDLER = "import time\ndef lambda_handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return 'done'\n"


def test_a_slow_body_gets_408_and_releases_its_invocation(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_BODY_TIMEOUT": str(SHORT), "GATEWAY_KEEPALIVE_TIMEOUT": str(SHORT)})
    lam = gw.client()
    create_function(lam, fname, SLOW_HANDLER)
    for path in (f"/2015-03-31/functions/{fname}/invocations", "/2015-03-31/functions"):
        with connect(gw, timeout=SHORT + SLACK) as sock:
            started = time.monotonic()
            head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            sock.sendall(head.encode() + b'{"sleep": ')  # 10 of the 100 bytes promised, then nothing
            answer = read_response(sock)
            elapsed = time.monotonic() - started
            assert_lambda_error(answer, 408, "RequestTimeoutException")
            assert answer[1].get("connection", "").lower() == "close"
            assert SHORT * 0.8 <= elapsed < SHORT + SLACK
    assert gw.health()["inflight"] == 0  # the timed-out invoke gave its concurrency back
    # a request being handled is never cut by the keep-alive timer, however long the handler runs
    resp, body = invoke_json(lam, fname, {"sleep": SHORT * 2})
    assert (resp["StatusCode"], body) == (200, "done")


# -- settings -----------------------------------------------------------------------------------------------------


def test_http_limit_settings_are_read_and_validated() -> None:
    env = {
        "GATEWAY_MAX_CONNECTIONS": "10",
        "GATEWAY_KEEPALIVE_TIMEOUT": "5",
        "GATEWAY_BODY_TIMEOUT": "7.5",
        "GATEWAY_MAX_HEADER_BYTES": "8192",
        "GATEWAY_MAX_HEADERS": "40",
    }
    s = Settings.from_args(argparse.Namespace(), env)
    assert (s.max_connections, s.keepalive_timeout, s.body_timeout, s.max_header_bytes, s.max_headers) == (
        10,
        5.0,
        7.5,
        8192,
        40,
    )
    d = Settings.from_args(argparse.Namespace(), {})
    assert (d.max_connections, d.keepalive_timeout, d.body_timeout, d.max_header_bytes, d.max_headers) == (
        4096,
        75.0,
        60.0,
        16384,
        64,
    )
    for name, value in [
        ("GATEWAY_MAX_CONNECTIONS", "0"),
        ("GATEWAY_KEEPALIVE_TIMEOUT", "0"),
        ("GATEWAY_BODY_TIMEOUT", "-1"),
        ("GATEWAY_MAX_HEADER_BYTES", "1024"),  # would refuse boto3's own client contexts
        ("GATEWAY_MAX_HEADERS", "8"),
    ]:
        with pytest.raises(ValueError):
            Settings.from_args(argparse.Namespace(), {name: value})
