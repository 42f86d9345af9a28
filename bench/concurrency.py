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

This module is the command: options, the run (servers up, the three measurements, servers down), the checks,
the results file and the printed table. The measurements are in bench/concurrency_scenarios.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.concurrency_scenarios import Api, bench_first_invoke, bench_reserved, bench_throttling
from bench.harness import RESULTS, gateway_and_baseline, machine_facts, running, scratch_dir

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
