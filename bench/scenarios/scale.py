"""The suite's scale scenarios: throughput with many functions deployed (Zipf popularity) vs one, and the memory
of idle warm environments (USS, PSS, RSS from /proc/<pid>/smaps_rollup). Environments are found from /proc: the
children of the gateway's zygotes, told apart by the code directory each runs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.harness import ROLE, RUNTIME, RawClient, gateway_server, make_zip, summarize
from bench.scenarios.common import NOOP, Api, Run, closed, invoke_bytes, measured

#: environments beyond one per function that the `functions` scenario's node budget holds
HEADROOM = 512


def scenario_functions(run: Run) -> dict[str, Any]:
    p = run.params
    n = p.functions
    # Room for every function's environment and for the popular ones' concurrency peaks (32 connections come in
    # bursts: f0000 alone reaches ~20 at once): the scenario measures many functions deployed, not evictions.
    budget_mb = str(128 * (n + HEADROOM) + 4096)
    server = gateway_server(run.tmp, "gateway-functions", GATEWAY_MEMORY_BUDGET_MB=budget_mb)
    server.start()
    try:
        api = Api(server.port)
        names = [f"f{i:04d}" for i in range(n)]
        api.create(names[0], NOOP)
        assert server.proc is not None
        one, one_cpu = measured(server, [invoke_bytes(server.port, names[0])], p)
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
        many, many_cpu = measured(server, [encoded[i] for i in order], p)
        code_root = "/gateway-functions-data/code"  # the spare runs no code
        envs = [p for p in environment_pids(server.proc.pid) if os.path.dirname(code_dir(p)).endswith(code_root)]
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


def environment_pids(gateway_pid: int) -> list[int]:
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
            "Runtime": RUNTIME,
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
    pids = [pid for pid in environment_pids(gateway.proc.pid) if code_dir(pid).endswith("/" + code_hex)]
    readings = [r for r in (_memory_kb(pid) for pid in pids) if r]

    def summary(key: Callable[[dict[str, int]], int]) -> dict[str, float | int]:
        return summarize([float(key(r)) for r in readings], (50, 90, 99))

    zygote_uss = [_uss(_memory_kb(z)) for z in _children(gateway.proc.pid)]
    out: dict[str, Any] = {
        "function": "memory-noop",
        "idle_environments": len(readings),
        "uss_kb": summary(_uss),
        "pss_kb": summary(lambda r: r.get("Pss", 0)),
        "rss_kb": summary(lambda r: r.get("Rss", 0)),
        "zygote_uss_kb": max(zygote_uss) if zygote_uss else None,
    }
    print(f"  memory: {len(readings)} idle environments, private p50 {out['uss_kb'].get('p50')} kB")
    return out


def code_dir(pid: int) -> str:
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
