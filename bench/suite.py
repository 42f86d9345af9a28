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
  target in turn; requests/s, latency, the CPU of each server's process tree, ratios to (a) and (c).
- latency_vs_load: open loop (constant arrival rate, latency from the intended send time) at 25/50/75 % of the
  maximum that target reached in `throughput`, for the gateway, (a) and (c). The gateway's overhead at 50 %:
  client p50 minus the handler's mean Duration over the same run (from the gateway's /metrics).
- cold_start: the first invoke of each of `--cold-n` new functions (each with code of its own), one after
  another (a 50 ms pause between, as between independent deploys: each finds the zygote's spare ready; the burst
  and scale-from-zero steps show cold starts that outrun it), on one open connection, with Init Duration from
  the log tail; the same
  number of sequential invokes of (b), each of which starts an interpreter; and a scale-from-zero step: 10
  concurrent first invokes of one new function whose handler sleeps 50 ms (how many environments, how fast).
- burst: 100 concurrent first invokes of a new function (handler sleeps 100 ms): all must succeed, each on its
  own environment; latency distribution and the time until the last answer.
- throttling: a function with reserved concurrency 0 under a 64-connection closed loop (every answer a 429)
  next to (a) under the same load: throttles/s vs requests/s.
- functions: a second gateway (node memory budget raised to fit 1000 functions of 128 MB: their environments
  really use a few MB each, see `memory`): throughput with 1 function deployed, then with 1000 deployed,
  warmed, and invoked with Zipf-distributed popularity (s = 1).
- payloads: 1 KB, 100 KB, 1 MB and 6 MB JSON events echoed by the handler, 4 connections, gateway and (a).
- memory: 8 idle warm environments of a no-op function: USS (private: not shared with the zygote), PSS, RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen
from bench.baselines import BASELINES
from bench.harness import (
    HOST,
    INIT_RE,
    INVOKE_PATH,
    RESULTS,
    ROLE,
    ROOT,
    CpuMeter,
    RawClient,
    Server,
    baseline_server,
    gateway_server,
    header_value,
    make_zip,
    package_version,
    run_text,
    scratch_dir,
    summarize,
)

SCENARIOS = (
    "throughput",
    "latency_vs_load",
    "cold_start",
    "burst",
    "throttling",
    "functions",
    "payloads",
    "memory",
)
NOOP = "def lambda_handler(event, context):\n    return event\n"
SLEEPER = """import os, time

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"""
PAYLOAD_SIZES = ((1024, "1 KB"), (100 * 1024, "100 KB"), (1024 * 1024, "1 MB"), (6 * 1024 * 1024, "6 MB"))
FRACTIONS = (0.25, 0.5, 0.75)
#: the load generator's progress line (a second) on stderr while each run goes on
PROGRESS = True
LABELS = {
    "gateway": "gateway (Lambda invoke API)",
    **{name: baseline.label for name, baseline in BASELINES.items()},
}


@dataclass
class Params:
    connections: int = 32
    duration: float = 10.0
    warmup: float = 2.0
    open_duration: float = 5.0
    cold_n: int = 30
    functions: int = 1000
    payload_duration: float = 5.0
    burst: int = 100

    @classmethod
    def quick(cls) -> Params:
        return cls(duration=2.0, warmup=0.5, open_duration=1.5, cold_n=5, functions=50, payload_duration=1.0, burst=20)


# -- the Lambda API, plainly -------------------------------------------------------------------------------


class Api:
    """Blocking JSON calls to a gateway's Lambda API on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, data, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None

    def create(self, name: str, source: str, memory: int = 128, timeout: int = 30) -> None:
        zip_b64 = base64.b64encode(make_zip({"lambda_function.py": source})).decode()
        status, body = self.call(
            "POST",
            "/2015-03-31/functions",
            {
                "FunctionName": name,
                "Runtime": "python3.12",
                "Role": ROLE,
                "Handler": "lambda_function.lambda_handler",
                "Code": {"ZipFile": zip_b64},
                "MemorySize": memory,
                "Timeout": timeout,
            },
        )
        if status != 201:
            raise RuntimeError(f"CreateFunction {name}: {status} {body}")

    def metrics(self) -> str:
        self.conn.request("GET", "/metrics")
        resp = self.conn.getresponse()
        return resp.read().decode()

    def close(self) -> None:
        self.conn.close()


def invoke_bytes(port: int, function: str, body: bytes = b"{}", tail: bool = False) -> bytes:
    headers = {"Content-Type": "application/json"}
    if tail:
        headers["X-Amz-Log-Type"] = "Tail"
    return loadgen.encode_request("POST", INVOKE_PATH.format(function), body, headers, host=f"{HOST}:{port}")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What the scenarios share: the servers (started on first use, stopped at the end) and the parameters."""

    tmp: Path
    params: Params
    servers: dict[str, Server] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def server(self, name: str) -> Server:
        if name not in self.servers:
            server = gateway_server(self.tmp) if name == "gateway" else baseline_server(self.tmp, name)
            server.start()
            self.servers[name] = server
            if name == "gateway":
                api = Api(server.port)
                api.create("noop", NOOP)
                api.close()
        return self.servers[name]

    def available(self, name: str) -> bool:
        return name == "gateway" or not BASELINES[name].missing()

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


