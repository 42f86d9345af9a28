/**
 * The invocation loop: GET invocation/next, call the handler, POST the response or the error, again.
 *
 * Concurrency model: Node's one thread and event loop; one invocation at a time. The loop is re-armed with
 * setImmediate after each answer, so the handler's own callbacks from an earlier invocation still run in between.
 * "The event loop is empty" is Node's "beforeExit" event: index.mjs routes it to `runtime.onEmptyLoop`, which this
 * loop sets per invocation (a callback handler's answer, or the answer for a handler that never called back).
 *
 * An uncaught exception or unhandled rejection while an invocation runs reports that invocation's error and exits
 * (129 and 128, Lambda's codes): the proxy (runtimes/proxy/main.py) starts the runtime again for the next
 * invocation (a re-Init, as on Lambda): a new process, the module's state gone.
 */

import { NodeJsExit, intoError, toRuntimeResponse } from "./errors.mjs";
import { buildCallbackContext } from "./context.mjs";
import { logError, setRequestId } from "./logging.mjs";
import { handleStreaming } from "./streaming.mjs";

export const EXIT_UNCAUGHT = 129;
export const EXIT_REJECTION = 128;

export class Runtime {
  /** `client`: a RuntimeClient; `handler` and its `metadata` (loader.mjs); `env`: process.env. */
  constructor(client, handler, metadata, env) {
    this.client = client;
    this.handler = handler;
    this.metadata = metadata;
    this.env = env;
    this.onEmptyLoop = () => {};
    /** the invocation in progress: {id, answered} */
    this.current = null;
  }

  /** Start the next iteration at the next turn of the event loop. */
  schedule() {
    setImmediate(() => {
      this.once().catch((err) => this.fatal(err));
    });
  }

  async once() {
    const { body, headers } = await this.client.nextInvocation();
    const id = headers["lambda-runtime-aws-request-id"];
    if (!id) throw new Error("invocation/next answered without a Lambda-Runtime-Aws-Request-Id");
    setRequestId(id);
    if (headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"];
    else delete process.env._X_AMZN_TRACE_ID;
    const invocation = { id, answered: false };
    this.current = invocation;
    if (this.metadata.streaming) return handleStreaming(this, invocation, body, headers);
    const finish = (err, result) => this.answer(invocation, err, result);
    const setEmptyLoop = (fn) => {
      this.onEmptyLoop = fn;
    };
    // nothing answered by the time the loop is empty: an async handler never settled (an error), a callback
    // handler never called back (null), as Lambda decides
    setEmptyLoop(() => {
      setEmptyLoop(() => {});
      if (this.metadata.isAsync) finish(new NodeJsExit("Error: Runtime exited without providing a reason"));
      else finish(null, null);
    });
    let callback;
    try {
      let context;
      [callback, context] = buildCallbackContext(headers, this.env, finish, setEmptyLoop);
      const result = this.handler(JSON.parse(body), context, callback);
      if (result && typeof result.then === "function") {
        result.then(context.succeed, context.fail);
      }
    } catch (err) {
      if (callback) callback(err);
      else finish(err);
    }
  }

  /** Report the invocation's outcome once (later reports are logged and dropped), then go for the next one. */
  answer(invocation, err, result) {
    if (invocation.answered) {
      console.error(
        "Invocation has already been reported as done. Cannot call complete more than once per invocation.",
      );
      return;
    }
    invocation.answered = true;
    let posted;
    if (err !== null && err !== undefined) {
      logError("Invoke Error", err);
      posted = this.client.postInvocationError(invocation.id, toRuntimeResponse(err));
    } else {
      let text;
      try {
        text = JSON.stringify(result === undefined ? null : result);
      } catch {
        const error = new Error("Unable to stringify response body");
        logError("Invoke Error", error);
        posted = this.client.postInvocationError(invocation.id, toRuntimeResponse(error));
      }
      posted ??= this.client.postInvocationResponse(invocation.id, text);
    }
    posted.then(
      () => this.schedule(),
      (e) => this.fatal(e),
    );
  }

  /** The process is about to die of `error` (uncaught, or a rejection nobody handled): tell Lambda, then exit, as
   * Lambda's runtime does (once the error is accepted). */
  crash(error, code) {
    const invocation = this.current;
    if (!invocation || invocation.answered) process.exit(code);
    invocation.answered = true;
    const exit = () => process.exit(code);
    this.client.postInvocationError(invocation.id, toRuntimeResponse(error)).then(exit, exit);
  }

  /** The Runtime API failed us (it went away, or answered nonsense): nothing sensible is left to do. */
  fatal(err) {
    process.stderr.write(`Runtime API failure: ${intoError(err).stack}\n`);
    process.exit(1);
  }
}
