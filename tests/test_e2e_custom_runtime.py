"""Custom runtimes (provided.al2023, provided.al2) through the real gateway and the Runtime API proxy: a `bootstrap`
that is a Python script run by the system's /usr/bin/python3 (visible in a jail: it is under /usr), speaking the
Runtime API over http.client and raw sockets. Results, function and Init errors, a runtime that exits, timeouts,
warm reuse, logs, AWS_LAMBDA_EXEC_WRAPPER, a bootstrap from a layer, and what a hostile runtime or a neighbour can do.

Jailed (root, as sessions and CI run) the Runtime API is 127.0.0.1:9001 of the environment's own network namespace;
the rlimits tests run the same runtime without a jail (a free port).
"""

from __future__ import annotations

import base64
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROLE, GatewayFactory, RunningGateway, create_function, gone, invoke_json, make_zip
from tests.test_e2e_extensions import publish_extension

SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs the system's /usr/bin/python3")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")

#: the runtime: what it does for an event is the event's key (echo by default); INIT_MODE=error|exit|body:<text>
#: fails its Init (body: posts <text> to init/error)
RUNTIME = r"""#!/usr/bin/python3
import base64, http.client, json, os, re, socket, sys, time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
BASE = "/2018-06-01/runtime"
conn = http.client.HTTPConnection(HOST, int(PORT), timeout=60)


def call(method, path, body=None, headers=None, c=None):
    c = c or conn
    c.request(method, BASE + path, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def raw(data, body=None):
    # the status lines the proxy answers `data` with (then `body`, after a 100 Continue), until it closes
    s = socket.create_connection((HOST, int(PORT)))
    s.settimeout(10)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if body is not None and b"100 Continue" in out:
                s.sendall(body)
                body = None
    except OSError as exc:
        out += repr(exc).encode()
    s.close()
    return [line.decode() for line in re.findall(rb"HTTP/1\.1 \d{3} [^\r\n]*", out)]


def abuse(rid):
    other = http.client.HTTPConnection(HOST, int(PORT), timeout=10)
    got = {}
    status, _, body = call("POST", "/invocation/not-" + rid + "/response", b"{}")
    got["wrong_id"] = [status, json.loads(body)]
    status, _, body = call("GET", "/invocation/next", c=other)
    got["second_next"] = [status, json.loads(body)]
    status, _, body = call("POST", "/init/error", b"{}", c=other)
    got["late_init_error"] = [status, json.loads(body)]
    got["garbage"] = raw(b"\x00\x01\x02 garbage\r\n\r\n")
    got["huge_head"] = raw(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    post = b"POST " + BASE.encode() + b"/invocation/x/"
    got["bad_chunk"] = raw(post + b"response HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    got["smuggle"] = raw(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    got["declared_huge"] = raw(post + b"response HTTP/1.1\r\nContent-Length: 100000000000\r\n\r\n")
    got["pipelined"] = raw(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
    expect = b"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    got["continue"] = raw(post + b"error HTTP/1.1\r\n" + expect, b"{}")
    return got


mode = os.environ.get("INIT_MODE")
MARK = f"/tmp/reinit-{os.getppid()}"  # set by an event: how this environment's next (re-)Init goes
if os.path.exists(MARK):
    mode = open(MARK).read()
print("init: pid", os.getpid(), flush=True)
if mode == "error":
    doc = {"errorType": "Custom.InitFailure", "errorMessage": "no configuration", "stackTrace": ["at init"]}
    call("POST", "/init/error", json.dumps(doc), {"Lambda-Runtime-Function-Error-Type": "Custom.InitFailure"})
    time.sleep(30)
if mode and mode.startswith("body:"):  # init/error with this body, as it is, and no type header
    call("POST", "/init/error", mode[5:].encode())
    time.sleep(30)
if mode == "exit":
    sys.exit(3)
later = {}
while True:
    status, headers, body = call("GET", "/invocation/next")
    rid = headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.loads(body)
    print("event:", json.dumps(event), flush=True)
    if "exit" in event:
        os._exit(event["exit"])
    if "reinit" in event:
        with open(MARK, "w") as f:
            f.write(event["reinit"])
    if "sleep" in event:
        time.sleep(event["sleep"])
    if "fail" in event:
        doc = {"errorType": event["fail"], "errorMessage": "it failed", "stackTrace": ["at handler"]}
        call("POST", f"/invocation/{rid}/error", json.dumps(doc), {"Lambda-Runtime-Function-Error-Type": event["fail"]})
        continue
    if "stream" in event:  # a streamed response (chunked, trailers): buffered by the proxy without a stream hook
        trailer = b""
        if event["stream"] == "fail":
            doc = base64.b64encode(json.dumps({"errorType": "Stream.Broke", "errorMessage": "midway"}).encode())
            trailer = b"Lambda-Runtime-Function-Error-Type: Stream.Broke\r\nLambda-Runtime-Function-Error-Body: " + doc
            trailer += b"\r\n"
        head = f"POST {BASE}/invocation/{rid}/response HTTP/1.1\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"
        head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        later["stream"] = raw(head.encode() + b'3\r\n{"a\r\n4\r\n": 1\r\n1\r\n}\r\n0\r\n' + trailer + b"\r\n")
        continue
    if "big" in event:
        status, _, answer = call("POST", f"/invocation/{rid}/response", b"x" * event["big"])
        later["big"] = [status, json.loads(answer)]
        conn = http.client.HTTPConnection(HOST, int(PORT), timeout=60)  # the proxy closed that one
        continue
    result = {
        "echo": event,
        "pid": os.getpid(),
        "headers": {k.lower(): v for k, v in headers.items()},
        "env": {k: os.environ.get(k) for k in ("AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "WRAPPED", "_HANDLER")},
        "cwd": os.getcwd(),
        "ppid": os.getppid(),
        "files": {p: open(p).read() for p in event.get("read", []) if os.path.exists(p)},
        "later": later,
    }
    if event.get("abuse"):
        result["abuse"] = abuse(rid)
    if event.get("neighbour"):
        try:
            s = socket.create_connection(("127.0.0.1", 9001), timeout=2)
            s.sendall(b"GET " + BASE.encode() + b"/invocation/next HTTP/1.1\r\nConnection: close\r\n\r\n")
            s.settimeout(2)
            result["neighbour"] = s.recv(4096).split(b"\r\n")[0].decode()
        except OSError as exc:
            result["neighbour"] = type(exc).__name__
    if "exit_after" in event:  # answer (or fail, as Node.js does after an uncaught exception), then exit at once
        if event.get("as_error"):
            doc = {"errorType": "Custom.Crash", "errorMessage": "crashed"}
            call("POST", f"/invocation/{rid}/error", json.dumps(doc))
        else:
            call("POST", f"/invocation/{rid}/response", json.dumps(result))
        time.sleep(event.get("linger", 0))  # long enough, the gateway freezes the environment before the exit
        os._exit(event["exit_after"])
    call("POST", f"/invocation/{rid}/response", json.dumps(result))
    if event.get("abuse"):
        status, _, answer = call("POST", f"/invocation/{rid}/response", b"{}")
        later["again"] = [status, json.loads(answer)]
"""


