"""Soak: does the gateway's footprint stay flat under churn and long runs? (`make soak`)

Run: `.venv/bin/python bench/soak.py [--cycles 500] [--invocations 100000] [--out PATH]`. Starts a gateway (a
temporary data directory, the default sandbox), then

1. `--cycles` times: CreateFunction (code of its own), Invoke once, DeleteFunction;
2. `--invocations` warm invocations of one no-op function (a closed loop, 32 connections, bench/loadgen.py);

and samples the gateway process's resident memory (VmRSS), its open descriptors (/proc/<pid>/fd), the bytes
under its data directory and the size of a /metrics scrape before, during and after each step. Writes
`bench/results/soak-<UTC stamp>.json` and prints the table. A benchmark, not a test: it asserts nothing, the
figures go into the issue notes and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.harness import HOST, RESULTS, gateway_server, running, scratch_dir
from bench.scenarios.common import NOOP, Api, invoke_bytes


def footprint(pid: int, data_dir: Path, api: Api) -> dict[str, Any]:
    """The gateway's RSS (kB), open descriptors, bytes under its data directory and /metrics size right now."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file() and not p.is_symlink())
    return {
        "rss_kb": rss_kb,
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "data_dir_bytes": disk,
        "metrics_bytes": len(api.metrics().encode()),
        "t": round(time.monotonic(), 2),
    }


def churn(api: Api, cycles: int, sample: Any) -> list[dict[str, Any]]:
    """Create, invoke and delete `cycles` functions, one after another; a sample every 50 cycles."""
    samples = []
    for i in range(cycles):
        name = f"soak-{i}"
        api.create(name, NOOP + f"\n# {i}\n")
        status, _ = api.call("POST", f"/2015-03-31/functions/{name}/invocations", {"i": i})
        if status != 200:
            raise RuntimeError(f"Invoke {name}: {status}")
        status, _ = api.call("DELETE", f"/2015-03-31/functions/{name}")
        if status != 204:
            raise RuntimeError(f"DeleteFunction {name}: {status}")
        if (i + 1) % 50 == 0:
            samples.append({"cycles": i + 1, **sample()})
            print(f"  {i + 1} cycles: {samples[-1]}", flush=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    results: dict[str, Any] = {"benchmark": "soak", "started_utc": started.isoformat(timespec="seconds")}
    results["command"] = " ".join([".venv/bin/python", "bench/soak.py", *(argv or sys.argv[1:])])
    with scratch_dir("soak-") as tmp_name, running(gateway_server(Path(tmp_name))) as gateway:
        assert gateway.proc is not None
        pid, data_dir, api = gateway.proc.pid, Path(tmp_name) / "gateway-data", Api(gateway.port)
        results["start"] = footprint(pid, data_dir, api)
        print(f"start: {results['start']}", flush=True)
        results["churn"] = churn(api, args.cycles, lambda: footprint(pid, data_dir, api))
        api.create("noop", NOOP)
        load = loadgen.run(
            loadgen.closed_loop(
                HOST, gateway.port, [invoke_bytes(gateway.port, "noop")], 32, 600.0, max_requests=args.invocations
            )
        ).to_dict()
        results["invocations"] = {k: load[k] for k in ("requests", "throughput_rps", "statuses", "errors")}
        results["after_invocations"] = footprint(pid, data_dir, api)
        print(f"after {args.invocations} invocations: {results['after_invocations']}", flush=True)
        api.close()
    out = args.out or RESULTS / f"soak-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
