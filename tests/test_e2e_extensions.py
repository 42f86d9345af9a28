"""External extensions (Extensions API 2020-01-01) and the Telemetry API (2022-07-01) through the real gateway, the
Runtime API proxy and real processes: an extension written against AWS's documented API (a stdlib Python script run
by the system's /usr/bin/python3, in a layer's extensions/ directory), and Python functions, which then run through
the proxy with our Runtime API client (runtimes/python/api_client.py).

The extension registers for INVOKE and SHUTDOWN, subscribes to platform, function and extension telemetry on
http://sandbox.localdomain:<port> and appends what it sees (JSON lines) to a file: /tmp/extension.jsonl in the
environment (the function reads it back) or, without a jail, a host file the test names. EXT_MODE makes it misbehave.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUNTIME, GatewayFactory, RunningGateway, create_function, gone, invoke_json, make_zip

SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs the system's /usr/bin/python3")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")

EXTENSION = r"""#!/usr/bin/python3
import http.client, http.server, json, os, socket, sys, threading, time

NAME = os.path.basename(__file__)
HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
OUT = os.environ.get("EXT_OUT", "/tmp/extension.jsonl")
MODE = os.environ.get("EXT_MODE", "")
DELAY = float(os.environ.get("EXT_DELAY", "0"))
conn = http.client.HTTPConnection(HOST, int(PORT), timeout=120)
lock = threading.Lock()


def note(kind, data):
    with lock, open(OUT, "a") as f:
        f.write(json.dumps({"kind": kind, "data": data, "t": time.time(), "pid": os.getpid()}) + "\n")


def call(method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


class Listener(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        note("telemetry", events)
        if MODE == "slow-listener":
            time.sleep(30)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


time.sleep(float(os.environ.get("EXT_REGISTER_DELAY", "0")))
if MODE == "crash":
    sys.exit(2)
if MODE == "spam":
    answers = [call("POST", "/2020-01-01/extension/register", b'{"events": []}', {"Lambda-Extension-Name": n})[0]
               for n in ("other", NAME + "x", "")]
    note("spam", answers)
status, headers, body = call("POST", "/2020-01-01/extension/register", json.dumps({"events": ["INVOKE", "SHUTDOWN"]}),
                             {"Lambda-Extension-Name": NAME})
ext_id = headers["lambda-extension-identifier"]
note("register", {"status": status, "body": json.loads(body)})
if MODE == "spam":
    again = call("POST", "/2020-01-01/extension/register", b'{"events": []}', {"Lambda-Extension-Name": NAME})[0]
    bad = call("GET", "/2020-01-01/extension/event/next", None, {"Lambda-Extension-Identifier": "forged"})[0]
    note("spam", [again, bad])
ID = {"Lambda-Extension-Identifier": ext_id}
if MODE == "no-next":  # registered, and never says its Init is over
    time.sleep(60)
if MODE == "init-error":
    error_type = {"Lambda-Extension-Function-Error-Type": "Extension.BadConfig"}
    call("POST", "/2020-01-01/extension/init/error", b"{}", dict(ID, **error_type))
    time.sleep(30)
try:
    server = http.server.ThreadingHTTPServer(("sandbox.localdomain", 0), Listener)
except socket.gaierror:  # no jail: nothing names the loopback so
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Listener)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]
subscription = {
    "schemaVersion": "2022-12-13",
    "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/telemetry"},
    "types": ["platform", "function", "extension"],
    "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
}
if MODE == "logs-api":  # the Logs API, as extensions written before the Telemetry API use it
    del subscription["schemaVersion"]
    status, _, body = call("PUT", "/2020-08-15/logs", json.dumps(subscription), ID)
else:
    status, _, body = call("PUT", "/2022-07-01/telemetry", json.dumps(subscription), ID)
note("subscribe", [status, body.decode()])
print(f"[{NAME}] ready", flush=True)
while True:
    status, headers, body = call("GET", "/2020-01-01/extension/event/next", None, ID)
    event = json.loads(body)
    note("event", event)
    print(f"[{NAME}] {event['eventType']} {event.get('requestId', event.get('shutdownReason'))}", flush=True)
    if event["eventType"] == "SHUTDOWN":
        if MODE == "hang-shutdown":
            time.sleep(60)
        sys.exit(0)
    if MODE == "hang-invoke":
        time.sleep(60)
    if MODE == "exit-after-invoke":
        sys.exit(0)
    time.sleep(DELAY)
