"""The three measurements of the concurrency benchmark (bench/concurrency.py, `make bench-concurrency`), as its
docstring describes them: (a) reserved-concurrency enforcement (`bench_reserved`), (b) throttling throughput
under wrk (`bench_throttling`), (c) provisioned vs on-demand first invokes (`bench_first_invoke`); and the
blocking Lambda API client they deploy with. Each returns the JSON-able dict stored under its key in the
results file.

Client threads in (a) each own one keep-alive connection and are joined before the function returns; wrk runs
as a subprocess, bounded by a timeout.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import (
    HOST,
    INIT_RE,
    INVOKE_PATH,
    ROLE,
    RUNTIME,
    WRK_LUA,
    CpuMeter,
    RawClient,
    Server,
    header_value,
    invoke_request,
    make_zip,
    run_wrk,
    summarize,
)

SLEEP_SOURCE = """\
import os, time
def lambda_handler(event, context):
    start = time.time()
    time.sleep(event.get("sleep", 1.0))
    return {"start": start, "end": time.time(), "pid": os.getpid()}
"""
NOOP_SOURCE = "def lambda_handler(e, c):\n    return e\n"
PROVISIONED_PATH = "/2019-09-30/functions/{}/provisioned-concurrency?Qualifier={}"
ALIAS = "live"

#: wrk script that tallies every answer: status code, x-amzn-ErrorType header and the body's Reason
WRK_COUNT_LUA = """\
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {}; types = {}; reasons = {} end

local function bump(t, k) t[k] = (t[k] or 0) + 1 end

function response(status, headers, body)
  bump(statuses, tostring(status))
  local kind = "-"
  for k, v in pairs(headers) do
    if string.lower(k) == "x-amzn-errortype" then kind = v end
  end
  bump(types, kind)
  bump(reasons, string.match(body or "", '"Reason":"([^"]*)"') or "-")
end

local function encode(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format("%q:%d", k, v)) end
  return "{" .. table.concat(parts, ",") .. "}"
end

