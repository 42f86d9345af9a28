"""Core gateway benchmark: cold starts, warm latency, and closed-loop throughput against a hello-world ceiling.

Run: `.venv/bin/python bench/core.py [--duration S] [--out PATH]` (or `make bench`). Everything is on
loopback and bounded in time and count; by default one run takes a little over a minute. Results go to
`bench/results/core-<UTC timestamp>.json` (or `--out`) and a copy at `bench/results/core-latest.json`; a
short table is printed.

What is measured, and how:

1. Cold invoke. `--cold-n` fresh functions with the handler `def lambda_handler(e, c): return e` are
   created through the Lambda REST API (CreateFunction, base64 zip, plain HTTP JSON); then each one's
   FIRST invoke (`POST /2015-03-31/functions/{name}/invocations`, body `{}`, `X-Amz-Log-Type: Tail`) is
   timed by the client on an already-open keep-alive connection (so no TCP connect is in the figure).
   Reported: client-side p50/p90/max, and the same for the gateway's own `Init Duration` taken from the
   REPORT line of the base64 `X-Amz-Log-Result`.
2. Warm latency at low load. One keep-alive connection, sequential requests for `--warm-seconds` after a
   warm-up, p50/p90/p99/max. The client is a blocking raw socket that sends pre-encoded request bytes and
   parses only the status line and Content-Length (a few microseconds a request; no http.client, no
   event loop). The same loop is run against the hello-world baseline: its figure is the floor (client +
   loopback + aiohttp) against which the gateway's extra cost can be read.
3. Closed-loop throughput. For each concurrency in `--connections` (default 32 and 64), `--duration`
   seconds of keep-alive POSTs (after `--warmup` discarded seconds) against (a) the gateway's invoke
   endpoint for one no-op function and (b) `bench/hello_baseline.py`, an aiohttp + uvloop server that
   parses the JSON with orjson, calls the same handler in-process and returns `orjson.dumps(result)`
   (the ceiling for one Python process). Same load generator, one target after the other. Reported:
   requests/s, latency percentiles, errors (socket errors and non-2xx) and the ratio gateway/baseline,
   plus the CPU used meanwhile (100 % = one core) by the server process, its whole process tree (gateway,
   zygotes, environments), the load generator, and the machine as a whole (what is left is other load on
   this shared, noisy machine). The load generator is `wrk` (POST body via a Lua script) if it is on PATH, else an
   asyncio raw-socket HTTP/1.1 keep-alive client in this process (no pipelining); which one is recorded.
   Nothing is pinned: the client shares the machine's cores with the servers, which the results note.

Servers are subprocesses in their own sessions, on free ports, with a temporary data dir; at the end
(or on error / SIGTERM / Ctrl-C) each gets SIGTERM and a wait, then SIGKILL of its process group.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import io
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: data directories live here, not under /tmp: environments then get their private /tmp mount, as with `make run`
SCRATCH = ROOT / ".bench-tmp"


def gateway_and_baseline(tmp: Path) -> tuple[Server, Server]:
    """The gateway under test (data in `tmp`, none of the caller's GATEWAY_* settings) and the hello-world baseline."""
    gw_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    gateway = Server(
        "gateway",
        [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp / "data")],
        tmp / "gateway.log",
        env=gw_env,
    )
    baseline = Server("baseline", [sys.executable, str(ROOT / "bench" / "hello_baseline.py")], tmp / "baseline.log")
    return gateway, baseline


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    SCRATCH.mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=SCRATCH)


RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
HANDLER_SOURCE = "def lambda_handler(e, c):\n    return e\n"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
INVOKE_PATH = "/2015-03-31/functions/{}/invocations"
INIT_RE = re.compile(r"Init Duration: ([0-9.]+) ms")
CLK_TCK = os.sysconf("SC_CLK_TCK")

