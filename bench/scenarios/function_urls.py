"""The suite's `urls` scenario (`--only urls`): one no-op function called through its function URL and through the
Invoke API, in one run, from the same client (bench/loadgen.py), so that the two figures are comparable.

The function answers `{"ok": true}` whichever way it is called: Invoke returns it as the payload, the URL as a
200 `application/json` body (a result without statusCode). What a URL costs more is what the issue asks to see:
the 2.0 event the gateway builds from the request (headers, requestContext; the function gets ~0.6 kB more than
Invoke's `{}`), the policy check of an AuthType NONE URL, and the mapping of the result back to HTTP.

Three ways in, each a closed loop of the suite's `--connections` keep-alive connections for `--duration` s in all,
then each again on one connection (requests one after another: the latency of one request when nothing else waits).
The duration is cut into rounds (one per 2 s, at least 2), and each round runs the three ways one after another, in
an order that turns by one each round: on a machine shared with other work, a burst of outside load then falls on
every way alike instead of on whichever ran at that moment. Each way's rounds are added up into one result (requests,
statuses, errors, and the latency histograms merged: loadgen's `Histogram.merge`), with the CPU time per request of
the gateway's process and of the environments (the rounds after the first). The ways in:
- `invoke`: `POST /2015-03-31/functions/{F}/invocations` with `{}`;
- `url_host`: `GET /` with `Host: <url-id>.lambda-url.us-east-1.localhost:<port>` (the FunctionUrl's own form);
- `url_path`: `GET /lambda-url/<url-id>/` (the path form, for clients that cannot set Host).

On a gateway without function URLs (CreateFunctionUrlConfig answers 501) the scenario says so and measures nothing.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from bench import loadgen
from bench.harness import HOST, INVOKE_PATH, CpuMeter
from bench.load.result import LoadResult
from bench.scenarios.common import PROGRESS, Api, Run

HANDLER = 'def lambda_handler(event, context):\n    return {"ok": True}\n'
#: the ways in, in the order they are measured
WAYS = ("invoke", "url_host", "url_path")
#: the statements an AuthType NONE URL needs (AWS's rule since October 2025)
STATEMENTS = (
    {"StatementId": "url", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE"},
    {"StatementId": "url-invoke", "Action": "lambda:InvokeFunction", "Principal": "*", "InvokedViaFunctionUrl": True},
)


def create_url(api: Api, function: str) -> str | None:
    """An AuthType NONE URL for `function` with its two statements: the FunctionUrl, or None (no URLs: 501)."""
    status, body = api.call("POST", f"/2021-10-31/functions/{function}/url", {"AuthType": "NONE"})
    if status == 501:
        return None
    if status != 201:
        raise RuntimeError(f"CreateFunctionUrlConfig {function}: {status} {body}")
    for statement in STATEMENTS:
        status, answer = api.call("POST", f"/2015-03-31/functions/{function}/policy", statement)
        if status != 201:
            raise RuntimeError(f"AddPermission {function} {statement['StatementId']}: {status} {answer}")
    return str(body["FunctionUrl"])


def requests(port: int, function: str, url: str) -> dict[str, bytes]:
    """The pre-encoded request of each way in."""
    netloc = urlsplit(url).netloc
    url_id = netloc.split(".", 1)[0]
    headers = {"Content-Type": "application/json"}
    return {
        "invoke": loadgen.encode_request("POST", INVOKE_PATH.format(function), b"{}", headers, host=f"{HOST}:{port}"),
        "url_host": loadgen.encode_request("GET", "/", host=netloc),
        "url_path": loadgen.encode_request("GET", f"/lambda-url/{url_id}/", host=f"{HOST}:{port}"),
    }


def _added(results: list[LoadResult]) -> LoadResult:
    """One result for several runs of the same requests: counts added, histograms merged, worst lateness kept."""
    first, *rest = results
    total = replace(first, statuses=dict(first.statuses))
    for r in rest:
        total.histogram.merge(r.histogram)
        for status, n in r.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
        total.requests += r.requests
        total.duration_s += r.duration_s
        total.socket_errors += r.socket_errors
        total.timeouts += r.timeouts
        total.late_sends += r.late_sends
        total.reconnects += r.reconnects
        total.unfinished += r.unfinished
        total.client_cpu_s += r.client_cpu_s
        total.max_lateness_ms = max(total.max_lateness_ms, r.max_lateness_ms)
    return total


def interleaved(
    port: int, root: int, reqs: dict[str, bytes], connections: int, duration: float, warmup: float
) -> dict[str, Any]:
    """Each way's closed loop of `duration` s in all, in rounds of about 2 s (at least 2) whose order turns (the
    module's doc). The first round has the `warmup`; the others none (environments and connections are warm then),
    and they also measure the CPU the gateway's process (`root`) and its tree (zygotes, environments) used: per
    request, as each way's `gateway_us_per_request` and `environments_us_per_request` (a figure that outside load on
    the machine moves far less than requests/s)."""
    rounds = max(2, round(duration / 2))
    runs: dict[str, list[LoadResult]] = {way: [] for way in WAYS}
    cpu = {way: [0.0, 0.0, 0] for way in WAYS}  # gateway s, tree s, requests: the rounds after the first
    for i in range(rounds):
        for way in WAYS[i % len(WAYS) :] + WAYS[: i % len(WAYS)]:
            loop = loadgen.closed_loop(HOST, port, [reqs[way]], connections, duration / rounds,
                                       warmup=warmup if i == 0 else 0.0, progress=PROGRESS)  # fmt: skip
            t0 = time.monotonic()
            with CpuMeter(root).measure() as used:
                result = loadgen.run(loop)
            wall = time.monotonic() - t0
            runs[way].append(result)
            if i > 0:
                cpu[way][0] += used["server_process_cpu_pct"] * wall / 100
                cpu[way][1] += used["server_tree_cpu_pct"] * wall / 100
                cpu[way][2] += result.requests
    out: dict[str, Any] = {}
    for way, results in runs.items():
        gateway_s, tree_s, n = cpu[way]
        out[way] = _added(results).to_dict() | {
            "rounds": rounds,
            "gateway_us_per_request": round(gateway_s * 1e6 / n, 1) if n else None,
            "environments_us_per_request": round((tree_s - gateway_s) * 1e6 / n, 1) if n else None,
        }
    return out


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def _p50(result: dict[str, Any]) -> Any:
    return result.get("latency_ms", {}).get("p50")


def scenario_urls(run: Run) -> dict[str, Any]:
    p = run.params
    port = run.server("gateway").port
    api = Api(port)
    function = f"url-noop-{int(time.time())}"
    try:
        api.create(function, HANDLER)
        url = create_url(api, function)
    finally:
        api.close()
    if url is None:
        print("  skipped: this gateway has no function URLs (CreateFunctionUrlConfig answered 501)")
        return {"skipped": "no function URLs (CreateFunctionUrlConfig answered 501)"}
    reqs = requests(port, function, url)
    root = run.server("gateway").proc
    assert root is not None
    loaded = interleaved(port, root.pid, reqs, p.connections, p.duration, p.warmup)
    single = interleaved(port, root.pid, reqs, 1, p.duration, p.warmup)
    out = {
        "function": function,
        "function_url": url,
        "connections": p.connections,
        "loaded": loaded,
        "single": single,
        "ratios": {
            "url_host/invoke_rps": _ratio(loaded["url_host"]["throughput_rps"], loaded["invoke"]["throughput_rps"]),
            "url_path/invoke_rps": _ratio(loaded["url_path"]["throughput_rps"], loaded["invoke"]["throughput_rps"]),
            "url_host/invoke_p50_single": _ratio(_p50(single["url_host"]), _p50(single["invoke"])),
            "url_host/invoke_gateway_cpu": _ratio(
                loaded["url_host"]["gateway_us_per_request"], loaded["invoke"]["gateway_us_per_request"]
            ),
        },
    }
    print(
        "  "
        + "; ".join(
            f"{way} {loaded[way]['throughput_rps']} req/s (p50 {_p50(loaded[way])} ms, gateway "
            f"{loaded[way]['gateway_us_per_request']} us/request), 1 connection p50 {_p50(single[way])} ms"
            for way in WAYS
        )
    )
    return out
