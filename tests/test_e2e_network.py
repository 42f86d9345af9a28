"""The environments' network, end to end (isolation/network.py): outbound to other hosts, nothing of the host's, no
neighbours; GATEWAY_NETWORK=none; nothing left behind.

As root (the jail). A "remote" host is a network namespace the test makes, with a veth to the host and an address
outside the environments' range (198.51.100.0/24, a documentation range): traffic never leaves this machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.isolation import netlink as nl
from gateway.isolation.network import resolver_config
from tests.conftest import GatewayFactory, RunningGateway, create_function, free_port, invoke_json

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and the jail need root")

HOST_ADDRESS, REMOTE_ADDRESS = "198.51.100.1", "198.51.100.2"
#: the remote host also answers at a link-local address, as a cloud's metadata service would (not .169.254: the
#: test must not take over this machine's own)
METADATA_ADDRESS = "169.254.77.77"
#: other clouds' metadata services, which the remote host also answers at (each only where this machine is not on that
#: cloud: the test must not take over the host's own); Azure's WireServer also answers DNS (port 53), which passes
ALIBABA_METADATA, AZURE_WIRESERVER = "100.100.100.200", "168.63.129.16"


def _on_cloud() -> str:
    """This machine's cloud as its DMI says ("alibaba", "azure"), else ""."""
    try:
        vendor = Path("/sys/class/dmi/id/sys_vendor").read_text().lower()
        tag = Path("/sys/class/dmi/id/chassis_asset_tag").read_text().strip()
    except OSError:
        return ""
    if "alibaba" in vendor:
        return "alibaba"
    return "azure" if tag == "7783-7084-3265-9085" or "microsoft" in vendor else ""


_CLOUDS = (("alibaba_metadata", ALIBABA_METADATA, "alibaba"), ("wireserver", AZURE_WIRESERVER, "azure"))
#: the other clouds' addresses the remote host answers at here
CLOUD_ADDRESSES = {name: address for name, address, cloud in _CLOUDS if _on_cloud() != cloud}
#: a TCP server in the remote namespace: answers every connection with the address it came from, for 60 s at most
REMOTE_SERVER = """
import socket, sys, time
server = socket.socket()
server.bind(('0.0.0.0', int(sys.argv[2])))
server.listen()
server.settimeout(1)
print('ready', flush=True)
stop = time.time() + 60
while time.time() < stop:
    try:
        conn, peer = server.accept()
    except OSError:
        continue
    conn.sendall(('remote saw ' + peer[0]).encode())
    conn.close()
"""

CONNECT = """
import json, os, socket, urllib.error, urllib.request
def connect(addr, family=socket.AF_INET):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(addr if family == socket.AF_UNIX else tuple(addr))
            s.settimeout(2)
            return 'connected: ' + s.recv(100).decode(errors='replace')
    except OSError as exc:
        return type(exc).__name__
"""

PROBE = (
    CONNECT
    + """
def lambda_handler(event, context):
    out = {name: connect(addr) for name, addr in event['targets'].items()}
    try:  # unsigned: refused even though the main listener, on loopback without credentials, is open
        urllib.request.urlopen('http://%s:%d/healthz' % tuple(event['api']), timeout=2)
        out['api_status'] = 200
    except urllib.error.HTTPError as exc:
        out['api_status'] = exc.code
    import boto3  # signed with the environment's own session credentials, at AWS_ENDPOINT_URL_LAMBDA
    out['endpoint'] = os.environ['AWS_ENDPOINT_URL_LAMBDA']
    out['signed'] = boto3.client('lambda').get_function(FunctionName=context.function_name)['Configuration']['State']
    out['interfaces'] = sorted(n for _, n in socket.if_nameindex())
    out['resolv_conf'] = open('/etc/resolv.conf').read()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # sends nothing: picks the source address
        udp.connect(tuple(event['api']))
        out['address'] = udp.getsockname()[0]
    return out
"""
)