done = function(summary, latency, requests)
  local all = {statuses = {}, types = {}, reasons = {}}
  for _, thread in ipairs(threads) do
    for name, into in pairs(all) do
      for k, v in pairs(thread:get(name)) do into[k] = (into[k] or 0) + v end
    end
  end
  local e = summary.errors
  io.write(string.format(
    "WRKCOUNT {\\"requests\\":%d,\\"duration_us\\":%d,\\"socket_errors\\":%d,"
    .. "\\"statuses\\":%s,\\"error_types\\":%s,\\"reasons\\":%s}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    encode(all.statuses), encode(all.types), encode(all.reasons)))
end
"""


# -- control plane -------------------------------------------------------------------------------------------


class Api:
    """Plain JSON calls to the gateway's Lambda REST API on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, decoded JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, data, headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
                if attempt == 2:
                    raise
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        return resp.status, dict(resp.headers), decoded

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, _, decoded = self.call(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path}: {status} {decoded}")
        return decoded

    def create_function(self, name: str, source: str, timeout: int = 10) -> None:
        self.ok(
            "POST",
            "/2015-03-31/functions",
            {
                "FunctionName": name,
                "Runtime": RUNTIME,
                "Role": ROLE,
                "Handler": "lambda_function.lambda_handler",
                "Timeout": timeout,
                "Code": {"ZipFile": base64.b64encode(make_zip({"lambda_function.py": source})).decode()},
            },
        )

    def reserve(self, name: str, value: int) -> None:
        self.ok("PUT", f"/2017-10-31/functions/{name}/concurrency", {"ReservedConcurrentExecutions": value})

    def close(self) -> None:
        self.conn.close()


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals that contain one instant; an end at t comes before a start at t."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = current = 0
    for _, delta in events:
        current += delta
        most = max(most, current)
    return most


# -- (a) reserved concurrency ----------------------------------------------------------------------------------


def _invoke_body(port: int, function: str, event: dict[str, Any]) -> bytes:
    body = json.dumps(event)
    return (
        f"POST {INVOKE_PATH.format(function)} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def _tally(answers: list[tuple[int, bytes, bytes, float]]) -> dict[str, Any]:
    """Statuses, throttle error types and reasons, and the handler intervals of the 200s."""
    intervals: list[tuple[float, float]] = []
    statuses: dict[str, int] = {}
    types: dict[str, int] = {}
    reasons: dict[str, int] = {}
    throttle_ms: list[float] = []
    ok_ms: list[float] = []
    function_errors = 0
    for status, head, body, ms in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == 200:
            ok_ms.append(ms)
            data = json.loads(body)
            if header_value(head, "X-Amz-Function-Error") or "start" not in data:
                function_errors += 1
                continue
            intervals.append((data["start"], data["end"]))
        elif status == 429:
            throttle_ms.append(ms)
            kind = header_value(head, "x-amzn-ErrorType") or "-"
            types[kind] = types.get(kind, 0) + 1
            reason = json.loads(body).get("Reason", "-")
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "requests": len(answers),
        "statuses": statuses,
        "ok": len(intervals),
        "throttled": statuses.get("429", 0),
        "function_errors": function_errors,
        "max_inflight_observed": max_overlap(intervals),
        "throttle_error_types": types,
        "throttle_reasons": reasons,
        "throttle_latency_ms": summarize(throttle_ms, (50, 99)),
        "ok_latency_ms": summarize(ok_ms, (50, 99)),
    }


def bench_reserved(
    gateway: Server, api: Api, name: str, reserved: int, burst: int, sleep: float, closed_seconds: float
) -> dict[str, Any]:
    api.create_function(name, SLEEP_SOURCE, timeout=max(3, int(sleep * 3)))
    api.reserve(name, reserved)
    clients = [RawClient(gateway.port, timeout=60) for _ in range(burst)]
    try:
        # one simultaneous burst: each thread invokes once when the barrier opens
        answers: list[tuple[int, bytes, bytes, float]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(burst)
        raw = _invoke_body(gateway.port, name, {"sleep": sleep})

        def once(client: RawClient) -> None:
            barrier.wait()
            t0 = time.perf_counter()
            status, head, body = client.request(raw)
            answer = (status, head, body, (time.perf_counter() - t0) * 1000)
            with lock:
                answers.append(answer)

        started = time.monotonic()
        _run_threads(once, clients)
        burst_result = _tally(answers) | {"wall_s": round(time.monotonic() - started, 3)}

        # closed loop: every thread invokes again as soon as it has its answer
        answers = []
        short = _invoke_body(gateway.port, name, {"sleep": 0.2})
        deadline = time.monotonic() + closed_seconds

        def loop(client: RawClient) -> None:
            mine = []
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                status, head, body = client.request(short)
                mine.append((status, head, body, (time.perf_counter() - t0) * 1000))
            with lock:
                answers.extend(mine)

        started = time.monotonic()
        _run_threads(loop, clients)
        elapsed = time.monotonic() - started
        closed = _tally(answers) | {"seconds": round(elapsed, 3), "handler_sleep_s": 0.2}
        closed["throttles_per_s"] = round(closed["throttled"] / elapsed, 1)
    finally:
        for client in clients:
            client.close()
    return {
        "function": name,
        "reserved": reserved,
        "concurrent_clients": burst,
        "handler_sleep_s": sleep,
        "burst": burst_result,
        "closed_loop": closed,
    }


def _run_threads(target: Any, clients: list[RawClient]) -> None:
    threads = [threading.Thread(target=target, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


# -- (b) throttling throughput -------------------------------------------------------------------------------


def run_wrk_counting(url: str, connections: int, seconds: float, lua: Path) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(lua), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKCOUNT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    raw = json.loads(line[len("WRKCOUNT ") :])
    raw["requests_per_s"] = round(raw["requests"] / (raw["duration_us"] / 1e6), 1)
    return dict(raw)


def bench_throttling(
    gateway: Server, baseline: Server, api: Api, name: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    api.create_function(name, NOOP_SOURCE)
    api.reserve(name, 0)
    lua, count_lua = tmp / "post.lua", tmp / "count.lua"
    lua.write_text(WRK_LUA)
    count_lua.write_text(WRK_COUNT_LUA)
    out: dict[str, Any] = {"function": name, "reserved": 0, "connections": args.connections}
    for target, server in (("gateway_throttled", gateway), ("baseline", baseline)):
        url = server.url + INVOKE_PATH.format(name)
        print(f"throttling: {target}, {args.connections} connections, {args.duration:g} s...", flush=True)
        if args.warmup > 0:
            run_wrk(url, args.connections, args.warmup, 1, lua)
        assert server.proc is not None
        meter = CpuMeter(server.proc.pid)
        with meter.measure():
            out[target] = run_wrk(url, args.connections, args.duration, 1, lua) | {"cpu": meter.results}
    out["ratio"] = round(out["gateway_throttled"]["requests_per_s"] / out["baseline"]["requests_per_s"], 3)
    print(f"throttling: verifying every answer ({args.verify_seconds:g} s)...", flush=True)
    verify = run_wrk_counting(gateway.url + INVOKE_PATH.format(name), args.connections, args.verify_seconds, count_lua)
    main = out["gateway_throttled"]
    verify["all_429_too_many_requests"] = (
        verify["requests"] > 0
        and verify["socket_errors"] == 0
        and verify["statuses"] == {"429": verify["requests"]}
        and verify["error_types"] == {"TooManyRequestsException": verify["requests"]}
    )
    out["verify"] = verify
    # in the measured run wrk itself saw no 2xx answer and no socket error
    out["measured_run_all_non_2xx"] = main["errors"]["non_2xx"] == main["requests"] and main["errors"]["socket"] == 0
    return out


# -- (c) provisioned vs on-demand first invoke -------------------------------------------------------------------


def _first_invoke(port: int, function: str, qualifier: str | None = None) -> tuple[float, bool, str | None, int]:
    """Time the first invoke on an already-open connection: (ms, Init Duration reported, version, status)."""
    client = RawClient(port, timeout=60)
    try:
        raw = invoke_request(port, function, "X-Amz-Log-Type: Tail\r\n")
        if qualifier:
            path = INVOKE_PATH.format(function)
            raw = raw.replace(path.encode(), f"{path}?Qualifier={qualifier}".encode(), 1)
        t0 = time.perf_counter()
        status, head, _ = client.request(raw)
        ms = (time.perf_counter() - t0) * 1000
    finally:
        client.close()
    log = header_value(head, "X-Amz-Log-Result")
    init = bool(log and INIT_RE.search(base64.b64decode(log).decode(errors="replace")))
    return ms, init, header_value(head, "X-Amz-Executed-Version"), status


def _provision(api: Api, name: str, ready_timeout: float) -> dict[str, Any]:
    """Publish, alias, provision 1 and wait for READY. {"error": ...} if the API is not there or fails."""
    api.create_function(name, NOOP_SOURCE)
    version = api.ok("POST", f"/2015-03-31/functions/{name}/versions", {})["Version"]
    api.ok("POST", f"/2015-03-31/functions/{name}/aliases", {"Name": ALIAS, "FunctionVersion": version})
    path = PROVISIONED_PATH.format(name, ALIAS)
    t0 = time.monotonic()
    status, _, body = api.call("PUT", path, {"ProvisionedConcurrentExecutions": 1})
    if status in (404, 501):
        return {"error": "provisioned-concurrency API not served", "status": status, "response": body}
    if status not in (200, 202):
        return {"error": "PutProvisionedConcurrencyConfig failed", "status": status, "response": body}
    deadline = t0 + ready_timeout
    while True:
        status, _, body = api.call("GET", path)
        state = body.get("Status") if isinstance(body, dict) else None
        if status == 200 and state == "READY":
            return {"version": version, "ready_s": round(time.monotonic() - t0, 3), "status": body}
        if state == "FAILED" or status != 200:
            return {"error": f"provisioning {state or status}", "status": status, "response": body}
        if time.monotonic() > deadline:
            return {"error": f"not READY after {ready_timeout:g} s", "response": body}
        time.sleep(0.02)


def bench_first_invoke(gateway: Server, api: Api, run_id: str, samples: int, ready_timeout: float) -> dict[str, Any]:
    cold: list[float] = []
    provisioned: list[float] = []
    ready_s: list[float] = []
    cold_init = provisioned_init = 0
    problems: list[str] = []
    unavailable: dict[str, Any] | None = None
    for i in range(samples):
        name = f"bench-ondemand-{run_id}-{i}"
        api.create_function(name, NOOP_SOURCE)
        ms, init, _, status = _first_invoke(gateway.port, name)
        if status == 200:
            cold.append(ms)
            cold_init += init
        else:
            problems.append(f"{name}: first invoke {status}")
        if unavailable is not None:
            continue
        name = f"bench-provisioned-{run_id}-{i}"
        prov = _provision(api, name, ready_timeout)
        if "error" in prov:
            unavailable = prov
            print(f"provisioned: {prov['error']} ({prov.get('status')}); on-demand samples go on", flush=True)
            continue
        ready_s.append(prov["ready_s"])
        ms, init, version, status = _first_invoke(gateway.port, name, ALIAS)
        if status == 200 and version == prov["version"]:
            provisioned.append(ms)
            provisioned_init += init
        else:
            problems.append(f"{name}: first invoke {status}, executed version {version}")
    cold_stats = summarize(cold, (50,))
    prov_stats = summarize(provisioned, (50,))
    result: dict[str, Any] = {
        "samples": samples,
        "on_demand_first_invoke_ms": cold_stats,
        "on_demand_with_init_duration": cold_init,
        "provisioned_api": "unavailable" if unavailable else "ok",
        "problems": problems,
    }
    if unavailable:
        result["provisioned_unavailable"] = unavailable
    else:
        result["provisioned_first_invoke_ms"] = prov_stats
        result["provisioned_with_init_duration"] = provisioned_init
        result["provisioned_ready_s"] = summarize(ready_s, (50,))
        if cold and provisioned:
            result["speedup_p50"] = round(float(cold_stats["p50"]) / float(prov_stats["p50"]), 1)
    return result
