"""Warm reuse, concurrency, idle reaping, and updates that never run stale code."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import GatewayFactory, create_function, env_dir_of, invoke_json, make_zip
from tests.test_e2e_failures import _alive

PID_SOURCE = """
import os, tempfile, time
def lambda_handler(event, context):
    with open(os.path.join(tempfile.gettempdir(), f"mine-{os.getpid()}"), "w") as f:
        f.write("x")
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "tmp": os.environ["TMPDIR"], "marker": MARKER, "setting": os.environ.get("SETTING"),
            "tmp_files": sorted(os.listdir(tempfile.gettempdir()))}
MARKER = "v0"
"""


def test_warm_environment_is_reused(lam: Any, fname: str) -> None:
    create_function(lam, fname, PID_SOURCE)
    pids = {invoke_json(lam, fname)[1]["pid"] for _ in range(5)}
    assert len(pids) == 1


def test_concurrent_invocations_get_separate_environments(lam: Any, fname: str) -> None:
    create_function(lam, fname, PID_SOURCE)
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: invoke_json(lam, fname, {"sleep": 0.5})[1], range(4)))
    assert len({r["pid"] for r in results}) == 4
    for r in results:  # each has a private /tmp: it sees its own file only (and, in a jail, the mount points of an
        # interpreter that lives under /tmp, read-only)
        assert [name for name in r["tmp_files"] if name.startswith("mine-")] == [f"mine-{r['pid']}"]


def test_most_recently_used_environment_serves_next(lam: Any, fname: str) -> None:
    create_function(lam, fname, PID_SOURCE)
    with ThreadPoolExecutor(2) as ex:
        slow = ex.submit(lambda: invoke_json(lam, fname, {"sleep": 0.6})[1])
        time.sleep(0.2)
        fast = ex.submit(lambda: invoke_json(lam, fname, {"sleep": 0.0})[1]).result()
        last = slow.result()  # released last
    assert fast["pid"] != last["pid"]
    assert invoke_json(lam, fname)[1]["pid"] == last["pid"]


def test_private_tmp_is_mounted_at_tmp(gateway: Any, lam: Any, fname: str) -> None:
    if not gateway.health()["isolation"]["private_tmp"]:
        pytest.skip("no mount namespaces here (not root, or the runtime lives under /tmp): TMPDIR only")
    create_function(lam, fname, PID_SOURCE)
    body = invoke_json(lam, fname)[1]
    assert body["tmp"] == "/tmp"
    assert not os.path.exists(f"/tmp/mine-{body['pid']}")  # not the host's /tmp


def test_idle_environments_are_reaped(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_IDLE_TIMEOUT": "1"})
    lam = gw.client()
    create_function(lam, "reaped", PID_SOURCE)
    body = invoke_json(lam, "reaped")[1]
    assert gw.health()["environments"] == 1
    env_dir = env_dir_of(gw.data_dir / "envs", body["pid"])
    if env_dir is None:
        pytest.skip("no cgroups and no mount namespace here: nothing names the environment's directory")
    assert env_dir.is_dir()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (gw.health()["environments"] or env_dir.exists()):
        time.sleep(0.1)
    assert gw.health()["environments"] == 0
    assert not env_dir.exists(), "the private /tmp outlived its environment"
    assert len(list(env_dir.parent.iterdir())) <= 1  # at most the zygote's spare, waiting with its own
    assert not _alive(body["pid"])
    assert invoke_json(lam, "reaped")[1]["pid"] != body["pid"]  # scale from zero works


def test_no_invocation_runs_old_code_after_update(lam: Any, fname: str) -> None:
    create_function(lam, fname, PID_SOURCE)
    with ThreadPoolExecutor(3) as ex:
        for i in range(1, 6):
            list(ex.map(lambda _: invoke_json(lam, fname), range(3)))  # several warm environments
            source = PID_SOURCE.replace('MARKER = "v0"', f'MARKER = "v{i}"')
            lam.update_function_code(FunctionName=fname, ZipFile=make_zip({"lambda_function.py": source}))
            markers = list(ex.map(lambda _: invoke_json(lam, fname)[1]["marker"], range(6)))
            assert markers == [f"v{i}"] * 6


def test_no_invocation_runs_old_settings_after_update(lam: Any, fname: str) -> None:
    create_function(lam, fname, PID_SOURCE, Environment={"Variables": {"SETTING": "0"}})
    invoke_json(lam, fname)
    for i in range(1, 4):
        lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"SETTING": str(i)}})
        assert invoke_json(lam, fname)[1]["setting"] == str(i)


def test_update_during_invocation_lets_it_finish(lam: Any, fname: str) -> None:
    create_function(lam, fname, PID_SOURCE)
    with ThreadPoolExecutor(1) as ex:
        running = ex.submit(lambda: invoke_json(lam, fname, {"sleep": 0.8}))
        time.sleep(0.3)
        lam.update_function_code(
            FunctionName=fname, ZipFile=make_zip({"lambda_function.py": PID_SOURCE.replace('"v0"', '"new"')})
        )
        assert invoke_json(lam, fname)[1]["marker"] == "new"
        resp, old = running.result()
    assert "FunctionError" not in resp and old["marker"] == "v0"


NO_NEW_PRIVS = """
def lambda_handler(event, context):
    with open("/proc/self/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k in ("NoNewPrivs", "Seccomp")}
"""


def test_environments_cannot_gain_privileges(lam: Any, fname: str) -> None:
    create_function(lam, fname, NO_NEW_PRIVS)
    assert invoke_json(lam, fname)[1]["NoNewPrivs"] == "1"  # setuid binaries run without their privileges