@pytest.fixture
def remote() -> Iterator[tuple[str, int]]:
    """A "remote host": a namespace with a TCP server at REMOTE_ADDRESS, a veth to the host at HOST_ADDRESS."""
    ns, host_link, remote_link = f"rmt{os.getpid()}", f"rmt{os.getpid()}h", f"rmt{os.getpid()}r"
    port = free_port()
    servers: list[subprocess.Popen[str]] = []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", host_link, "type", "veth", "peer", "name", remote_link, "netns", ns)
        ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", host_link)
        ip("link", "set", host_link, "up")
        ip("-n", ns, "addr", "add", f"{REMOTE_ADDRESS}/24", "dev", remote_link)
        ip("-n", ns, "link", "set", remote_link, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{METADATA_ADDRESS}/32", "dev", remote_link)
        ip("route", "add", f"{METADATA_ADDRESS}/32", "dev", host_link)
        for address in CLOUD_ADDRESSES.values():  # routes go with the link
            ip("-n", ns, "addr", "add", f"{address}/32", "dev", remote_link)
            ip("route", "add", f"{address}/32", "dev", host_link)
        ip("-n", ns, "route", "add", "100.64.0.0/10", "via", HOST_ADDRESS)  # it tries to reach environments
        for server_port in (port, 53):  # 53: as Azure's WireServer answers DNS
            command = ["ip", "netns", "exec", ns, sys.executable, "-c", REMOTE_SERVER, REMOTE_ADDRESS, str(server_port)]
            servers.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True))
            stdout = servers[-1].stdout
            assert stdout is not None and stdout.readline().strip() == "ready"
        yield REMOTE_ADDRESS, port
    finally:
        for server in servers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        subprocess.run(["ip", "link", "del", host_link], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def from_remote(address: str, port: int) -> str:
    """Connect from the remote host's namespace: what `CONNECT` says."""
    code = CONNECT + f"\nprint(connect(({address!r}, {port})))"
    ns = f"rmt{os.getpid()}"
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip()


@contextlib.contextmanager
def host_server(host: str) -> Iterator[int]:
    """A TCP server of the host's (a stand-in for a database) on `host`, answering 'host service'."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"host service")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        server.close()


def _network(gw: RunningGateway) -> dict[str, Any]:
    network = gw.health()["isolation"]["network"]
    assert network["mode"] == "namespace per environment", network
    return dict(network)


@as_root
def test_a_function_reaches_other_hosts_and_nothing_of_the_host(
    gateway_factory: GatewayFactory, remote: tuple[str, int]
) -> None:
    gw = gateway_factory()
    gateway_address = _network(gw)["gateway_address"]
    lam = gw.client()
    create_function(lam, "probe", PROBE, Timeout=30)
    with host_server("127.0.0.1") as loopback_port, host_server("0.0.0.0") as any_port:
        targets = {
            "remote": remote,
            "host_loopback": ("127.0.0.1", loopback_port),  # the function's own loopback: nothing listens there
            "host_address": (HOST_ADDRESS, any_port),  # the host's address towards the remote host
            "bridge_other_port": (gateway_address, any_port),  # the host's address towards the environments
            "api_on_loopback": ("127.0.0.1", gw.port),
            "metadata": (METADATA_ADDRESS, remote[1]),  # a cloud's metadata service: never
            **{name: (address, remote[1]) for name, address in CLOUD_ADDRESSES.items()},  # nor another cloud's
        }
        if "wireserver" in CLOUD_ADDRESSES:
            targets["wireserver_dns"] = (AZURE_WIRESERVER, 53)
        event = {"targets": targets, "api": [gateway_address, gw.port]}
        resp, out = invoke_json(lam, "probe", event)
        assert "FunctionError" not in resp, out
        # the test's own check: the host's services do answer, from the host
        with socket.create_connection(("127.0.0.1", loopback_port), timeout=2) as conn:
            assert conn.recv(100) == b"host service"
    assert out["remote"] == f"connected: remote saw {HOST_ADDRESS}"  # outbound works, masqueraded
    assert out["host_loopback"] == "ConnectionRefusedError"
    assert out["host_address"] == "TimeoutError"  # dropped by the gateway's input rules
    assert out["bridge_other_port"] == "TimeoutError"
    assert out["api_on_loopback"] == "ConnectionRefusedError"
    assert out["api_status"] == 403  # the environment-facing listener, and only it: signed requests only
    assert out["endpoint"] == f"http://{gateway_address}:{gw.port}"
    assert out["signed"] == "Active"
    assert out["metadata"] == "TimeoutError"
    for name, address in CLOUD_ADDRESSES.items():
        assert out[name] == "TimeoutError", (name, out)
        with socket.create_connection((address, remote[1]), timeout=2) as conn:  # the host itself does
            assert conn.recv(100).startswith(b"remote saw")
    if "wireserver" in CLOUD_ADDRESSES:
        assert out["wireserver_dns"] == f"connected: remote saw {HOST_ADDRESS}"  # Azure's DNS: reached
    with socket.create_connection((METADATA_ADDRESS, remote[1]), timeout=2) as conn:  # the host itself does
        assert conn.recv(100).startswith(b"remote saw")
    # other hosts reach neither the environment-facing listener nor an environment (here: the one that served)
    assert from_remote(gateway_address, gw.port) == "TimeoutError"
    assert from_remote(out["address"], 8080) == "TimeoutError"  # dropped: not even a refusal comes back
    assert out["interfaces"] == ["eth0", "lo"]
    assert out["resolv_conf"] == resolver_config()  # servers it can reach (not a loopback stub of the host's)


NEIGHBOUR = (
    CONNECT
    + """
import threading
SERVERS = []

def serve(server):
    while True:
        conn = server.accept()[0]
        conn.sendall(b'neighbour')
        conn.close()

def lambda_handler(event, context):
    if event.get('listen'):  # keep serving after this invocation returns: the environment stays warm
        tcp = socket.socket()
        tcp.bind(('0.0.0.0', event['port']))
        tcp.listen()
        unix = socket.socket(socket.AF_UNIX)
        unix.bind('\\0' + event['abstract'])
        unix.listen()
        for server in (tcp, unix):
            SERVERS.append(server)
            threading.Thread(target=serve, args=(server,), daemon=True).start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # sends nothing: picks the source address
            udp.connect((event['gateway'], 9))
            address = udp.getsockname()[0]
        return {'self_tcp': connect(('127.0.0.1', event['port'])),
                'self_unix': connect('\\0' + event['abstract'], socket.AF_UNIX),
                'address': address}
    return {'tcp': connect((event['address'], event['port'])),
            'unix': connect('\\0' + event['abstract'], socket.AF_UNIX)}
"""
)


@as_root
def test_functions_cannot_reach_each_others_sockets(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    network = _network(gw)
    lam = gw.client()
    create_function(lam, "a", NEIGHBOUR, Timeout=30)
    create_function(lam, "b", NEIGHBOUR, Timeout=30)
    port, abstract = 8080, f"lgw-test-{os.getpid()}"
    listen = {"listen": True, "port": port, "abstract": abstract, "gateway": network["gateway_address"]}
    _, a = invoke_json(lam, "a", listen)
    assert a["self_tcp"] == a["self_unix"] == "connected: neighbour"  # they do serve
    address = a["address"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(network["subnet"])
    resp, b = invoke_json(lam, "b", {"address": address, "port": port, "abstract": abstract})
    assert "FunctionError" not in resp, b
    assert b["tcp"] in ("TimeoutError", "OSError", "ConnectionRefusedError") and "connected" not in b["tcp"]
    assert b["unix"] == "ConnectionRefusedError"  # abstract sockets belong to the network namespace
    # no frames between them: every environment's port of a sub-bridge is isolated, and so is every trunk
    ports = subprocess.run(["bridge", "-d", "link", "show"], capture_output=True, text=True).stdout.split("\n")
    ours = [line for line in ports if re.match(rf"\d+: {network['bridge']}[vt]\d+", line)]
    assert sum(1 for line in ours if re.match(rf"\d+: {network['bridge']}v", line)) >= 2, ports
    assert all("isolated on" in ports[ports.index(line) + 1] for line in ours), ports
    # the same port is free in another environment: B can listen on it too
    _, b_listens = invoke_json(lam, "b", listen)
    assert b_listens["self_tcp"] == "connected: neighbour"


@as_root
def test_gateway_network_none_leaves_only_lo(gateway_factory: GatewayFactory, remote: tuple[str, int]) -> None:
    gw = gateway_factory()
    source = CONNECT + (
        "def lambda_handler(event, context):\n"
        "    return {'remote': connect(event['remote']), 'interfaces': [n for _, n in socket.if_nameindex()]}\n"
    )
    lam = gw.client()
    create_function(lam, "offline", source, Timeout=30, Environment={"Variables": {"GATEWAY_NETWORK": "none"}})
    create_function(lam, "online", source, Timeout=30, Environment={"Variables": {"GATEWAY_NETWORK": "default"}})
    _, offline = invoke_json(lam, "offline", {"remote": remote})
    _, online = invoke_json(lam, "online", {"remote": remote})
    assert offline == {"remote": "OSError", "interfaces": ["lo"]}  # ENETUNREACH: no route at all
    assert online["remote"].startswith("connected")


@pytest.mark.parametrize("value", ["NONE", "None", " none", "none ", "off", ""])
def test_gateway_network_takes_only_default_or_none(lam: Any, fname: str, value: str) -> None:
    variables = {"Variables": {"GATEWAY_NETWORK": value}}
    with pytest.raises(ClientError) as err:
        create_function(lam, fname, "def lambda_handler(e, c):\n    return 1\n", Environment=variables)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "GATEWAY_NETWORK" in err.value.response["Error"]["Message"]
    create_function(lam, fname, "def lambda_handler(e, c):\n    return 1\n")
    with pytest.raises(ClientError) as err:
        lam.update_function_configuration(FunctionName=fname, Environment=variables)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValueException"
    lam.update_function_configuration(FunctionName=fname, Environment={"Variables": {"GATEWAY_NETWORK": "none"}})


def _leftovers(bridge: str, owner: int | None = None) -> list[str]:
    """The links and firewall tables of gateway network `bridge` (lgw<slot>) that exist now; with `owner`, only a
    bridge whose alias names that gateway pid."""
    slot = bridge[3:]
    found = []
    with nl.Netlink() as rt, nl.Netlink(nl.NETLINK_NETFILTER) as nf:
        for _, name, _, alias in nl.links(rt):
            ours = owner is None or alias.split()[1:2] == [str(owner)]
            part = re.fullmatch(rf"{bridge}[vstu]\d+", name)  # environments' veths, sub-bridges, trunks
            if (name == bridge and ours) or (part and owner is None):
                found.append(name)
        found += [t for t in nl.nft_tables(nf, nl.NFPROTO_INET) if t == f"lambda_gateway_{slot}" and owner is None]
    return found


def _eventually_empty(bridge: str, owner: int | None = None, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _leftovers(bridge, owner)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@as_root
def test_nothing_is_left_after_a_stop_or_a_sigkill_and_restart(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    bridge = _network(gw)["bridge"]
    lam = gw.client()
    create_function(lam, "f", "def lambda_handler(e, c):\n    return 1\n")
    invoke_json(lam, "f")
    left = _leftovers(bridge)
    assert bridge in left and any(x.startswith(bridge + "v") for x in left) and bridge + "s0" in left
    first_pid = gw.proc.pid  # type: ignore[union-attr]
    gw.stop(signal.SIGKILL)  # its zygote and environments die with it; its bridge and table stay
    assert bridge in _leftovers(bridge, first_pid)
    gw.start()  # sweeps what the dead gateway left
    assert _eventually_empty(bridge, first_pid) == []
    bridge = _network(gw)["bridge"]
    invoke_json(gw.client(), "f")
    gw.stop()
    assert _eventually_empty(bridge) == []


@as_root
def test_without_its_network_a_gateway_fails_closed(gateway_factory: GatewayFactory) -> None:
    """When the host side cannot be made (here: every slot's name is taken), functions get only lo, never the
    host's network, and /healthz and the log say so."""
    made = []
    with open(f"/proc/{os.getpid()}/stat") as f:
        owner = f"lambda-gateway {os.getpid()} {f.read().rsplit(')', 1)[1].split()[19]}"  # a live one: not swept
    try:
        for slot in range(64):
            name = f"lgw{slot}"
            if subprocess.run(["ip", "link", "add", name, "type", "bridge"], capture_output=True).returncode == 0:
                made.append(name)
                subprocess.run(["ip", "link", "set", name, "alias", owner], check=True)
        gw = gateway_factory()
        network = gw.health()["isolation"]["network"]
        assert network["mode"] == "none" and "no free /16" in network["reason"]
        assert "the environments' network could not be set up" in gw.log()
        lam = gw.client()
        source = "import socket\ndef lambda_handler(e, c):\n    return [n for _, n in socket.if_nameindex()]\n"
        create_function(lam, "f", source)
        assert invoke_json(lam, "f")[1] == ["lo"]
    finally:
        for name in made:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
