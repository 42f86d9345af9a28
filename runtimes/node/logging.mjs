/**
 * console.* as Lambda's Node.js runtime writes it, to stdout (the environment's output pipe).
 *
 * Text (default): `<ISO time>\t<request id>\t<LEVEL>\t<util.format(...args)>`, one line per call (newlines inside a
 * message become "\r", so one call stays one log event). JSON (AWS_LAMBDA_LOG_FORMAT=JSON): one object per call
 * ({"timestamp", "level", "requestId", "message"}, with errorType/errorMessage/stackTrace for an Error), and
 * AWS_LAMBDA_LOG_LEVEL drops the levels below it. The request id is "undefined" during Init, as on Lambda.
 *
 * Writes are synchronous (stdout is a pipe or a file: Node writes those synchronously on Linux), so a line is out
 * before the response that follows it.
 */

import util from "node:util";

import { intoError, toFormatted } from "./errors.mjs";

/** Lambda keeps the current request id on a global symbol; libraries (Powertools) read it there. */
const REQUEST_ID = Symbol.for("aws.lambda.runtime.requestId");

const LEVELS = Object.freeze({
  TRACE: { name: "TRACE", priority: 1 },
  DEBUG: { name: "DEBUG", priority: 2 },
  INFO: { name: "INFO", priority: 3 },
  WARN: { name: "WARN", priority: 4 },
  ERROR: { name: "ERROR", priority: 5 },
  FATAL: { name: "FATAL", priority: 6 },
});

export function setRequestId(id) {
  globalThis[REQUEST_ID] = id;
}

function requestId() {
  return globalThis[REQUEST_ID];
}

function write(line) {
  process.stdout.write(line.replace(/\n/g, "\r") + "\n");
}

function textLine(level, args) {
  write(`${new Date().toISOString()}\t${requestId()}\t${level.name}\t${util.format(...args)}`);
}

function errorReplacer(_key, value) {
  if (!(value instanceof Error)) return value;
  return Object.assign(
    {
      errorType: value?.constructor?.name ?? "UnknownError",
      errorMessage: value.message,
      stackTrace: typeof value.stack === "string" ? value.stack.split("\n") : value.stack,
    },
    value,
  );
}

function jsonLine(level, args) {
  const record = { timestamp: new Date().toISOString(), level: level.name, requestId: requestId() };
  if (args.length === 1) {
    record.message = args[0];
    try {
      return write(JSON.stringify(record, errorReplacer));
    } catch {
      record.message = util.format(args[0]); // a cycle, a BigInt: the formatted text instead
      return write(JSON.stringify(record));
    }
  }
  record.message = util.format(...args);
  const error = args.find((arg) => arg instanceof Error);
  if (error) {
    record.errorType = error?.constructor?.name ?? "UnknownError";
    record.errorMessage = error.message;
    record.stackTrace = typeof error.stack === "string" ? error.stack.split("\n") : [];
  }
  write(JSON.stringify(record));
}

let json = false;

/** Replace console's methods by Lambda's, per `env` (AWS_LAMBDA_LOG_FORMAT, AWS_LAMBDA_LOG_LEVEL). */
export function patchConsole(env) {
  json = env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === "JSON";
  const log = json ? jsonLine : textLine;
  const threshold = LEVELS[env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? LEVELS.TRACE;
  const method = (level) =>
    level.priority >= threshold.priority ? (...args) => log(level, args) : () => {};
  console.trace = method(LEVELS.TRACE);
  console.debug = method(LEVELS.DEBUG);
  console.info = method(LEVELS.INFO);
  console.log = console.info;
  console.warn = method(LEVELS.WARN);
  console.error = method(LEVELS.ERROR);
  console.fatal = (...args) => log(LEVELS.FATAL, args);
}

/** Log an error the runtime caught ("Invoke Error", "Uncaught Exception") as Lambda does. */
export function logError(label, error) {
  if (json) console.error(intoError(error));
  else console.error(label, toFormatted(intoError(error)));
}
