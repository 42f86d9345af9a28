/**
 * A client of Lambda's Runtime API (2018-06-01) at AWS_LAMBDA_RUNTIME_API ("host:port"), on Node's http module.
 *
 * One keep-alive agent: on the warm path GET invocation/next and the POST that answers it share one connection.
 * The agent may open a second one (an uncaught exception reported while a GET next is pending), which is why it is
 * not limited to one socket: the POST would wait behind the long poll forever. Idle sockets do not keep the process
 * alive (the agent unrefs them), so "the event loop is empty" still means the function's own work is done.
 *
 * Concurrency: one invocation at a time (Lambda's model); the methods return promises and never throw
 * synchronously. A failed request rejects; the caller decides (the runtime exits: its Runtime API is gone).
 */

import http from "node:http";

const BASE = "/2018-06-01/runtime";
const ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type";

/** A header value Node accepts (a user's error name may hold anything); Lambda's header is informative only. */
function headerSafe(value) {
  return String(value).replace(/[^\x20-\x7e]/g, "").slice(0, 256) || "Unhandled";
}

export class RuntimeClient {
  constructor(address) {
    const at = address.lastIndexOf(":");
    this.hostname = address.slice(0, at).replace(/^\[|\]$/g, "");
    this.port = Number.parseInt(address.slice(at + 1), 10);
    this.agent = new http.Agent({ keepAlive: true, maxFreeSockets: 1 });
  }

  /** One request; resolves to {status, headers, body: Buffer} once the whole answer has arrived. */
  request(method, path, body, headers = {}) {
    return new Promise((resolve, reject) => {
      const options = { hostname: this.hostname, port: this.port, path, method, agent: this.agent, headers };
      const req = http.request(options, (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  /** Long-poll for the next invocation: {body: string (the event's JSON), headers (lower-case names)}. */
  async nextInvocation() {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.request("GET", `${BASE}/invocation/next`);
        if (res.status !== 200) throw new Error(`invocation/next answered ${res.status}`);
        return { body: res.body.toString("utf8"), headers: res.headers };
      } catch (err) {
        // a kept-alive connection the server closed just as we reused it: once more on a new one
        if (err?.code !== "ECONNRESET" || attempt >= 2) throw err;
      }
    }
  }

  /** POST the invocation's result, already serialized (a JSON text, or bytes). */
  postInvocationResponse(id, body, headers = {}) {
    const payload = typeof body === "string" ? Buffer.from(body, "utf8") : body;
    return this.request("POST", `${BASE}/invocation/${encodeURIComponent(id)}/response`, payload, {
      "Content-Type": "application/json",
      "Content-Length": payload.length,
      ...headers,
    });
  }

  /** POST the invocation's error document ({errorType, errorMessage, trace}). */
  postInvocationError(id, document) {
    return this.postError(`${BASE}/invocation/${encodeURIComponent(id)}/error`, document);
  }

  /** POST the error that ended Init. */
  postInitError(document) {
    return this.postError(`${BASE}/init/error`, document);
  }

  postError(path, document) {
    const payload = Buffer.from(JSON.stringify(document), "utf8");
    const headers = {
      "Content-Type": "application/json",
      "Content-Length": payload.length,
      [ERROR_TYPE_HEADER]: headerSafe(document.errorType),
    };
    return this.request("POST", path, payload, headers);
  }
}
