"""The gateway process: health, graceful drain on SIGTERM, children that die with it, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    RUNTIME,
    GatewayFactory,
    create_function,
    descendants,
    direct_children,
    env_dir_of,
    free_port,
    gone,
    invoke_json,
    make_zip,
)

SLOW = """
import os, time
def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"""


def test_healthz_reports_runtimes(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    health = gw.health()
    assert health["status"] == "ok"
    assert {RUNTIME, "provided.al2023"} <= set(health["runtimes"])
    own = health["runtimes"][RUNTIME]
    assert own["ready"] and own["started"] and own["pid"]
    others = {rt: z for rt, z in health["runtimes"].items() if z["interpreter"] != own["interpreter"]}
    assert not any(z["started"] for z in others.values())  # the other Pythons' zygotes start on demand
    assert f"run on {own['interpreter']}" in gw.log()
    assert "program" not in own  # the Python fast path: its interpreter runs it
    assert health["runtimes"]["provided.al2023"]["program"] == "bootstrap"
    nodes = {rt: z for rt, z in health["runtimes"].items() if rt.startswith("nodejs")}
    for runtime, entry in nodes.items():  # what runs each: the Node.js, not the proxy's Python
        assert entry["program"] and entry["version"].startswith(runtime.removeprefix("nodejs").removesuffix("x"))
    unavailable = health["unavailable"]
    assert set(unavailable).isdisjoint(health["runtimes"]) and "java21" not in unavailable  # not a host's lack
    assert all(reason.startswith("The runtime parameter of ") for reason in unavailable.values())
    assert "runtimes here: Python " in gw.log() and "Node.js " in gw.log()


def test_sigterm_drains_in_flight_invocations_then_stops_every_child(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "slow", SLOW, Timeout=10)
    invoke_json(lam, "slow")
    assert gw.proc is not None
    with ThreadPoolExecutor(2) as ex:
        running = [ex.submit(invoke_json, lam, "slow", {"sleep": 1.0}) for _ in range(2)]
        time.sleep(0.4)
        children = descendants(gw.proc.pid)
        assert len(children) >= 3  # the zygote and two environments
        os.kill(gw.proc.pid, signal.SIGTERM)
        results = [f.result() for f in running]
    for resp, _ in results:
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    assert gw.proc.wait(15) == 0
    assert gone(children), "children outlived the gateway"


def test_children_die_when_the_gateway_is_killed(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "victim", SLOW)
    invoke_json(lam, "victim")
    assert gw.proc is not None
    children = descendants(gw.proc.pid)
    assert children
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(5)
    assert gone(children), "environments or zygote survived SIGKILL of the gateway"


def test_functions_survive_restart_and_zygote_restarts(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "durable", SLOW, Timeout=9)
    gw.restart()
    lam = gw.client()
    assert lam.get_function_configuration(FunctionName="durable")["Timeout"] == 9
    assert "FunctionError" not in invoke_json(lam, "durable")[0]
    zygote_pid = gw.health()["runtimes"][RUNTIME]["pid"]
    os.kill(zygote_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        health = gw.health()
        if health["status"] == "ok" and health["runtimes"][RUNTIME]["pid"] != zygote_pid:
            break
        time.sleep(0.05)
    assert gw.health()["runtimes"][RUNTIME]["pid"] != zygote_pid
    assert "FunctionError" not in invoke_json(lam, "durable")[0]


def test_examples_are_deployed(gateway_factory: GatewayFactory) -> None:
    examples = str(Path(__file__).resolve().parent.parent / "examples")
    # like `make run`: ./.gateway-data; the Python examples name no runtime (the gateway's own Python), hello-node is
    # nodejs20.x, which runs on another Node.js on a host without a Node.js 20
    gw = gateway_factory(args=("--deploy", examples), relative=True, env={"GATEWAY_RUNTIME_FALLBACK": "1"})
    lam: Any = gw.client()
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert {"hello", "echo", "custom-runtime", "hello-node"} <= names
    _, body = invoke_json(lam, "hello", {"name": "Ada"})
    assert body["message"] == "Hello, Ada!"
    assert lam.get_function_configuration(FunctionName="hello")["Runtime"] == RUNTIME  # the gateway's own Python
    _, body = invoke_json(lam, "hello-node", {"name": "Ada"})
    assert body["message"] == "Hello, Ada!"
    _, body = invoke_json(lam, "custom-runtime", {"name": "Ada"})
    assert body["message"] == "Hello from a custom runtime, Ada!"
    before = lam.get_function_configuration(FunctionName="hello")["RevisionId"]
    gw.restart()
    assert gw.client().get_function_configuration(FunctionName="hello")["RevisionId"] == before  # idempotent


DETACHED = """
import subprocess
def lambda_handler(event, context):
    child = subprocess.Popen(["sleep", "120"], start_new_session=True)
    return {"child": child.pid}
