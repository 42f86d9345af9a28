"""Large replies from one function do not stall the gateway's event loop for the others.

A 6 MB reply is one frame: it is read in chunks as it arrives, joined once, and decoded under strict limits (a
byte string, not millions of objects), so another function's latency hardly moves while one returns 6 MB replies
in a loop.
"""

from __future__ import annotations

import http.client
import signal
import statistics
import subprocess
import sys
import time

from tests.conftest import GatewayFactory, create_function

BIG = 'def lambda_handler(event, context):\n    return "x" * 6_000_000\n'
SMALL = "def lambda_handler(event, context):\n    return event\n"
FLOOD_CLIENT = """
import signal, socket, sys
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
request = b"POST /2015-03-31/functions/big/invocations HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\n\\r\\n{}"
buf = bytearray(1 << 20)
count = 0
while not stop:  # read each reply into one buffer and drop it: the client's CPU is not what is measured
    sock.sendall(request)
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += sock.recv(65536)
    head, body = head.split(b"\\r\\n\\r\\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
    assert length == 6_000_002
    left = length - len(body)
    while left:
        left -= sock.recv_into(buf, min(left, len(buf)))
    count += 1
print(count)
"""
#: what sharing 2 cores with the big replies' own work adds to the small function's p99 (see the test's docstring)
CPU_SLACK = 0.015
#: quiet and loaded phases: this many of each, of PHASE seconds
ROUNDS = 4
PHASE = 1.0


def _invoke(conn: http.client.HTTPConnection, name: str) -> bytes:
    conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=b'{"n": 1}')
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and "X-Amz-Function-Error" not in resp.headers, body[:200]
    return body


def _latencies(port: int, name: str, seconds: float) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            _invoke(conn, name)
            out.append(time.perf_counter() - start)
    finally:
        conn.close()
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def _start_flood(port: int) -> subprocess.Popen[bytes]:
    """A client process (not a thread of this one: no GIL shared with the measuring loop) asking for 6 MB replies
    in a loop until SIGTERM; it prints how many it got."""
    return subprocess.Popen([sys.executable, "-c", FLOOD_CLIENT, str(port)], stdout=subprocess.PIPE)


def _stop_flood(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return int(out.decode().strip() or 0)


def _measure(port: int) -> tuple[float, float, int]:
    """p99 of the small function quiet and while 6 MB replies flow, in alternating phases (ROUNDS of each), so that
    a change in the machine's load from other processes weighs on both alike; and how many big replies came."""
    quiet: list[float] = []
    loaded: list[float] = []
    replies = 0
    for _ in range(ROUNDS):
        quiet += _latencies(port, "small", PHASE)
        flood = _start_flood(port)
        try:
            time.sleep(0.5)  # the client is up and replies are flowing
            loaded += _latencies(port, "small", PHASE)
        finally:
            replies += _stop_flood(flood)
        time.sleep(0.2)  # the last big reply is out
    return _p99(quiet), _p99(loaded), replies


def test_six_megabyte_replies_in_a_loop_leave_others_p99_within_twice_quiet(gateway_factory: GatewayFactory) -> None:
    """Within 2x, plus CPU_SLACK: on 2 cores each 6 MB reply costs ~45 ms of CPU (measured: the function ~34 ms to
    make 6 MB of JSON, the gateway ~8 ms to read, place, decode and send it, the client ~3 ms), so a loop of them
    keeps one core busy, and the small function's round trip waits for a CPU more often: its p99 rises by ~6-8 ms
    however the gateway schedules its work (2-5 ms quiet on an idle machine). A stall of the gateway's loop, as a
    nested frame caused (~0.5 s), would show far above that. On a busy machine one measurement may be repeated."""
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "big", BIG, MemorySize=512)
    create_function(lam, "small", SMALL)
    _latencies(gw.port, "small", 2.0)  # warm-up: environment, connections, caches
    for _attempt in range(2):
        quiet_p99, loaded_p99, replies = _measure(gw.port)
        print(
            f"small p99: quiet {quiet_p99 * 1000:.2f} ms, 6 MB replies flowing {loaded_p99 * 1000:.2f} ms ({replies})"
        )
        assert replies >= 10
        if loaded_p99 <= 2 * quiet_p99 + CPU_SLACK:
            break
    assert loaded_p99 <= 2 * quiet_p99 + CPU_SLACK, (quiet_p99, loaded_p99)