"""

FUNCTION = r"""
import json, os, time
INIT_AT = time.time()
OUT = os.environ.get("EXT_OUT", "/tmp/extension.jsonl")

def lambda_handler(event, context):
    start = time.time()
    print("function says", event.get("n"), flush=True)
    time.sleep(event.get("wait", 0))
    seen = []
    if os.path.exists(OUT):
        with open(OUT) as f:
            seen = [json.loads(line) for line in f]
    return {"request_id": context.aws_request_id, "init_at": INIT_AT, "start": start, "seen": seen, "pid": os.getpid()}
"""


def publish_extension(lam: Any, name: str = "probe-ext") -> str:
    """A layer holding the extension (extensions/<name>, executable): its version ARN."""
    content = make_zip({f"extensions/{name}": EXTENSION}, executable={f"extensions/{name}"})
    return str(lam.publish_layer_version(LayerName=name, Content={"ZipFile": content})["LayerVersionArn"])


def create(lam: Any, name: str, layer: str, **variables: str) -> None:
    env = {"Variables": variables} if variables else {}
    create_function(lam, name, FUNCTION, Runtime=RUNTIME, Layers=[layer], Timeout=10, Environment=env)


def kinds(seen: list[dict[str, Any]], kind: str) -> list[Any]:
    return [entry["data"] for entry in seen if entry["kind"] == kind]


def telemetry(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for batch in kinds(seen, "telemetry") for event in batch]


@as_root
def test_init_invoke_events_completion_and_telemetry(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create(lam, fname, publish_extension(lam), EXT_REGISTER_DELAY="0.3", EXT_DELAY="1.0")
    first = lam.invoke(FunctionName=fname, Payload=b'{"n": 1, "wait": 0.3}', LogType="Tail")
    body = json.loads(first["Payload"].read())
    assert "FunctionError" not in first, body
    registered = kinds(body["seen"], "register")
    assert registered[0]["status"] == 200
    assert registered[0]["body"] == {
        "functionName": fname,
        "functionVersion": "$LATEST",
        "handler": "lambda_function.lambda_handler",
    }
    register_at = next(e["t"] for e in body["seen"] if e["kind"] == "register")
    assert body["init_at"] > register_at  # the runtime started once the extension had registered
    assert kinds(body["seen"], "subscribe") == [[200, "OK"]]
    invokes = [e for e in kinds(body["seen"], "event") if e["eventType"] == "INVOKE"]
    assert invokes[0]["requestId"] == body["request_id"] == first["ResponseMetadata"]["RequestId"]
    assert invokes[0]["invokedFunctionArn"].endswith(f":function:{fname}")
    assert invokes[0]["tracing"]["type"] == "X-Amzn-Trace-Id" and invokes[0]["deadlineMs"] > time.time() * 1000
    log = base64.b64decode(first["LogResult"]).decode()
    assert "function says 1" in log and f"[probe-ext] INVOKE {body['request_id']}" in log  # extension output

    # The extension takes 1 s after each INVOKE: the caller is answered at once, the next invocation waits for it.
    began = time.monotonic()
    _, second = invoke_json(lam, fname, {"n": 2})
    assert time.monotonic() - began < 0.9
    _, third = invoke_json(lam, fname, {"n": 3, "wait": 0.3})  # time for the telemetry of the second
    assert third["pid"] == second["pid"] == body["pid"]  # the same environment, warm
    second_event = next(
        e for e in third["seen"] if e["kind"] == "event" and e["data"].get("requestId") == second["request_id"]
    )
    assert third["start"] - second_event["t"] >= 0.95

    events = telemetry(third["seen"])
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert set(event) == {"time", "type", "record"} and event["time"].endswith("Z")
        by_type.setdefault(event["type"], []).append(event["record"])
    assert {
        "platform.initStart",
        "platform.initRuntimeDone",
        "platform.initReport",
        "platform.start",
        "platform.runtimeDone",
        "platform.report",
        "platform.telemetrySubscription",
        "function",
    } <= set(by_type)
    assert by_type["platform.initRuntimeDone"][0] == {
        "initializationType": "on-demand",
        "phase": "init",
        "status": "success",
    }
    start = next(r for r in by_type["platform.start"] if r["requestId"] == body["request_id"])
    assert start["version"] == "$LATEST" and start["tracing"]["type"] == "X-Amzn-Trace-Id"
    done = next(r for r in by_type["platform.runtimeDone"] if r["requestId"] == body["request_id"])
    assert done["status"] == "success" and set(done["metrics"]) == {"durationMs", "producedBytes"}
    assert done["metrics"]["durationMs"] >= 300 and done["metrics"]["producedBytes"] > 0
    report = next(r for r in by_type["platform.report"] if r["requestId"] == second["request_id"])
    metrics = report["metrics"]
    assert report["status"] == "success" and metrics["durationMs"] >= 950  # the extension's second counts
    assert metrics["billedDurationMs"] >= metrics["durationMs"] and metrics["memorySizeMB"] == 128
    assert metrics["maxMemoryUsedMB"] > 1 and "initDurationMs" not in metrics
    first_report = next(r for r in by_type["platform.report"] if r["requestId"] == body["request_id"])
    assert first_report["metrics"]["initDurationMs"] > 0
    assert "function says 1" in by_type["function"] and "function says 2" in by_type["function"]


@as_root
def test_extension_init_error_and_crash_fail_init(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create(lam, fname, publish_extension(lam, "bad-ext"), EXT_MODE="init-error")
    resp, body = invoke_json(lam, fname, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Extension.BadConfig"
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"EXT_MODE": "crash"}})
    resp, body = invoke_json(lam, fname, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Extension.Crash" and "exit status 2" in body["errorMessage"]
    assert sorted(body) == ["errorMessage", "errorType"] and body["errorMessage"].startswith("RequestId: ")


@as_root
def test_more_extensions_than_lambda_allows_fail_init(gateway: RunningGateway, lam: Any, fname: str) -> None:
    names = [f"extensions/e{i:02d}" for i in range(11)]
    content = make_zip(dict.fromkeys(names, EXTENSION), executable=set(names))
    layer = lam.publish_layer_version(LayerName="eleven", Content={"ZipFile": content})["LayerVersionArn"]
    create(lam, fname, layer)
    resp, body = invoke_json(lam, fname, {})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Extension.TooManyExtensions"
    assert "Extension limit (10) reached" in body["errorMessage"]


def seen_in(path: Path) -> list[dict[str, Any]]:
    """The complete lines an extension has written so far (a line still being written is left for the next read)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