def load(coro: Any) -> dict[str, Any]:
    return loadgen.run(coro).to_dict()


def closed(port: int, requests: Sequence[bytes], connections: int, duration: float, warmup: float) -> dict[str, Any]:
    return load(loadgen.closed_loop(HOST, port, requests, connections, duration, warmup=warmup, progress=PROGRESS))


def scenario_throughput(run: Run) -> dict[str, Any]:
    p = run.params
    out: dict[str, Any] = {"connections": p.connections, "duration_s": p.duration, "results": {}, "cpu": {}}
    for name in ("gateway", "inprocess", "gunicorn", "fresh_process"):
        if not run.available(name):
            out["results"][name] = None
            continue
        server = run.server(name)
        assert server.proc is not None
        duration = p.duration if name != "fresh_process" else min(p.duration, 5.0)
        # CPU per request: the server's own process, and its workers (environments, gunicorn workers, children)
        result, out["cpu"][name] = _measured(server, [invoke_bytes(server.port, "noop")], replace(p, duration=duration))
        out["results"][name] = result
        print(f"  throughput {name}: {result['throughput_rps']:.0f} req/s, p50 {result['latency_ms']['p50']:.3f} ms")
    rps = {k: v["throughput_rps"] for k, v in out["results"].items() if v}
    out["ratios"] = {f"gateway/{k}": round(rps["gateway"] / v, 3) for k, v in rps.items() if k != "gateway" and v}
    return out


def scenario_latency_vs_load(run: Run) -> dict[str, Any]:
    p = run.params
    maxima = {
        k: v["throughput_rps"]
        for k, v in run.results.get("throughput", {}).get("results", {}).items()
        if v and k != "fresh_process"
    }
    out: dict[str, Any] = {"fractions": list(FRACTIONS), "targets": {}}
    for name, max_rps in maxima.items():
        server = run.server(name)
        points = []
        for fraction in FRACTIONS:
            rate = max(1.0, fraction * max_rps)
            api = Api(server.port) if name == "gateway" and fraction == 0.5 else None
            before = api.metrics() if api else ""
            result = load(
                loadgen.open_loop(
                    HOST,
                    server.port,
                    [invoke_bytes(server.port, "noop")],
                    rate,
                    p.open_duration,
                    connections=64,
                    warmup=1.0,
                    progress=PROGRESS,
                )
            )
            points.append({"fraction": fraction, "rate_rps": round(rate, 1), "result": result})
            if api is not None:
                after = api.metrics()
                api.close()
                labels = {"function": "noop"}
                count = metric_sum(after, "lambda_duration_seconds_count", **labels) - metric_sum(
                    before, "lambda_duration_seconds_count", **labels
                )
                total = metric_sum(after, "lambda_duration_seconds_sum", **labels) - metric_sum(
                    before, "lambda_duration_seconds_sum", **labels
                )
                handler_ms = 1000 * total / count if count else 0.0
                client_p50 = result["latency_ms"]["p50"]
                out["overhead"] = {
                    "rate_rps": round(rate, 1),
                    "client_p50_ms": client_p50,
                    "handler_mean_ms": round(handler_ms, 4),
                    "overhead_p50_ms": round(client_p50 - handler_ms, 4),
                }
            print(f"  latency {name} at {fraction:.0%} ({rate:.0f}/s): p50 {result['latency_ms']['p50']:.3f} ms")
        out["targets"][name] = {"max_rps": max_rps, "points": points}
    return out


def _timed(client: RawClient, raw: bytes) -> tuple[float, int, bytes, bytes]:
    t0 = time.perf_counter()
    status, head, body = client.request(raw)
    return (time.perf_counter() - t0) * 1000, status, head, body


