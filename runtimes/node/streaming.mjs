/**
 * Response streaming (awslambda.streamifyResponse): the handler writes to a stream, the runtime sends the pieces as
 * they come, as Lambda's Node.js runtime does:
 *
 *   POST .../invocation/<id>/response   Lambda-Runtime-Function-Response-Mode: streaming
 *                                       Transfer-Encoding: chunked, Content-Type as the handler set it
 *   an error after the first byte:      trailers Lambda-Runtime-Function-Error-Type and
 *                                       Lambda-Runtime-Function-Error-Body (the error document, base64)
 *
 * The stream is the request itself (an http.ClientRequest, a Writable) with setContentType(); its headers leave
 * with the first write, so the content type can be set until then. `awslambda.HttpResponseStream.from(stream,
 * {statusCode, headers, cookies})` writes the prelude a function URL reads (JSON, then 8 NUL bytes).
 */

import http from "node:http";

import { InvalidStreamingOperation, toRuntimeResponse } from "./errors.mjs";
import { buildCallbackContext } from "./context.mjs";
import { logError } from "./logging.mjs";

const PRELUDE_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response";
const DELIMITER = Buffer.alloc(8);

/** awslambda.HttpResponseStream, as handlers use it. */
export const HttpResponseStream = {
  from(stream, prelude) {
    stream.setContentType(PRELUDE_CONTENT_TYPE);
    stream.write(JSON.stringify(prelude ?? {}));
    stream.write(DELIMITER);
    return stream;
  },
};

/** The request that carries one streamed response, and a promise of the Runtime API's answer to it. */
function openStream(client, id, highWaterMark) {
  let answered;
  const done = new Promise((resolve, reject) => {
    answered = { resolve, reject };
  });
  const req = http.request(
    {
      hostname: client.hostname,
      port: client.port,
      agent: client.agent,
      method: "POST",
      path: `/2018-06-01/runtime/invocation/${encodeURIComponent(id)}/response`,
      highWaterMark,
      headers: {
        "Lambda-Runtime-Function-Response-Mode": "streaming",
        "Transfer-Encoding": "chunked",
        Trailer: "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
        "Content-Type": "application/octet-stream",
      },
    },
    (res) => {
      res.resume();
      res.on("end", () => answered.resolve(res.statusCode));
      res.on("error", answered.reject);
    },
  );
  req.on("error", answered.reject);
  req.setContentType = (type) => {
    if (req.headersSent) throw new InvalidStreamingOperation("Cannot set content-type, too late.");
    req.setHeader("Content-Type", type);
  };
  return [req, done];
}

/** End the stream with `error` in its trailers (headers and what was written stay as they are). */
function failStream(stream, error) {
  logError("Invoke Error", error);
  if (stream.writableEnded) return;
  const document = toRuntimeResponse(error);
  stream.addTrailers({
    "Lambda-Runtime-Function-Error-Type": String(document.errorType).replace(/[^\x20-\x7e]/g, "") || "Unhandled",
    "Lambda-Runtime-Function-Error-Body": Buffer.from(JSON.stringify(document)).toString("base64"),
  });
  stream.end();
}

/** Run one invocation of a streaming handler: handler(event, responseStream, context) returning a promise. */
export async function handleStreaming(runtime, invocation, body, headers) {
  const [stream, done] = openStream(runtime.client, invocation.id, runtime.metadata.highWaterMark);
  const [, context] = buildCallbackContext(headers, runtime.env, () => {}, () => {});
  runtime.onEmptyLoop = () => {}; // an unsettled handler whose stream has ended: the next invocation comes anyway
  try {
    const result = runtime.handler(JSON.parse(body), stream, context);
    if (!result || typeof result.then !== "function") {
      throw new Error("Streaming does not support non-async handlers.");
    }
    if ((await result) !== undefined) console.warn("Streaming handlers ignore return values.");
    if (!stream.writableEnded) throw new Error("Response stream is not finished.");
  } catch (err) {
    failStream(stream, err);
  }
  invocation.answered = true;
  await done;
  runtime.schedule();
}
