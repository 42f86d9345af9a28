"""What the benchmark scripts share: servers in their own sessions, CPU accounting from /proc, machine facts, a
blocking raw HTTP client, and the Lambda API calls that deploy the no-op function.

Servers (`Server`) are subprocesses in their own sessions, on free loopback ports; `running()` starts one, waits
until `GET /healthz` answers 200, and at the end (or on error / SIGTERM / Ctrl-C) sends SIGTERM, waits, then
SIGKILLs its process group and anything of its process tree still alive, counting those survivors.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import platform
import re
import resource
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
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: data directories live here, not under /tmp: environments then get their private /tmp mount, as with `make run`
SCRATCH = ROOT / ".bench-tmp"


def gateway_server(tmp: Path, name: str = "gateway", **settings: str) -> Server:
    """The gateway under test: data in `tmp/<name>-data`, none of the caller's GATEWAY_* settings but `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(settings)
    argv = [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp / f"{name}-data")]
    return Server(name, argv, tmp / f"{name}.log", env=env)


def baseline_server(tmp: Path, name: str) -> Server:
    """One of bench/baselines/ (`inprocess`, `fresh_process`, `gunicorn`), as a Server."""
    script = ROOT / "bench" / "baselines" / f"{'gunicorn_app' if name == 'gunicorn' else name}.py"
    return Server(name, [sys.executable, str(script), "--host", HOST], tmp / f"{name}.log")


def gateway_and_baseline(tmp: Path) -> tuple[Server, Server]:
    """The gateway under test and the in-process hello-world baseline (a)."""
    return gateway_server(tmp), baseline_server(tmp, "inprocess")


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    SCRATCH.mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=SCRATCH)


RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"


def function_log(port: int, function: str, since: float) -> bytes:
    """A function's stored log lines since `since` (epoch seconds, minus 1 s of slack), from the gateway's logs API
    (`GET /gateway/v1/functions/{F}/logs`): where the scenarios read back when their handlers started."""
    with urllib.request.urlopen(
        f"http://{HOST}:{port}/gateway/v1/functions/{function}/logs?since={since - 1:.3f}", timeout=30
    ) as resp:
        body: bytes = resp.read()
    return body


HANDLER_SOURCE = "def lambda_handler(e, c):\n    return e\n"
ROLE = "arn:aws:iam::123456789012:role/lambda-role"
#: the runtime of the gateway's own Python, which its zygote runs from the start: the figures measure the gateway, not
#: another interpreter (other Python versions start their zygote at their first invoke)
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
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
    #: ended, waiting to be reaped (where PID 1 does not reap orphans, such zombies can stay for good)
    zombie: bool = False


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
        table[int(entry.name)] = ProcInfo(int(f[1]), int(f[19]), sum(int(x) for x in f[11:15]), f[0] == "Z")
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
    #: where it runs (default: this checkout); bench/compare.py runs other checkouts' gateways
    cwd: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.argv, "--port", str(self.port)],
                cwd=self.cwd or ROOT,
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
            if pid in table and table[pid].starttime == start and not table[pid].zombie:
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


def create_noop(gateway: Server, name: str) -> None:
    zip_b64 = base64.b64encode(make_zip({"lambda_function.py": HANDLER_SOURCE})).decode()
    body = json.dumps(
        {
            "FunctionName": name,
            "Runtime": RUNTIME,
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


# -- wrk (bench/concurrency.py's throttling storm) ---------------------------------------------------------


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
