// Unit tests of runtimes/node's pure parts (run by tests/test_node_runtime.py: `node --test tests/node/`).
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

import { buildCallbackContext } from "../../runtimes/node/context.mjs";
import {
  ImportModuleError,
  UserCodeSyntaxError,
  UnhandledPromiseRejection,
  toFormatted,
  toRuntimeResponse,
} from "../../runtimes/node/errors.mjs";
import { handlerMetadata, isModuleFolder, loadHandler, splitHandler } from "../../runtimes/node/loader.mjs";
import { patchConsole, setRequestId } from "../../runtimes/node/logging.mjs";

test("an Error becomes Lambda's error document, its stack a list of lines", () => {
  const doc = toRuntimeResponse(new TypeError("bad"));
  assert.equal(doc.errorType, "TypeError");
  assert.equal(doc.errorMessage, "bad");
  assert.equal(doc.trace[0], "TypeError: bad");
  assert.deepEqual(toRuntimeResponse("text"), { errorType: "string", errorMessage: "text", trace: [] });
  assert.deepEqual(toRuntimeResponse(42), { errorType: "number", errorMessage: "42", trace: [] });
  const hostile = { get name() { throw new Error("no"); }, message: "m", stack: "s" };
  assert.equal(toRuntimeResponse(hostile).errorType, "handled");
});

test("runtime errors are named Runtime.* and wrap their cause's text", () => {
  const err = new ImportModuleError(new Error("Cannot find module 'x'"));
  assert.equal(err.name, "Runtime.ImportModuleError");
  assert.equal(err.message, "Error: Cannot find module 'x'");
  assert.ok(err.stack.startsWith("Runtime.ImportModuleError: Error: Cannot find module 'x'"));
  const syntax = new SyntaxError("Unexpected token");
  assert.equal(new UserCodeSyntaxError(syntax).stack, syntax.stack);
  assert.equal(new UnhandledPromiseRejection(new Error("r")).message, "Error: r");
});

test("a logged error is a tab and JSON with its own properties", () => {
  const err = new Error("boom");
  err.code = "E1";
  err.extra = { a: 1 };
  const out = JSON.parse(toFormatted(err).slice(1));
  assert.equal(toFormatted(err)[0], "\t");
  assert.equal(out.errorType, "Error");
  assert.equal(out.code, "E1");
  assert.deepEqual(out.extra, { a: 1 });
  assert.equal(out.stack[0], "Error: boom");
});

test("handler strings split as Lambda's", () => {
  assert.deepEqual(splitHandler("index.handler"), ["", "index", "handler"]);
  assert.deepEqual(splitHandler("src/a/app.api.v1.get"), ["src/a/", "app", "api.v1.get"]);
  assert.throws(() => splitHandler("index"), { name: "Runtime.MalformedHandlerName", message: "Bad handler" });
  assert.throws(() => splitHandler("../up.handler"), { name: "Runtime.MalformedHandlerName" });
});

test("modules: package.json type, extensions, missing exports", async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "node-runtime-test-"));
  try {
    fs.mkdirSync(path.join(root, "esm", "deep"), { recursive: true });
    fs.writeFileSync(path.join(root, "esm", "package.json"), '{"type": "module"}');
    fs.writeFileSync(path.join(root, "esm", "deep", "a.js"), "export const h = async () => 'esm';");
    fs.writeFileSync(path.join(root, "c.cjs"), "exports.h = function h(e, c, cb) {};");
    fs.writeFileSync(path.join(root, "n.mjs"), "export const h = 1;");
    assert.equal(isModuleFolder(path.join(root, "esm", "deep")), true);
    assert.equal(isModuleFolder(root), false);
    assert.equal(await (await loadHandler(root, "esm/deep/a.h"))(), "esm");
    const callback = await loadHandler(root, "c.h");
    assert.deepEqual(handlerMetadata(callback), { streaming: false, highWaterMark: undefined, isAsync: false, argsNum: 3 });
    await assert.rejects(loadHandler(root, "n.h"), { name: "Runtime.HandlerNotFound", message: "n.h is not a function" });
    await assert.rejects(loadHandler(root, "n.x"), { message: "n.x is undefined or not exported" });
    await assert.rejects(loadHandler(root, "missing.h"), { name: "Runtime.ImportModuleError" });
  } finally {
    fs.rmSync(root, { recursive: true });
  }
});

function capture(fn) {
  const lines = [];
  const write = process.stdout.write;
  process.stdout.write = (chunk) => lines.push(String(chunk)) && true;
  try {
    fn();
  } finally {
    process.stdout.write = write;
  }
  return lines;
}

test("console lines in Text: time, request id, level, util.format; one line per call", () => {
  const saved = { ...console };
  try {
    patchConsole({});
    setRequestId("req-1");
    const [line] = capture(() => console.warn("a %d\nb", 5, { x: 1 }));
    const [stamp, id, level, message] = line.split("\t");
    assert.match(stamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual([id, level, message], ["req-1", "WARN", "a 5\rb { x: 1 }\n"]);
  } finally {
    Object.assign(console, saved);
  }
});

test("console records in JSON, below AWS_LAMBDA_LOG_LEVEL dropped", () => {
  const saved = { ...console };
  try {
    patchConsole({ AWS_LAMBDA_LOG_FORMAT: "JSON", AWS_LAMBDA_LOG_LEVEL: "WARN" });
    setRequestId("req-2");
    const lines = capture(() => {
      console.info("dropped");
      console.warn("kept", 1);
      console.error(new RangeError("r"));
    });
    const [warn, error] = lines.map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.deepEqual([warn.level, warn.message, warn.requestId], ["WARN", "kept 1", "req-2"]);
    assert.equal(error.message.errorType, "RangeError");
    assert.equal(error.message.errorMessage, "r");
  } finally {
    Object.assign(console, saved);
  }
});

test("callbacks: the first call wins; waiting for the empty loop unless told not to", () => {
  const finished = [];
  let emptyLoop = null;
  const make = () =>
    buildCallbackContext(
      { "lambda-runtime-aws-request-id": "id", "lambda-runtime-deadline-ms": String(Date.now() + 1000) },
      { AWS_LAMBDA_FUNCTION_NAME: "f" },
      (err, result) => finished.push([err, result]),
      (fn) => {
        emptyLoop = fn;
      },
    );
  let [callback, context] = make();
  assert.equal(context.functionName, "f");
  assert.ok(context.getRemainingTimeInMillis() > 0 && context.getRemainingTimeInMillis() <= 1000);
  callback(null, 1);
  callback(null, 2);
  assert.deepEqual(finished, []); // waits for the empty loop
  assert.equal(typeof emptyLoop, "function");
  [callback, context] = make();
  context.callbackWaitsForEmptyEventLoop = false;
  callback(null, 3);
  context.succeed(4);
  assert.deepEqual(finished, [[null, 3]]);
  [callback, context] = make();
  context.fail();
  assert.deepEqual(finished.at(-1), ["handled", null]);
});
