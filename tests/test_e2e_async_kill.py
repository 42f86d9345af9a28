"""SIGKILL of the gateway with asynchronous events queued and in flight: after a restart every accepted event runs.

The witness is outside the gateway: the handler appends its request id to a file and fsyncs it before returning (the
gateway runs with GATEWAY_SANDBOX=rlimits so that a handler may write there). Every request id answered 202 must be
in the witness file at least once; duplicates are allowed (at least once, as on Lambda) and counted.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory, create_function

WITNESS = """
import os, time
def lambda_handler(event, context):
    time.sleep(0.05)
    fd = os.open(os.environ["WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (context.aws_request_id + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
"""
EVENTS = 300


def _witnessed(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_loses_no_accepted_event(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    witness = tmp_path / "witness.txt"
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits", "GATEWAY_ASYNC_CONCURRENCY": "4"})
    lam = gw.client(max_pool_connections=16)
    create_function(lam, "witnessed", WITNESS, Environment={"Variables": {"WITNESS": str(witness)}})

    def send(i: int) -> str:
        resp: dict[str, Any] = lam.invoke(FunctionName="witnessed", InvocationType="Event", Payload=b'{"i": %d}' % i)
        assert resp["StatusCode"] == 202
        return str(resp["ResponseMetadata"]["RequestId"])

    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(send, range(EVENTS)))
    gw.stop(signal.SIGKILL)  # right after the last 202: most events wait in the queue, a few run
    before = set(_witnessed(witness))
    assert len(before) < EVENTS, "the kill came too late to test anything"
    gw.start()
    deadline = time.monotonic() + 60
    while not set(accepted) <= set(_witnessed(witness)) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = _witnessed(witness)
    lost = set(accepted) - set(seen)
    duplicates = len(seen) - len(set(seen))
    print(f"accepted {EVENTS}, ran before the kill {len(before)}, lost {len(lost)}, duplicates {duplicates}")
    assert not lost
    assert set(seen) <= set(accepted)
    assert duplicates <= 4  # at most the attempts in flight at the kill (GATEWAY_ASYNC_CONCURRENCY) run twice
