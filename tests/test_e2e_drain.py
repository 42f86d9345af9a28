"""SIGTERM's drain limit is enforced: past GATEWAY_DRAIN_TIMEOUT in-flight invocations are cut and the gateway exits."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import GatewayFactory, create_function, descendants, gone, invoke_json

LONG = """
import subprocess, time
def lambda_handler(event, context):
    if event.get("child"):
        subprocess.Popen(["sleep", "120"])  # a grandchild: it must not outlive the cut either
    time.sleep(event.get("sleep", 0))
    return "done"
"""
DRAIN = 2.0
#: what the gateway may take past the drain limit: the cut's grace, aiohttp's, the zygotes' stop
MARGIN = 6.0


def test_sigterm_cuts_invocations_that_outlast_the_drain_timeout(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_DRAIN_TIMEOUT": str(DRAIN)})
    assert gw.proc is not None
    lam = gw.client()
    create_function(lam, "long", LONG, Timeout=300)
    create_function(lam, "short", LONG, Timeout=30)
    invoke_json(lam, "long")
    with ThreadPoolExecutor(3) as ex:
        running = [
            ex.submit(gw.request, "POST", "/2015-03-31/functions/long/invocations", json.dumps(event).encode())
            for event in ({"sleep": 45, "child": True}, {"sleep": 45})
        ]
        finishing = ex.submit(invoke_json, lam, "short", {"sleep": 1.0})  # well within the limit: answered
        time.sleep(1.0)
        children = descendants(gw.proc.pid)
        assert len(children) >= 4  # the zygote, three environments, a grandchild
        signalled = time.monotonic()
        os.kill(gw.proc.pid, signal.SIGTERM)
        assert gw.proc.wait(DRAIN + MARGIN + 5) == 0
        took = time.monotonic() - signalled
        answers = [f.result(timeout=10) for f in running]
        resp, out = finishing.result(timeout=10)
    print(f"\nexited {took:.2f} s after SIGTERM with a drain timeout of {DRAIN} s")
    assert DRAIN - 0.2 <= took <= DRAIN + MARGIN, took
    assert resp["StatusCode"] == 200 and out == "done"
    for status, headers, body in answers:
        assert status == 500 and headers["x-amzn-ErrorType"] == "ServiceException", (status, body)
        assert b"gateway stopped" in body
    assert gone(children), "a process outlived the gateway"
    assert "drain timeout" in gw.log()


def test_idle_keep_alive_connections_do_not_hold_shutdown(gateway_factory: GatewayFactory) -> None:
    """A client that keeps its connection open between requests (boto3, the bench's clients) is not a request in
    flight: SIGTERM closes it at once and the gateway exits at once, with its environments, frozen or not."""
    gw = gateway_factory(env={"GATEWAY_DRAIN_TIMEOUT": "30"})
    assert gw.proc is not None
    lam = gw.client()
    create_function(lam, "short", LONG, Timeout=30)
    invoke_json(lam, "short")  # boto3 keeps this connection open, idle
    time.sleep(0.3)  # the environment goes idle (and, with a freezer, frozen: 50-100 ms after)
    children = descendants(gw.proc.pid)
    signalled = time.monotonic()
    os.kill(gw.proc.pid, signal.SIGTERM)
    assert gw.proc.wait(15) == 0
    assert time.monotonic() - signalled < 5.0
    assert gone(children), "a process outlived the gateway"
