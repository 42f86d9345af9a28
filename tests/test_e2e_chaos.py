"""Chaos: under sustained load, environments (and once the zygote) are SIGKILLed at random for a bounded time.

Asserts: the gateway never exits; every request gets an answer, a result or a Lambda-shaped error (never a
dropped connection); the zygote is restarted; in-flight concurrency returns to zero; afterwards invocations work,
and once the gateway stops no process it started is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from tests.conftest import RUNTIME, GatewayFactory, create_function, descendants, direct_children, gone, invoke_json

WORK = """
import os, random, time
def lambda_handler(event, context):
    time.sleep(random.random() * 0.02)
    return {"pid": os.getpid()}
"""
LOAD_SECONDS = 6.0
CLIENTS = 6


def _invoke(url: str) -> tuple[int, str | None, str | None]:
    """(status, x-amzn-ErrorType, X-Amz-Function-Error); a dropped connection raises."""
    req = urllib.request.Request(
        url + "/2015-03-31/functions/work/invocations", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status, None, resp.headers.get("X-Amz-Function-Error")
    except urllib.error.HTTPError as exc:
        with exc:
            body = json.loads(exc.read() or b"{}")
        assert "message" in body, body  # Lambda-shaped
        return exc.code, exc.headers.get("x-amzn-ErrorType"), None


def test_random_sigkills_under_load_lose_no_request_and_leave_nothing(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam: Any = gw.client()
    create_function(lam, "work", WORK)
    invoke_json(lam, "work")
    assert gw.proc is not None
    zygote = gw.health()["runtimes"][RUNTIME]["pid"]

    answers: Counter[tuple[int, str | None, str | None]] = Counter()
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answers[_invoke(gw.url)] += 1
            except BaseException as exc:  # a dropped connection or a malformed error: the test fails
                failures.append(exc)
                return

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    killed = 0
    deadline = time.monotonic() + LOAD_SECONDS
    zygote_killed = False
    try:
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if not zygote_killed and time.monotonic() > deadline - LOAD_SECONDS / 2:
                os.kill(zygote, signal.SIGKILL)  # once: every environment dies with it (PDEATHSIG)
                zygote_killed = True
                continue
            current = gw.health().get("runtimes", {}).get(RUNTIME, {}).get("pid")
            envs = sorted(direct_children(current)) if current else []
            if envs:
                try:
                    os.kill(rng.choice(envs), signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    print("chaos answers:", dict(answers), "environments killed:", killed)
    assert not failures, failures[:3]
    assert gw.proc.poll() is None, "the gateway exited"
    assert killed >= 20 and zygote_killed
    ok = sum(n for (status, _, _), n in answers.items() if status == 200)
    assert ok > 50, answers
    for (status, error_type, _function_error), _n in answers.items():
        assert status == 200 or error_type is not None, answers  # every refusal names its error

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        health = gw.health()
        if health["status"] == "ok" and health["inflight"] == 0:
            break
        time.sleep(0.1)
    health = gw.health()
    assert health["inflight"] == 0 and health["status"] == "ok", health
    assert health["runtimes"][RUNTIME]["pid"] != zygote  # restarted
    resp, body = invoke_json(lam, "work")
    assert "FunctionError" not in resp and body["pid"] > 0

    tree = descendants(gw.proc.pid)
    assert gw.stop() == 0
    assert gone(tree), "processes of the gateway outlived it"
