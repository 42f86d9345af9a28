"""Two or more checkouts of the gateway under the same load, interleaved: what a change did to the warm invoke path.

Run: `.venv/bin/python bench/compare.py [--rounds 5] [--rate 0] [--seconds 4] CHECKOUT [CHECKOUT ...]`, each
CHECKOUT a directory with this repository's `gateway/` and `runtimes/` at some commit and a `build/` made by
`make install` (a `git worktree` of the old commit with this checkout's `build/` copied in will do). Starts one
gateway per checkout (this interpreter, `python -m gateway serve` in that directory, so its own code runs), deploys
the no-op function on each, then runs the same load against each in turn, `--rounds` times: a closed loop of 32
connections (`--rate 0`) or an open loop at `--rate` req/s, `--seconds` each. Per run: requests/s, client p50, and
the CPU time per request of the gateway process and of its environments (from /proc). Writes
`bench/results/compare-<UTC stamp>.json` with every run and the medians per checkout.

Why interleaved: on a shared 2-vCPU machine two runs minutes apart differ by more than most changes do; rounds that
alternate between the checkouts see the same noise, and the medians compare them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.harness import HOST, RESULTS, Server, create_noop, descendants, proc_table, scratch_dir
from bench.scenarios.common import invoke_bytes, load

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _workers(pid: int) -> int:
    table = proc_table()
    return sum(table[p].ticks for p in descendants(pid, table) if p != pid)


def _commit(checkout: Path) -> str:
    out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def _run(server: Server, rate: float, seconds: float) -> dict[str, Any]:
    """One load run against `server`, with its CPU per request."""
    assert server.proc is not None
    request = [invoke_bytes(server.port, "noop")]
    gateway0, workers0 = _ticks(server.proc.pid), _workers(server.proc.pid)
    if rate > 0:
        result = load(loadgen.open_loop(HOST, server.port, request, rate, seconds, connections=32, warmup=0.0))
    else:
        result = load(loadgen.closed_loop(HOST, server.port, request, 32, seconds, warmup=0.0))
    gateway1, workers1 = _ticks(server.proc.pid), _workers(server.proc.pid)
    n = max(result["requests"], 1)
    return {
        "requests_per_s": result["throughput_rps"],
        "p50_ms": result["latency_ms"]["p50"],
        "gateway_us_per_request": round((gateway1 - gateway0) / CLK_TCK * 1e6 / n, 1),
        "environments_us_per_request": round((workers1 - workers0) / CLK_TCK * 1e6 / n, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop at this rate; 0: closed loop")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    runs: dict[str, list[dict[str, Any]]] = {str(c): [] for c in args.checkouts}
    with scratch_dir("compare-") as tmp_name:
        tmp = Path(tmp_name)
        servers: list[Server] = []
        try:
            for i, checkout in enumerate(args.checkouts):
                argv_ = [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp / f"data-{i}")]
                server = Server(str(checkout), argv_, tmp / f"gateway-{i}.log", env=env, cwd=checkout.resolve())
                servers.append(server)
                server.start()
                create_noop(server, "noop")
                _run(server, args.rate, 2.0)  # warm-up: its environments forked
            for round_ in range(args.rounds):
                for server in servers:
                    runs[server.name].append(_run(server, args.rate, args.seconds))
                    print(f"round {round_ + 1} {server.name}: {runs[server.name][-1]}", flush=True)
        finally:
            for server in servers:
                server.stop()
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items() if rs}
    out = {
        "benchmark": "compare",
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([".venv/bin/python", "bench/compare.py", *(argv or sys.argv[1:])]),
        "load": {"rate": args.rate or "closed loop, 32 connections", "seconds": args.seconds, "rounds": args.rounds},
        "commits": {str(c): _commit(c) for c in args.checkouts},
        "runs": runs,
        "medians": medians,
    }
    path = RESULTS / f"compare-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for name, m in medians.items():
        print(f"{name} ({out['commits'][name]}): {m}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
