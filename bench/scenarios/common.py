"""What the suite's scenarios share: the run (its parameters, and the servers started on first use and stopped
at the end), the Lambda API calls that deploy functions, pre-encoded invoke requests, and closed-loop runs of
bench/loadgen.py with the CPU each server used.

Everything here blocks: the scenarios run one after another in the suite's main thread, and each load run gets
a fresh uvloop event loop of its own (`loadgen.run`).
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.baselines import BASELINES
from bench.harness import HOST, INVOKE_PATH, ROLE, RUNTIME, CpuMeter, Server, baseline_server, gateway_server, make_zip

NOOP = "def lambda_handler(event, context):\n    return event\n"
SLEEPER = """import os, time

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"""
#: the load generator's progress line (a second) on stderr while each run goes on
PROGRESS = True


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
                "Runtime": RUNTIME,
                "Role": ROLE,
                "Handler": "lambda_function.lambda_handler",
                "Code": {"ZipFile": zip_b64},
                "MemorySize": memory,
                "Timeout": timeout,
            },
        )
        if status != 201:
            raise RuntimeError(f"CreateFunction {name}: {status} {body}")

    def update_code(self, name: str, source: str) -> None:
        """UpdateFunctionCode with `source` as lambda_function.py (a zip of its own: the gateway must start a new
        environment for the next invoke)."""
        zip_b64 = base64.b64encode(make_zip({"lambda_function.py": source})).decode()
        status, body = self.call("PUT", f"/2015-03-31/functions/{name}/code", {"ZipFile": zip_b64})
        if status != 200:
            raise RuntimeError(f"UpdateFunctionCode {name}: {status} {body}")

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


def measured(server: Server, requests: list[bytes], p: Params) -> tuple[dict[str, Any], dict[str, float]]:
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
