"""Tests of bench/loadgen.py: the histogram, the request helpers, and end-to-end runs against tiny local servers.

The servers run in the test's own event loop (an aiohttp app, and raw asyncio servers for responses aiohttp
will not produce); each test stops its server, and the load generator closes its connections, before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from bench import loadgen as lg
from bench.loadgen import Histogram, closed_loop, encode_request, open_loop, zipf_indices

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------------------------
# Histogram


def exact_percentile(values: list[int], p: float) -> float:
    """Nearest-rank percentile of integer microseconds, in ms (the histogram's definition)."""
    s = sorted(values)
    rank = max(1, math.ceil(p * len(s) / 100 - 1e-9))
    return s[rank - 1] / 1000


def test_histogram_percentiles_within_0_1_percent() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(50_000)]  # ~3 ms median, long tail
    values += [rng.randrange(0, 3000) for _ in range(5000)]  # small values are exact
    h = Histogram()
    for v in values:
        h.record(v)
    for p in (1, 10, 25, 50, 75, 90, 99, 99.9, 99.99):
        exact = exact_percentile(values, p)
        assert h.percentile(p) == pytest.approx(exact, rel=1e-3, abs=1e-9), p
    assert h.percentile(100) == max(values) / 1000
    assert h.percentile(0) == min(values) / 1000
    s = h.summary()
    assert s["count"] == len(values)
    assert s["max"] == max(values) / 1000  # exact
    assert s["min"] == min(values) / 1000
    assert s["mean"] == pytest.approx(sum(values) / len(values) / 1000, rel=1e-6)
    assert set(s) == {"count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"}


def test_histogram_exact_below_2048_us_and_huge_values() -> None:
    h = Histogram()
    for v in (0, 1, 2047, -5):
        h.record(v)
    assert h.count == 4
    assert h.min_us == 0
    assert h.percentile(100) == 2.047
    assert h.percentile(75) == 1 / 1000
    big = 3 * 3600 * 10**6  # 3 hours: beyond the pre-sized range, the bucket list grows
    h.record(big)
    assert h.percentile(100) == big / 1000
    assert h.percentile(99.99) == pytest.approx(big / 1000, rel=1e-3)


def test_histogram_merge() -> None:
    rng = random.Random(3)
    a_vals = [rng.randrange(1, 10**6) for _ in range(3000)]
    b_vals = [rng.randrange(1, 10**7) for _ in range(2000)]
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in a_vals:
        a.record(v)
        both.record(v)
    for v in b_vals:
        b.record(v)
        both.record(v)
    a.merge(b)
    assert a.summary() == both.summary()
    assert a.max_us == max(a_vals + b_vals)
    empty = Histogram()
    empty.merge(a)
    assert empty.summary() == both.summary()
    a.merge(Histogram())
    assert a.summary() == both.summary()


def test_histogram_empty() -> None:
    h = Histogram()
    assert h.percentile(50) == 0.0
    assert h.summary() == {
        "count": 0,
        "min": 0.0,
        "mean": 0.0,
        "p50": 0.0,
        "p90": 0.0,
        "p99": 0.0,
        "p99.9": 0.0,
        "max": 0.0,
    }
    with pytest.raises(ValueError):
        h.percentile(101)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def test_zipf_indices() -> None:
    a = zipf_indices(1000, 20_000, s=1.0, seed=5)
    assert a == zipf_indices(1000, 20_000, s=1.0, seed=5)
    assert a != zipf_indices(1000, 20_000, s=1.0, seed=6)
    assert len(a) == 20_000
    assert all(0 <= i < 1000 for i in a)
    counts = [0] * 1000
    for i in a:
        counts[i] += 1
    assert counts[0] == max(counts)
    assert counts[0] > counts[1] > counts[9] > counts[99]
    # s=1, n=1000: P(0) = 1/H_1000 ~ 0.134
    assert 0.12 < counts[0] / len(a) < 0.15
    assert zipf_indices(1, 5) == [0] * 5
    assert zipf_indices(10, 0) == []
    with pytest.raises(ValueError):
        zipf_indices(0, 5)