def scenario_cold_start(run: Run) -> dict[str, Any]:
    p = run.params
    gateway = run.server("gateway")
    api = Api(gateway.port)
    stamp = int(time.time())
    names = [f"cold-{stamp}-{i}" for i in range(p.cold_n)]
    for name in names:
        api.create(name, NOOP + f"# {name}: code of its own, not shared with any other function\n")
    client = RawClient(gateway.port, timeout=60)
    samples, inits, errors = [], [], 0
    try:
        for name in names:
            time.sleep(0.05)
            ms, status, head, body = _timed(client, invoke_bytes(gateway.port, name, tail=True))
            log = header_value(head, "X-Amz-Log-Result")
            match = INIT_RE.search(base64.b64decode(log).decode(errors="replace")) if log else None
            if status != 200 or body != b"{}" or match is None:
                errors += 1
                continue
            samples.append(ms)
            inits.append(float(match.group(1)))
    finally:
        client.close()
    out: dict[str, Any] = {
        "fresh_function": {
            "n": len(samples),
            "errors": errors,
            "pause_between_ms": 50,
            "client_ms": summarize(samples, (50, 90, 99)),
            "init_duration_ms": summarize(inits, (50, 90, 99)),
            "samples_ms": [round(s, 3) for s in samples],
        }
    }
    fresh = run.server("fresh_process")
    client = RawClient(fresh.port, timeout=60)
    fresh_samples = []
    try:
        _timed(client, invoke_bytes(fresh.port, "noop"))  # page cache warm, as for the gateway's runtime
        for _ in range(p.cold_n):
            ms, status, _, body = _timed(client, invoke_bytes(fresh.port, "noop"))
            if status == 200 and body == b"{}":
                fresh_samples.append(ms)
    finally:
        client.close()
    out["fresh_process"] = {
        "n": len(fresh_samples),
        "client_ms": summarize(fresh_samples, (50, 90, 99)),
        "samples_ms": [round(s, 3) for s in fresh_samples],
    }
    if samples and fresh_samples:
        out["ratio_p50"] = round(statistics.median(fresh_samples) / statistics.median(samples), 2)
    name = f"scale-{stamp}"
    api.create(name, SLEEPER)
    api.close()
    answers = asyncio.run(_concurrent_invokes(gateway.port, name, 10, b'{"sleep": 0.05}'))
    out["scale_from_zero"] = _concurrent_summary(answers, handler_ms=50.0)
    print(f"  cold start p50 {out['fresh_function']['client_ms'].get('p50')} ms; fresh process p50 "
          f"{out['fresh_process']['client_ms'].get('p50')} ms")  # fmt: skip
    return out


async def _concurrent_invokes(port: int, function: str, n: int, body: bytes) -> list[tuple[float, int, bytes]]:
    """`n` invokes sent at the same moment on `n` already-open connections: (ms, status, body) each."""
    conns = [await asyncio.open_connection(HOST, port) for _ in range(n)]
    raw = invoke_bytes(port, function, body)

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[float, int, bytes]:
        t0 = time.perf_counter()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        payload = await reader.readexactly(length)
        return (time.perf_counter() - t0) * 1000, int(head[9:12]), payload

    try:
        return await asyncio.gather(*(one(r, w) for r, w in conns))
    finally:
        for _, writer in conns:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _concurrent_summary(answers: list[tuple[float, int, bytes]], handler_ms: float) -> dict[str, Any]:
    ok = [a for a in answers if a[1] == 200]
    pids = {json.loads(a[2]).get("pid") for a in ok}
    statuses: dict[str, int] = {}
    for _, status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    samples = [a[0] for a in answers]
    return {
        "requests": len(answers),
        "environments": len(pids),
        "handler_ms": handler_ms,
        "statuses": statuses,
        "errors": len(answers) - len(ok),
        "client_ms": summarize(samples, (50, 90, 99)),
        "samples_ms": [round(s, 3) for s in samples],
        "elapsed_ms": round(max(samples), 3) if samples else None,
    }


def scenario_burst(run: Run) -> dict[str, Any]:
    gateway = run.server("gateway")
    api = Api(gateway.port)
    name = f"burst-{int(time.time())}"
    api.create(name, SLEEPER)
    api.close()
    answers = asyncio.run(_concurrent_invokes(gateway.port, name, run.params.burst, b'{"sleep": 0.1}'))
    out = {"concurrency": run.params.burst, **_concurrent_summary(answers, handler_ms=100.0)}
    print(f"  burst {run.params.burst}: {out['environments']} environments, last answer after {out['elapsed_ms']} ms")
    return out