def wait_for(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    return predicate()


def test_shutdown_on_update_and_delete_and_a_hanging_extension_is_killed(
    gateway_factory: GatewayFactory, tmp_path: Path, fname: str
) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})  # no jail: the extension writes to a host file
    lam = gw.client()
    out = tmp_path / "seen.jsonl"
    create(lam, fname, publish_extension(lam), EXT_OUT=str(out))
    invoke_json(lam, fname, {"n": 1})
    lam.update_function_configuration(
        FunctionName=fname, Environment={"Variables": {"EXT_OUT": str(out), "VERSION": "2"}}
    )
    shutdown = wait_for(lambda: [e for e in kinds(seen_in(out), "event") if e["eventType"] == "SHUTDOWN"], 5)
    assert shutdown and shutdown[0]["shutdownReason"] == "spindown" and shutdown[0]["deadlineMs"] > 0
    # The shutdown phase delivers what telemetry holds: the last invocation's platform.report.
    assert wait_for(lambda: any(e["type"] == "platform.report" for e in telemetry(seen_in(out))), 3)

    pids = {e["pid"] for e in seen_in(out)}
    invoke_json(lam, fname, {"n": 2})
    variables = {"EXT_OUT": str(out), "EXT_MODE": "hang-shutdown"}
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": variables})
    invoke_json(lam, fname, {"n": 3})
    hanging = {e["pid"] for e in seen_in(out)} - pids
    assert len(hanging) == 2  # the extension of VERSION=2, and the one that hangs at its SHUTDOWN
    lam.delete_function(FunctionName=fname)
    assert wait_for(lambda: len([e for e in kinds(seen_in(out), "event") if e["eventType"] == "SHUTDOWN"]) == 3, 5)
    assert gone(hanging | pids, timeout=5)  # killed once the grace was over


