"""The suite's `async` scenario (`--only async`): asynchronous invocation (`X-Amz-Invocation-Type: Event`) next to
synchronous invokes of the same no-op function, in one run, from the same client.

- acceptance: a closed loop of the suite's `--connections` keep-alive connections for `--duration` s (after the
  warm-up), first with synchronous invokes, then with Event invokes (each answered 202 once the event is durably
  queued); requests/s and latency of each, and their ratio. Then the queue drains: the time until the gateway's
  /metrics count an invocation for every event it received (`lambda_invocations_total` against
  `lambda_async_events_received_total`), and the events processed per second from the first 202 to the last
  invocation (the dispatcher runs at most GATEWAY_ASYNC_CONCURRENCY of a function's events at once).
- dispatch latency at low load: `LATENCY_N` Event invokes one at a time, `LATENCY_GAP` s apart (each event is
  done long before the next), on a warm environment. The handler prints `time.time()` at its start with a token from
  the event and its request id; the scenario reads the lines back from the gateway's logs API
  (`GET /gateway/v1/functions/{F}/logs`, gateway/api/logs.py: what a user's `gateway logs` reads, so nothing here
  needs a destination or the function's network) and reports the time from the 202's arrival at the client (and
  from the request's send) to the handler's start. Same machine, same clock (CLOCK_REALTIME in both processes).
  A negative time means the handler started before the 202 reached the client: the dispatcher is woken by the
  queue's commit, which may run the event while the answer is on its way.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from bench import loadgen
from bench.harness import HOST, INVOKE_PATH, RawClient, function_log, header_value, summarize
from bench.scenarios.common import Api, Run, closed, metric_sum

#: the no-op handler, which also says when it started for events that carry a token
HANDLER = """import time

def lambda_handler(event, context):
    started = time.time()
    if isinstance(event, dict) and "token" in event:
        print(f"ASYNC-START {event['token']} {context.aws_request_id} {started!r}")
    return event
"""
#: Event invokes of the low-load latency measurement, and the pause between two of them (s)
LATENCY_N = 200
LATENCY_GAP = 0.05
#: how long the queue may take to drain after the acceptance loop, and the handlers' lines to reach the log (s)
DRAIN_TIMEOUT = 300.0
LOG_TIMEOUT = 30.0
_START = re.compile(rb"ASYNC-START (\d+) (\S+) ([0-9.]+)")


def _request(port: int, function: str, body: bytes, event: bool) -> bytes:
    headers = {"Content-Type": "application/json"}
    if event:
        headers["X-Amz-Invocation-Type"] = "Event"
    return loadgen.encode_request("POST", INVOKE_PATH.format(function), body, headers, host=f"{HOST}:{port}")


def _rate(result: dict[str, Any], status: int) -> float | None:
    """Responses with `status` per second in a load run's result (None if there were none)."""
    count = result.get("statuses", {}).get(str(status), 0)
    requests, rps = result.get("requests"), result.get("throughput_rps")
    return round(rps * count / requests, 1) if count and requests and rps else None


def _counts(api: Api, function: str) -> tuple[float, float]:
    """(invocations, async events received) of `function` as the gateway's /metrics say now."""
    text = api.metrics()
    return (
        metric_sum(text, "lambda_invocations_total", function=function),
        metric_sum(text, "lambda_async_events_received_total", function=function),
    )


