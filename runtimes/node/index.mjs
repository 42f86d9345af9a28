/**
 * Lambda's Node.js runtime, ours: the program a nodejs* environment runs (`node index.mjs`), with no dependencies
 * beyond Node itself.
 *
 * It speaks the Runtime API (2018-06-01) at AWS_LAMBDA_RUNTIME_API: Init loads `_HANDLER` from LAMBDA_TASK_ROOT
 * (loader.mjs) — a failure is POSTed to init/error and the process exits (129) — then the loop (runtime.mjs) serves
 * invocations one at a time. console.* writes Lambda's log lines (logging.mjs). `awslambda.streamifyResponse` and
 * `awslambda.HttpResponseStream` are globals, as on Lambda, before the function's code loads.
 *
 * Exit codes, as Lambda's runtime: 129 an uncaught exception (or an Init error), 128 an unhandled rejection,
 * 1 the Runtime API failed.
 */

import { CallbackHandlerDeprecated, UnhandledPromiseRejection, toRuntimeResponse } from "./errors.mjs";
import { RuntimeClient } from "./client.mjs";
import { HANDLER_HIGHWATERMARK, HANDLER_STREAMING, STREAM_RESPONSE, handlerMetadata, loadHandler } from "./loader.mjs";
import { logError, patchConsole } from "./logging.mjs";
import { EXIT_REJECTION, EXIT_UNCAUGHT, Runtime } from "./runtime.mjs";
import { HttpResponseStream } from "./streaming.mjs";

const env = process.env;
patchConsole(env);
const client = new RuntimeClient(env.AWS_LAMBDA_RUNTIME_API ?? "127.0.0.1:9001");
let runtime = null;

/** Init failed (or crashed before the loop began): tell the Runtime API, then exit. */
function initFailed(error, code) {
  const exit = () => process.exit(code);
  client.postInitError(toRuntimeResponse(error)).then(exit, exit);
}

process.on("uncaughtException", (error) => {
  logError("Uncaught Exception", error);
  if (runtime) runtime.crash(error, EXIT_UNCAUGHT);
  else initFailed(error, EXIT_UNCAUGHT);
});
process.on("unhandledRejection", (reason, promise) => {
  const error = new UnhandledPromiseRejection(reason, promise);
  logError("Unhandled Promise Rejection", error);
  if (runtime) runtime.crash(error, EXIT_REJECTION);
  else initFailed(error, EXIT_REJECTION);
});
process.on("beforeExit", () => runtime?.onEmptyLoop());

if (!(env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === "1" || env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA === "true")) {
  globalThis.awslambda = {
    streamifyResponse(handler, options) {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (typeof options?.highWaterMark === "number") handler[HANDLER_HIGHWATERMARK] = Math.trunc(options.highWaterMark);
      return handler;
    },
    HttpResponseStream,
  };
}

/** Node 24's runtime refuses callback handlers (three parameters), as Lambda's does from nodejs24.x. */
function refuseCallbackHandler(metadata) {
  const major = Number(/nodejs(\d+)/.exec(env.AWS_EXECUTION_ENV ?? "")?.[1] ?? 0);
  if (major >= 24 && metadata.argsNum >= 3 && !metadata.streaming) {
    throw new CallbackHandlerDeprecated(
      "ERROR: AWS Lambda has removed support for callback-based function handlers starting with Node.js 24. You need to modify this function to use a supported handler signature to use Node.js 24 or later. For more information see https://docs.aws.amazon.com/lambda/latest/dg/nodejs-handler.html.",
    );
  }
}

try {
  const handler = await loadHandler(env.LAMBDA_TASK_ROOT || process.cwd(), env._HANDLER ?? "");
  const metadata = handlerMetadata(handler);
  refuseCallbackHandler(metadata);
  runtime = new Runtime(client, handler, metadata, env);
  runtime.schedule();
} catch (error) {
  logError("Uncaught Exception", error);
  initFailed(error, EXIT_UNCAUGHT);
}
