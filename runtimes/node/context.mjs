/**
 * The context object a handler gets, and the ways it can finish an invocation (callback, succeed, fail, done, a
 * returned promise), with Lambda's rules:
 *
 * - the first of callback/succeed/fail/done wins; later calls are ignored;
 * - callback(err) and fail/done(err) report the error at once;
 * - callback(null, result) with context.callbackWaitsForEmptyEventLoop true (the default) answers when the event
 *   loop is empty (the process's "beforeExit"), false: at once (pending timers then run in a later invocation, or
 *   while the environment is frozen, as on Lambda);
 * - succeed/done(null, result) answer at once.
 *
 * `finish` is the invocation's one way out (runtime.mjs): finish(error) or finish(null, result).
 */

/** The part of the context that comes from the environment (Lambda reads it from these variables). */
function environmentData(env) {
  return {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
  };
}

function parseJson(text, name) {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

/** The part of the context that comes from the invocation's headers (lower-case names). */
function headerData(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  return {
    clientContext: parseJson(headers["lambda-runtime-client-context"], "ClientContext"),
    identity: parseJson(headers["lambda-runtime-cognito-identity"], "CognitoIdentity"),
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
}

/**
 * Build the handler's (callback, context) for one invocation. `finish(err, result)` reports; `onEmptyLoop(fn)`
 * makes `fn` run when the event loop is next empty (replacing what was set before).
 */
export function buildCallbackContext(headers, env, finish, onEmptyLoop) {
  let finished = false;
  let waitForEmptyEventLoop = true;
  const once =
    (fn) =>
    (...args) => {
      if (finished) return;
      finished = true;
      fn(...args);
    };
  const done = (err, result) => {
    onEmptyLoop(() => {});
    finish(err ?? null, result);
  };
  const callback = (err, result) => {
    onEmptyLoop(() => {});
    if (err !== undefined && err !== null) finish(err);
    else if (!waitForEmptyEventLoop) finish(null, result);
    else onEmptyLoop(() => setImmediate(() => finish(null, result)));
  };
  const context = {
    get callbackWaitsForEmptyEventLoop() {
      return waitForEmptyEventLoop;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      waitForEmptyEventLoop = value;
    },
    succeed: once((result) => done(null, result)),
    fail: once((err) => done(err === undefined || err === null ? "handled" : err, null)),
    done: once(done),
  };
  Object.assign(context, environmentData(env), headerData(headers));
  return [once(callback), context];
}
