"""Node.js functions through the real gateway: runtimes/node under the Runtime API proxy, real `node` processes.

Lambda's handler model: async and callback handlers, callbackWaitsForEmptyEventLoop, CommonJS and ES modules, the
context object, its errors and init errors, its log lines, warm reuse (crashes, timeouts, provisioned concurrency,
misuse of the Runtime API, which Node.js runs: tests/test_e2e_node_lifecycle.py, with this module's helpers). The
runtime id is the host's Node.js major (`nodejs<major>.x`), so that no fallback is involved.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from gateway.execution import nodejs
from tests.conftest import ROLE, invoke_json, make_zip


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
    wait_updated(lam, fname)
    start = time.monotonic()
    resp, body = invoke_json(lam, fname)
    assert body == {"via": "succeed"} and time.monotonic() - start < 1.5


def wait_updated(lam: Any, name: str) -> None:
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
        # what the runtime posted to init/error, unchanged, as Lambda answers: Node's fields, its stack as "trace"
        assert sorted(body) == ["errorMessage", "errorType", "trace"], body
        assert body["errorType"] == error_type, body
        assert body["errorMessage"].startswith(message), body
        assert body["trace"] and all(isinstance(line, str) for line in body["trace"]), body
        assert "\tERROR\tUncaught Exception \t" in tail
        assert "[ERROR] " not in tail  # the runtime's own line only, none from the gateway


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


ESM_LAYER = {
    "nodejs/node_modules/esmgreet/package.json": '{"name": "esmgreet", "type": "module", "exports": "./index.js"}',
    "nodejs/node_modules/esmgreet/index.js": "export default (n) => `esm ${n}`;",
    "nodejs/node_modules/cjsgreet/package.json": '{"name": "cjsgreet", "main": "main.js"}',
    "nodejs/node_modules/cjsgreet/main.js": "exports.hi = (n) => `cjs ${n}`;",
    "nodejs/node_modules/mine/index.js": "module.exports = 'layer';",
    "nodejs/node_modules/versioned/index.js": "module.exports = 'plain';",
}


def test_a_layers_packages_are_imported_by_es_modules(lam: Any, fname: str) -> None:
    """As on Lambda (Node.js 18 and later): an .mjs handler imports a layer's ES and CommonJS packages (NODE_PATH
    serves only `require`), nodejs/node<N>/node_modules before nodejs/node_modules, the function's own node_modules
    before both; a .cjs handler requires the same ones. What shows them cannot be written to."""
    layer = lam.publish_layer_version(
        LayerName=f"{fname}-esm",
        Content={
            "ZipFile": make_zip(
                {**ESM_LAYER, f"nodejs/node{MAJOR}/node_modules/versioned/index.js": "module.exports = 'versioned';"}
            )
        },
    )
    files = {
        "node_modules/mine/index.js": "module.exports = 'own';",
        "index.mjs": "import greet from 'esmgreet';\nimport { hi } from 'cjsgreet';\nimport mine from 'mine';\n"
        "import versioned from 'versioned';\nimport { writeFileSync } from 'node:fs';\n"
        "const tryWrite = (p) => { try { writeFileSync(p, 'x'); return 'written'; } catch (e) { return e.code; } };\n"
        "export const handler = async () => ({ greet: greet('a'), hi: hi('b'), mine, versioned,\n"
        "  root: process.env.LAMBDA_TASK_ROOT,\n"
        "  writes: [tryWrite('/node_modules/esmgreet/index.js'), tryWrite('/var/node_modules/x.js')] });",
        "other.cjs": "exports.handler = async () => ({ hi: require('cjsgreet').hi('c'), mine: require('mine') });",
    }
    create_node_function(lam, fname, files, Layers=[layer["LayerVersionArn"]])
    resp, body = invoke_json(lam, fname)
    if resp.get("FunctionError") and "ERR_MODULE_NOT_FOUND" in json.dumps(body) and not _jailed(lam, fname):
        pytest.skip("without a jail, ES modules do not find a layer's packages (a documented gap)")
    assert "FunctionError" not in resp, body
    assert body["root"] == "/var/task"
    assert {k: body[k] for k in ("greet", "hi", "mine", "versioned")} == {
        "greet": "esm a",
        "hi": "cjs b",
        "mine": "own",
        "versioned": "versioned",
    }
    assert body["writes"] == ["EROFS", "EROFS"]
    lam.update_function_configuration(FunctionName=fname, Handler="other.handler")
    wait_updated(lam, fname)
    resp, body = invoke_json(lam, fname)
    assert "FunctionError" not in resp, body
    assert body == {"hi": "cjs c", "mine": "own"}


def _jailed(lam: Any, fname: str) -> bool:
    """Whether the function's environments are jailed (their task root is Lambda's)."""
    probe = f"{fname}-probe"
    create_node_function(lam, probe, {"index.js": "exports.handler = async () => process.env.LAMBDA_TASK_ROOT;"})
    return bool(invoke_json(lam, probe)[1] == "/var/task")