def _acceptance(run: Run, api: Api, function: str) -> dict[str, Any]:
    p = run.params
    port = run.server("gateway").port
    sync = closed(port, [_request(port, function, b"{}", event=False)], p.connections, p.duration, p.warmup)
    invoked0, received0 = _counts(api, function)
    started = time.monotonic()
    events = closed(port, [_request(port, function, b"{}", event=True)], p.connections, p.duration, p.warmup)
    loop_end = time.monotonic()
    received = _counts(api, function)[1] - received0
    drained_at = None
    while time.monotonic() - loop_end < DRAIN_TIMEOUT:
        if _counts(api, function)[0] - invoked0 >= received:
            drained_at = time.monotonic()
            break
        time.sleep(0.2)
    sync_rps, event_rps = _rate(sync, 200), _rate(events, 202)
    return {
        "connections": p.connections,
        "sync": sync,
        "event": events,
        "sync_200_per_s": sync_rps,
        "event_202_per_s": event_rps,
        "ratio_event_to_sync": round(event_rps / sync_rps, 3) if sync_rps and event_rps else None,
        "events_received": int(received),
        "drained": drained_at is not None,
        "drain_after_loop_s": None if drained_at is None else round(drained_at - loop_end, 2),
        "processed_per_s": None if drained_at is None else round(received / (drained_at - started), 1),
    }


def _logged_starts(port: int, function: str, since: float, tokens: int) -> dict[int, tuple[str, float]]:
    """token -> (request id, handler start) from the function's logs, once every token is there (or LOG_TIMEOUT)."""
    found: dict[int, tuple[str, float]] = {}
    deadline = time.monotonic() + LOG_TIMEOUT
    while len(found) < tokens and time.monotonic() < deadline:
        body = function_log(port, function, since)
        for match in _START.finditer(body):
            found[int(match.group(1))] = (match.group(2).decode(), float(match.group(3)))
        if len(found) < tokens:
            time.sleep(0.5)
    return found


def _latency(run: Run, function: str, n: int) -> dict[str, Any]:
    port = run.server("gateway").port
    client = RawClient(port, timeout=30)
    sent: dict[int, tuple[float, float, str | None]] = {}  # token -> (send, 202 arrival, x-amzn-RequestId)
    statuses: dict[int, int] = {}
    since = time.time()
    try:
        client.request(_request(port, function, b'{"warm": true}', event=False))  # a warm environment first
        for token in range(n):
            time.sleep(LATENCY_GAP)
            body = json.dumps({"token": token}).encode()
            t_send = time.time()
            status, head, _ = client.request(_request(port, function, body, event=True))
            t_202 = time.time()
            statuses[status] = statuses.get(status, 0) + 1
            if status == 202:
                sent[token] = (t_send, t_202, header_value(head, "x-amzn-RequestId"))
    finally:
        client.close()
    starts = _logged_starts(port, function, since, len(sent))
    from_202, from_send, ids_match = [], [], 0
    for token, (t_send, t_202, request_id) in sent.items():
        if token in starts:
            logged_id, started = starts[token]
            from_202.append((started - t_202) * 1000)
            from_send.append((started - t_send) * 1000)
            ids_match += logged_id == request_id
    ps = (50, 95, 99)
    return {
        "n": n,
        "gap_s": LATENCY_GAP,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "handler_starts_seen": len(from_202),
        "request_ids_match": ids_match,
        "from_202_ms": summarize(from_202, ps),
        "from_send_ms": summarize(from_send, ps),
    }


def scenario_async(run: Run) -> dict[str, Any]:
    port = run.server("gateway").port
    api = Api(port)
    function = f"async-echo-{int(time.time())}"
    try:
        api.create(function, HANDLER)
        acceptance = _acceptance(run, api, function)
        latency = _latency(run, function, LATENCY_N if run.params.duration >= 5 else LATENCY_N // 10)
    finally:
        api.close()
    sync, event = acceptance["sync_200_per_s"], acceptance["event_202_per_s"]
    print(
        f"  sync {sync} invokes/s, Event {event} 202s/s (x{acceptance['ratio_event_to_sync']}); drained "
        f"{acceptance['drain_after_loop_s']} s after the loop ({acceptance['processed_per_s']} events/s); 202 -> "
        f"handler start p50 {latency['from_202_ms'].get('p50')} ms, p95 {latency['from_202_ms'].get('p95')} ms "
        f"({latency['handler_starts_seen']}/{latency['n']} seen)"
    )
    return {"acceptance": acceptance, "latency": latency}