def scenario_throttling(run: Run) -> dict[str, Any]:
    p = run.params
    gateway = run.server("gateway")
    api = Api(gateway.port)
    name = f"throttled-{int(time.time())}"
    api.create(name, NOOP)
    status, _ = api.call("PUT", f"/2017-10-31/functions/{name}/concurrency", {"ReservedConcurrentExecutions": 0})
    api.close()
    if status != 200:
        raise RuntimeError(f"PutFunctionConcurrency: {status}")
    result = closed(gateway.port, [invoke_bytes(gateway.port, name)], 64, p.duration, p.warmup)
    base = run.server("inprocess")
    baseline = closed(base.port, [invoke_bytes(base.port, "noop")], 64, p.duration, p.warmup)
    throttles = result["statuses"].get("429", 0) / result["duration_s"] if result["duration_s"] else 0.0
    out = {
        "connections": 64,
        "duration_s": p.duration,
        "result": result,
        "baseline": baseline,
        "throttles_per_s": round(throttles, 1),
        "baseline_rps": baseline["throughput_rps"],
        "ratio": round(throttles / baseline["throughput_rps"], 3) if baseline["throughput_rps"] else None,
    }
    print(f"  throttling: {throttles:.0f} 429/s vs {baseline['throughput_rps']:.0f} req/s of (a)")
    return out


def scenario_functions(run: Run) -> dict[str, Any]:
    p = run.params
    n = p.functions
    budget_mb = str(128 * (n + 64) + 4096)
    server = gateway_server(run.tmp, "gateway-functions", GATEWAY_MEMORY_BUDGET_MB=budget_mb)
    server.start()
    try:
        api = Api(server.port)
        names = [f"f{i:04d}" for i in range(n)]
        api.create(names[0], NOOP)
        assert server.proc is not None
        one, one_cpu = _measured(server, [invoke_bytes(server.port, names[0])], p)
        t0 = time.monotonic()
        for name in names[1:]:
            api.create(name, NOOP)
        created_s = time.monotonic() - t0
        client = RawClient(server.port, timeout=60)
        t0 = time.monotonic()
        for name in names:
            client.request(invoke_bytes(server.port, name))
        client.close()
        warmed_s = time.monotonic() - t0
        api.close()
        order = loadgen.zipf_indices(n, 100_000, s=1.0, seed=7)
        encoded = [invoke_bytes(server.port, name) for name in names]
        many, many_cpu = _measured(server, [encoded[i] for i in order], p)
        code_root = "/gateway-functions-data/code"  # the spare runs no code
        envs = [p for p in _environment_pids(server.proc.pid) if os.path.dirname(_code_dir(p)).endswith(code_root)]
    finally:
        server.stop()
    ratio = many["throughput_rps"] / one["throughput_rps"] if one["throughput_rps"] else None
    print(f"  functions: 1 -> {one['throughput_rps']:.0f} req/s, {n} -> {many['throughput_rps']:.0f} req/s")
    return {
        "zipf_s": 1.0,
        "memory_budget_mb": int(budget_mb),
        "one": {"functions": 1, "result": one, "cpu": one_cpu},
        "many": {
            "functions": n,
            "result": many,
            "cpu": many_cpu,
            "environments": len(envs),
            "create_s": round(created_s, 2),
            "warm_s": round(warmed_s, 2),
        },
        "ratio": round(ratio, 3) if ratio else None,
    }


def _measured(server: Server, requests: list[bytes], p: Params) -> tuple[dict[str, Any], dict[str, float]]:
    """A closed-loop run against `server`, and the CPU per request of its process and of its workers."""
    assert server.proc is not None
    with CpuMeter(server.proc.pid).measure() as cpu:
        result = closed(server.port, requests, p.connections, p.duration, p.warmup)
    rps = result["throughput_rps"] or 1.0
    workers = cpu["server_tree_cpu_pct"] - cpu["server_process_cpu_pct"]
    return result, {
        "server_cpu_pct": cpu["server_process_cpu_pct"],
        "tree_cpu_pct": cpu["server_tree_cpu_pct"],
        "machine_busy_pct": cpu["machine_busy_pct"],
        "server_us_per_request": round(cpu["server_process_cpu_pct"] * 1e4 / rps, 1),
        "workers_us_per_request": round(workers * 1e4 / rps, 1),
    }


