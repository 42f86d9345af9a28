"""Node.js functions through the real gateway: runtimes/node under the Runtime API proxy, real `node` processes.

Lambda's handler model (async and callback handlers, callbackWaitsForEmptyEventLoop, CommonJS and ES modules, the
context object), its errors and log lines, warm reuse, provisioned concurrency, timeouts; and what a function that
misuses the Runtime API can do (nothing to the gateway). The runtime id is the host's Node.js major
(`nodejs<major>.x`), so that no fallback is involved; the fallback has its own test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.execution import nodejs
from gateway.nodes import node_candidates, node_version
from tests.conftest import ROLE, GatewayFactory, RunningGateway, alive, gone, invoke_json, make_zip


def _host_node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


MAJOR = _host_node_major()
if MAJOR is None:  # .ci/run installs Node.js: there, its absence is a failure
    if os.environ.get("CI") == "true":
        pytest.fail("no `node` on PATH (.ci/run installs nodejs)", pytrace=False)
    pytest.skip("no `node` on PATH", allow_module_level=True)
RUNTIME = f"nodejs{MAJOR}.x"

COUNTER = """
let count = 0;
console.log("init", process.pid);
exports.handler = async (event, context) => {
  count += 1;
  console.log("hello from", context.functionName, { n: count });
  return {
    count, pid: process.pid, event,
    context: {
      functionName: context.functionName, functionVersion: context.functionVersion,
      invokedFunctionArn: context.invokedFunctionArn, memoryLimitInMB: context.memoryLimitInMB,
      awsRequestId: context.awsRequestId, logGroupName: context.logGroupName,
      logStreamName: context.logStreamName, remaining: context.getRemainingTimeInMillis(),
      clientContext: context.clientContext ?? null, waits: context.callbackWaitsForEmptyEventLoop,
    },
    init: process.env.AWS_LAMBDA_INITIALIZATION_TYPE, runtimeApi: process.env.AWS_LAMBDA_RUNTIME_API,
  };
};
"""


def create_node_function(
    lam: Any, name: str, files: dict[str, str | bytes], handler: str = "index.handler", **kwargs: Any
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": make_zip(files)},
    }
    params.update(kwargs)
    return dict(lam.create_function(**params))


def invoke_tail(lam: Any, name: str, event: Any = None, **kwargs: Any) -> tuple[dict[str, Any], Any, str]:
    """Invoke with LogType=Tail: (response, decoded payload, log tail)."""
    resp, body = invoke_json(lam, name, event, LogType="Tail", **kwargs)
    return resp, body, base64.b64decode(resp["LogResult"]).decode()


def test_async_handler_gets_the_event_and_lambdas_context(lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.js": COUNTER}, Timeout=7, MemorySize=256)
    client_context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    resp, body, tail = invoke_tail(lam, fname, {"a": [1, 2]}, ClientContext=client_context)
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    assert body["event"] == {"a": [1, 2]}
    context = body["context"]
    assert context["functionName"] == fname and context["functionVersion"] == "$LATEST"
    assert context["invokedFunctionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{fname}"
    assert context["memoryLimitInMB"] == "256"  # a string, as Lambda's Node.js runtime has it
    assert context["awsRequestId"] == resp["ResponseMetadata"]["RequestId"]
    assert context["logGroupName"] == f"/aws/lambda/{fname}" and "[$LATEST]" in context["logStreamName"]
    assert 5000 < context["remaining"] <= 7000
    assert context["clientContext"] == {"custom": {"k": "v"}}
    assert context["waits"] is True
    assert body["init"] == "on-demand" and body["runtimeApi"]
    # console lines as Lambda writes them: time, request id, level, util.format's text
    line = next(x for x in tail.splitlines() if "hello from" in x)
    stamp, request_id, level, message = line.split("\t")
    assert stamp.endswith("Z") and "T" in stamp
    assert (request_id, level) == (context["awsRequestId"], "INFO")
    assert message == f"hello from {fname} {{ n: 1 }}"
    assert "Init Duration" in tail


def test_warm_invocations_reuse_the_module_and_the_process(lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.js": COUNTER})
    results = [invoke_json(lam, fname, {"i": i})[1] for i in range(4)]
    assert [r["count"] for r in results] == [1, 2, 3, 4]
    assert len({r["pid"] for r in results}) == 1
    _, _, tail = invoke_tail(lam, fname)
    assert "Init Duration" not in tail


CALLBACKS = """
let fired = 0;
exports.waits = (event, context, callback) => {
  setTimeout(() => { fired += 1; console.log("timer fired"); }, 400);
  callback(null, { fired });
};
exports.now = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  setTimeout(() => { fired += 1; console.log("timer fired"); }, 400);
  callback(null, { fired });
};
exports.count = async () => ({ fired });
exports.never = (event, context, callback) => { console.log("no callback"); };
exports.succeed = (event, context) => { setTimeout(() => {}, 2000); context.succeed({ via: "succeed" }); };
"""


def test_callback_waits_for_the_empty_event_loop_by_default(lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.js": CALLBACKS}, handler="index.waits")
    invoke_json(lam, fname)  # cold start out of the way
    start = time.monotonic()
    _, body, tail = invoke_tail(lam, fname)
    elapsed = time.monotonic() - start
    assert body == {"fired": 1}  # the result given to the callback, the first timer had fired before it
    assert elapsed >= 0.4  # answered once the timer had run
    assert "timer fired" in tail


def test_callback_without_waiting_answers_at_once(lam: Any, fname: str) -> None:
    create_node_function(lam, fname, {"index.js": CALLBACKS}, handler="index.now")
    invoke_json(lam, fname)
    start = time.monotonic()
    invoke_tail(lam, fname)  # warm
    start = time.monotonic()
    _, _, tail = invoke_tail(lam, fname)
    assert time.monotonic() - start < 0.35
    assert "timer fired" not in tail  # it fires later: in a later invocation, or while the environment is frozen


def test_a_callback_handler_that_never_calls_back_answers_null_and_succeed_answers_at_once(
    lam: Any, fname: str
) -> None:
    create_node_function(lam, fname, {"index.js": CALLBACKS}, handler="index.never")
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp and body is None
    lam.update_function_configuration(FunctionName=fname, Handler="index.succeed")
    _wait_updated(lam, fname)
    start = time.monotonic()
    resp, body = invoke_json(lam, fname)
    assert body == {"via": "succeed"} and time.monotonic() - start < 1.5


def _wait_updated(lam: Any, name: str) -> None:
    deadline = time.monotonic() + 10
    while lam.get_function_configuration(FunctionName=name).get("LastUpdateStatus") not in ("Successful", None):
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("files", "handler", "expected"),
    [
        ({"index.js": "exports.handler = async () => 'cjs';"}, "index.handler", "cjs"),
        ({"app.mjs": "export const handler = async () => 'esm';"}, "app.handler", "esm"),
        ({"app.cjs": "module.exports.handler = async () => 'cjs-ext';"}, "app.handler", "cjs-ext"),
        (
            {"package.json": '{"type": "module"}', "index.js": "export const handler = async () => 'type-module';"},
            "index.handler",
            "type-module",
        ),
        (
            {"src/lib/app.mjs": "export const api = { v1: { get: async () => 'nested' } };"},
            "src/lib/app.api.v1.get",
            "nested",
        ),
        (
            {
                "node_modules/greet/package.json": '{"name": "greet", "main": "main.js"}',
                "node_modules/greet/main.js": "exports.hi = (n) => `hi ${n}`;",
                "index.mjs": "import { createRequire } from 'node:module';\n"
                "const { hi } = createRequire(import.meta.url)('greet');\n"
                "const top = await Promise.resolve('awaited');\n"
                "export const handler = async () => `${hi('esm')} ${top}`;",
            },
            "index.handler",
            "hi esm awaited",
        ),
    ],
    ids=["commonjs", "mjs", "cjs", "package-type-module", "nested-dirs-and-exports", "node-modules-top-level-await"],
)
def test_module_kinds(lam: Any, fname: str, files: dict[str, str], handler: str, expected: str) -> None:
    create_node_function(lam, fname, files, handler=handler)
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    assert body == expected


ERRORS = """
exports.thrown = async () => { const e = new Error("boom"); e.code = "E_BOOM"; throw e; };
exports.rejected = () => Promise.reject(new TypeError("bad type"));
exports.callbackError = (event, context, callback) => callback(new RangeError("out of range"));
exports.callbackString = (event, context, callback) => callback("just a string");
exports.custom = async () => {
  class MyError extends Error {}
  const e = new MyError("mine");
  e.name = "MyError";
  throw e;
};
"""


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        ("thrown", "Error", "boom"),
        ("rejected", "TypeError", "bad type"),
        ("callbackError", "RangeError", "out of range"),
        ("callbackString", "string", "just a string"),
        ("custom", "MyError", "mine"),
    ],
)
def test_errors_as_lambda_formats_them(lam: Any, fname: str, handler: str, error_type: str, message: str) -> None:
    create_node_function(lam, fname, {"index.js": ERRORS}, handler=f"index.{handler}")
    resp, body, tail = invoke_tail(lam, fname)
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert (body["errorType"], body["errorMessage"]) == (error_type, message)
    if error_type != "string":
        assert body["trace"][0] == f"{error_type}: {message}"
        assert any("/index.js:" in frame for frame in body["trace"])
        if os.geteuid() == 0:  # jailed: the code at /var/task, the runtime at /var/runtime, as on Lambda
            assert any("/var/task/index.js:" in frame for frame in body["trace"])
            assert not any(nodejs.NODE_RUNTIME_DIR in frame for frame in body["trace"]), body["trace"]
    line = next(x for x in tail.splitlines() if "Invoke Error" in x)
    assert "\tERROR\tInvoke Error \t{" in line
    logged = json.loads(line.split("Invoke Error \t", 1)[1])
    assert (logged["errorType"], logged["errorMessage"]) == (
        (error_type, message) if error_type != "string" else ("Error", message)
    )
    # the environment lives on: the same error again, warm
    _, again, tail = invoke_tail(lam, fname)
    assert again["errorType"] == error_type and "Init Duration" not in tail


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        (
            {"index.js": "exports.handler = async () => { return 1 +; };"},
            "index.handler",
            "Runtime.UserCodeSyntaxError",
            "SyntaxError: Unexpected token ';'",
        ),
        (
            {"index.js": "require('no-such-package');"},
            "index.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'no-such-package'",
        ),
        (
            {"index.js": "exports.other = 1;"},
            "missing.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'missing'",
        ),
        (
            {"index.js": "exports.other = async () => 1;"},
            "index.handler",
            "Runtime.HandlerNotFound",
            "index.handler is undefined or not exported",
        ),
        (
            {"index.js": "exports.handler = 42;"},
            "index.handler",
            "Runtime.HandlerNotFound",
            "index.handler is not a function",
        ),
        ({"index.js": "exports.handler = async () => 1;"}, "index", "Runtime.MalformedHandlerName", "Bad handler"),
        ({"index.js": "throw new Error('init went wrong');"}, "index.handler", "Error", "init went wrong"),
    ],
    ids=["syntax", "missing-package", "missing-file", "missing-export", "not-a-function", "malformed", "throws"],
)
def test_init_errors(lam: Any, fname: str, files: dict[str, str], handler: str, error_type: str, message: str) -> None:
    create_node_function(lam, fname, files, handler=handler)
    for _ in range(2):  # Init is tried again on the next invocation, and fails the same way
        resp, body, tail = invoke_tail(lam, fname)
        assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
        assert body["errorType"] == error_type, body
        assert body["errorMessage"].startswith(message), body
        assert "\tERROR\tUncaught Exception \t" in tail


def test_json_log_format_and_level(lam: Any, fname: str) -> None:
    source = """
    exports.handler = async () => {
      console.debug("hidden"); console.info("shown", 1); console.warn({ w: true }); console.error(new Error("e1"));
      return "ok";
    };"""
    create_node_function(
        lam,
        fname,
        {"index.js": source},
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO"},
    )
    resp, _, tail = invoke_tail(lam, fname)
    records = [json.loads(x) for x in tail.splitlines() if x.startswith("{") and '"level"' in x]
    app = [r for r in records if r.get("level") in ("INFO", "WARN", "ERROR", "DEBUG")]
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert [r["level"] for r in app if "requestId" in r] == ["INFO", "WARN", "ERROR"]
    assert app[0]["message"] == "shown 1" and app[0]["requestId"] == request_id
    assert app[1]["message"] == {"w": True}
    assert app[2]["message"]["errorMessage"] == "e1" and app[2]["message"]["errorType"] == "Error"
    assert "hidden" not in tail


def _next_environment(lam: Any, name: str, old_pid: int) -> int:
    """Invoke until a new environment answers (a pid other than `old_pid`), allowing one Runtime.ExitError.

    Lambda hands an invocation to a runtime only when it asks for one (invocation/next), so a runtime that exits
    after its answer never fails the next invocation. Here the gateway takes the environment back (and freezes it,
    gateway/isolation/freezer.py) as soon as the answer is relayed; a runtime frozen on its way out dies when the
    next invocation thaws it, which then fails with "exit status 129". A known gap (see the report of issue 14's
    "node" helper): tolerated once, never twice.
    """
    for attempt in range(2):
        resp, body, tail = invoke_tail(lam, name)
        if "FunctionError" not in resp:
            assert body != old_pid and "Init Duration" in tail  # a new environment, Init again
            return int(body)
        assert attempt == 0 and body["errorType"] == "Runtime.ExitError", body
        assert "Runtime exited with error: exit status 12" in body["errorMessage"], body  # 129 or 128, Lambda's
    raise AssertionError("unreachable")


def test_an_uncaught_exception_fails_the_invocation_and_ends_the_environment(lam: Any, fname: str) -> None:
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
    resp, body, tail = invoke_tail(lam, fname, {"crash": True})
    assert resp["FunctionError"] == "Unhandled"
    assert (body["errorType"], body["errorMessage"]) == ("Error", "from a timer")
    assert body["trace"][0] == "Error: from a timer"
    assert "\tERROR\tUncaught Exception \t" in tail
    pid2 = _next_environment(lam, fname, pid)
    assert gone({pid})
    resp, body, tail = invoke_tail(lam, fname, {"reject": True})
    assert resp["FunctionError"] == "Unhandled"
    assert (body["errorType"], body["errorMessage"]) == (
        "Runtime.UnhandledPromiseRejection",
        "Error: nobody catches me",
    )
    assert "\tERROR\tUnhandled Promise Rejection \t" in tail
    _next_environment(lam, fname, pid2)
    assert gone({pid2})


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
    assert created["State"] == "Active" and created["StateReasonCode"] == "InvalidRuntime"
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
    _wait_updated(lam, fname)
    assert invoke_json(lam, fname)[1] == 2


def test_an_explicit_node_outside_the_system_runs_in_the_jail(
    gateway_factory: GatewayFactory, tmp_path: Path, fname: str
) -> None:
    """GATEWAY_RUNTIME_NODEJS<N>_X names a Node.js the jail does not show by itself (nvm's, under a home directory):
    the environment mounts its prefix, read-only, where the host has it."""
    system = shutil.which("node")
    assert system is not None
    private = tmp_path / "nvm" / "versions" / "node" / f"v{MAJOR}" / "bin" / "node"
    private.parent.mkdir(parents=True)
    try:
        os.link(os.path.realpath(system), private)  # same file system: no 100 MB copy
    except OSError:
        shutil.copy2(system, private)
    lam = gateway_factory(env={f"GATEWAY_RUNTIME_NODEJS{MAJOR}_X": str(private)}).client()
    create_node_function(lam, fname, {"index.js": "exports.handler = async () => process.execPath;"})
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    assert body == str(private)


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
    import io
    import zipfile

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