"""


def test_processes_started_by_handlers_do_not_outlive_the_gateway(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    if not gw.health()["isolation"]["private_tmp"]:
        pytest.skip("needs mount namespaces to recognise a handler's detached processes")
    lam = gw.client()
    create_function(lam, "spawner", DETACHED)
    child = invoke_json(lam, "spawner")[1]["child"]
    assert gw.stop() == 0  # SIGTERM: a clean stop takes them down
    assert gone({child})
    assert not any((gw.data_dir / "envs").iterdir())

    gw.start()
    lam = gw.client()
    child = invoke_json(lam, "spawner")[1]["child"]
    assert gw.proc is not None
    left = set((gw.data_dir / "envs").iterdir())  # the environment's directory, and the zygote's spare's
    assert left
    os.kill(gw.proc.pid, signal.SIGKILL)  # no clean-up by the gateway now: its zygote kills what the handler left...
    gw.proc.wait(5)
    assert gone({child}, timeout=5.0)
    gw.start()  # ...and the next start sweeps the directories
    now = set((gw.data_dir / "envs").iterdir())
    assert not now & left and len(now) <= 1  # at most the new zygote's spare


def test_a_second_gateway_on_the_same_data_dir_is_refused(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port()), "--data-dir", str(gw.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=gw.env,
    )
    assert second.returncode != 0
    assert "another gateway is using the data directory" in second.stderr
    assert gw.health()["status"] == "ok"


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_spare_environment_waits_for_each_cold_start_and_its_loss_costs_nothing(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory()
    lam = gw.client()
    zygote = gw.health()["runtimes"][RUNTIME]["pid"]
    assert _wait_for(lambda: len(direct_children(zygote)) == 1), "no spare forked ahead of demand"
    (spare,) = direct_children(zygote)
    create_function(lam, "first", SLOW)
    assert invoke_json(lam, "first")[1]["pid"] == spare  # the cold start took the spare
    assert _wait_for(lambda: len(direct_children(zygote) - {spare}) == 1), "the spare was not replaced"
    (replacement,) = direct_children(zygote) - {spare}

    assert _wait_for(lambda: env_dir_of(gw.data_dir / "envs", replacement))  # prepared ahead: <envs>/<id>
    spare_dir = env_dir_of(gw.data_dir / "envs", replacement)
    assert spare_dir is not None and spare_dir.is_dir()
    os.kill(replacement, signal.SIGKILL)  # a lost spare is replaced, and cold starts go on working
    assert _wait_for(lambda: replacement not in direct_children(zygote))
    assert _wait_for(lambda: not spare_dir.exists()), "the lost spare's directory was left behind"
    create_function(lam, "second", SLOW)
    pid = invoke_json(lam, "second")[1]["pid"]
    assert pid not in (spare, replacement) and pid in direct_children(zygote)
    assert _wait_for(lambda: len(direct_children(zygote) - {spare, pid}) == 1)
    assert "FunctionError" not in invoke_json(lam, "first")[0]


LAYERED = """
import helper
def lambda_handler(event, context):
    return {"layer": helper.VALUE, "env": __import__("os").environ.get("COLOR")}
"""


def test_sigkill_of_the_gateway_loses_nothing_deployed(gateway_factory: GatewayFactory) -> None:
    """Everything acknowledged before a SIGKILL is there after the restart (SQLite durability)."""
    gw = gateway_factory()
    lam = gw.client()
    layer_zip = make_zip({"python/helper.py": "VALUE = 'from the layer'\n"})
    layer = lam.publish_layer_version(LayerName="helpers", Content={"ZipFile": layer_zip})["LayerVersionArn"]
    create_function(lam, "durable", LAYERED, Layers=[layer], Environment={"Variables": {"COLOR": "blue"}},
                    Tags={"team": "core"})  # fmt: skip
    version = lam.publish_version(FunctionName="durable")["Version"]
    lam.create_alias(FunctionName="durable", Name="live", FunctionVersion=version)
    lam.put_function_concurrency(FunctionName="durable", ReservedConcurrentExecutions=5)
    lam.put_provisioned_concurrency_config(FunctionName="durable", Qualifier="live", ProvisionedConcurrentExecutions=1)
    lam.update_function_configuration(FunctionName="durable", Timeout=7)
    arn = lam.get_function(FunctionName="durable")["Configuration"]["FunctionArn"]
    assert gw.proc is not None
    children = descendants(gw.proc.pid)
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(5)
    assert gone(children), "environments or zygote survived SIGKILL of the gateway"

    gw.start()
    lam = gw.client()
    config = lam.get_function_configuration(FunctionName="durable")
    assert config["Timeout"] == 7 and config["Environment"]["Variables"] == {"COLOR": "blue"}
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="durable")["Versions"]] == ["$LATEST", "1"]
    assert lam.get_alias(FunctionName="durable", Name="live")["FunctionVersion"] == version
    assert lam.get_function_concurrency(FunctionName="durable")["ReservedConcurrentExecutions"] == 5
    prov = lam.get_provisioned_concurrency_config(FunctionName="durable", Qualifier="live")
    assert prov["RequestedProvisionedConcurrentExecutions"] == 1
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core"}
    assert lam.list_layer_versions(LayerName="helpers")["LayerVersions"][0]["LayerVersionArn"] == layer
    assert invoke_json(lam, "durable:live")[1] == {"layer": "from the layer", "env": "blue"}
