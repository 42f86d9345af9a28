"""The suite's cold scenarios: first invokes of fresh functions (with Init Duration from the log tail; 50 ms after
their CreateFunction, and right after it, as a user deploys and invokes), the first invoke right after an
UpdateFunctionCode of a warm function (new code: a new environment), next to (b)'s fresh interpreter per
invocation, scale from zero, and a burst of simultaneous first invokes.

The simultaneous invokes run on an asyncio loop of their own (`asyncio.run`), each on an already-open
connection, so that they leave at the same moment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.harness import HOST, INIT_RE, RawClient, header_value, summarize
from bench.scenarios.common import NOOP, SLEEPER, Api, Run, invoke_bytes


def _init_duration(head: bytes) -> float | None:
    """The Init Duration (ms) of the REPORT line in an answer's X-Amz-Log-Result, None without one (no cold start)."""
    log = header_value(head, "X-Amz-Log-Result")
    match = INIT_RE.search(base64.b64decode(log).decode(errors="replace")) if log else None
    return float(match.group(1)) if match else None


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
            init = _init_duration(head)
            if status != 200 or body != b"{}" or init is None:
                errors += 1
                continue
            samples.append(ms)
            inits.append(init)
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
    out["right_after_create"] = _right_after_create(gateway.port, api, stamp, p.cold_n)
    out["right_after_update"] = _right_after_update(gateway.port, api, stamp, p.cold_n)
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
    print(f"  first invoke right after CreateFunction p50 {out['right_after_create']['client_ms'].get('p50')} ms, "
          f"UpdateFunctionCode p50 {out['right_after_update']['client_ms'].get('p50')} ms")  # fmt: skip
    print(f"  cold start p50 {out['fresh_function']['client_ms'].get('p50')} ms; fresh process p50 "
          f"{out['fresh_process']['client_ms'].get('p50')} ms")  # fmt: skip
    return out


#: seconds between two deploys of the right-after rows (after an invoke, before the next API call): each sample is a
#: deploy of its own, as a user's are, not one that overlaps what the previous started (the zygote's next spare, the
#: replaced environment's teardown 250 ms after an update); the API call and its invoke have no pause between them
SETTLE = 0.5


def _right_after(
    port: int, n: int, call: str, deploy: Callable[[int], str], expected: Callable[[int], Any]
) -> dict[str, Any]:
    """`n` deploys, `SETTLE` apart: `deploy(i)` makes the API call (its time recorded under `<call>_ms`) and names the
    function, whose first Invoke follows at once. Client time of the invoke alone and Init Duration from its log tail;
    an answer other than `expected(i)`, or one without Init Duration (no cold start), is an error."""
    client = RawClient(port, timeout=60)
    samples, inits, calls, errors = [], [], [], 0
    try:
        for i in range(n):
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            name = deploy(i)
            calls.append((time.perf_counter() - t0) * 1000)
            ms, status, head, body = _timed(client, invoke_bytes(port, name, tail=True))
            init = _init_duration(head)
            if status != 200 or json.loads(body or b"null") != expected(i) or init is None:
                errors += 1
                continue
            samples.append(ms)
            inits.append(init)
    finally:
        client.close()
    return {
        "n": len(samples),
        "errors": errors,
        "pause_between_ms": 0,
        "settle_between_samples_ms": SETTLE * 1000,
        "client_ms": summarize(samples, (50, 90, 99)),
        "init_duration_ms": summarize(inits, (50, 90, 99)),
        f"{call}_ms": summarize(calls, (50, 90, 99)),
        "samples_ms": [round(s, 3) for s in samples],
    }


def _right_after_create(port: int, api: Api, stamp: int, n: int) -> dict[str, Any]:
    """As a user deploys: CreateFunction returns, and the first Invoke follows at once (no pause), `n` times, each with
    a new function of its own code. CreateFunction's own time beside it."""

    def create(i: int) -> str:
        name = f"deployed-{stamp}-{i}"
        api.create(name, NOOP + f"# {name}: code of its own\n")
        return name

    return _right_after(port, n, "create", create, lambda i: {})


def _right_after_update(port: int, api: Api, stamp: int, n: int) -> dict[str, Any]:
    """As a user redeploys: one function, warm (invoked once), gets `n` UpdateFunctionCode calls, each with a zip of
    its own (its handler answers {"v": i}, so the answer proves the new code ran, in a new environment), and the
    Invoke follows each at once (no pause). UpdateFunctionCode's own time beside it."""
    name = f"updated-{stamp}"
    api.create(name, NOOP + f"# {name}: the code before the first update\n")
    warm = RawClient(port, timeout=60)
    try:
        warm.request(invoke_bytes(port, name))  # the environment an update must replace
    finally:
        warm.close()

    def update(i: int) -> str:
        api.update_code(name, f"def lambda_handler(event, context):\n    return {{'v': {i}}}\n")
        return name

    return _right_after(port, n, "update", update, lambda i: {"v": i})


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