def create_custom(client: Any, name: str, files: dict[str, str | bytes] | None = None, **kwargs: Any) -> None:
    files = {"bootstrap": RUNTIME} if files is None else files
    client.create_function(
        FunctionName=name,
        Runtime=kwargs.pop("Runtime", "provided.al2023"),
        Role=ROLE,
        Handler="function.handler",
        Code={"ZipFile": make_zip(files, executable={n for n in files if n in ("bootstrap", "wrapper")})},
        **kwargs,
    )


def test_results_headers_warm_reuse_and_logs(lam: Any, fname: str) -> None:
    create_custom(lam, fname)
    first = lam.invoke(FunctionName=fname, Payload=b'{"n": 1}', LogType="Tail")
    body = json.loads(first["Payload"].read())
    assert "FunctionError" not in first
    rid = first["ResponseMetadata"]["RequestId"]
    assert body["echo"] == {"n": 1}
    headers = body["headers"]
    assert headers["lambda-runtime-aws-request-id"] == rid
    assert headers["content-type"] == "application/json"  # awslambdaric 4.2.2 needs it
    assert headers["lambda-runtime-invoked-function-arn"].endswith(f":function:{fname}")
    assert abs(int(headers["lambda-runtime-deadline-ms"]) - (time.time() + 3) * 1000) < 5000
    assert headers["lambda-runtime-trace-id"].startswith("Root=1-")
    assert body["env"]["_HANDLER"] == "function.handler"
    assert body["cwd"] == body["env"]["LAMBDA_TASK_ROOT"]
    log = base64.b64decode(first["LogResult"]).decode()
    assert "init: pid" in log and 'event: {"n": 1}' in log and f"END RequestId: {rid}" in log
    report = next(line for line in log.splitlines() if line.startswith("REPORT"))
    assert "Init Duration" in report and "Max Memory Used: 0 MB" not in report
    second = lam.invoke(FunctionName=fname, Payload=b'{"n": 2}', LogType="Tail", ClientContext=_client_context())
    again = json.loads(second["Payload"].read())
    assert again["pid"] == body["pid"]  # the same environment, warm
    log2 = base64.b64decode(second["LogResult"]).decode()
    assert "Init Duration" not in log2 and 'event: {"n": 2}' in log2 and '"n": 1' not in log2
    assert json.loads(again["headers"]["lambda-runtime-client-context"]) == {"custom": {"k": "v\nw", "name": "Zoë"}}


