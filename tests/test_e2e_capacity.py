"""Node capacity: live environments fit the memory budget; idle ones of other functions are evicted (LRU)
before anything is throttled, and when nothing can be evicted the next cold start gets 429 at once."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json
from tests.test_e2e_failures import _wait_dead

SOURCE = """
import os, time
def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "function": context.function_name}
"""
#: four 128 MB environments fill the node
BUDGET = {"GATEWAY_MEMORY_BUDGET_MB": "512"}
NAMES = ("a", "b", "c", "d", "e")


def _setup(gateway_factory: GatewayFactory) -> tuple[RunningGateway, Any]:
    gw = gateway_factory(env=BUDGET)
    lam = gw.client()
    for name in NAMES:
        create_function(lam, name, SOURCE, MemorySize=128, Timeout=30)
    return gw, lam


def _pid(lam: Any, name: str, sleep: float = 0.0) -> int:
    resp, body = invoke_json(lam, name, {"sleep": sleep})
    assert "FunctionError" not in resp, body
    assert body["function"] == name
    return int(body["pid"])


def _environments(gw: RunningGateway) -> int:
    return int(gw.health()["environments"])


def test_cold_start_evicts_the_least_recently_used_idle_environment(gateway_factory: GatewayFactory) -> None:
    gw, lam = _setup(gateway_factory)
    pids = {}
    for name in "abcd":  # a is the least recently used afterwards
        pids[name] = _pid(lam, name)
        time.sleep(0.02)
    assert _environments(gw) == 4
    assert _pid(lam, "a") == pids["a"]  # warm: no eviction; a is now the most recently used
    assert _environments(gw) == 4

    pid_e = _pid(lam, "e")  # the node is full: b, least recently used, makes room
    assert _environments(gw) == 4
    assert _wait_dead(pids["b"]), "the evicted environment is still running"
    for name in "acd":
        assert _pid(lam, name) == pids[name], f"{name} lost its warm environment"
    assert _environments(gw) == 4

    # b cold-starts again; e is now the least recently used idle environment of another function
    pid_b = _pid(lam, "b")
    assert pid_b != pids["b"]
    assert _wait_dead(pid_e)
    assert _environments(gw) == 4
    for name in "acd":
        assert _pid(lam, name) == pids[name]
    assert _pid(lam, "b") == pid_b


def test_full_node_of_busy_environments_throttles_at_once(gateway_factory: GatewayFactory) -> None:
    gw, lam = _setup(gateway_factory)
    pids = {name: _pid(lam, name) for name in "abcd"}
    with ThreadPoolExecutor(4) as ex:
        busy = {name: ex.submit(_pid, lam, name, 4.0) for name in "abcd"}
        deadline = time.monotonic() + 10
        while gw.health()["inflight"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gw.health()["inflight"] == 4
        time.sleep(0.2)  # all four are inside their handlers by now

        start = time.monotonic()
        status, headers, body = gw.request("POST", "/2015-03-31/functions/e/invocations", b"{}")
        elapsed = time.monotonic() - start
        assert status == 429, body
        assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert json.loads(body)["Type"] == "User"
        assert elapsed < 1.0, "throttling waited for a busy environment instead of answering at once"
        # nor may a busy function grow: there is nothing idle left to evict
        status, headers, _ = gw.request("POST", "/2015-03-31/functions/a/invocations", b"{}")
        assert (status, headers["x-amzn-ErrorType"]) == (429, "TooManyRequestsException")
        assert not any(f.done() for f in busy.values())  # the 429s did not come from the sleepers finishing
        assert _environments(gw) == 4
        assert {name: f.result(timeout=30) for name, f in busy.items()} == pids

    assert gw.health()["inflight"] == 0
    _pid(lam, "e")  # once they are idle again, one of them makes room
    assert _environments(gw) == 4
