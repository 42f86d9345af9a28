"""What a function prints: through a pipe the gateway reads into a bounded buffer, never to the host's disk.

An invocation's log keeps the last OUTPUT_LIMIT bytes of its output; when more was printed, a marker line says how
many bytes were dropped. Neither the data directory nor the gateway's memory grows with what a function prints.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from gateway.execution.environment import OUTPUT_LIMIT
from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

FLOOD = """
import os, subprocess, sys
def lambda_handler(event, context):
    print("first line")
    block = (b"x" * 1023 + b"\\n") * 1024  # 1 MB
    for _ in range(event["mb"]):
        os.write(1, block)
    if event["mb"]:
        subprocess.run(["sh", "-c", "head -c 1048576 /dev/zero | tr '\\\\0' z; echo"], check=True)  # a child's, too
    sys.stderr.write("y" * 100 + "\\n")
    print("last line")
    return event["mb"]
"""

BACKGROUND = """
import os, threading
def _flood():
    block = b"b" * 65536
    while True:
        os.write(1, block)
def lambda_handler(event, context):
    if event.get("start"):
        threading.Thread(target=_flood, daemon=True).start()
    print("invocation", event.get("n"))
    return "ok"
"""


def _disk_kb(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks // 2
            except OSError:
                continue
    return total


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stored_log(gw: RunningGateway, name: str, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while True:
        text = gw.request("GET", f"/gateway/v1/functions/{name}/logs")[2].decode()
        if f"REPORT RequestId: {request_id}" in text or time.monotonic() > deadline:
            start = text.index(f"START RequestId: {request_id}")
            return text[start : text.index(f"END RequestId: {request_id}")]
        time.sleep(0.05)


def test_a_flood_of_output_stays_off_disk_and_out_of_the_gateways_memory(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    assert gw.proc is not None
    lam = gw.client()
    create_function(lam, "flood", FLOOD, Timeout=120, EphemeralStorage={"Size": 10240})
    invoke_json(lam, "flood", {"mb": 1})  # warm: an environment, the log store's file
    disk_before, rss_before = _disk_kb(gw.data_dir), _rss_kb(gw.proc.pid)
    peaks = {"disk": disk_before, "rss": rss_before}
    done = threading.Event()

    def sample() -> None:
        assert gw.proc is not None
        while not done.wait(0.1):
            peaks["disk"] = max(peaks["disk"], _disk_kb(gw.data_dir))
            peaks["rss"] = max(peaks["rss"], _rss_kb(gw.proc.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    mb = 3000  # what stayed on the host's disk before output went through a pipe
    started, cpu = time.monotonic(), _cpu_seconds(gw.proc.pid)
    try:
        resp, out = invoke_json(lam, "flood", {"mb": mb})
    finally:
        done.set()
        sampler.join()
    assert "FunctionError" not in resp and out == mb
    elapsed = time.monotonic() - started
    disk, rss = peaks["disk"] - disk_before, peaks["rss"] - rss_before
    cpu = _cpu_seconds(gw.proc.pid) - cpu
    print(f"{mb} MB printed in {elapsed:.2f} s: data dir +{disk} kB, RSS +{rss} kB (peaks), gateway CPU {cpu:.2f} s")
    assert peaks["disk"] - disk_before < 4 * 1024, peaks  # the log store's copy (at most OUTPUT_LIMIT), no more
    assert peaks["rss"] - rss_before < 64 * 1024, peaks
    log = _stored_log(gw, "flood", resp["ResponseMetadata"]["RequestId"])
    marker = re.search(
        r"\[gateway\] (\d+) bytes of earlier output dropped: an invocation's log keeps its last (\d+)", log
    )
    assert marker is not None, log[:300]
    printed = len("first line\n") + mb * 1024 * 1024 + 1024 * 1024 + 1 + 101 + len("last line\n")
    kept = len(log.split("\n", 2)[2].encode())  # after the START and marker lines
    assert int(marker.group(2)) == OUTPUT_LIMIT
    assert int(marker.group(1)) + kept == printed
    assert OUTPUT_LIMIT - 1024 <= kept <= OUTPUT_LIMIT
    assert log.endswith("y" * 100 + "\nlast line\n") and "first line" not in log
    resp, out = invoke_json(lam, "flood", {"mb": 0})  # the same environment serves the next one, unmarked
    log = _stored_log(gw, "flood", resp["ResponseMetadata"]["RequestId"])
    assert out == 0 and "first line" in log and "[gateway]" not in log


def test_output_printed_in_the_background_costs_the_idle_gateway_nothing(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    assert gw.proc is not None
    lam = gw.client()
    create_function(lam, "background", BACKGROUND)
    resp, _ = invoke_json(lam, "background", {"start": True, "n": 1})
    time.sleep(0.5)  # the pipe and the buffer fill up, then the gateway stops reading
    cpu = _cpu_seconds(gw.proc.pid)
    time.sleep(2)
    assert _cpu_seconds(gw.proc.pid) - cpu < 0.3  # a reading gateway would spend most of a core
    resp, out = invoke_json(lam, "background", {"n": 2})  # still served; its log says what was dropped
    log = _stored_log(gw, "background", resp["ResponseMetadata"]["RequestId"])
    assert out == "ok" and "bytes of earlier output dropped" in log
    assert len(log.encode()) < OUTPUT_LIMIT + 1024