def _client_context() -> str:
    # JSON whose whitespace breaks lines: the header must still be one line (no header injection into the runtime)
    return base64.b64encode('{\r\n"custom": {"k": "v\\nw", "name": "Zoë"}\r\n}'.encode()).decode()


def test_function_error_is_unhandled_with_the_runtimes_type(lam: Any, fname: str) -> None:
    create_custom(lam, fname, Runtime="provided.al2")
    resp, body = invoke_json(lam, fname, {"fail": "Custom.Oops"})
    assert resp["FunctionError"] == "Unhandled"
    assert body == {"errorType": "Custom.Oops", "errorMessage": "it failed", "stackTrace": ["at handler"]}
    resp, body = invoke_json(lam, fname, {"n": 3})
    assert "FunctionError" not in resp and body["echo"] == {"n": 3}


def test_init_error_and_init_exit(lam: Any, fname: str) -> None:
    create_custom(lam, fname, Environment={"Variables": {"INIT_MODE": "error"}})
    resp = lam.invoke(FunctionName=fname, Payload=b"{}", LogType="Tail")
    body = json.loads(resp["Payload"].read())
    assert resp["FunctionError"] == "Unhandled"  # the document the runtime posted, as it is
    assert body == {"errorType": "Custom.InitFailure", "errorMessage": "no configuration", "stackTrace": ["at init"]}
    assert "[ERROR]" not in base64.b64decode(resp["LogResult"]).decode()  # the runtime's log says what it says
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"INIT_MODE": "exit"}})
    resp = lam.invoke(FunctionName=fname, Payload=b"{}", LogType="Tail")
    body, rid = json.loads(resp["Payload"].read()), resp["ResponseMetadata"]["RequestId"]
    assert resp["FunctionError"] == "Unhandled"  # Lambda's words, as for a runtime that exits mid-invocation
    assert body == {
        "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: exit status 3",
        "errorType": "Runtime.ExitError",
    }
    assert f"{rid} Runtime exited with error: exit status 3" in base64.b64decode(resp["LogResult"]).decode()


@pytest.mark.parametrize(
    "posted",
    [
        '{"errorMessage":"nope","errorType":"Custom.Init"}',
        "not JSON at all",
        '["an", "array"]',
        "[not JSON either",
        '"a string"',
        "",
    ],
    ids=["object", "text", "array", "bracket", "string", "empty"],
)
def test_an_init_error_body_is_passed_on_as_posted(lam: Any, fname: str, posted: str) -> None:
    """Lambda answers an invocation whose Init failed with the body the runtime posted to init/error, byte for byte,
    JSON or not (an empty one becomes a document naming Runtime.Unknown, as for /error)."""
    create_custom(lam, fname, Environment={"Variables": {"INIT_MODE": "body:" + posted}})
    resp = lam.invoke(FunctionName=fname, Payload=b"{}")
    body = resp["Payload"].read()
    assert resp["FunctionError"] == "Unhandled"
    if not posted:
        assert json.loads(body) == {"errorMessage": "", "errorType": "Runtime.Unknown"}
    elif posted.startswith("["):  # one leading space keeps it apart from a stack on the wire: the same JSON
        assert body == b" " + posted.encode()
    else:
        assert body == posted.encode()


