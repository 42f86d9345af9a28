"""Freezing idle environments (isolation/freezer.py), end to end: nothing a handler left running gets CPU between
invocations, and a frozen environment still serves, and still dies when it must.

Jail mode with cgroups, as root (as sessions and CI here run); skipped elsewhere.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import GatewayFactory, create_function, gone, invoke_json
from tests.test_e2e_async_handlers import capacity

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail and cgroups need root")

#: a background thread that counts for ever, writing its count to /tmp; each invocation reads it
COUNTER = """
import os, threading, time
def count():
    n = 0
    while True:
        n += 1
        if n % 10 == 0:
            with open('/tmp/count.tmp', 'w') as f:
                f.write(str(n))
            os.replace('/tmp/count.tmp', '/tmp/count')
        time.sleep(0.001)
started = False
def lambda_handler(event, context):
    global started
    if not started:
        started = True
        threading.Thread(target=count, daemon=True).start()
    time.sleep(event.get('sleep', 0))
    try:
        with open('/tmp/count') as f:
            return {'count': int(f.read()), 'pid': os.getpid()}
    except FileNotFoundError:
        return {'count': 0, 'pid': os.getpid()}
"""


def _state(pid: int) -> str:
    """The freezer state of `pid`'s group (v1), or of its unified group (v2: "1" frozen, "0" not)."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = dict(line.rstrip("\n").split(":", 2)[1:] for line in f)
    if "freezer" in lines:
        with open(f"/sys/fs/cgroup/freezer{lines['freezer']}/freezer.state") as f:
            return f.read().strip()
    with open(f"/sys/fs/cgroup{lines['']}/cgroup.freeze") as f:
        return "FROZEN" if f.read().strip() == "1" else "THAWED"


def _frozen_soon(pid: int, timeout: float = 3.0) -> bool:
    """Whether `pid`'s group is frozen within `timeout` s: FREEZE_AFTER (50 ms) to twice that after its last
    invocation, later on a loaded machine."""
    deadline = time.monotonic() + timeout
    while _state(pid) != "FROZEN":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@as_root
def test_a_background_thread_makes_no_progress_while_its_environment_is_idle(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    assert gw.health()["isolation"]["freeze"], gw.health()["isolation"]
    lam = gw.client()
    create_function(lam, "counter", COUNTER, Timeout=30)
    _, first = invoke_json(lam, "counter", {"sleep": 0.5})  # the thread counts while the handler runs
    running = first["count"]  # what it counts in half a second
    assert running >= 50, first
    assert _frozen_soon(first["pid"])
    _, before = invoke_json(lam, "counter")
    time.sleep(2.0)
    _, after = invoke_json(lam, "counter")
    assert before["pid"] == after["pid"] == first["pid"]  # one warm environment throughout
    # unfrozen, the idle 2 s would count about 4 x `running`: only the windows of the invocations and the freeze's
    # grace after `before` (at most 100 ms: running / 5) remain
    assert after["count"] - before["count"] < running / 2, (first, before, after)
    _, busy = invoke_json(lam, "counter", {"sleep": 0.5})  # and it still runs while invoked
    assert busy["count"] - after["count"] >= running / 4, (after, busy)


@as_root
def test_a_frozen_environment_is_reaped_and_deleted_like_any_other(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_IDLE_TIMEOUT": "1", "GATEWAY_REAP_INTERVAL": "0.2"})
    lam = gw.client()
    create_function(lam, "reaped", COUNTER)
    _, out = invoke_json(lam, "reaped")
    assert _frozen_soon(out["pid"])
    assert gone({out["pid"]}, timeout=10.0)  # the idle timeout ends it, frozen or not
    create_function(lam, "deleted", COUNTER)
    _, out = invoke_json(lam, "deleted")
    assert _frozen_soon(out["pid"])
    lam.delete_function(FunctionName="deleted")
    assert gone({out["pid"]}, timeout=10.0)


@as_root
def test_provisioned_environments_wait_frozen_and_serve_at_once(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "ready", COUNTER, Publish=True)
    lam.put_provisioned_concurrency_config(FunctionName="ready", Qualifier="1", ProvisionedConcurrentExecutions=1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        config = lam.get_provisioned_concurrency_config(FunctionName="ready", Qualifier="1")
        if config["Status"] == "READY":
            break
        time.sleep(0.1)
    resp, out = invoke_json(lam, "ready", Qualifier="1")
    assert "FunctionError" not in resp, out
    assert _frozen_soon(out["pid"])
    _, again = invoke_json(lam, "ready", Qualifier="1")
    assert again["pid"] == out["pid"]


ASYNC = """
import asyncio, os
async def lambda_handler(event, context):
    await asyncio.sleep(event['sleep'])
    return os.getpid()
"""


@as_root
def test_a_shared_environment_is_never_frozen_with_an_invocation_in_flight(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "shared", ASYNC, Timeout=30, CapacityProviderConfig=capacity(4))
    _, pid = invoke_json(lam, "shared", {"sleep": 0})
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke_json, gw.client(), "shared", {"sleep": 1.5})
        time.sleep(0.3)
        _, quick = invoke_json(lam, "shared", {"sleep": 0})  # ends while the slow one is still in flight
        assert quick == pid
        time.sleep(0.3)
        assert _state(pid) == "THAWED"  # the slow invocation still runs
        resp, out = slow.result(timeout=30)
    assert out == pid and "FunctionError" not in resp
    assert _frozen_soon(pid)  # its last invocation ended


@as_root
def test_a_frozen_environment_dies_with_a_killed_gateway(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "orphan", COUNTER)
    _, out = invoke_json(lam, "orphan")
    assert _frozen_soon(out["pid"])
    assert gw.proc is not None
    os.kill(gw.proc.pid, signal.SIGKILL)  # its zygote ends the environments' groups: killed, then thawed
    gw.proc.wait(5)
    assert gone({out["pid"]}, timeout=5.0)