@as_root
def test_an_extension_that_never_finishes_an_invoke_cannot_hold_the_function(
    gateway: RunningGateway, lam: Any, fname: str
) -> None:
    create(lam, fname, publish_extension(lam, "stuck-ext"), EXT_MODE="hang-invoke")
    lam.update_function_configuration(FunctionName=fname, Timeout=2)
    began = time.monotonic()
    _, first = invoke_json(lam, fname, {"n": 1})
    assert time.monotonic() - began < 5  # the caller is answered when the runtime answers
    time.sleep(2.5)  # past the first invocation's deadline: the environment was reset
    resp, again = invoke_json(lam, fname, {"n": 2})
    assert "FunctionError" not in resp and again["pid"] != first["pid"]
    # One that exits after Init: the environment is reset once the invocation is complete, as on Lambda.
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"EXT_MODE": "exit-after-invoke"}})
    _, first = invoke_json(lam, fname, {"n": 3})
    for n in (4, 5):  # served: the next one by this environment (if it came before its RESET) or a new one
        resp, again = invoke_json(lam, fname, {"n": n})
        assert "FunctionError" not in resp
    assert again["pid"] != first["pid"]


@as_root
def test_register_spam_and_a_slow_telemetry_listener_are_bounded(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create(lam, fname, publish_extension(lam, "spam-ext"), EXT_MODE="spam")
    resp, body = invoke_json(lam, fname, {"n": 1})
    assert "FunctionError" not in resp
    assert kinds(body["seen"], "spam") == [[403, 403, 403], [403, 403]]
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"EXT_MODE": "slow-listener"}})
    for n in range(3):  # the listener never answers: deliveries time out, invocations go on
        began = time.monotonic()
        resp, _ = invoke_json(lam, fname, {"n": n})
        assert "FunctionError" not in resp and time.monotonic() - began < 2


@as_root
def test_an_extension_that_never_finishes_its_init_times_init_out(
    gateway: RunningGateway, lam: Any, fname: str
) -> None:
    create(lam, fname, publish_extension(lam, "idle-ext"), EXT_MODE="no-next")
    began = time.monotonic()
    resp, body = invoke_json(lam, fname, {})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    assert time.monotonic() - began < 15  # the gateway's Init timeout (10 s), not the extension, decides


def test_a_timed_out_invocation_gives_extensions_a_timeout_shutdown(
    gateway_factory: GatewayFactory, tmp_path: Path, fname: str
) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})  # no jail: the extension writes to a host file
    lam = gw.client()
    out = tmp_path / "seen.jsonl"
    create(lam, fname, publish_extension(lam), EXT_OUT=str(out))
    lam.update_function_configuration(FunctionName=fname, Timeout=1)
    invoke_json(lam, fname, {"n": 1})  # warm
    began = time.monotonic()
    resp, body = invoke_json(lam, fname, {"wait": 5})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    assert time.monotonic() - began < 1.9  # the caller does not wait for the extensions' shutdown phase
    timed_out = resp["ResponseMetadata"]["RequestId"]
    shutdown = wait_for(lambda: [e for e in kinds(seen_in(out), "event") if e["eventType"] == "SHUTDOWN"], 5)
    assert shutdown and shutdown[0]["shutdownReason"] == "timeout"
    records = [e["record"] for e in telemetry(seen_in(out)) if e["type"] in ("platform.runtimeDone", "platform.report")]
    assert [r["status"] for r in records if r["requestId"] == timed_out] == ["timeout", "timeout"]
    resp, body = invoke_json(lam, fname, {"n": 2})  # a new environment
    assert "FunctionError" not in resp and body["request_id"] == resp["ResponseMetadata"]["RequestId"]