def test_encode_request() -> None:
    r = encode_request("POST", "/2015-03-31/functions/f/invocations", b'{"a":1}', {"X-Amz-Log-Type": "Tail"})
    assert r == (
        b"POST /2015-03-31/functions/f/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Log-Type: Tail\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )
    assert encode_request("get", "/", host="localhost:8080") == (
        b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 0\r\n\r\n"
    )
    assert b"Host: example\r\n" in encode_request("GET", "/", headers={"host": "example"})
    bad: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "no-slash", {}),
        ("GET", "/a b", {}),
        ("GET", "/", {"X": "a\r\nInjected: 1"}),
        ("GET", "/", {"Content-Length": "3"}),
        ("GE T", "/", {}),
    ]
    for method, path, headers in bad:
        with pytest.raises(ValueError):
            encode_request(method, path, headers=headers)


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0", "::", "192.168.1.1", "::ffff:8.8.8.8"])
async def test_refuses_non_loopback(host: str) -> None:
    req = [encode_request("GET", "/")]
    with pytest.raises(lg.NotLoopbackError, match="loopback"):
        await closed_loop(host, 80, req, 1, 1.0)
    with pytest.raises(lg.NotLoopbackError):
        await open_loop(host, 80, req, 10, 1.0)


def test_check_loopback_accepts() -> None:
    assert lg.check_loopback("localhost") == "127.0.0.1"
    assert lg.check_loopback("127.0.0.1") == "127.0.0.1"
    assert lg.check_loopback("127.5.6.7") == "127.5.6.7"
    assert lg.check_loopback("::1") == "::1"
    assert lg.check_loopback("[::1]") == "::1"


async def test_bounds_enforced() -> None:
    req = [encode_request("GET", "/")]
    with pytest.raises(ValueError, match="connections"):
        await closed_loop("127.0.0.1", 80, req, 1025, 1.0)
    with pytest.raises(ValueError, match="duration"):
        await closed_loop("127.0.0.1", 80, req, 1, 601)
    with pytest.raises(ValueError, match="requests"):
        await closed_loop("127.0.0.1", 80, [], 1, 1.0)
    with pytest.raises(ValueError, match="rate"):
        await open_loop("127.0.0.1", 80, req, 0, 1.0)


async def test_connect_failure_is_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(ConnectionError, match="cannot connect"):
            await closed_loop("127.0.0.1", port, [encode_request("GET", "/")], 4, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# End to end


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"{}", content_type="application/json")


async def close_after(request: web.Request) -> web.Response:
    resp = web.Response(body=b"bye")
    resp.force_close()
    return resp


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(body=b"late")


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), body=b"x")


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b"hello ", b"chunked ", b"world"):
        await resp.write(part)
    await resp.write_eof()
    return resp


