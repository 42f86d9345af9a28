"""The benchmark's baselines (bench/baselines/): each serves the invoke interface and stops cleanly on SIGTERM.

Every baseline is started as its registry command in its own session on a free loopback port; the tests
invoke it (one event, then several at once where it has several processes), send SIGTERM, and check that
it exits promptly and that no process of its session (workers, per-invoke children) is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.baselines import BASELINES, HEALTH_PATH, INVOKE_PATH, Baseline
from tests.conftest import free_port

GUNICORN = BASELINES["gunicorn"]
GUNICORN_SYNC = dataclasses.replace(GUNICORN, name="gunicorn_sync", args=("--worker-class", "sync", "--workers", "2"))
needs_gunicorn = pytest.mark.skipif(
    bool(GUNICORN.missing()),
    reason="gunicorn is not installed (it comes with the bench extra: pip install -e '.[bench]')",
)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def invoke_url(self, function_name: str = "hello") -> str:
        return self.url + INVOKE_PATH.format(function_name=function_name)


def request(url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, or of a POST of `body`."""
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers.get("Content-Type", ""), e.read()


def invoke(running: Running, event: Any) -> Any:
    status, content_type, body = request(running.invoke_url(), json.dumps(event).encode())
    assert status == 200, body
    assert content_type.startswith("application/json")
    return json.loads(body)


def session_members(sid: int) -> list[str]:
    """'pid state command' of every process whose session is `sid` (zombies included)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == sid or int(pgrp) == sid:
            members.append(f"{entry} {state} {comm}")
    return members


@contextlib.contextmanager
def running(baseline: Baseline, tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    log_path = tmp_path / f"{baseline.name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            baseline.argv(port), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"{baseline.name} exited with {proc.returncode}: {log_path.read_text()}"
            with contextlib.suppress(OSError):
                if request(url + HEALTH_PATH, timeout=1)[0] == 200:
                    break
            assert time.monotonic() < deadline, f"{baseline.name} not healthy: {log_path.read_text()}"
            time.sleep(0.05)
        yield Running(proc, url, log_path)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def stop_and_check(run: Running, timeout: float = 8.0) -> None:
    """SIGTERM the baseline; it must exit 0 within `timeout` and leave no process of its session behind."""
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    try:
        returncode = run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout} s after SIGTERM: {session_members(run.proc.pid)}")
    assert returncode == 0, run.log_path.read_text()
    assert time.monotonic() - started < timeout
    deadline = time.monotonic() + 3
    while members := session_members(run.proc.pid):
        assert time.monotonic() < deadline, f"left behind after SIGTERM: {members}"
        time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.killpg(run.proc.pid, 0)


def check_concurrent(run: Running, n: int = 12) -> None:
    events = [{"i": i, "payload": "x" * i, "nested": {"list": list(range(i))}} for i in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda event: invoke(run, event), events))
    assert results == events


@pytest.mark.parametrize(
    "baseline",
    [
        BASELINES["inprocess"],
        BASELINES["fresh_process"],
        pytest.param(GUNICORN, marks=needs_gunicorn),
        pytest.param(GUNICORN_SYNC, marks=needs_gunicorn),
    ],
    ids=lambda baseline: baseline.name,
)
def test_baseline_serves_invokes_and_stops_cleanly(baseline: Baseline, tmp_path: Path) -> None:
    with running(baseline, tmp_path) as run:
        assert request(run.url + HEALTH_PATH)[0] == 200
        assert invoke(run, {"a": 1}) == {"a": 1}
        if baseline.name != "inprocess":
            check_concurrent(run)
        stop_and_check(run)


def test_fresh_process_reports_a_failing_child_as_502(tmp_path: Path) -> None:
    with running(BASELINES["fresh_process"], tmp_path) as run:
        status, content_type, body = request(run.invoke_url(), b"not json")
        assert status == 502
        assert content_type.startswith("application/json")
        error = json.loads(body)
        assert error["errorType"] == "Runtime.ExitError"
        assert error["exitCode"] == 1
        assert "JSONDecodeError" in error["stderr"]
        assert invoke(run, [1, "two", None]) == [1, "two", None]
        stop_and_check(run)


def test_fresh_process_kills_running_children_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM while invocations are in flight: the children are killed, and nothing outlives the server."""
    with running(BASELINES["fresh_process"], tmp_path) as run, ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(request, run.invoke_url(), b"{}") for _ in range(8)]
        deadline = time.monotonic() + 5
        while len(session_members(run.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        stop_and_check(run)
        for future in futures:
            with contextlib.suppress(OSError):
                assert future.result(timeout=5)[0] in (200, 502, 503)


def test_registry() -> None:
    assert set(BASELINES) == {"inprocess", "fresh_process", "gunicorn"}
    for name, baseline in BASELINES.items():
        assert baseline.name == name
        assert baseline.script.is_file()
        argv = baseline.argv(8123)
        assert argv[0] == sys.executable
        assert argv[1:] == [str(baseline.script), "--host", "127.0.0.1", "--port", "8123"]
