"""Where the gateway's time goes under load: py-spy samples of the gateway process during a closed-loop run.

Run: `.venv/bin/python bench/profile.py [--seconds 8] [--connections 32] [--rate 500]` (or `make profile`).
Starts a gateway (temporary data dir), deploys the no-op function, drives `POST .../invocations` with
`bench/loadgen.py` for `--seconds` after a 2 s warm-up while `py-spy record` samples the gateway process at
`--rate` Hz, and writes `bench/results/profile-<UTC stamp>.json`: the load result, CPU used per request by the
gateway process and by its environments (from /proc), the frames with the most samples, by own time (the line
a sample was in) and by total time (anywhere on the stack) in percent of the gateway's samples, and what this
machine charges for waking a sleeping process (a round trip over a Unix socket after 0, 1 and 10 ms idle).
py-spy samples wall-clock time of the running thread: a syscall that wakes another process counts in full,
including any time the gateway spends descheduled in it. Needs py-spy (`pip install py-spy`) and the permission
to ptrace the gateway (root, or `kernel.yama.ptrace_scope=0`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.harness import HOST, INVOKE_PATH, RESULTS, CpuMeter, create_noop, gateway_server, running, scratch_dir


def wakeup_round_trips(gaps_ms: Sequence[float] = (0.0, 1.0, 10.0), n: int = 300) -> dict[str, float]:
    """p50 of a 1-byte round trip to a child process over a Unix socket, after `gap` ms of idleness, in µs.

    The machine's price for waking a sleeping process: every hop of an invocation (client -> gateway ->
    environment -> gateway -> client) pays it when the hop's receiver was idle.
    """
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing child: blocks in recv between messages
        ours.close()
        while data := theirs.recv(64):
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    out = {}
    try:
        for gap in gaps_ms:
            samples = []
            for _ in range(n):
                if gap:
                    time.sleep(gap / 1000)
                t0 = time.perf_counter()
                ours.sendall(b"x")
                ours.recv(64)
                samples.append((time.perf_counter() - t0) * 1e6)
            out[f"after_{gap:g}_ms_idle"] = round(statistics.median(samples), 1)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    return out


def top_frames(raw: Path, limit: int) -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> the most sampled frames, own and total, in % of all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def pct(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "pct": round(100 * c / samples, 1)} for f, c in counter.most_common(limit)]

    return {"samples": samples, "own": pct(own), "total": pct(total)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        parser.error("py-spy is not installed (pip install py-spy)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with scratch_dir("profile-") as tmp_name:
        tmp = Path(tmp_name)
        gateway = gateway_server(tmp)
        with running(gateway):
            assert gateway.proc is not None
            create_noop(gateway, "noop")
            request = loadgen.encode_request(
                "POST", INVOKE_PATH.format("noop"), b"{}", {"Content-Type": "application/json"}, host=HOST
            )
            loadgen.run(loadgen.closed_loop(HOST, gateway.port, [request], args.connections, 2.0))  # warm-up
            raw = tmp / "py-spy.txt"
            record = [spy, "record", "-p", str(gateway.proc.pid), "-r", str(args.rate), "-d", str(int(args.seconds))]
            sampler = subprocess.Popen(
                [*record, "-f", "raw", "-o", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            meter = CpuMeter(gateway.proc.pid)
            with meter.measure() as cpu:
                result = loadgen.run(
                    loadgen.closed_loop(HOST, gateway.port, [request], args.connections, args.seconds)
                ).to_dict()
            sampler.wait(timeout=args.seconds + 30)
            frames = top_frames(raw, args.top) if raw.exists() else {"samples": 0, "own": [], "total": []}
    rps = result["throughput_rps"] or 1.0
    wakeups = wakeup_round_trips()
    out = {
        "benchmark": "profile",
        "started_utc": stamp,
        "command": " ".join([".venv/bin/python", "bench/profile.py", *(argv or sys.argv[1:])]),
        "load": result,
        "cpu": {
            **cpu,
            "gateway_us_per_request": round(cpu["server_process_cpu_pct"] * 1e4 / rps, 1),
            "environments_us_per_request": round(
                (cpu["server_tree_cpu_pct"] - cpu["server_process_cpu_pct"]) * 1e4 / rps, 1
            ),
        },
        "py_spy": frames,
        "wakeup_round_trip_us": wakeups,
    }
    path = RESULTS / f"profile-{stamp}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{result['throughput_rps']:.0f} req/s; gateway {out['cpu']['gateway_us_per_request']} us of CPU a request, "
          f"its environments {out['cpu']['environments_us_per_request']} us")  # fmt: skip
    print("own time (% of the gateway's samples):")
    for row in frames["own"][: args.top]:
        print(f"  {row['pct']:5.1f}  {row['frame']}")
    print("a process round trip over a Unix socket, p50: " + ", ".join(f"{k} {v} us" for k, v in wakeups.items()))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
