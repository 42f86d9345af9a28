"""The environments' sub-bridges (isolation/network.py): beyond one bridge's 1,023 ports, with the same isolation.

As root: a real HostNetwork with its sub-bridges and table, and real environments' sides, each a process that enters
a network namespace of its own and runs `attach` (as runtimes/python/jail.py does). Both sides lower the per-bridge
port count to 2 and the sub-bridges to 3, so that 6 environments fill the network (each process sets the module's
constants itself: the same code, a smaller cap).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.isolation import netlink as nl
from gateway.isolation import network
from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
ROOT = str(Path(__file__).resolve().parent.parent)
PORTS, BRIDGES = 2, 3

#: an environment's network side: attach, say its address, then serve TCP on it or connect where told (stdin)
ENVIRONMENT = f"""
import ctypes, socket, sys
from gateway.isolation import network
network.PORTS_PER_BRIDGE, network.SUB_BRIDGES = {PORTS}, {BRIDGES}
host = network.HostSide(int(sys.argv[1]))
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
    raise OSError(ctypes.get_errno(), 'unshare')
try:
    print('address', network.attach(host), flush=True)
except OSError as exc:
    print('failed', exc.errno, exc.strerror, flush=True)
    sys.exit(0)
server = socket.socket()
server.bind(('0.0.0.0', 8080))
server.listen()
for line in sys.stdin:
    host, port = line.split()
    try:
        with socket.create_connection((host, int(port)), timeout=1) as conn:
            print('connected', conn.recv(100).decode(), flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
"""

#: a gateway that dies with SIGKILL once its network is up (what the next start's sweep must clean)
DYING_GATEWAY = f"""
import os, signal
from gateway.isolation import network
network.PORTS_PER_BRIDGE, network.SUB_BRIDGES = {PORTS}, {BRIDGES}
print(network.HostNetwork.create(9).slot, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


class Environment:
    """One environment's process: `address` (None: attach failed, `failure` says how)."""

    def __init__(self, slot: int) -> None:
        command = [sys.executable, "-c", ENVIRONMENT, str(slot)]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split(None, 1)
        self.address = first[1].strip() if first[0] == "address" else None
        self.failure = first[1].strip() if first[0] == "failed" else ""

    def connect(self, host: str, port: int) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{host} {port}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def sub_bridge(self, slot: int) -> str:
        """The sub-bridge its host-side veth is a port of."""
        assert self.address is not None
        index = int(self.address.split(".")[2]) * 256 + int(self.address.split(".")[3])
        return os.path.basename(os.readlink(f"/sys/class/net/lgw{slot}v{index}/master"))

    def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def small_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[network.HostNetwork]:
    """A gateway's network with BRIDGES sub-bridges of PORTS environments each, and its listener on the gateway's
    address answering 'gateway'."""
    monkeypatch.setattr(network, "PORTS_PER_BRIDGE", PORTS)
    monkeypatch.setattr(network, "SUB_BRIDGES", BRIDGES)
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    host = network.HostNetwork.create(listener.getsockname()[1])
    if host.slot is None:
        listener.close()
        pytest.fail(host.reason)
    listener.close()
    with socket.create_server((host.gateway_address or "", host.port)) as server:
        server.settimeout(0.2)
        stop = False

        def serve() -> None:
            while not stop:
                with contextlib.suppress(TimeoutError):
                    conn = server.accept()[0]
                    conn.sendall(b"gateway")
                    conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield host
        finally:
            stop = True
            thread.join()
            host.close()


def _parts(slot: int) -> list[str]:
    """The sub-bridges and trunk ends of slot `slot` that exist now."""
    with nl.Netlink() as rt:
        return [name for _, name, _, _ in nl.links(rt) if re.fullmatch(rf"lgw{slot}[stu]\d+", name)]


@as_root
def test_environments_fill_every_sub_bridge_and_reach_only_the_gateway(small_network: network.HostNetwork) -> None:
    slot = small_network.slot
    assert slot is not None and small_network.describe()["capacity"] == PORTS * BRIDGES
    assert sorted(_parts(slot)) == sorted(
        [network.sub_bridge_name(slot, k) for k in range(BRIDGES)]
        + [name for k in range(BRIDGES) for name in network.trunk_names(slot, k)]
    )
    envs: list[Environment] = []
    try:
        for _ in range(PORTS * BRIDGES):
            envs.append(Environment(slot))
        assert all(env.address is not None for env in envs), [env.failure for env in envs]
        # each sub-bridge holds exactly PORTS environments: once one is full the next go to the next ones
        on = sorted(env.sub_bridge(slot) for env in envs)
        assert on == sorted(network.sub_bridge_name(slot, k) for k in range(BRIDGES) for _ in range(PORTS))
        extra = Environment(slot)
        envs.append(extra)
        assert extra.address is None and extra.failure.startswith(f"{54} ")  # EXFULL
        assert network.NO_ROOM in extra.failure
        first = envs[0]
        neighbour = next(env for env in envs[1:] if env.sub_bridge(slot) == first.sub_bridge(slot))
        far = next(env for env in envs[1:] if env.sub_bridge(slot) != first.sub_bridge(slot))
        gateway = small_network.gateway_address
        assert gateway is not None
        for env in (first, neighbour, far):
            assert env.connect(gateway, small_network.port) == "connected gateway"
            assert env.connect(gateway, 22) == "TimeoutError"  # another port of the host's: dropped
        for a, b in ((first, neighbour), (neighbour, first), (first, far), (far, first)):
            assert b.address is not None
            result = a.connect(b.address, 8080)  # b listens there; frames between them go nowhere (no ARP either)
            assert result in ("TimeoutError", "OSError") and "connected" not in result, result
        # no neighbour entry was ever resolved: ARP between environments gets no answer, on one sub-bridge or two
        neigh = subprocess.run(
            ["nsenter", "-t", str(first.proc.pid), "-n", "ip", "neigh", "show"], capture_output=True, text=True
        )
        for env in (neighbour, far):
            assert not re.search(rf"^{re.escape(env.address or '')} .*lladdr", neigh.stdout, re.M), neigh.stdout
        # environments' ports are isolated on their sub-bridges, and so is every trunk on the gateway's bridge
        for env in envs[:-1]:
            assert env.address is not None
            index = int(env.address.split(".")[2]) * 256 + int(env.address.split(".")[3])
            assert Path(f"/sys/class/net/lgw{slot}v{index}/brport/isolated").read_text().strip() == "1"
        for k in range(BRIDGES):  # a sub-bridge answers no ARP: it never poses as the gateway
            assert Path(f"/proc/sys/net/ipv4/conf/{network.sub_bridge_name(slot, k)}/arp_ignore").read_text() == "8\n"
            trunk, peer = network.trunk_names(slot, k)
            assert Path(f"/sys/class/net/{trunk}/brport/isolated").read_text().strip() == "1"
            assert Path(f"/sys/class/net/{peer}/master").resolve().name == network.sub_bridge_name(slot, k)
    finally:
        for env in envs:
            env.end()
    small_network.close()
    assert _parts(slot) == []


@as_root
def test_the_sweep_removes_a_dead_gateways_sub_bridges_and_trunks() -> None:
    done = subprocess.run([sys.executable, "-c", DYING_GATEWAY], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    slot = int(done.stdout.strip())
    assert len(_parts(slot)) == 3 * BRIDGES  # left behind: a sub-bridge and two trunk ends each
    network.HostNetwork.create(9).close()  # the next start sweeps first (then takes a slot: maybe that one)
    assert _parts(slot) == []
    with nl.Netlink(nl.NETLINK_NETFILTER) as nf:
        assert network.table_name(slot) not in nl.nft_tables(nf, nl.NFPROTO_INET)
    assert not os.path.exists(f"/sys/class/net/{network.bridge_name(slot)}")


SLOW = "import time\ndef lambda_handler(e, c):\n    time.sleep(0.3)\n    return 1\n"


def _forks(gw: RunningGateway) -> float:
    status, _, body = gw.request("GET", "/metrics")
    assert status == 200
    match = re.search(rb"^gateway_fork_seconds_count(?:\{[^}]*\})? (\S+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


@as_root
def test_no_fork_storm_while_environments_cannot_be_set_up(gateway_factory: GatewayFactory) -> None:
    """The host side breaks (here: its sub-bridges are gone, so every environment fails in `attach`): a loaded
    function's cold starts fail at once instead of forking one environment per invocation, and the log says why
    once."""
    gw = gateway_factory()
    net = gw.health()["isolation"]["network"]
    lam = gw.client()
    create_function(lam, "f", SLOW)
    invoke_json(lam, "f")
    for k in range(net["sub_bridges"]):
        subprocess.run(["ip", "link", "del", f"{net['bridge']}s{k}"], check=True)
    before = _forks(gw)
    clients = [gw.client() for _ in range(8)]

    def load(client: Any) -> list[str]:
        outcomes, stop = [], time.monotonic() + 3
        while time.monotonic() < stop:
            try:
                resp, _ = invoke_json(client, "f")
                outcomes.append(resp.get("FunctionError", "ok"))  # Unhandled: an environment died in its set-up
            except ClientError as exc:
                outcomes.append(exc.response["Error"]["Code"])
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for batch in pool.map(load, clients) for o in batch]
    forks = _forks(gw) - before
    assert outcomes.count("ServiceException") > 20, (forks, outcomes)  # each a cold start that did not fork
    assert forks <= 12, (forks, len(outcomes))  # pauses of 0.1, 0.2, 0.4 ... s, one fork after each
    said = gw.log().count("environments of f cannot be set up")
    assert said == 1, gw.log()[-3000:]
    assert "No such device" in gw.log()


@as_root
def test_at_stop_the_links_go_before_the_firewall_and_a_link_that_stays_keeps_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S1 (review 19): the table is deleted only once the bridge and its parts are gone; if they cannot be deleted,
    the table stays (lgw<n> is never up unfiltered). Also: br_netfilter on, the start says what other firewalls need."""
    monkeypatch.setattr(network, "PORTS_PER_BRIDGE", PORTS)
    monkeypatch.setattr(network, "SUB_BRIDGES", BRIDGES)
    sysctl = tmp_path / "bridge-nf-call-iptables"
    sysctl.write_text("1\n")
    monkeypatch.setattr(network, "BRIDGE_NF_CALL_IPTABLES", str(sysctl))
    caplog.set_level(logging.WARNING, "gateway.network")
    host = network.HostNetwork.create(9)
    slot = host.slot
    assert slot is not None, host.reason
    assert any('oifname "lgw*" accept' in r.getMessage() for r in caplog.records), caplog.text

    def tables() -> list[str]:
        with nl.Netlink(nl.NETLINK_NETFILTER) as nf:
            return nl.nft_tables(nf, nl.NFPROTO_INET)

    real_request, real_batch = nl.Netlink.request, nl.nft_batch
    try:

        def refuse(self: nl.Netlink, message: nl.Message) -> None:
            if message[0] == nl.RTM_DELLINK:
                raise OSError(errno.EBUSY, "refused by the test")
            real_request(self, message)

        monkeypatch.setattr(nl.Netlink, "request", refuse)
        host.close()
        assert host.slot == slot and network.table_name(slot) in tables()  # the bridge stays, and so does its table
        assert os.path.exists(f"/sys/class/net/{network.bridge_name(slot)}") and len(_parts(slot)) == 3 * BRIDGES
        monkeypatch.setattr(nl.Netlink, "request", real_request)
        seen: list[bool] = []

        def batch(nf: nl.Netlink, family: int, messages: list[nl.Message]) -> None:
            seen.append(os.path.exists(f"/sys/class/net/{network.bridge_name(slot)}") or bool(_parts(slot)))
            real_batch(nf, family, messages)

        monkeypatch.setattr(nl, "nft_batch", batch)
        host.close()  # again: now everything goes, the links first
        assert seen == [False] and host.slot is None
    finally:
        monkeypatch.setattr(nl.Netlink, "request", real_request)
        monkeypatch.setattr(nl, "nft_batch", real_batch)
        host.close()
    assert _parts(slot) == [] and network.table_name(slot) not in tables()
    assert not os.path.exists(f"/sys/class/net/{network.bridge_name(slot)}")
