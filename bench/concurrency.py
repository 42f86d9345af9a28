"""Concurrency benchmark: reserved-concurrency enforcement, throttling throughput, provisioned first invokes.

Run: `.venv/bin/python bench/concurrency.py [--duration S] [--out PATH]`. Loopback only, bounded in time
(about 35 s by default). Results go to `bench/results/concurrency-<UTC timestamp>.json` (or `--out`) and
a copy at `bench/results/concurrency-latest.json`; a short table is printed. The servers, the wrk load
generator and the result conventions are those of `bench/harness.py`, imported from it.

What is measured, and how (one gateway, one hello-world baseline, one run):

(a) Reserved concurrency. A function whose handler sleeps `--sleep` s (1) and returns `time.time()` at its
    start and end gets `PUT /2017-10-31/functions/{name}/concurrency {"ReservedConcurrentExecutions": 3}`.
    `--burst` (20) client threads, each on its own open keep-alive connection, are released by a barrier
    to invoke it once. Reported: 200s and 429s, how fast the 429s came back, and the maximum number of
    handler intervals that overlap in time (computed from the returned start/end stamps; must be 3).
    Then the same threads invoke it closed-loop for `--closed-seconds` (3) with a 0.2 s sleep: the
    maximum overlap must still be 3 however many requests race for each freed slot.
(b) Throttling throughput. A function with `ReservedConcurrentExecutions: 0` (every invoke throttled) is
    hammered closed-loop by wrk (`--connections` 64, `--duration` 10 s, after `--warmup` 2 s) exactly as
    the in-process hello-world baseline (bench/baselines/inprocess.py) is measured, the same
    way in the same run. Reported: throttles/s, the baseline's requests/s, their ratio, CPU. wrk counts every
    non-2xx answer; a separate `--verify-seconds` (3) wrk run with a Lua `response()` hook then tallies the
    status codes, the `x-amzn-ErrorType` header and the `Reason` of every answer to confirm that each one was
    a 429 TooManyRequestsException (that hook slows wrk, so its rate is not the figure).
(c) Provisioned vs on-demand first invoke. `--samples` (5) times, interleaved: a fresh function's first
    invoke (a cold start), and a fresh function whose published version is aliased (`live`) and given
    `PUT /2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=live {"ProvisionedConcurrentExecutions":
    1}`, polled with GET until Status READY (at most `--ready-timeout` s), whose first invoke goes through
    the alias. Both are timed on an already-open keep-alive connection; p50 and max are reported, with
    whether the REPORT line carried an Init Duration. If the provisioned-concurrency API is not served
    (404/501), the result says so and the rest of the run goes on.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    HOST,
    INIT_RE,
    INVOKE_PATH,
    RESULTS,
    ROLE,
    WRK_LUA,
    CpuMeter,
    RawClient,
    Server,
    gateway_and_baseline,
    header_value,
    invoke_request,
    machine_facts,
    make_zip,
    run_wrk,
    running,
    scratch_dir,
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
                "Runtime": "python3.12",
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


# -- main --------------------------------------------------------------------------------------------------------


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--reserved", type=int, default=3, help="reserved concurrency of the sleeping function (3)")
    p.add_argument("--burst", type=int, default=20, help="simultaneous invocations of it (20)")
    p.add_argument("--sleep", type=float, default=1.0, help="seconds its handler sleeps in the burst (1)")
    p.add_argument("--closed-seconds", type=float, default=3.0, help="seconds of closed-loop invokes of it (3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections for the throttling test (64)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per throttling measurement (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each measurement (2)")
    p.add_argument("--verify-seconds", type=float, default=3.0, help="seconds of the answer-tallying wrk run (3)")
    p.add_argument("--samples", type=int, default=5, help="first-invoke samples, provisioned and on-demand (5)")
    p.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for provisioned READY (30)")
    p.add_argument("--out", type=Path, help="result file (default bench/results/concurrency-<UTC timestamp>.json)")
    return p.parse_args(argv)


def checks(r: dict[str, Any]) -> dict[str, bool | None]:
    """Pass/fail of what the run must show; None where it could not be measured."""
    a, b, c = r.get("reserved", {}), r.get("throttling", {}), r.get("first_invoke", {})
    limit = r["params"]["reserved"]
    out: dict[str, bool | None] = {
        "burst_max_inflight_is_reserved": a.get("burst", {}).get("max_inflight_observed") == limit,
        "burst_all_others_throttled": a.get("burst", {}).get("throttled") == r["params"]["burst"] - limit,
        "closed_loop_max_inflight_at_most_reserved": a.get("closed_loop", {}).get("max_inflight_observed", 99) <= limit,
        "every_throttle_is_429_too_many_requests": bool(b.get("verify", {}).get("all_429_too_many_requests"))
        and bool(b.get("measured_run_all_non_2xx")),
        "provisioned_faster_than_on_demand": None,
        "gateway_inflight_zero_at_end": r.get("gateway_health_end", {}).get("inflight") == 0,
    }
    if c.get("provisioned_api") == "ok" and "speedup_p50" in c:
        out["provisioned_faster_than_on_demand"] = c["speedup_p50"] > 1
    return out


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\ncommit {m['git_commit']}{' (dirty)' if m['git_dirty'] else ''}  nproc {m['nproc']}  wrk {m['wrk']}")
    a = r.get("reserved")
    if a:
        bu, cl = a["burst"], a["closed_loop"]
        print(
            f"(a) reserved {a['reserved']}, {a['concurrent_clients']} simultaneous {a['handler_sleep_s']:g} s invokes: "
            f"max in flight {bu['max_inflight_observed']}, 200s {bu['ok']}, 429s {bu['throttled']} "
            f"(429 p50 {bu['throttle_latency_ms'].get('p50', '-')} ms, max {bu['throttle_latency_ms'].get('max', '-')}"
            f" ms), wall {bu['wall_s']} s"
        )
        print(
            f"    closed loop {cl['seconds']} s, 0.2 s handler: max in flight {cl['max_inflight_observed']}, "
            f"200s {cl['ok']}, 429s {cl['throttled']} ({cl['throttles_per_s']}/s)"
        )
    b = r.get("throttling")
    if b:
        gw, bl = b["gateway_throttled"], b["baseline"]
        v = b["verify"]
        print(
            f"(b) {b['connections']} connections: throttles/s {gw['requests_per_s']:.0f}, hello-world r/s "
            f"{bl['requests_per_s']:.0f}, ratio {b['ratio']:.3f}; gateway p50 {gw['latency_ms']['p50']} ms, "
            f"p99 {gw['latency_ms']['p99']} ms; gateway CPU {gw['cpu']['server_process_cpu_pct']} %"
        )
        print(
            f"    verify ({v['requests']} answers): statuses {v['statuses']}, x-amzn-ErrorType {v['error_types']}, "
            f"Reason {v['reasons']}, socket errors {v['socket_errors']}"
        )
    c = r.get("first_invoke")
    if c:
        od = c["on_demand_first_invoke_ms"]
        print(
            f"(c) first invoke, on-demand cold: p50 {od.get('p50', '-')} ms, max {od.get('max', '-')} ms (n={od['n']})"
        )
        if c["provisioned_api"] == "ok":
            pv, rd = c["provisioned_first_invoke_ms"], c["provisioned_ready_s"]
            print(
                f"    provisioned alias:           p50 {pv.get('p50', '-')} ms, max {pv.get('max', '-')} ms "
                f"(n={pv['n']}); speedup {c.get('speedup_p50', '-')}x; READY after p50 {rd.get('p50', '-')} s; "
                f"Init Duration reported {c['provisioned_with_init_duration']}/{pv['n']} (on-demand "
                f"{c['on_demand_with_init_duration']}/{od['n']})"
            )
        else:
            u = c["provisioned_unavailable"]
            print(f"    provisioned: UNAVAILABLE - {u['error']} (HTTP {u.get('status', '-')})")
    if "error" in r:
        print(f"ERROR: {r['error']}")
    print(f"checks: {r['checks']}")
    print(f"elapsed {r['elapsed_s']} s; wrote {r['out']} and {RESULTS / 'concurrency-latest.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_exit)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    run_id = stamp.lower()
    out = args.out or RESULTS / f"concurrency-{stamp}.json"
    t_start = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "concurrency",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine_facts(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_generator": "wrk -t1 (Lua POST body '{}', keep-alive, no pipelining)",
        "notes": [
            "Nothing is pinned: wrk and the client threads share the machine's cores with the servers.",
            "Max in flight is computed from the handlers' own time.time() stamps (one clock, one machine).",
            "First invokes are timed on an already-open keep-alive connection (no TCP connect in the figure).",
        ],
    }
    with scratch_dir("bench-concurrency-") as tmp_name:
        tmp = Path(tmp_name)
        gateway, baseline = gateway_and_baseline(tmp)
        try:
            with running(gateway), running(baseline):
                print(f"gateway on :{gateway.port}, baseline on :{baseline.port}", flush=True)
                api = Api(gateway.port)
                try:
                    print(f"(a) reserved {args.reserved}, {args.burst} simultaneous invokes...", flush=True)
                    result["reserved"] = bench_reserved(
                        gateway,
                        api,
                        f"bench-reserved-{run_id}",
                        args.reserved,
                        args.burst,
                        args.sleep,
                        args.closed_seconds,
                    )
                    print(f"(c) first invokes, {args.samples} samples each...", flush=True)
                    result["first_invoke"] = bench_first_invoke(gateway, api, run_id, args.samples, args.ready_timeout)
                    result["throttling"] = bench_throttling(
                        gateway, baseline, api, f"bench-throttled-{run_id}", args, tmp
                    )
                finally:
                    api.close()
                result["gateway_health_end"] = gateway.health()
        except Exception as exc:  # keep what was measured; say what broke
            result["error"] = repr(exc)
        finally:
            result["gateway_exit_code"] = gateway.stop()
            result["baseline_exit_code"] = baseline.stop()
            result["surviving_processes_killed"] = gateway.survivors + baseline.survivors
            with contextlib.suppress(OSError):
                lines = gateway.log_path.read_text(errors="replace").splitlines()
                result["gateway_log"] = {
                    "error_lines": sum(1 for ln in lines if " ERROR " in ln or "Traceback" in ln),
                    "warning_lines": sum(1 for ln in lines if " WARNING " in ln),
                    "tail": lines[-5:],
                }

    result["machine"]["loadavg_end"] = os.getloadavg()
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["checks"] = checks(result)
    result["out"] = str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    out.write_text(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "concurrency-latest.json").write_text(text)
    print_table(result)
    failed = "error" in result or any(v is False for v in result["checks"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
