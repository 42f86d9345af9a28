"""/metrics under load and behind a token: a scrape loop does not starve invocations; the token is enforced."""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

HELLO = "def lambda_handler(event, context):\n    return 1\n"
#: functions with series of their own, so that a scrape has something to render
FUNCTIONS = 150
SECONDS = 2.0
ROUNDS = 3

POLLER = """
import http.client, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
end, n = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    conn.request("GET", "/metrics")
    assert conn.getresponse().read()
    n += 1
print(n)
"""


def _invoke_rate(gw: RunningGateway, name: str, seconds: float, threads: int = 4) -> float:
    """Invocations per second of `name` from `threads` keep-alive connections."""
    counts = [0] * threads
    end = time.monotonic() + seconds

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        while time.monotonic() < end:
            conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=b"{}")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b"1"
            counts[i] += 1
        conn.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def test_a_tight_scrape_loop_does_not_starve_invocations(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    names = [f"series-{i}" for i in range(FUNCTIONS)]
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda n: create_function(lam, n, HELLO), names))
        list(ex.map(lambda n: invoke_json(lam, n), names))
    _invoke_rate(gw, "series-0", 0.5)  # warm the environments up
    # alternate quiet and scraped windows, so that a change in the machine's load weighs on both alike
    quiet_rates, loaded_rates, scrapes = [], [], 0
    for _ in range(ROUNDS):
        quiet_rates.append(_invoke_rate(gw, "series-0", SECONDS))
        poller = subprocess.Popen(
            [sys.executable, "-c", POLLER, str(gw.port), str(SECONDS + 0.5)], stdout=subprocess.PIPE, text=True
        )
        try:
            time.sleep(0.25)
            loaded_rates.append(_invoke_rate(gw, "series-0", SECONDS))
            out, _ = poller.communicate(timeout=30)
        finally:
            poller.kill()
        scrapes += int(out)
    quiet, loaded = sum(quiet_rates) / ROUNDS, sum(loaded_rates) / ROUNDS
    status, _, body = gw.request("GET", "/metrics")
    print(f"\ninvokes/s quiet {quiet:.0f}, scraped in a loop {loaded:.0f} ({scrapes} scrapes of {len(body)} bytes)")
    assert status == 200 and body.count(b"lambda_invocations_total{") >= FUNCTIONS
    assert scrapes >= ROUNDS * SECONDS  # the poller was served, paced
    assert loaded >= 0.5 * quiet, (quiet_rates, loaded_rates)  # before: ~1 % (916 -> 8 invokes/s)


def test_metrics_token(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_METRICS_TOKEN": "s3cret-token"})
    status, headers, body = gw.request("GET", "/metrics")
    assert status == 401 and headers["x-amzn-ErrorType"] == "UnrecognizedClientException", body
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = gw.request("GET", "/metrics", headers={"Authorization": "Bearer wrong-token"})
    assert status == 401
    status, _, body = gw.request("GET", "/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200 and b"gateway_http_requests_total" in body
    assert gw.health()["status"] == "ok"  # /healthz stays open for probes
