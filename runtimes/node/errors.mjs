/**
 * The errors a Node.js runtime reports, and how Lambda's Node.js runtime writes them.
 *
 * Contract: `toRuntimeResponse(error)` is the body of POST .../error and .../init/error
 * ({"errorType", "errorMessage", "trace"}: Node's runtime says "trace" where Python's says "stackTrace");
 * `toFormatted(error)` is what follows "Invoke Error" / "Uncaught Exception" in a log line (a tab, then the error as
 * JSON with its stack as a list of lines). Runtime-made errors are named "Runtime.<Kind>", as on Lambda, so the
 * errorType of a missing module is "Runtime.ImportModuleError" and its stack starts with that name.
 */

import util from "node:util";

/** A class of runtime errors named `Runtime.${kind}` (the name is on the prototype: the stack header shows it). */
function runtimeErrorClass(kind, wrapsCause = false) {
  const cls = class extends Error {
    constructor(messageOrCause) {
      // Lambda wraps the original error in its message: "Error: Cannot find module 'x'"
      super(wrapsCause ? String(messageOrCause) : messageOrCause);
    }
  };
  Object.defineProperty(cls, "name", { value: kind });
  cls.prototype.name = `Runtime.${kind}`;
  return cls;
}

export const ImportModuleError = runtimeErrorClass("ImportModuleError", true);
export const HandlerNotFound = runtimeErrorClass("HandlerNotFound");
export const MalformedHandlerName = runtimeErrorClass("MalformedHandlerName");
export const MalformedStreamingHandler = runtimeErrorClass("MalformedStreamingHandler");
export const InvalidStreamingOperation = runtimeErrorClass("InvalidStreamingOperation");
export const CallbackHandlerDeprecated = runtimeErrorClass("CallbackHandlerDeprecated");
export const NodeJsExit = runtimeErrorClass("NodeJsExit");

/** A syntax error in the function's code: Lambda's message wraps the original, its stack is the original's (it
 * names the file and line). */
export class UserCodeSyntaxError extends Error {
  constructor(cause) {
    super(String(cause));
    if (typeof cause?.stack === "string") this.stack = cause.stack;
  }
}
UserCodeSyntaxError.prototype.name = "Runtime.UserCodeSyntaxError";

/** A promise rejected with nobody to catch it; the reason becomes the message. */
export class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(String(reason));
    this.reason = reason;
    this.promise = promise;
  }
}
UnhandledPromiseRejection.prototype.name = "Runtime.UnhandledPromiseRejection";

function looksLikeError(value) {
  return (
    value &&
    typeof value.name === "string" &&
    typeof value.message === "string" &&
    typeof value.stack === "string" &&
    value.name &&
    value.message &&
    value.stack
  );
}

/** `err` as an Error (callback("text") gives an Error whose message is the text), for logging. */
export function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

/** The Runtime API error document of `error`, any value a handler threw, rejected or passed to its callback. */
export function toRuntimeResponse(error) {
  try {
    if (util.types.isNativeError(error) || looksLikeError(error)) {
      return {
        errorType: String(error.name),
        errorMessage: String(error.message),
        trace: typeof error.stack === "string" ? error.stack.split("\n") : [],
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch {
    // a getter that throws, an object without toString: still an answer, never a crash of the runtime
    return {
      errorType: "handled",
      errorMessage:
        "callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack",
      trace: [],
    };
  }
}

/** Error name, message, code and stack are not enumerable: spell them out, with the error's own properties. */
function withEnumerableProperties(value) {
  if (!(value instanceof Error)) return value;
  const out = Object.assign({ errorType: value.name, errorMessage: value.message, code: value.code }, value);
  if (typeof value.stack === "string") out.stack = value.stack.split("\n");
  return out;
}

/** How an error follows its label in a Text log line: a tab, then JSON (as Lambda's runtime writes it). */
export function toFormatted(error) {
  try {
    return "\t" + JSON.stringify(error, (_key, value) => withEnumerableProperties(value));
  } catch {
    return "\t" + JSON.stringify(toRuntimeResponse(error));
  }
}