@pytest.fixture
async def server() -> AsyncIterator[int]:
    """An aiohttp app on a free loopback port; yields the port."""
    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/close", close_after)
    app.router.add_get("/slow", slow)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/chunked", chunked)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def raw_server(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> asyncio.Server:
    """A raw asyncio server on a free loopback port; a client hanging up on `handle` is not an error."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(guarded, "127.0.0.1", 0)


def port_of(srv: asyncio.Server) -> int:
    return int(srv.sockets[0].getsockname()[1])


def req(path: str, method: str = "GET") -> list[bytes]:
    return [encode_request(method, path)]


async def test_closed_loop_all_200(server: int) -> None:
    body = b'{"k": "v"}'
    requests = [encode_request("POST", "/ok", body, {"Content-Type": "application/json"})]
    r = await closed_loop("127.0.0.1", server, requests, 4, 0.5)
    assert r.requests > 50
    assert r.statuses == {200: r.requests}
    assert (r.socket_errors, r.timeouts, r.non_2xx, r.reconnects) == (0, 0, 0, 0)
    assert 0.45 < r.duration_s < 0.7
    assert r.throughput_rps == pytest.approx(r.requests / r.duration_s)
    assert r.histogram.count == r.requests
    assert r.client_cpu_s > 0
    d = r.to_dict()
    json.dumps(d)
    assert d["mode"] == "closed"
    assert d["target"] == {"host": "127.0.0.1", "port": server}
    assert d["statuses"] == {"200": r.requests}
    assert d["errors"] == {"socket": 0, "timeout": 0, "non_2xx": 0}
    assert d["target_rate_rps"] is None
    assert d["latency_ms"]["count"] == r.requests
    assert 0 < d["latency_ms"]["p50"] <= d["latency_ms"]["p99"] <= d["latency_ms"]["max"]
    for key in ("connections", "duration_s", "throughput_rps", "late_sends", "max_lateness_ms", "client_cpu_s"):
        assert key in d


async def test_closed_loop_max_requests_and_warmup(server: int) -> None:
    r = await closed_loop("127.0.0.1", server, req("/ok"), 3, 5.0, max_requests=40, warmup=0.2)
    assert r.requests == 40
    assert r.duration_s < 3  # ended on the count, not the duration
    assert r.unfinished == 0


async def test_requests_are_cycled_in_order(server: int) -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"ok")

    app = web.Application()
    app.router.add_get("/p/{i}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        port = runner.addresses[0][1]
        requests = [encode_request("GET", f"/p/{i}") for i in range(3)]
        r = await closed_loop("127.0.0.1", port, requests, 1, 5.0, max_requests=7)
    finally:
        await runner.cleanup()
    assert r.requests == 7
    assert seen == [f"/p/{i % 3}" for i in range(7)]


async def test_open_loop_rate(server: int) -> None:
    r = await open_loop("127.0.0.1", server, req("/ok", "POST"), 200, 1.0, connections=8)
    assert r.mode == "open"
    assert 180 <= r.requests <= 201
    assert r.statuses == {200: r.requests}
    assert r.target_rate_rps == 200
    assert r.socket_errors == r.timeouts == 0
    assert isinstance(r.late_sends, int) and r.late_sends >= 0
    assert r.max_lateness_ms >= 0
    d = r.to_dict()
    assert d["target_rate_rps"] == 200
    assert d["late_sends"] == r.late_sends
    json.dumps(d)


async def test_open_loop_counts_queueing_from_intended_time(server: int) -> None:
    # One connection, a server that takes 50 ms, 100 requests/s: requests queue in the client, sends are late,
    # and the latency (from the intended send time) grows far beyond the 50 ms service time.
    r = await open_loop("127.0.0.1", server, req("/slow?s=0.05"), 100, 1.0, connections=1, timeout=5)
    assert 12 <= r.requests <= 21
    assert r.late_sends >= r.requests - 2
    assert r.max_lateness_ms > 200
    assert r.histogram.percentile(100) > 400
    assert r.unfinished > 40  # due but not sent (or not answered) at the end


async def test_open_loop_max_requests(server: int) -> None:
    r = await open_loop("127.0.0.1", server, req("/ok"), 500, 5.0, connections=4, max_requests=50)
    assert r.requests == 50
    assert r.duration_s < 1.0


async def test_connection_close_reconnects(server: int) -> None:
    r = await closed_loop("127.0.0.1", server, req("/close"), 2, 0.5)
    assert r.requests > 10
    assert r.statuses == {200: r.requests}
    assert r.socket_errors == 0
    assert r.reconnects >= r.requests - 2
    r2 = await open_loop("127.0.0.1", server, req("/close"), 100, 0.5, connections=2)
    assert r2.requests >= 40
    assert r2.reconnects >= r2.requests - 2
    assert r2.socket_errors == 0


async def test_timeouts_counted(server: int) -> None:
    r = await closed_loop("127.0.0.1", server, req("/slow?s=5"), 2, 0.8, timeout=0.2)
    assert r.requests == 0
    assert r.timeouts >= 4  # 2 connections, a timeout each ~0.2-0.25 s
    assert r.reconnects >= r.timeouts
    assert r.socket_errors == 0


async def test_non_2xx_counted(server: int) -> None:
    requests = req("/status/404") + req("/ok") + req("/status/503")
    r = await closed_loop("127.0.0.1", server, requests, 1, 5.0, max_requests=30)
    assert r.statuses == {404: 10, 200: 10, 503: 10}
    assert r.non_2xx == 20
    assert r.to_dict()["errors"]["non_2xx"] == 20
    assert r.histogram.count == 30


async def test_chunked_response(server: int) -> None:
    r = await closed_loop("127.0.0.1", server, req("/chunked"), 2, 5.0, max_requests=50)
    assert r.statuses == {200: 50}
    assert r.socket_errors == 0


async def test_eof_delimited_and_split_responses() -> None:
    """HTTP/1.0 bodies delimited by EOF, a 100 Continue, and a response written a few bytes at a time."""

    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        for part in (b"HTTP/1.0 200 OK\r\nContent-", b"Type: text/plain\r\n", b"\r\nhello ", b"world"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()

    srv = await raw_server(http10)
    try:
        r = await closed_loop("127.0.0.1", port_of(srv), req("/"), 2, 5.0, max_requests=20)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.statuses == {200: 20}
    assert r.socket_errors == 0
    assert r.reconnects >= 18


async def test_server_closing_keepalive_connections_is_not_an_error() -> None:
    """A server that answers one request per connection without saying so (no `Connection: close`), then closes
    it, as the client is already sending the next request on it: the request is resent on a new connection."""

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.002)  # the client has sent its next request by now
        writer.close()
        await writer.wait_closed()

    srv = await raw_server(one_shot)
    try:
        r = await closed_loop("127.0.0.1", port_of(srv), req("/"), 2, 5.0, max_requests=30)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.statuses == {200: 30}
    assert r.socket_errors == 0
    assert r.reconnects >= 28


async def test_silent_close_is_a_socket_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    srv = await raw_server(silent)
    try:
        r = await closed_loop("127.0.0.1", port_of(srv), req("/"), 2, 0.3)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.requests == 0
    assert r.socket_errors > 5


async def test_reset_mid_request_is_a_socket_error() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")  # then hang up
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    srv = await raw_server(rude)
    try:
        r = await closed_loop("127.0.0.1", port_of(srv), req("/"), 2, 0.3)
    finally:
        srv.close()
        await srv.wait_closed()
    assert r.requests == 0
    assert r.socket_errors > 5
    assert r.reconnects >= r.socket_errors


def test_cli_and_run(tmp_path: Path) -> None:
    """The CLI (a subprocess: its own uvloop) against the hello baseline's app, served by a subprocess."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baselines" / "inprocess.py"), "--port", str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if srv.poll() is not None:
                    pytest.fail("the in-process baseline exited")
                time.sleep(0.05)
        out = tmp_path / "r.json"
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"
        cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), url, "--method", "POST", "--body", '{"a": 1}']
        cmd += ["--header", "Content-Type: application/json", "-c", "4", "-d", "1.2", "--out", str(out)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "[loadgen]" in p.stderr  # the progress line, once a second
        d = json.loads(out.read_text())
        assert d["requests"] > 50
        assert d["statuses"] == {"200": d["requests"]}
        assert d["errors"] == {"socket": 0, "timeout": 0, "non_2xx": 0}

        p = subprocess.run(
            [*cmd[:3], "--mode", "open", "--rate", "100", "-d", "0.5", "--no-progress"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert d["mode"] == "open" and 45 <= d["requests"] <= 51
        assert p.stderr == ""

        p = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "loadgen.py"), "http://example.com/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 2
        assert "loopback" in p.stderr
    finally:
        srv.terminate()
        srv.wait(timeout=10)