def _environment_pids(gateway_pid: int) -> list[int]:
    """Environments of a gateway: its zygotes' children (a zygote's spare included, one per zygote)."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                table[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    zygotes = {pid for pid, ppid in table.items() if ppid == gateway_pid}
    return [pid for pid, ppid in table.items() if ppid in zygotes]


def _memory_kb(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def scenario_payloads(run: Run) -> dict[str, Any]:
    p = run.params
    sizes = []
    for size, label in PAYLOAD_SIZES:
        body = b'{"data": "' + b"x" * (size - 12) + b'"}'
        row: dict[str, Any] = {"bytes": len(body), "label": label, "results": {}}
        for name in ("gateway", "inprocess"):
            server = run.server(name)
            row["results"][name] = closed(
                server.port, [invoke_bytes(server.port, "noop", body)], 4, p.payload_duration, 0.5
            )
        sizes.append(row)
        g, a = row["results"]["gateway"], row["results"]["inprocess"]
        print(
            f"  payload {label}: gateway p50 {g['latency_ms']['p50']:.2f} ms, (a) p50 {a['latency_ms']['p50']:.2f} ms"
        )
    return {"connections": 4, "duration_s": p.payload_duration, "sizes": sizes}


def scenario_memory(run: Run) -> dict[str, Any]:
    """Private memory of idle warm no-op environments: 8 of them, warmed by a 2 s closed loop, then left idle."""
    gateway = run.server("gateway")
    assert gateway.proc is not None
    api = Api(gateway.port)
    code = make_zip({"lambda_function.py": NOOP + "# the memory scenario's own copy\n"})
    status, body = api.call(
        "POST",
        "/2015-03-31/functions",
        {
            "FunctionName": "memory-noop",
            "Runtime": "python3.12",
            "Role": ROLE,
            "Handler": "lambda_function.lambda_handler",
            "Code": {"ZipFile": base64.b64encode(code).decode()},
        },
    )
    api.close()
    if status != 201:
        raise RuntimeError(f"CreateFunction memory-noop: {status} {body}")
    code_hex = hashlib.sha256(code).hexdigest()
    closed(gateway.port, [invoke_bytes(gateway.port, "memory-noop")], 8, 2.0, 0.0)
    time.sleep(1.0)
    pids = [pid for pid in _environment_pids(gateway.proc.pid) if _code_dir(pid).endswith("/" + code_hex)]
    readings = [r for r in (_memory_kb(pid) for pid in pids) if r]

    def summary(key: Callable[[dict[str, int]], int]) -> dict[str, float | int]:
        return summarize([float(key(r)) for r in readings], (50, 90, 99))

    zygote_uss = [_uss(_memory_kb(z)) for z in _children(gateway.proc.pid)]
    out = {
        "function": "memory-noop",
        "idle_environments": len(readings),
        "uss_kb": summary(_uss),
        "pss_kb": summary(lambda r: r.get("Pss", 0)),
        "rss_kb": summary(lambda r: r.get("Rss", 0)),
        "zygote_uss_kb": max(zygote_uss) if zygote_uss else None,
    }
    print(f"  memory: {len(readings)} idle environments, private p50 {out['uss_kb'].get('p50')} kB")
    return out


def _code_dir(pid: int) -> str:
    """The code an environment runs ("" for a spare): in a jail, the host directory mounted at /var/task (as its
    filesystem names it); otherwise its working directory."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == "/var/task":
                    return fields[3]
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _uss(reading: dict[str, int]) -> int:
    """Unique set size: the pages only this process maps (not shared with the zygote or anyone)."""
    return reading.get("Private_Clean", 0) + reading.get("Private_Dirty", 0)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry))
    return found


RUNNERS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "throughput": scenario_throughput,
    "latency_vs_load": scenario_latency_vs_load,
    "cold_start": scenario_cold_start,
    "burst": scenario_burst,
    "throttling": scenario_throttling,
    "functions": scenario_functions,
    "payloads": scenario_payloads,
    "memory": scenario_memory,
}


# -- verdicts ------------------------------------------------------------------------------------------------


def verdicts(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the value this run measured (None: not measured)."""

    def get(*path: str) -> Any:
        node: Any = s
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    rows = [
        ("warm throughput, gateway / (a) in-process", get("throughput", "ratios", "gateway/inprocess"), ">= 0.6", "x",
         lambda v: v >= 0.6),
        ("cold start p50 (new function, first invoke)", get("cold_start", "fresh_function", "client_ms", "p50"),
         "<= 5", "ms", lambda v: v <= 5.0),
        ("cold start, (b) fresh process p50 / gateway p50", get("cold_start", "ratio_p50"), ">= 15", "x",
         lambda v: v >= 15),
        ("gateway overhead p50 at 50 % of max load", get("latency_vs_load", "overhead", "overhead_p50_ms"),
         "<= 0.25", "ms", lambda v: v <= 0.25),
        ("throughput, 1000 functions (Zipf) / 1 function", get("functions", "ratio"), ">= 0.9", "x",
         lambda v: v >= 0.9),
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
