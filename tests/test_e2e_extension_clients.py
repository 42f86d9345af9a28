"""Extensions with runtimes and clients others wrote, through the real gateway: lambda-sigterm (PyPI: a third party's
internal extension), the example extension of examples/telemetry-extension, a custom runtime (provided.al2023) with an
extension; and a Python function behind AWS_LAMBDA_EXEC_WRAPPER, which runs through the Runtime API proxy with our
client (runtimes/python/api_client.py). The probe extension and helpers are tests/test_e2e_extensions.py's."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.execution.zygote import PROJECT_ROOT
from gateway.runtime_packages import PACKAGES_DIR
from tests.conftest import RUNTIME, GatewayFactory, create_function, invoke_json, make_zip
from tests.test_e2e_extensions import (
    FUNCTION,
    SYSTEM_PYTHON,
    as_root,
    create,
    kinds,
    publish_extension,
    seen_in,
    telemetry,
    wait_for,
)

pytestmark = pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs the system's /usr/bin/python3")

WRAPPER = """#!/bin/sh
export WRAPPED="$*"
exec "$@"
"""

PYTHON_FUNCTION = r"""
import json, logging, os, sys
if os.environ.get("BREAK_INIT"):
    import no_such_module_here

def lambda_handler(event, context):
    print("printed", event.get("n"))
    logging.getLogger().warning("warned")
    if event.get("fail"):
        raise ValueError("it failed")
    return {
        "wrapped": os.environ.get("WRAPPED"),
        "request_id": context.aws_request_id,
        "remaining": context.get_remaining_time_in_millis(),
        "arn": context.invoked_function_arn,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "cwd": os.getcwd(),
        "path": sys.path,
        "decimal": __import__("decimal").Decimal("1.5"),
        "boto3": __import__("boto3").__version__,
        "cmdline": open("/proc/self/cmdline").read().split("\0"),
        "executable": sys.executable,
        "concurrent": __import__("concurrent.futures").__file__,
    }
"""


@as_root
def test_a_python_function_with_an_exec_wrapper_runs_through_our_runtime_api_client(lam: Any, fname: str) -> None:
    layer = make_zip({"wrapper": WRAPPER}, executable={"wrapper"})
    arn = lam.publish_layer_version(LayerName=f"{fname}-w", Content={"ZipFile": layer})["LayerVersionArn"]
    variables = {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper"}
    create_function(lam, fname, PYTHON_FUNCTION, Runtime=RUNTIME, Layers=[arn], Environment={"Variables": variables})
    resp = lam.invoke(FunctionName=fname, Payload=b'{"n": 1}', LogType="Tail")
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    assert body["wrapped"].split()[4].endswith("api_client.py")  # argv = [wrapper, python, -I, -S, -B, client, ...]
    assert body["request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert 0 < body["remaining"] <= 3000 and body["arn"].endswith(f":function:{fname}")
    assert body["trace"].startswith("Root=1-") and body["cwd"] == "/var/task" and body["decimal"] == 1.5
    assert body["path"][:3] == ["/var/task", f"/opt/python/lib/{RUNTIME}/site-packages", "/opt/python"]
    assert not any(p.endswith("wt-extensions") or "runtimes" in p for p in body["path"])  # not the gateway's tree
    assert "/var/runtime" in body["path"] and body["boto3"]  # the runtime's packages, as Lambda's Python has
    # no host path of the gateway's (its project, its venv, its packages) on the command line or on sys.path: the
    # client and the runtime's modules at jail paths, the interpreter as the jail shows it
    host = (str(PROJECT_ROOT), sys.prefix, str(PACKAGES_DIR))
    assert not [p for p in body["cmdline"] + body["path"] + [body["executable"]] if p.startswith(host)], body
    assert body["cmdline"][4] == "/var/rapid/runtimes/python/api_client.py" and body["cmdline"][5] == "/var/runtime"
    assert body["executable"].startswith(("/var/lang/bin/", "/usr/bin/", "/bin/"))
    assert body["concurrent"].endswith("/concurrent/__init__.py")  # the standard library's, not the runtime's
    assert not any("site-packages" in p and not p.startswith("/opt") for p in body["path"])  # not the venv's
    log = base64.b64decode(resp["LogResult"]).decode()
    assert "printed 1" in log and "[WARNING]\t" in log and f"\t{body['request_id']}\twarned" in log
    resp, error = invoke_json(lam, fname, {"fail": True})
    assert resp["FunctionError"] == "Unhandled"
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "it failed"
    assert any("lambda_handler" in line for line in error["stackTrace"])
    variables["BREAK_INIT"] = "1"
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": variables})
    resp, error = invoke_json(lam, fname, {})
    assert resp["FunctionError"] == "Unhandled" and error["errorType"] == "Runtime.ImportModuleError"


#: a third party's extension client from PyPI: an internal extension (registered from the function's own process) that
#: exists to make Lambda send SIGTERM to the runtime at shutdown
LAMBDA_SIGTERM = "lambda-sigterm==0.1.2"

SIGTERM_FUNCTION = r"""
import json, os, signal, time
import lambda_sigterm

def note(kind):
    with open(os.environ["EXT_OUT"], "a") as f:
        f.write(json.dumps({"kind": kind, "data": {}, "t": time.time(), "pid": os.getpid()}) + "\n")