WRK_LUA = """\
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,"
    .. "\\"errors\\":{\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d},"
    .. "\\"latency_us\\":{\\"mean\\":%.1f,\\"p50\\":%.1f,\\"p90\\":%.1f,\\"p99\\":%.1f,\\"max\\":%.1f}}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


# -- small helpers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(values_ms: Sequence[float], ps: Sequence[float] = (50, 90, 99)) -> dict[str, float | int]:
    """Count, mean, the given percentiles and max, in ms (rounded to µs)."""
    if not values_ms:
        return {"n": 0}
    s = sorted(values_ms)
    out: dict[str, float | int] = {"n": len(s), "mean": round(statistics.fmean(s), 3)}
    for p in ps:
        out[f"p{p:g}"] = round(percentile(s, p), 3)
    out["max"] = round(s[-1], 3)
    return out


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def invoke_request(port: int, function: str, extra_headers: str = "") -> bytes:
    """Pre-encoded keep-alive invoke request with body `{}`."""
    return (
        f"POST {INVOKE_PATH.format(function)} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 2\r\n{extra_headers}\r\n{{}}"
    ).encode()


def run_text(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk = shutil.which("wrk")
    return {
        "nproc": int(run_text(["nproc"]) or 0) or len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "aiohttp": package_version("aiohttp"),
        "uvloop": package_version("uvloop"),
        "orjson": package_version("orjson"),
        "wrk": run_text([wrk, "--version"]).splitlines()[0] if wrk else None,
        "git_commit": run_text(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(run_text(["git", "status", "--porcelain", "--untracked-files=no"])),
        "loadavg_start": os.getloadavg(),
    }


# -- CPU accounting from /proc -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    ppid: int
    starttime: int
    #: utime + stime + cutime + cstime, in clock ticks
    ticks: int


def proc_table() -> dict[int, ProcInfo]:
    """Every live process: pid -> ProcInfo."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2 :].split()  # fields from "state" on; comm may contain spaces
        table[int(entry.name)] = ProcInfo(int(f[1]), int(f[19]), sum(int(x) for x in f[11:15]))
    return table


def descendants(root: int, table: dict[int, ProcInfo]) -> set[int]:
    """`root` and every process below it (environments call setsid(), so sessions would miss them)."""
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks over all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


@dataclass
class CpuMeter:
    """CPU used while a block runs: by the server's whole process tree, its main process, the load
    generator (children of this process, or this process itself), and the machine as a whole."""

    root: int
    results: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        t0, table0, busy0 = time.monotonic(), proc_table(), machine_busy_ticks()
        client0 = _client_cpu()
        yield self.results
        wall = time.monotonic() - t0
        table1, busy1 = proc_table(), machine_busy_ticks()
        client1 = _client_cpu()

        def tree_ticks(table: dict[int, ProcInfo]) -> dict[tuple[int, int], int]:
            return {(pid, table[pid].starttime): table[pid].ticks for pid in descendants(self.root, table)}

        before, after = tree_ticks(table0), tree_ticks(table1)
        tree = sum(t - before.get(key, 0) for key, t in after.items())
        main0 = table0[self.root].ticks if self.root in table0 else 0
        main1 = table1[self.root].ticks if self.root in table1 else main0
        ncpu = os.cpu_count() or 1
        self.results.update(
            {
                "server_process_cpu_pct": round(100 * (main1 - main0) / CLK_TCK / wall, 1),
                "server_tree_cpu_pct": round(100 * tree / CLK_TCK / wall, 1),
                "server_tree_processes": len(after),
                "load_generator_cpu_pct": round(100 * (client1 - client0) / wall, 1),
                "machine_busy_pct": round(100 * ncpu * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1),
            }
        )
        r = self.results
        r["other_cpu_pct"] = round(r["machine_busy_pct"] - r["server_tree_cpu_pct"] - r["load_generator_cpu_pct"], 1)


def _client_cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# -- servers -----------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server subprocess in its own session, ready once GET /healthz answers 200."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: processes of its tree still alive after it exited (then SIGKILLed)
    survivors: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.argv, "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def health(self) -> Any:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return json.load(resp)
        except (OSError, ValueError) as exc:
            return {"error": repr(exc)}

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL the process group if it hangs. Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        table = proc_table()
        tree = {(pid, table[pid].starttime) for pid in descendants(proc.pid, table) if pid != proc.pid}
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # anything of its process group or tree still alive (e.g. orphaned environments) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        table = proc_table()
        self.survivors = 0
        for pid, start in tree:
            if pid in table and table[pid].starttime == start:
                self.survivors += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return proc.returncode


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- clients -----------------------------------------------------------------------------------------------


