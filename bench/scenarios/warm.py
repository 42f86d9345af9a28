"""The suite's warm scenarios, every target under the same closed or open loop: throughput, latency vs load,
payload sizes, and throttling (429s/s of a function with reserved concurrency 0 vs requests/s of (a))."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench import loadgen
from bench.harness import HOST
from bench.scenarios.common import NOOP, PROGRESS, Api, Run, closed, invoke_bytes, load, measured, metric_sum

PAYLOAD_SIZES = ((1024, "1 KB"), (100 * 1024, "100 KB"), (1024 * 1024, "1 MB"), (6 * 1024 * 1024, "6 MB"))
FRACTIONS = (0.25, 0.5, 0.75)


def scenario_throughput(run: Run) -> dict[str, Any]:
    p = run.params
    out: dict[str, Any] = {"connections": p.connections, "duration_s": p.duration, "results": {}, "cpu": {}}
    for name in ("gateway", "inprocess", "gunicorn", "fresh_process"):
        if not run.available(name):
            out["results"][name] = None
            continue
        server = run.server(name)
        assert server.proc is not None
        # a fresh interpreter per request takes ~70 ms, seconds on a loaded machine: give it time to finish some
        duration = p.duration if name != "fresh_process" else min(max(p.duration, 3.0), 5.0)
        # CPU per request: the server's own process, and its workers (environments, gunicorn workers, children)
        result, out["cpu"][name] = measured(server, [invoke_bytes(server.port, "noop")], replace(p, duration=duration))
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
                    "gateway_mean_ms": _own_overhead_ms(before, after),
                    **_over_baseline(run, rate, client_p50 - handler_ms),
                }
            print(f"  latency {name} at {fraction:.0%} ({rate:.0f}/s): p50 {result['latency_ms']['p50']:.3f} ms")
        out["targets"][name] = {"max_rps": max_rps, "points": points}
    return out


def _own_overhead_ms(before: str, after: str) -> float | None:
    """The gateway's own mean time per invocation outside the environment (request in -> payload written, reply in ->
    answer written: `gateway_overhead_seconds`), between two scrapes."""
    counts = [metric_sum(t, "gateway_overhead_seconds_count", direction="in") for t in (before, after)]
    sums = [metric_sum(t, "gateway_overhead_seconds_sum", direction=d) for t in (before, after) for d in ("in", "out")]
    n = counts[1] - counts[0]
    return round(1000 * ((sums[2] + sums[3]) - (sums[0] + sums[1])) / n, 4) if n else None


def _over_baseline(run: Run, rate: float, overhead_ms: float) -> dict[str, Any]:
    """(a) under the same open loop at the same rate: its client p50 is what this client, the kernel and an aiohttp
    server cost a request anyway; the gateway's overhead over (a) is what the gateway adds to that."""
    if not run.available("inprocess"):
        return {}
    base = run.server("inprocess")
    result = load(
        loadgen.open_loop(
            HOST, base.port, [invoke_bytes(base.port, "noop")], rate, run.params.open_duration, connections=64,
            warmup=1.0, progress=PROGRESS,
        )
    )  # fmt: skip
    baseline = result["latency_ms"]["p50"]
    return {"baseline_p50_ms": baseline, "over_baseline_p50_ms": round(overhead_ms - baseline, 4)}


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
