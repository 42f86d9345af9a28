"""Uids end to end (jail mode, as root): no environment ever shares its uid with a process another one left behind,
however small the range, across a gateway's SIGKILL and restart; and nothing of an environment outlives its gateway.

Leftovers are made by the test, as a gateway without these defences (uid = base + pid, no sweep when the gateway
died) or a host without cgroups would have left a function's detached daemon: a process of an environment's uid, in
a session of its own, that nobody is going to kill.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DAEMON, RUNTIME, GatewayFactory, alive, create_function, gone, invoke_json, wait_for
from tests.test_e2e_lifecycle import DETACHED

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root")

COUNT = 4
WHO = "import os\ndef lambda_handler(event, context):\n    return {'uid': os.getuid(), 'pid': os.getpid()}\n"


def _uid_pids(uid: int, zombies: bool = False) -> set[int]:
    """Live processes whose real uid is `uid` (and its zombies, if `zombies`)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, StopIteration), open(f"/proc/{entry}/status") as f:
                if int(next(line for line in f if line.startswith("Uid:")).split()[1]) == uid and (
                    zombies or alive(int(entry))
                ):
                    found.add(int(entry))
    return found


def _reaped(uids: range, timeout: float = 10.0) -> bool:
    """Whether no process of `uids`, not even a zombie, is left within `timeout` seconds. A zombie holds its uid (the
    allocator skips it), and this machine's PID 1 reaps the orphans of a killed gateway only after a while: with a
    range of 4 uids, that would leave none to hand out."""
    deadline = time.monotonic() + timeout
    while any(_uid_pids(uid, zombies=True) for uid in uids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Leftovers:
    """Processes of chosen uids, each in a session of its own; reaped by a thread when killed (a zombie would
    hold its uid), and killed at the end of the test."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def leave(self, uids: range) -> None:
        for uid in uids:
            proc = subprocess.Popen(["sleep", "600"], user=uid, group=uid, start_new_session=True)
            threading.Thread(target=proc.wait, daemon=True).start()
            self.procs[uid] = proc

    def alive(self, uid: int) -> bool:
        return alive(self.procs[uid].pid)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


@pytest.fixture
def leftovers() -> Iterator[Leftovers]:
    left = Leftovers()
    yield left
    left.close()


def _new_environment(lam: Any, name: str) -> dict[str, Any]:
    """Invoke `name` in a new environment (its configuration changed: the old ones are retired) and return its uid
    and pid while it is still alive."""
    lam.update_function_configuration(FunctionName=name, Description=str(time.monotonic()))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    resp, out = invoke_json(lam, name, LogType="Tail")
    assert "FunctionError" not in resp, (out, base64.b64decode(resp["LogResult"]))
    return dict(out)


@pytest.fixture
def small_range() -> Iterator[tuple[range, Path]]:
    """A range of this test's own, of COUNT uids (reuse comes every COUNT), and its counter, removed afterwards."""
    base = 2_200_000_000 + (os.getpid() % 10_000) * 100
    state = Path("/run/lambda-gateway") / f"uids-{base}-{COUNT}"
    state.unlink(missing_ok=True)
    yield range(base, base + COUNT), state
    state.unlink(missing_ok=True)


def test_a_leftover_never_shares_a_uid_with_a_later_environment(
    gateway_factory: GatewayFactory, leftovers: Leftovers, small_range: tuple[range, Path]
) -> None:
    uids, state = small_range
    base = uids.start
    leftovers.leave(uids)  # every uid of the range already has a process when the gateway starts
    gw = gateway_factory(env={"GATEWAY_UID_BASE": str(base), "GATEWAY_UID_COUNT": str(COUNT)})
    lam = gw.client()
    create_function(lam, "b", WHO)
    seen = []
    for _ in range(COUNT + 2):  # around the range, and further: every uid is handed out again
        env = _new_environment(lam, "b")
        seen.append(env["uid"])
        assert env["uid"] in uids
        assert not leftovers.alive(env["uid"])  # killed before the uid was handed out
        assert _uid_pids(env["uid"]) == {env["pid"]}  # nothing else has it: not a leftover, not an older environment
    assert set(seen) == set(uids)

    create_function(lam, "a", DAEMON)
    _, uid_a = invoke_json(lam, "a")
    assert len(_uid_pids(uid_a)) == 2  # its environment and its daemon
    gw.stop(signal.SIGKILL)  # the gateway alone: its zygote learns it (PDEATHSIG) and kills what it left
    assert gone(_uid_pids(uid_a), timeout=10.0)
    assert state.read_text().strip().isdigit()  # the counter outlives the gateway (see tests/test_uids.py)

    leftovers.close()
    assert _reaped(uids)
    leftovers.leave(uids)  # and again, for the restarted gateway
    gw.start()
    lam = gw.client()
    for _ in range(COUNT):  # the processes the killed gateway's environments left (zombies, maybe) are no exception
        env = _new_environment(lam, "b")
        assert not leftovers.alive(env["uid"]) and _uid_pids(env["uid"]) == {env["pid"]}


def test_no_process_of_an_environment_outlives_a_gateway_sigkill(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    create_function(lam, "daemon", DAEMON)
    create_function(lam, "who", WHO)
    _, uid = invoke_json(lam, "daemon")
    _, who = invoke_json(lam, "who")
    pids = _uid_pids(uid) | _uid_pids(who["uid"])
    assert len(pids) == 3
    assert gw.proc is not None
    zygote = int(gw.health()["runtimes"][RUNTIME]["pid"])
    gw.proc.send_signal(signal.SIGKILL)  # not its process group: the zygote, in a session of its own, lives on
    gw.proc.wait()
    # The daemon too, though it left its environment's session; by the zygote, at once (other gateways starting on
    # this host would sweep the dead one's cgroups too, but later).
    assert gone(pids, timeout=3.0)
    assert gone({zygote}, timeout=3.0)
    assert re.search(f"zygote {zygote}: the gateway died; killed what [23] environments left", gw.log())  # +a spare


def test_a_jailed_environment_learns_no_host_path_nor_the_gateways_pid(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    lam = gw.client()
    source = """
import os
def lambda_handler(event, context):
    return {'runtime_dir': os.environ['LAMBDA_RUNTIME_DIR'], 'bootstrap': os.listdir(os.environ['LAMBDA_RUNTIME_DIR']),
            'cmdline': open('/proc/self/cmdline', 'rb').read().decode(), 'ppid': os.getppid(),
            'environ': open('/proc/self/environ', 'rb').read().decode()}
"""
    create_function(lam, "paths", source)
    resp, out = invoke_json(lam, "paths")
    assert "FunctionError" not in resp, out
    assert out["runtime_dir"] == "/var/runtime" and "bootstrap.py" in out["bootstrap"]  # as on Lambda
    assert out["cmdline"].rstrip("\0") == "/var/lang/bin/python3\0/var/runtime/bootstrap.py"
    assert out["environ"].strip("\0") == ""  # the zygote's: GATEWAY_PID, PYTHONPATH (a host path): all gone
    assert str(gw.data_dir) not in out["cmdline"] and out["ppid"] != gw.proc.pid  # type: ignore[union-attr]


def test_without_a_jail_too_a_handlers_process_dies_with_a_gateway_sigkill(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(env={"GATEWAY_SANDBOX": "rlimits"})  # as root: no uids, no cgroups, a private /tmp
    if gw.health()["isolation"].get("private_tmp") is False:
        pytest.skip("the data directory is under /tmp (a checkout there): no private /tmp mount to find processes by")
    lam = gw.client()
    create_function(lam, "spawner", DETACHED)
    child = invoke_json(lam, "spawner")[1]["child"]
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait()
    assert gone({child}, timeout=5.0)  # the zygote found it by its mounts of the data directory
    wait_for(
        lambda: "the gateway died" in gw.log(), timeout=10.0, what="the zygote's line (it may come after the kill)"
    )
