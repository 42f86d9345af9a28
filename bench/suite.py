"""The benchmark suite (`make bench`): the gateway next to three baselines, same machine, same run, same client.

Run: `.venv/bin/python bench/suite.py [--only a,b] [--quick] [--out PATH]`. Writes
`bench/results/suite-<UTC stamp>.json` (and a copy at `bench/results/suite-latest.json`), then
`bench/plots.py` draws the PNGs and `bench/report.py` rewrites the results block of BENCHMARKS.md from it.
Everything runs on loopback and is bounded in time and count (about 5 minutes by default, under a minute with
`--quick`). The load generator is `bench/loadgen.py` for every target; nothing is pinned to a CPU, so the
client, the servers and their workers share this machine's cores, and other load on the machine shows up in
the figures (the results record the load average before and after).

Targets (all serve `POST /2015-03-31/functions/{name}/invocations` with the no-op handler `return event`):
`gateway` (the Lambda invoke API, one warm environment per concurrent invocation), and the baselines of
`bench/baselines/`: (a) `inprocess`, aiohttp + uvloop calling the handler in its own process, the ceiling for
one Python process; (b) `fresh_process`, a new Python interpreter per invocation, what emulators without warm
environments do; (c) `gunicorn`, pre-forked workers around a WSGI app, what a Python team might pick instead.

Scenarios (`--only` takes these names):
- throughput: closed loop, `--connections` (32) keep-alive connections, `--duration` s after a warm-up, each
  target in turn; requests/s, latency, the CPU of each server's process and of its workers (per request too),
  ratios to (a) and (c).
- latency_vs_load: open loop (constant arrival rate, latency from the intended send time) at 25/50/75 % of the
  maximum that target reached in `throughput`, for the gateway, (a) and (c). The gateway's overhead at 50 %:
  client p50 minus the handler's mean Duration over the same run (from the gateway's /metrics).
- cold_start: the first invoke of each of `--cold-n` new functions (each with code of its own), one after
  another (a 50 ms pause between, as between independent deploys: each finds the zygote's spare ready; the burst
  and scale-from-zero steps show cold starts that outrun it), on one open connection, with Init Duration from
  the log tail; the same number of first invokes as a user deploys: each right after its CreateFunction returned
  (`right_after_create`), and each right after an UpdateFunctionCode (new code) of a warm function returned
  (`right_after_update`), no pause; the same number of sequential invokes of (b), each of which starts an
  interpreter; and a scale-from-zero step: 10 concurrent first invokes of one new function whose handler sleeps
  50 ms (how many environments, how fast).
- burst: 100 concurrent first invokes of a new function (handler sleeps 100 ms): all must succeed, each on its
  own environment; latency distribution and the time until the last answer.
- throttling: a function with reserved concurrency 0 under a 64-connection closed loop (every answer a 429)
  next to (a) under the same load: throttles/s vs requests/s.
- functions: a second gateway (node memory budget raised to fit 1000 functions of 128 MB and 512 more environments
  for the popular ones' peaks: their environments really use a few MB each, see `memory`; a tighter budget measures
  evictions instead): throughput with 1 function deployed, then with 1000 deployed,
  warmed, and invoked with Zipf-distributed popularity (s = 1).
- payloads: 1 KB, 100 KB, 1 MB and 6 MB JSON events echoed by the handler, 4 connections, gateway and (a).
- memory: 8 idle warm environments of a no-op function: USS (private: not shared with the zygote), PSS, RSS.
- runtimes: the no-op function on each kind of runtime (bench/scenarios/runtimes.py), the Python fast path
  (the synchronous Python invoke the other kinds are compared with) among them.
- async: Event invokes (202s/s) vs synchronous invokes/s of one function, the queue's drain, and the time from the
  202 to the handler's start at low load (bench/scenarios/async_events.py).
- urls: the same no-op function through its function URL (Host form, path form) and through the Invoke API:
  requests/s and latency under the closed loop, then p50 on one connection (bench/scenarios/function_urls.py).

This module is the command: options, the run's metadata (machine, versions), running the scenarios in order,
the verdicts against the issue's targets, and writing the results file. The scenarios are in bench/scenarios/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baselines import BASELINES
from bench.harness import RESULTS, ROOT, package_version, run_text, scratch_dir
from bench.scenarios import RUNNERS, SCENARIOS
from bench.scenarios.common import Params, Run

LABELS = {
    "gateway": "gateway (Lambda invoke API)",
    **{name: baseline.label for name, baseline in BASELINES.items()},
}


# -- verdicts ------------------------------------------------------------------------------------------------


def _ratio(a: Any, b: Any) -> float | None:
    """a / b rounded to 3 decimals; None unless both are numbers and b is not 0."""
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))
    return round(a / b, 3) if numbers and b else None


def verdicts(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets, each with the value this run measured (None: not measured, e.g. a scenario left out by
    `--only`; `met` is then None too). Ratios are of figures of the same run: the gateway's CPU per warm invocation
    (its own process, not the environments) over (a)'s CPU per request, both from the throughput scenario."""

    def get(*path: str) -> Any:
        node: Any = s
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    cpu_ratio = _ratio(get("throughput", "cpu", "gateway", "server_us_per_request"),
                       get("throughput", "cpu", "inprocess", "server_us_per_request"))  # fmt: skip
    rows: list[tuple[str, Any, str, str, Callable[[Any], bool]]] = [
        ("gateway CPU per warm invocation / (a) in-process CPU per request", cpu_ratio, "<= 1.6", "x",
         lambda v: v <= 1.6),
        ("warm throughput, gateway / (a) in-process", get("throughput", "ratios", "gateway/inprocess"), ">= 0.6", "x",
         lambda v: v >= 0.6),
        ("first invoke right after CreateFunction, p50", get("cold_start", "right_after_create", "client_ms", "p50"),
         "<= 5", "ms", lambda v: v <= 5.0),
        ("first invoke right after UpdateFunctionCode, p50",
         get("cold_start", "right_after_update", "client_ms", "p50"), "<= 5", "ms", lambda v: v <= 5.0),
        ("gateway overhead p50 at 50 % of max load", get("latency_vs_load", "overhead", "overhead_p50_ms"),
         "<= 0.3", "ms", lambda v: v <= 0.3),
        ("  the same, over (a)'s p50 at that rate (the client's and the kernel's share taken out)",
         get("latency_vs_load", "overhead", "over_baseline_p50_ms"), "<= 0.3", "ms", lambda v: v <= 0.3),
        ("throughput, 1000 functions (Zipf) / 1 function", get("functions", "ratio"), ">= 0.8", "x",
         lambda v: v >= 0.8),
        ("cold start, (b) fresh process p50 / gateway p50", get("cold_start", "ratio_p50"), ">= 15", "x",
         lambda v: v >= 15),
        ("idle no-op environment, private memory p50", get("memory", "uss_kb", "p50"), "<= 4096", "kB",
         lambda v: v <= 4096),
    ]  # fmt: skip
    return [
        {"name": name, "value": value, "target": target, "unit": unit, "met": None if value is None else check(value)}
        for name, value, target, unit, check in rows
    ]