def on_term(signum, frame):
    note("sigterm")
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)
lambda_sigterm.register()

def lambda_handler(event, context):
    return {"ok": True}
"""


@pytest.fixture(scope="session")
def lambda_sigterm_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | bytes]:
    """lambda-sigterm and its dependency (urllib3), pip-installed for the function's code."""
    target = tmp_path_factory.mktemp("lambda-sigterm")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), LAMBDA_SIGTERM]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"pip could not install {LAMBDA_SIGTERM}: {done.stderr[-1000:]}")
    return {
        str(path.relative_to(target)): path.read_bytes()
        for path in target.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_a_third_party_internal_extension_gets_the_runtime_its_sigterm(
    gateway_factory: GatewayFactory, tmp_path: Path, fname: str, lambda_sigterm_files: dict[str, str | bytes]
) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})  # no jail: the processes write to a host file
    lam = gw.client()
    out = tmp_path / "seen.jsonl"
    variables = {"EXT_OUT": str(out)}
    layer = publish_extension(lam)
    create_function(lam, fname, SIGTERM_FUNCTION, files=lambda_sigterm_files, Runtime=RUNTIME, Layers=[layer],
                    Environment={"Variables": variables})  # fmt: skip
    resp, body = invoke_json(lam, fname, {})
    assert "FunctionError" not in resp and body == {"ok": True}, body
    internal = {"name": "lambda-sigterm", "state": "Ready", "events": []}
    assert wait_for(
        lambda: internal in [e["record"] for e in telemetry(seen_in(out)) if e["type"] == "platform.extension"], 3
    )
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {**variables, "NEXT": "1"}})
    assert wait_for(lambda: kinds(seen_in(out), "sigterm"), 5)  # the shutdown phase: SIGTERM to the runtime


EXAMPLE = (
    Path(__file__).resolve().parent.parent / "examples" / "telemetry-extension" / "extensions" / "telemetry-printer"
)


@as_root
def test_the_example_extension_prints_reports_into_the_functions_log(lam: Any, fname: str) -> None:
    content = make_zip(
        {"extensions/telemetry-printer": EXAMPLE.read_bytes()}, executable={"extensions/telemetry-printer"}
    )
    arn = lam.publish_layer_version(LayerName=f"{fname}-tp", Content={"ZipFile": content})["LayerVersionArn"]
    create_function(lam, fname, FUNCTION, Runtime=RUNTIME, Layers=[arn])
    first = lam.invoke(FunctionName=fname, Payload=b"{}")["ResponseMetadata"]["RequestId"]
    time.sleep(0.3)  # its report is delivered and printed while the environment is idle
    log = base64.b64decode(lam.invoke(FunctionName=fname, Payload=b"{}", LogType="Tail")["LogResult"]).decode()
    assert f"[telemetry-printer] report {first} status=success durationMs=" in log


@as_root
def test_a_custom_runtime_with_an_extension(lam: Any, fname: str) -> None:
    from tests.test_e2e_custom_runtime import RUNTIME as CUSTOM_RUNTIME

    lam.create_function(
        FunctionName=fname,
        Runtime="provided.al2023",
        Role="arn:aws:iam::123456789012:role/lambda-role",
        Handler="function.handler",
        Code={"ZipFile": make_zip({"bootstrap": CUSTOM_RUNTIME}, executable={"bootstrap"})},
        Layers=[publish_extension(lam, "custom-ext")],
    )
    resp = lam.invoke(FunctionName=fname, Payload=b'{"n": 1}', LogType="Tail")
    body = json.loads(resp["Payload"].read())
    rid = resp["ResponseMetadata"]["RequestId"]
    assert "FunctionError" not in resp and body["echo"] == {"n": 1}
    log = base64.b64decode(resp["LogResult"]).decode()
    assert 'event: {"n": 1}' in log and "[custom-ext] ready" in log
    resp = lam.invoke(FunctionName=fname, Payload=b'{"n": 2}', LogType="Tail")
    assert "FunctionError" not in resp and json.loads(resp["Payload"].read())["echo"] == {"n": 2}
    # The runtime answers at once: the extension's line about an INVOKE lands in that invocation's log or the next's.
    log += base64.b64decode(resp["LogResult"]).decode()
    assert f"[custom-ext] INVOKE {rid}" in log or f"[custom-ext] INVOKE {resp['ResponseMetadata']['RequestId']}" in log


@as_root
def test_an_extension_of_the_logs_api(lam: Any, fname: str) -> None:
    create(lam, fname, publish_extension(lam, "logs-ext"), EXT_MODE="logs-api")
    _, first = invoke_json(lam, fname, {"n": 1})
    _, second = invoke_json(lam, fname, {"n": 2, "wait": 0.3})  # time for the first's events to arrive
    events = telemetry(second["seen"])
    types = {e["type"] for e in events}
    assert {"platform.logsSubscription", "platform.start", "platform.end", "platform.report", "function"} <= types
    assert "platform.telemetrySubscription" not in types and "platform.initStart" not in types
    assert {"requestId": first["request_id"]} in [e["record"] for e in events if e["type"] == "platform.end"]