class RawClient:
    """A blocking keep-alive HTTP/1.1 client on one socket; responses must carry Content-Length."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """Send pre-encoded request bytes; return (status, raw header block, body)."""
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self.buf += self._recv()
        head, rest = self.buf[:end], self.buf[end + 4 :]
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError("response without Content-Length")
        eol = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17 : eol if eol >= 0 else len(lower)])
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return status, head, rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def header_value(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    return None


# -- 1. cold starts ----------------------------------------------------------------------------------------


def bench_cold(gateway: Server, n: int, run_id: str) -> dict[str, Any]:
    zip_b64 = base64.b64encode(make_zip({"lambda_function.py": HANDLER_SOURCE})).decode()
    conn = http.client.HTTPConnection(HOST, gateway.port, timeout=60)
    names = [f"bench-cold-{run_id}-{i}" for i in range(n)]
    create_errors: list[str] = []
    for name in names:
        body = json.dumps(
            {
                "FunctionName": name,
                "Runtime": "python3.12",
                "Role": ROLE,
                "Handler": "lambda_function.lambda_handler",
                "Code": {"ZipFile": zip_b64},
            }
        )
        conn.request("POST", "/2015-03-31/functions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 201:
            create_errors.append(f"{name}: {resp.status} {data[:200]!r}")
    conn.close()

    client = RawClient(gateway.port, timeout=60)
    client_ms: list[float] = []
    init_ms: list[float] = []
    non_200 = wrong_payload = missing_init = 0
    try:
        for name in names:
            raw = invoke_request(gateway.port, name, "X-Amz-Log-Type: Tail\r\n")
            t0 = time.perf_counter_ns()
            status, head, payload = client.request(raw)
            elapsed = (time.perf_counter_ns() - t0) / 1e6
            if status != 200:
                non_200 += 1
                continue
            client_ms.append(elapsed)
            if payload != b"{}":
                wrong_payload += 1
            log_result = header_value(head, "X-Amz-Log-Result")
            match = INIT_RE.search(base64.b64decode(log_result).decode(errors="replace")) if log_result else None
            if match:
                init_ms.append(float(match.group(1)))
            else:
                missing_init += 1
    finally:
        client.close()
    return {
        "functions": n,
        "client_ms": summarize(client_ms, (50, 90)),
        "init_duration_ms": summarize(init_ms, (50, 90)),
        "errors": {
            "create_failed": len(create_errors),
            "create_failures": create_errors[:5],
            "invoke_non_200": non_200,
            "wrong_payload": wrong_payload,
            "missing_init_duration": missing_init,
        },
    }


def create_noop(gateway: Server, name: str) -> None:
    zip_b64 = base64.b64encode(make_zip({"lambda_function.py": HANDLER_SOURCE})).decode()
    body = json.dumps(
        {
            "FunctionName": name,
            "Runtime": "python3.12",
            "Role": ROLE,
            "Handler": "lambda_function.lambda_handler",
            "Code": {"ZipFile": zip_b64},
        }
    ).encode()
    req = urllib.request.Request(
        gateway.url + "/2015-03-31/functions", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 201:
            raise RuntimeError(f"CreateFunction {name}: {resp.status}")


# -- 2. warm latency ---------------------------------------------------------------------------------------


def bench_warm(port: int, function: str, seconds: float, warmup: float, max_requests: int) -> dict[str, Any]:
    raw = invoke_request(port, function)
    client = RawClient(port, timeout=30)
    samples: list[float] = []
    non_200 = 0
    try:
        deadline = time.monotonic() + warmup
        while time.monotonic() < deadline:
            client.request(raw)
        started = time.monotonic()
        deadline = started + seconds
        while len(samples) < max_requests and time.monotonic() < deadline:
            t0 = time.perf_counter_ns()
            status, _, _ = client.request(raw)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            if status != 200:
                non_200 += 1
        elapsed = time.monotonic() - started
    finally:
        client.close()
    return {
        "latency_ms": summarize(samples, (50, 90, 99)),
        "requests_per_s": round(len(samples) / elapsed, 1),
        "non_200": non_200,
    }


# -- 3. throughput -----------------------------------------------------------------------------------------


def run_wrk(url: str, connections: int, seconds: float, threads: int, lua: Path) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    raw = json.loads(line[len("WRKJSON ") :])
    lat = raw["latency_us"]
    errors = raw["errors"]
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "latency_ms": {k: round(v / 1000, 3) for k, v in lat.items()},
        "errors": {
            "socket": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
            "non_2xx": errors["status"],
            **{f"wrk_{k}": v for k, v in errors.items()},
        },
    }


async def _asyncio_load(port: int, path: str, connections: int, seconds: float) -> dict[str, Any]:
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}"
    ).encode()
    latencies: list[float] = []
    counts = {"ok": 0, "non_2xx": 0, "socket": 0}
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            counts["socket"] += 1
            return
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter_ns()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                at = lower.index(b"content-length:")
                await reader.readexactly(int(lower[at + 15 : lower.index(b"\r\n", at)]))
                latencies.append((time.perf_counter_ns() - t0) / 1e6)
                counts["ok" if head[9:10] == b"2" else "non_2xx"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts["socket"] += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), seconds + 30)
    elapsed = time.monotonic() - started
    total = counts["ok"] + counts["non_2xx"]
    return {
        "requests": total,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(total / elapsed, 1),
        "latency_ms": summarize(latencies, (50, 90, 99)),
        "errors": {"socket": counts["socket"], "non_2xx": counts["non_2xx"]},
    }


def run_asyncio_load(port: int, path: str, connections: int, seconds: float) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_asyncio_load(port, path, connections, seconds))
    return uvloop.run(_asyncio_load(port, path, connections, seconds))


@dataclass
class LoadGenerator:
    use_wrk: bool
    threads: int
    lua: Path

    @property
    def description(self) -> str:
        if self.use_wrk:
            return f"wrk -t{self.threads} (Lua POST body '{{}}', keep-alive, no pipelining)"
        return "asyncio raw-socket HTTP/1.1 keep-alive client in the benchmark process (uvloop, no pipelining)"

    def run(self, server: Server, function: str, connections: int, seconds: float) -> dict[str, Any]:
        path = INVOKE_PATH.format(function)
        if self.use_wrk:
            return run_wrk(server.url + path, connections, seconds, self.threads, self.lua)
        return run_asyncio_load(server.port, path, connections, seconds)


def bench_throughput(
    gen: LoadGenerator, server: Server, function: str, connections: int, seconds: float, warmup: float
) -> dict[str, Any]:
    if warmup > 0:
        gen.run(server, function, connections, warmup)
    assert server.proc is not None
    meter = CpuMeter(server.proc.pid)
    with meter.measure():
        result = gen.run(server, function, connections, seconds)
    return result | {"cpu": meter.results}


# -- main --------------------------------------------------------------------------------------------------


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per throughput measurement (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each throughput run (2)")
    p.add_argument("--connections", default="32,64", help="comma-separated concurrencies (32,64)")
    p.add_argument("--cold-n", type=int, default=30, help="functions created for the cold-start test (30)")
    p.add_argument("--warm-seconds", type=float, default=5.0, help="seconds of sequential warm invokes (5)")
    p.add_argument("--warm-max", type=int, default=200_000, help="cap on sequential warm invokes (200000)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1: leave the cores to the servers)")
    p.add_argument("--no-wrk", action="store_true", help="use the built-in asyncio client even if wrk exists")
    p.add_argument("--out", type=Path, help="result file (default bench/results/core-<UTC timestamp>.json)")
    return p.parse_args(argv)


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\ncommit {m['git_commit']}  nproc {m['nproc']}  load generator: {r['load_generator']}")
    rows: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
        ("cold invoke, client", r["cold"]["client_ms"], ("p50", "p90", "max")),
        ("cold Init Duration (REPORT)", r["cold"]["init_duration_ms"], ("p50", "p90", "max")),
        ("warm sequential, gateway", r["warm"]["gateway"]["latency_ms"], ("p50", "p90", "p99")),
        ("warm sequential, baseline", r["warm"]["baseline"]["latency_ms"], ("p50", "p90", "p99")),
    ]
    for label, stats, keys in rows:
        cells = "  ".join(f"{k} {stats.get(k, '-'):>8} ms" for k in keys)
        print(f"{label:30} {cells}")
    head = f"{'throughput  conns':30} {'gateway r/s':>12} {'baseline r/s':>13} {'ratio':>6}"
    print(head + "  gateway run CPU%: proc/tree, client, other")
    for row in r["throughput"]:
        gw, bl = row["gateway"], row["baseline"]
        cpu = "/".join(str(gw["cpu"][k]) for k in ("server_process_cpu_pct", "server_tree_cpu_pct"))
        cpu += f"  client {gw['cpu']['load_generator_cpu_pct']}  other {gw['cpu']['other_cpu_pct']}"
        rates = f"{gw['requests_per_s']:>12.0f} {bl['requests_per_s']:>13.0f} {row['ratio']:>6.3f}"
        print(f"{row['connections']:>30} {rates}  {cpu}")
    print(f"errors: {r['error_totals']}")
    print(f"elapsed {r['elapsed_s']} s; wrote {r['out']} and {RESULTS / 'core-latest.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    connections = [int(c) for c in args.connections.split(",") if c.strip()]
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"core-{stamp}.json"
    t_start = time.monotonic()
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    result: dict[str, Any] = {
        "benchmark": "core",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine_facts(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }

    with scratch_dir("bench-core-") as tmp_name:
        tmp = Path(tmp_name)
        lua = tmp / "post.lua"
        lua.write_text(WRK_LUA)
        gen = LoadGenerator(use_wrk, args.wrk_threads, lua)
        result["load_generator"] = gen.description
        result["notes"] = [
            "Nothing is pinned: the load generator shares the machine's cores with the server under test "
            "(and, for the gateway, with its environment processes).",
            "Warm latency client: blocking raw socket, pre-encoded request, parses status + Content-Length "
            "only (a few µs per request); the baseline's warm figure is the floor for client + loopback + aiohttp.",
            "Cold client time is measured on an open keep-alive connection (no TCP connect).",
        ]
        gateway, baseline = gateway_and_baseline(tmp)
        try:
            with running(gateway), running(baseline):
                print(f"gateway on :{gateway.port}, baseline on :{baseline.port}; {gen.description}", flush=True)
                print(f"cold: creating and invoking {args.cold_n} functions...", flush=True)
                result["cold"] = bench_cold(gateway, args.cold_n, stamp.lower())

                noop = f"bench-noop-{stamp.lower()}"
                create_noop(gateway, noop)
                print(f"warm: {args.warm_seconds:g} s sequential per target...", flush=True)
                result["warm"] = {
                    "client": "blocking raw socket, one keep-alive connection, sequential",
                    "gateway": bench_warm(gateway.port, noop, args.warm_seconds, 1.0, args.warm_max),
                    "baseline": bench_warm(baseline.port, noop, args.warm_seconds, 1.0, args.warm_max),
                }

                rows = []
                for conns in connections:
                    row: dict[str, Any] = {"connections": conns}
                    for target, server in (("gateway", gateway), ("baseline", baseline)):
                        print(f"throughput: {target}, {conns} connections, {args.duration:g} s...", flush=True)
                        row[target] = bench_throughput(gen, server, noop, conns, args.duration, args.warmup)
                    row["ratio"] = round(row["gateway"]["requests_per_s"] / row["baseline"]["requests_per_s"], 3)
                    rows.append(row)
                result["throughput"] = rows
                result["gateway_health_end"] = gateway.health()
        finally:
            result["gateway_exit_code"] = gateway.stop()
            result["baseline_exit_code"] = baseline.stop()
            result["surviving_processes_killed"] = gateway.survivors + baseline.survivors
            gw_log = gateway.log_path.read_text(errors="replace") if gateway.log_path.exists() else ""
            result["gateway_log"] = {
                "error_lines": sum(1 for ln in gw_log.splitlines() if " ERROR " in ln or "Traceback" in ln),
                "warning_lines": sum(1 for ln in gw_log.splitlines() if " WARNING " in ln),
                "tail": gw_log.splitlines()[-5:],
            }

    result["machine"]["loadavg_end"] = os.getloadavg()
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["error_totals"] = error_totals(result)
    result["out"] = str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    out.write_text(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core-latest.json").write_text(text)
    print_table(result)
    return 0


def error_totals(r: dict[str, Any]) -> dict[str, int]:
    cold = r["cold"]["errors"]
    totals = {
        "cold_create_failed": cold["create_failed"],
        "cold_invoke_non_200": cold["invoke_non_200"],
        "cold_wrong_payload": cold["wrong_payload"],
        "warm_non_200": r["warm"]["gateway"]["non_200"] + r["warm"]["baseline"]["non_200"],
        "throughput_non_2xx": 0,
        "throughput_socket": 0,
        "gateway_log_errors": r["gateway_log"]["error_lines"],
    }
    for row in r["throughput"]:
        for target in ("gateway", "baseline"):
            totals["throughput_non_2xx"] += row[target]["errors"]["non_2xx"]
            totals["throughput_socket"] += row[target]["errors"]["socket"]
    return totals


if __name__ == "__main__":
    sys.exit(main())