# -- main ----------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    cpu_model = ""
    with contextlib.suppress(OSError):
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                          if ln.startswith("model name")), "")  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {k: package_version(k) for k in ("aiohttp", "uvloop", "msgpack", "orjson", "gunicorn")}
    out["gateway_commit"] = run_text(["git", "rev-parse", "--short", "HEAD"])
    out["gateway_dirty"] = bool(run_text(["git", "status", "--porcelain", "--untracked-files=no"]))
    return out


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios, in the given order")
    parser.add_argument("--quick", action="store_true", help="short runs, few functions: a smoke test, not figures")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/suite-<stamp>.json)")
    parser.add_argument("--no-report", action="store_true", help="do not draw plots or rewrite BENCHMARKS.md")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    params = Params.quick() if args.quick else Params()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out_path: Path = args.out or RESULTS / f"suite-{stamp}.json"
    results: dict[str, Any] = {
        "benchmark": "suite",
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "make bench  (" + " ".join([".venv/bin/python", "bench/suite.py", *(argv or sys.argv[1:])]) + ")",
        "quick": args.quick,
        "params": params.__dict__,
        "machine": machine(),
        "versions": versions(),
        "load_generator": "bench/loadgen.py (closed loop and open loop, HDR-style histograms), in this process",
        "targets_meta": {name: {"label": label} for name, label in LABELS.items()},
        "scenarios": {},
    }
    t0 = time.monotonic()
    with scratch_dir("suite-") as tmp_name:
        run = Run(Path(tmp_name), params, results=results["scenarios"])
        try:
            for name in args.only.split(","):
                print(f"{name} ...", flush=True)
                results["scenarios"][name] = RUNNERS[name](run)
        finally:
            run.stop_all()
            results["survivors"] = {name: server.survivors for name, server in run.servers.items()}
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["targets"] = verdicts(results["scenarios"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.out is None:
        shutil.copyfile(out_path, RESULTS / "suite-latest.json")
    print(f"results: {out_path}")
    for row in results["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        print(f"  {row['name']}: {row['value']} {row['unit']} (target {row['target']}): {mark}")
    if not args.no_report:
        subprocess.run([sys.executable, str(ROOT / "bench" / "plots.py"), str(out_path)], check=False)
        if args.out is None:
            cmd = [sys.executable, str(ROOT / "bench" / "report.py"), str(out_path), "--markdown", "BENCHMARKS.md"]
            subprocess.run(cmd, cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