def test_missing_or_non_executable_bootstrap_is_an_invalid_entrypoint(lam: Any, fname: str) -> None:
    create_custom(lam, fname, files={"other": "x"})
    resp, body = invoke_json(lam, fname, {})
    rid = resp["ResponseMetadata"]["RequestId"]
    assert resp["FunctionError"] == "Unhandled" and sorted(body) == ["errorMessage", "errorType"]
    assert body["errorType"] == "Runtime.InvalidEntrypoint"
    assert body["errorMessage"].startswith(f"RequestId: {rid} Error: Couldn't find valid bootstrap(s): [")
    lam.update_function_code(FunctionName=fname, ZipFile=make_zip({"bootstrap": RUNTIME}))  # mode 0644
    resp, body = invoke_json(lam, fname, {})
    assert body["errorType"] == "Runtime.InvalidEntrypoint"
    assert body["errorMessage"].startswith(f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: ")
    assert body["errorMessage"].endswith("/bootstrap: permission denied")


def test_a_runtime_that_exits_mid_invocation(lam: Any, fname: str) -> None:
    create_custom(lam, fname)
    invoke_json(lam, fname, {"n": 1})
    resp, body = invoke_json(lam, fname, {"exit": 7})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Error: Runtime exited with error: exit status 7")
    resp, body = invoke_json(lam, fname, {"n": 2})  # a new environment
    assert "FunctionError" not in resp and body["echo"] == {"n": 2}


def test_a_runtime_that_exits_after_answering_is_started_again_for_the_next_invoke(lam: Any, fname: str) -> None:
    """As on Lambda, a runtime that exits once it has answered is Init again (same environment, extensions and all)
    for the next invocation, which waits for it: nothing fails, however soon that invocation comes, and whether the
    runtime ends before the gateway freezes the environment or after (its end is then seen once thawed)."""
    create_custom(lam, fname)
    _, first = invoke_json(lam, fname, {"n": 0})
    pids = {first["pid"]}
    for i in range(10):
        how = {"exit_after": 1 + i % 2, "as_error": i % 3 == 0, "linger": 0.3 if i % 4 == 1 else 0}
        resp, body = invoke_json(lam, fname, {"n": i, **how})
        if how["as_error"]:
            assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Custom.Crash", body
        else:
            assert "FunctionError" not in resp and body["echo"]["n"] == i, body
        time.sleep(how["linger"] / 2)  # frozen meanwhile (when the host has a freezer), thawed by the next INVOKE
        resp = lam.invoke(FunctionName=fname, Payload=json.dumps({"n": i}).encode(), LogType="Tail")
        after = json.loads(resp["Payload"].read())
        assert "FunctionError" not in resp, after
        assert after["ppid"] == first["ppid"] and after["pid"] not in pids  # the same environment, a new runtime
        assert "init: pid" in base64.b64decode(resp["LogResult"]).decode()  # its re-Init's output
        pids.add(after["pid"])
    assert gone(pids - {after["pid"]})


@as_root
def test_extensions_keep_running_across_a_re_init(lam: Any, fname: str) -> None:
    layer = publish_extension(lam)
    create_custom(lam, fname, Layers=[layer], Timeout=10)
    rids, pids = [], []
    for event in ({"n": 0}, {"n": 1, "exit_after": 0}, {"n": 2}):
        resp = lam.invoke(FunctionName=fname, Payload=json.dumps(event).encode())
        assert "FunctionError" not in resp
        rids.append(resp["ResponseMetadata"]["RequestId"])
        pids.append(json.loads(resp["Payload"].read())["pid"])
    _, last = invoke_json(lam, fname, {"read": ["/tmp/extension.jsonl"]})
    assert pids[0] == pids[1] != pids[2] == last["pid"]  # a new runtime after the exit, and it serves on
    notes = [json.loads(line) for line in last["files"]["/tmp/extension.jsonl"].splitlines()]
    invokes = [n for n in notes if n["kind"] == "event" and n["data"]["eventType"] == "INVOKE"]
    assert [n["data"]["requestId"] for n in invokes][:3] == rids
    assert len({n["pid"] for n in notes}) == 1  # the same extension process throughout


@pytest.mark.parametrize("how", ["exit", "error"])
def test_a_runtime_whose_re_init_fails_fails_the_waiting_invocation_once(lam: Any, fname: str, how: str) -> None:
    create_custom(lam, fname)
    resp, body = invoke_json(lam, fname, {"n": 1, "exit_after": 0, "reinit": how})
    assert "FunctionError" not in resp
    start = time.monotonic()
    resp = lam.invoke(FunctionName=fname, Payload=b'{"n": 2}', LogType="Tail")
    failed = json.loads(resp["Payload"].read())
    rid = resp["ResponseMetadata"]["RequestId"]
    assert resp["FunctionError"] == "Unhandled" and time.monotonic() - start < 5  # at once: no restart loop
    log = base64.b64decode(resp["LogResult"]).decode()
    if how == "exit":
        assert failed == {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: exit status 3",
        }
        assert f"{rid} Runtime exited with error: exit status 3" in log
    else:  # the document its re-Init posted, as it is
        assert failed == {
            "errorType": "Custom.InitFailure",
            "errorMessage": "no configuration",
            "stackTrace": ["at init"],
        }
        assert "[ERROR]" not in log
    restarted = [int(line.split()[-1]) for line in log.splitlines() if line.startswith("init: pid")]
    assert len(restarted) == 1  # its re-Init's output, once
    _, fresh = invoke_json(lam, fname, {"n": 3})  # the failed environment was retired: a new one serves
    assert fresh["echo"] == {"n": 3} and (fresh["ppid"], fresh["pid"]) != (body["ppid"], body["pid"])
    assert gone({body["pid"], restarted[0]})  # the one that posted init/error (and sleeps) is ended with it


def test_timeout_kills_the_runtime_and_the_next_invoke_starts_fresh(lam: Any, fname: str) -> None:
    create_custom(lam, fname, Timeout=1)
    _, warm = invoke_json(lam, fname, {"n": 1})
    resp, body = invoke_json(lam, fname, {"sleep": 5})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    _, after = invoke_json(lam, fname, {"n": 2})
    assert after["pid"] != warm["pid"] or after["env"] != warm["env"]


def test_a_response_over_6_mb_fails_the_invocation_not_the_environment(lam: Any, fname: str) -> None:
    create_custom(lam, fname, MemorySize=512)
    _, warm = invoke_json(lam, fname, {"n": 1})
    resp, body = invoke_json(lam, fname, {"big": 7 * 1024 * 1024})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert "exceeded maximum allowed payload size (6291556 bytes)" in body["errorMessage"]
    _, after = invoke_json(lam, fname, {"n": 2})
    assert after["pid"] == warm["pid"]
    assert after["later"]["big"] == [
        413,
        {
            "errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).",
            "errorType": "RequestEntityTooLarge",
        },
    ]


def test_a_streamed_response_without_a_stream_hook_is_buffered(lam: Any, fname: str) -> None:
    create_custom(lam, fname)
    resp, body = invoke_json(lam, fname, {"stream": "ok"})
    assert "FunctionError" not in resp and body == {"a": 1}
    resp, body = invoke_json(lam, fname, {"stream": "fail"})
    assert resp["FunctionError"] == "Unhandled"
    assert body == {"errorType": "Stream.Broke", "errorMessage": "midway"}
    _, after = invoke_json(lam, fname, {"n": 1})
    assert after["later"]["stream"] == ["HTTP/1.1 202 Accepted"]


def test_a_hostile_runtime_hurts_only_itself(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_custom(lam, fname, Timeout=30)
    _, warm = invoke_json(lam, fname, {"n": 1})
    resp, body = invoke_json(lam, fname, {"abuse": True})
    assert "FunctionError" not in resp, body
    got = body["abuse"]
    assert got["wrong_id"] == [400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}]
    assert got["second_next"][0] == 403 and got["second_next"][1]["errorType"] == "InvalidStateTransition"
    assert got["late_init_error"][0] == 403
    assert got["garbage"] == ["HTTP/1.1 400 Bad Request"]
    assert got["huge_head"] == ["HTTP/1.1 431 Request Header Fields Too Large"]
    assert got["bad_chunk"] == ["HTTP/1.1 400 Bad Request"]
    assert got["smuggle"] == ["HTTP/1.1 400 Bad Request"]
    assert got["declared_huge"] == ["HTTP/1.1 400 Bad Request"]  # the id is checked first, as Lambda does
    assert got["pipelined"] == ["HTTP/1.1 404 Not Found", "HTTP/1.1 404 Not Found"]
    assert got["continue"] == ["HTTP/1.1 100 Continue", "HTTP/1.1 400 Bad Request"]
    _, after = invoke_json(lam, fname, {"n": 2})
    assert after["pid"] == warm["pid"]  # the environment lived through it
    assert after["later"]["again"][0] == 403  # a second answer for the same invocation
    assert gateway.health()["status"] == "ok"


@as_root
def test_a_neighbour_cannot_reach_this_runtime_api(lam: Any, fname: str) -> None:
    create_custom(lam, fname)
    create_custom(lam, fname + "-b")
    create_function(lam, fname + "-py", PROBE_9001)
    _, mine = invoke_json(lam, fname, {"n": 1})
    assert mine["env"]["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    # From another custom runtime's environment, 127.0.0.1:9001 is its own proxy (which refuses a second `next`
    # while its own invocation runs); from a Python function's, nothing listens there.
    _, other = invoke_json(lam, fname + "-b", {"neighbour": True})
    assert other["neighbour"] == "HTTP/1.1 403 Forbidden"
    _, probe = invoke_json(lam, fname + "-py", {})
    assert probe == "ConnectionRefusedError"
    _, again = invoke_json(lam, fname, {"n": 2})
    assert again["pid"] == mine["pid"] and again["echo"] == {"n": 2}


PROBE_9001 = """
import socket
def lambda_handler(event, context):
    try:
        socket.create_connection(("127.0.0.1", 9001), timeout=2).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
"""

WRAPPER = """#!/bin/sh
export WRAPPED="yes: $1"
exec "$@"
"""


@as_root
def test_exec_wrapper_runs_the_runtime(lam: Any, fname: str) -> None:
    create_custom(
        lam,
        fname,
        files={"bootstrap": RUNTIME, "wrapper": WRAPPER},
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrapper"}},
    )
    _, body = invoke_json(lam, fname, {})
    assert body["env"]["WRAPPED"] == "yes: /var/task/bootstrap"


def test_a_bootstrap_from_a_layer(lam: Any, fname: str) -> None:
    layer = lam.publish_layer_version(
        LayerName=fname, Content={"ZipFile": make_zip({"bootstrap": RUNTIME}, executable={"bootstrap"})}
    )
    create_custom(lam, fname, files={"function.sh": "x"}, Layers=[layer["LayerVersionArn"]])
    resp, body = invoke_json(lam, fname, {"n": 1})
    assert "FunctionError" not in resp and body["echo"] == {"n": 1}


def test_without_a_jail_the_runtime_api_is_on_a_free_port(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})
    lam = gw.client()
    create_custom(lam, "unjailed")
    resp, body = invoke_json(lam, "unjailed", {"n": 1})
    host, port = body["env"]["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    resp, body = invoke_json(lam, "unjailed", {"fail": "X"})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "X"
    resp, body = invoke_json(lam, "unjailed", {"exit": 2})
    assert body["errorType"] == "Runtime.ExitError"


def test_concurrent_invocations_get_environments_of_their_own(lam: Any, fname: str) -> None:
    create_custom(lam, fname)
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda i: invoke_json(lam, fname, {"n": i, "sleep": 0.3}), range(5)))
    assert all("FunctionError" not in resp for resp, _ in answers)
    assert sorted(body["echo"]["n"] for _, body in answers) == list(range(5))
    assert len({body["pid"] for _, body in answers}) == 5


def test_provisioned_environments_of_a_custom_runtime_are_ready_before_the_first_invoke(lam: Any, fname: str) -> None:
    create_custom(lam, fname)
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=fname, Qualifier=version, ProvisionedConcurrentExecutions=1)
    deadline = time.monotonic() + 30
    while lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier=version)["Status"] != "READY":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    resp = lam.invoke(FunctionName=fname, Qualifier=version, Payload=b'{"n": 1}', LogType="Tail")
    assert json.loads(resp["Payload"].read())["echo"] == {"n": 1}
    assert "Init Duration" not in base64.b64decode(resp["LogResult"]).decode()  # Init ran ahead of the invoke


def test_the_runtime_does_not_outlive_its_environment(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_custom(lam, "leaks", Timeout=1)
    _, first = invoke_json(lam, "leaks", {"n": 1})
    invoke_json(lam, "leaks", {"sleep": 5})  # timed out: the environment (proxy and runtime) is killed
    assert gone({first["pid"]})
    _, second = invoke_json(lam, "leaks", {"n": 2})
    assert gw.stop() == 0
    assert gone({second["pid"]})
