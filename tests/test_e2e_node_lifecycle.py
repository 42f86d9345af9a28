"""Node.js functions through the real gateway, their lifecycle and their platform: crashes, timeouts, provisioned
concurrency, what a function misusing its Runtime API can do (nothing to the gateway), which Node.js runs them
(fallback, an explicit one outside the system), layers, the exec wrapper, Lambda's limits. The handler model itself is
tests/test_e2e_node.py, whose helpers this module uses.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.execution import nodejs
from gateway.nodes import node_candidates, node_version
from tests.conftest import ROLE, GatewayFactory, RunningGateway, alive, gone, invoke_json, make_zip
from tests.test_e2e_node import COUNTER, MAJOR, RUNTIME, create_node_function, invoke_tail, wait_updated


def _next_runtime(lam: Any, name: str, old_pid: int) -> int:
    """The invocation after a crash: it succeeds, in a new Node.js process (Lambda hands an invocation to a runtime
    only when it asks, and Inits again a runtime that exited after its answer: the proxy does too)."""
    resp, body, tail = invoke_tail(lam, name)
    assert "FunctionError" not in resp, body
    assert isinstance(body, int) and body != old_pid, tail
    return body


def test_an_uncaught_exception_fails_the_invocation_and_the_runtime_starts_again(lam: Any, fname: str) -> None:
    source = """
    exports.handler = async (event) => {
      if (event.crash) {
        setTimeout(() => { throw new Error("from a timer"); }, 10);
        await new Promise(() => setInterval(() => {}, 1000));
      }
      if (event.reject) {
        Promise.reject(new Error("nobody catches me"));
        await new Promise((r) => setTimeout(r, 200));
      }
      return process.pid;
    };"""
    create_node_function(lam, fname, {"index.js": source}, Timeout=5)
    _, pid = invoke_json(lam, fname)
    pids = [pid]
    for _ in range(5):  # every time, the next invocation succeeds: 10 in a row
        resp, body, tail = invoke_tail(lam, fname, {"crash": True})
        assert resp["FunctionError"] == "Unhandled"
        assert (body["errorType"], body["errorMessage"]) == ("Error", "from a timer")
        assert body["trace"][0] == "Error: from a timer"
        assert "\tERROR\tUncaught Exception \t" in tail
        pids.append(_next_runtime(lam, fname, pids[-1]))
        resp, body, tail = invoke_tail(lam, fname, {"reject": True})
        assert resp["FunctionError"] == "Unhandled"
        assert (body["errorType"], body["errorMessage"]) == (
            "Runtime.UnhandledPromiseRejection",
            "Error: nobody catches me",
        )
        assert "\tERROR\tUnhandled Promise Rejection \t" in tail
        pids.append(_next_runtime(lam, fname, pids[-1]))
    assert gone(set(pids[:-1]))


def test_an_async_handler_that_never_settles_fails_when_the_loop_is_empty(lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.mjs": "export const handler = async () => new Promise(() => {});"})
    resp, body = invoke_json(lam, fname)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.NodeJsExit"


def test_a_handler_that_never_returns_is_killed_at_the_timeout(lam: Any, fname: str) -> None:
    source = """
    exports.handler = async (event) => {
      if (event.spin) { for (;;) {} }
      if (event.hang) { setInterval(() => {}, 1000); return new Promise(() => {}); }
      return process.pid;
    };"""
    create_node_function(lam, fname, {"index.js": source}, Timeout=1)
    for how in ("spin", "hang"):
        _, pid = invoke_json(lam, fname)
        start = time.monotonic()
        resp, body = invoke_json(lam, fname, {how: True})
        elapsed = time.monotonic() - start
        assert resp["FunctionError"] == "Unhandled"
        assert body["errorType"] == "Sandbox.Timedout"
        assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
        assert 1.0 <= elapsed < 2.0
        assert gone({pid}), f"{how}: the runtime survived its timeout"
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp and isinstance(body, int)


def test_provisioned_environments_are_warm(gateway_factory: GatewayFactory, fname: str) -> None:
    gw = gateway_factory(env={"GATEWAY_REAP_INTERVAL": "0.2"})
    lam = gw.client()
    create_node_function(lam, fname, {"index.js": COUNTER})
    version = lam.publish_version(FunctionName=fname)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=fname, Qualifier=version, ProvisionedConcurrentExecutions=2)
    deadline = time.monotonic() + 30
    while (status := lam.get_provisioned_concurrency_config(FunctionName=fname, Qualifier=version))[
        "Status"
    ] != "READY":
        assert status["Status"] != "FAILED", status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert gw.health()["environments"] == 2
    resp, body, tail = invoke_tail(lam, f"{fname}:{version}")
    assert resp["ExecutedVersion"] == version
    assert body["init"] == "provisioned-concurrency" and body["count"] == 1  # Init ran ahead, the handler now
    assert "Init Duration" not in tail
    _, body, tail = invoke_tail(lam, fname)  # $LATEST: on demand, a cold start
    assert body["init"] == "on-demand" and "Init Duration" in tail


GARBAGE = """
const http = require("node:http");
const net = require("node:net");
const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
function request(method, path, headers, body) {
  return new Promise((resolve) => {
    const req = http.request({ host, port, method, path, headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", (e) => resolve(e.code));
    req.end(body);
  });
}
function raw(bytes) {
  return new Promise((resolve) => {
    const s = net.connect(Number(port), host, () => s.end(bytes));
    s.on("data", () => {}); s.on("error", () => resolve("error")); s.on("close", () => resolve("closed"));
    setTimeout(() => { s.destroy(); resolve("timeout"); }, 500);
  });
}
exports.handler = async (event, context) => {
  const statuses = [];
  statuses.push(await raw(Buffer.from("\\x00\\xff GARBAGE \\r\\n\\r\\n")));
  const bad = "Transfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\n";
  statuses.push(await raw("POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\\r\\n" + bad));
  statuses.push(await raw("GET /" + "a".repeat(100000) + " HTTP/1.1\\r\\n\\r\\n"));
  const mine = "/2018-06-01/runtime/invocation/" + context.awsRequestId;
  statuses.push(await request("POST", "/2018-06-01/runtime/invocation/not-this-one/response", {}, "{}"));
  statuses.push(await request("POST", mine + "/nonsense", {}, "{}"));
  statuses.push(await request("POST", "/2018-06-01/runtime/init/error", {}, "not json"));
  statuses.push(await request("GET", "/../../etc/passwd", {}, undefined));
  statuses.push(await request("GET", "/2018-06-01/runtime/invocation/next", { "Content-Length": "5" }, "xxxxx"));
  statuses.push(await request("POST", "/2018-06-01/runtime/invocation/" + "9".repeat(3000) + "/error",
    { "Lambda-Runtime-Function-Error-Type": "X".repeat(5000) }, "{\\"errorType\\": 5}"));
  return { statuses };
};
"""


def test_a_function_misusing_the_runtime_api_cannot_hurt_the_gateway(
    gateway: RunningGateway, lam: Any, fname: str
) -> None:
    create_node_function(lam, fname, {"index.js": GARBAGE}, Timeout=10)
    other = f"{fname}-ok"
    create_node_function(lam, other, {"index.js": COUNTER})
    for _ in range(2):  # the runtime's Runtime API survives it all: the same environment answers again
        resp, body = invoke_json(lam, fname)
        assert "FunctionError" not in resp, body
        raw, refused = body["statuses"][:3], body["statuses"][3:]
        assert all(status in ("closed", "error") for status in raw), raw  # cut off, not left hanging
        assert all(isinstance(status, int) and 400 <= status < 500 for status in refused), refused
        resp, body = invoke_json(lam, other, {"still": "fine"})
        assert "FunctionError" not in resp and body["event"] == {"still": "fine"}
    assert gateway.health()["environments"] >= 1


def test_logs_of_a_crashed_environment_stay(lam: Any, fname: str) -> None:
    source = "exports.handler = async () => { console.log('last words'); process.exit(3); };"
    create_node_function(lam, fname, {"index.js": source})
    resp, body, tail = invoke_tail(lam, fname)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "last words" in tail


def test_nothing_is_left_behind(lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.js": COUNTER})
    _, body = invoke_json(lam, fname)
    pid = body["pid"]
    assert alive(pid)
    lam.delete_function(FunctionName=fname)
    assert gone({pid}, timeout=10), "the Node.js runtime outlived its function"


#: a nodejs runtime this host has no Node.js for (its own major is MAJOR)
MISSING = next(
    f"nodejs{n}.x"
    for n in (22, 24, 20)
    if n != MAJOR and not any((v or "").startswith(f"{n}.") for v in map(node_version, node_candidates(os.environ)))
)


def test_a_runtime_without_its_node_is_refused_unless_the_fallback_is_set(
    gateway_factory: GatewayFactory, lam: Any, fname: str
) -> None:
    with pytest.raises(ClientError) as refused:
        create_node_function(lam, fname, {"index.js": COUNTER}, Runtime=MISSING)
    error = refused.value.response["Error"]
    assert error["Code"] == "InvalidParameterValueException"
    assert f"needs a Node.js {MISSING[6:-2]}" in error["Message"] and "GATEWAY_RUNTIME_FALLBACK=1" in error["Message"]
    gw = gateway_factory(env={"GATEWAY_RUNTIME_FALLBACK": "1"})
    fallback = gw.client()
    created = create_node_function(
        fallback, fname, {"index.js": "exports.handler = async () => process.version;"}, Runtime=MISSING
    )
    assert created["State"] == "Pending"  # AWS's answer to CreateFunction (issue 18, cause 7); the note follows
    created = fallback.get_function_configuration(FunctionName=fname)
    assert created["State"] == "Active" and "StateReasonCode" not in created
    reason = created["StateReason"]
    assert f"runs on Node.js {MAJOR}." in reason and "GATEWAY_RUNTIME_FALLBACK=1" in reason
    assert fallback.get_function_configuration(FunctionName=fname)["LastUpdateStatusReason"] == reason
    resp, version = invoke_json(fallback, fname)
    assert "FunctionError" not in resp and version.startswith(f"v{MAJOR}.")


def test_a_layers_packages_are_found_by_require(lam: Any, fname: str) -> None:
    layer = lam.publish_layer_version(
        LayerName=f"{fname}-lib",
        Content={
            "ZipFile": make_zip(
                {
                    "nodejs/node_modules/shared/index.js": "exports.where = () => 'layer';",
                    f"nodejs/node{MAJOR}/node_modules/versioned/index.js": "exports.where = () => 'versioned';",
                }
            )
        },
        CompatibleRuntimes=[RUNTIME],
    )
    source = """
    exports.handler = async () => ({
      shared: require("shared").where(), versioned: require("versioned").where(),
      heap: process.execArgv.filter((a) => a.startsWith("--max-old-space-size")),
    });"""
    create_node_function(lam, fname, {"index.js": source}, Layers=[layer["LayerVersionArn"]], MemorySize=512)
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    assert body == {"shared": "layer", "versioned": "versioned", "heap": ["--max-old-space-size=461"]}


def test_nodejs24_refuses_callback_handlers_as_lambda_does(gateway_factory: GatewayFactory, fname: str) -> None:
    lam = gateway_factory(env={"GATEWAY_RUNTIME_FALLBACK": "1"}).client()  # a Node.js 24 need not be here
    files = {"index.js": "exports.cb = (e, c, callback) => callback(null, 1);\nexports.ok = async () => 2;"}
    create_node_function(lam, fname, files, handler="index.cb", Runtime="nodejs24.x")
    resp, body = invoke_json(lam, fname)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.CallbackHandlerDeprecated"
    assert "removed support for callback-based function handlers starting with Node.js 24" in body["errorMessage"]
    lam.update_function_configuration(FunctionName=fname, Handler="index.ok")
    wait_updated(lam, fname)
    assert invoke_json(lam, fname)[1] == 2


def test_an_explicit_node_outside_the_system_runs_in_the_jail(
    gateway_factory: GatewayFactory, tmp_path: Path, fname: str
) -> None:
    """GATEWAY_RUNTIME_NODEJS<N>_X names a Node.js installation the jail does not show by itself (nvm's, under a home
    directory): the environment mounts that installation alone, read-only, at /var/lang, and runs /var/lang/bin/node,
    as Lambda does; not the host's path, nor anything beside the installation."""
    if os.geteuid() != 0:
        pytest.skip("only a jail mounts it")
    system = shutil.which("node")
    assert system is not None
    prefix = tmp_path / "nvm" / "versions" / "node" / f"v{MAJOR}"
    private = prefix / "bin" / "node"
    private.parent.mkdir(parents=True)
    (prefix / "include" / "node").mkdir(parents=True)
    (tmp_path / "nvm" / "secret").write_text("not for functions")
    try:
        os.link(os.path.realpath(system), private)  # same file system: no 100 MB copy
    except OSError:
        shutil.copy2(system, private)
    lam = gateway_factory(env={f"GATEWAY_RUNTIME_NODEJS{MAJOR}_X": str(private)}).client()
    source = f"""
    const fs = require("fs");
    exports.handler = async () => [
      process.execPath, fs.readdirSync("/var/lang").sort(),
      [{json.dumps(str(prefix))}, {json.dumps(str(tmp_path / "nvm" / "secret"))}].filter((p) => fs.existsSync(p)),
    ];"""
    create_node_function(lam, fname, {"index.js": source})
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    assert body == ["/var/lang/bin/node", ["bin", "include"], []]


def test_a_response_over_6_mb_is_lambdas_error_and_the_runtime_lives_on(lam: Any, fname: str) -> None:
    source = "exports.handler = async (event) => event.big ? 'x'.repeat(7 * 1024 * 1024) : process.pid;"
    create_node_function(lam, fname, {"index.js": source})
    _, pid = invoke_json(lam, fname)
    resp, body = invoke_json(lam, fname, {"big": True})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    resp, again = invoke_json(lam, fname)
    assert "FunctionError" not in resp and again == pid  # the same environment, warm


def _zip_with_executable(files: dict[str, str], executable: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            if name == executable:
                info.external_attr = 0o100755 << 16
            zf.writestr(info, content, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def test_an_exec_wrapper_runs_node_as_lambda_does(lam: Any, fname: str) -> None:
    """AWS_LAMBDA_EXEC_WRAPPER (what OpenTelemetry's and Datadog's layers use): the wrapper gets Node's command line."""
    if os.geteuid() != 0:
        pytest.skip("the wrapper's path is /var/task only in a jail")
    wrapper = '#!/bin/sh\nexport WRAPPED="$1"\nnode="$1"\nshift\nexec "$node" --no-warnings "$@"\n'
    code = _zip_with_executable(
        {"wrap.sh": wrapper, "index.js": "exports.handler = async () => [process.env.WRAPPED, process.execArgv];"},
        "wrap.sh",
    )
    lam.create_function(
        FunctionName=fname,
        Runtime=RUNTIME,
        Role=ROLE,
        Handler="index.handler",
        Code={"ZipFile": code},
        Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrap.sh"}},
    )
    resp, (wrapped, exec_argv) = invoke_json(lam, fname)
    assert "FunctionError" not in resp
    assert wrapped.endswith("node") and "--expose-gc" in exec_argv and "--no-warnings" in exec_argv


def test_without_a_jail_node_runs_from_the_hosts_paths(gateway_factory: GatewayFactory, fname: str) -> None:
    """GATEWAY_SANDBOX=rlimits (what a gateway that is not root gets): no /var/runtime, no /var/task; the runtime and
    the code where the host has them, the address-space limit still leaving V8 room to start."""
    lam = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"}).client()
    source = "exports.handler = async () => [process.env.LAMBDA_RUNTIME_DIR, process.env.LAMBDA_TASK_ROOT, __dirname];"
    create_node_function(lam, fname, {"index.js": source})
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    runtime_dir, task_root, dirname = body
    assert runtime_dir == nodejs.NODE_RUNTIME_DIR and task_root == dirname and task_root != "/var/task"
