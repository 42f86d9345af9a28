/**
 * Finding the handler `_HANDLER` names, as Lambda's Node.js runtime does.
 *
 * `_HANDLER` is "[dir/]file.export[.nested...]": the file part is resolved against LAMBDA_TASK_ROOT, trying the name
 * as given (CommonJS), then "file.js" (CommonJS, unless the nearest package.json says "type": "module": then an ES
 * module), "file.mjs" (ES module), "file.cjs" (CommonJS), and last Node's own resolution from the task root (a
 * package in node_modules). The export part is a path of properties on the module. "..", no dot, a missing file,
 * a syntax error, a missing or non-function export are init errors with Lambda's names (errors.mjs).
 */

import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { HandlerNotFound, ImportModuleError, MalformedHandlerName, UserCodeSyntaxError } from "./errors.mjs";

const require = createRequire(import.meta.url);

/** Symbols Lambda's runtime marks a streaming handler with (awslambda.streamifyResponse). */
export const HANDLER_STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
export const HANDLER_HIGHWATERMARK = Symbol.for("aws.lambda.runtime.handler.streaming.highWaterMark");
export const STREAM_RESPONSE = "response";

/** "dir/sub/file.a.b" -> ["dir/sub/", "file", "a.b"]. */
export function splitHandler(fullHandler) {
  if (fullHandler.includes("..")) {
    throw new MalformedHandlerName(
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const base = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(base));
  const match = base.match(/^([^.]*)\.(.*)$/);
  if (!match) throw new MalformedHandlerName("Bad handler");
  return [moduleRoot, match[1], match[2]];
}

/** Does the nearest package.json above `folder` say "type": "module"? (A node_modules boundary says no.) */
export function isModuleFolder(folder) {
  for (let dir = folder; ; dir = path.dirname(dir)) {
    if (dir.endsWith("/node_modules")) return false;
    const manifest = path.join(dir, "package.json");
    if (fs.existsSync(manifest)) {
      try {
        return JSON.parse(fs.readFileSync(manifest, "utf8"))?.type === "module";
      } catch (err) {
        console.warn(`${manifest} cannot be read, it will be ignored for ES module detection purposes.`, err);
        return false;
      }
    }
    if (dir === path.dirname(dir)) return false;
  }
}

function requireIfExists(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

async function importIfExists(file) {
  return fs.existsSync(file) ? await import(pathToFileURL(file).href) : undefined;
}

async function loadModule(appRoot, moduleRoot, name) {
  const base = path.resolve(appRoot, moduleRoot, name);
  const extensionless = requireIfExists(base);
  if (extensionless) return extensionless;
  const esm = isModuleFolder(path.dirname(base));
  const loaded =
    (esm ? await importIfExists(base + ".js") : requireIfExists(base + ".js")) ||
    (await importIfExists(base + ".mjs")) ||
    requireIfExists(base + ".cjs");
  if (loaded) return loaded;
  // a package by name (node_modules), resolved from the task root rather than from this runtime's directory
  return require(require.resolve(name, { paths: [appRoot, path.join(appRoot, moduleRoot)] }));
}

/** Import the function's module and return its handler; throws the Runtime.* init errors. */
export async function loadHandler(appRoot, fullHandler) {
  const [moduleRoot, name, property] = splitHandler(fullHandler);
  let module;
  try {
    module = await loadModule(appRoot, moduleRoot, name);
  } catch (err) {
    if (err instanceof SyntaxError) throw new UserCodeSyntaxError(err);
    if (err?.code === "MODULE_NOT_FOUND") throw new ImportModuleError(err);
    throw err;
  }
  const handler = property.split(".").reduce((obj, key) => obj && obj[key], module);
  if (!handler) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof handler !== "function") throw new HandlerNotFound(`${fullHandler} is not a function`);
  return handler;
}

/** What the loop needs to know about a handler: streaming, async, how many parameters it declares. */
export function handlerMetadata(handler) {
  return {
    streaming: handler[HANDLER_STREAMING] === STREAM_RESPONSE,
    highWaterMark: Number.isInteger(handler[HANDLER_HIGHWATERMARK]) ? handler[HANDLER_HIGHWATERMARK] : undefined,
    isAsync: handler.constructor?.name === "AsyncFunction",
    argsNum: handler.length,
  };
}
