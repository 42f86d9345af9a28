"""Each jailed environment's own network: outbound to other hosts, nothing of the host or of other environments.

Layout (as root, jail mode), per gateway, in a slot `n` (0..63) that it claims at start-up:

    host:  bridge lgw<n>, address 100.(64+n).0.1/16 (the gateway as environments reach it), IPv6 off
           one veth per environment, lgw<n>v<i>, a port of the bridge, `isolated` (no frames to another port)
    environment (its own network namespace):  lo, and eth0 = 100.(64+n).<i>/16, default route via the bridge

and one nf_tables table, `inet lambda_gateway_<n>`:

    input       from the bridge: only TCP to <bridge address>:<port> (the environment-facing listener); the rest,
                the host's loopback services and its other addresses included, is dropped. To the bridge address
                from anywhere but the bridge or lo: dropped (other hosts cannot reach that listener).
    forward     into the bridge: only replies (conntrack established/related), so neither another environment nor
                another host can open a connection to an environment; from the bridge to 169.254.0.0/16 (cloud
                metadata services): dropped.
    postrouting environments' traffic leaving the host is masqueraded.

Forwarding must be on: the gateway sets net.ipv4.ip_forward=1 (and leaves it so: other software may rely on it).

Who does what: the gateway claims a slot, makes the bridge and the table (`HostNetwork.create`, blocking, run in a
thread), and removes them at shutdown (`close`); every start first sweeps what a gateway killed with SIGKILL left
(its bridge names its owner's pid and start time). Each environment builds its side itself, ahead of demand in the
zygote's spare, while still root and before any user code (`attach`, from runtimes/python/jail.py): it creates its
veth pair with the far end directly in its own new namespace, so the pair dies with that namespace and nothing is
left when it exits. An index free on the host is found by trying veth names (the kernel refuses a taken one), so
two environments never share an address, whichever zygote forked them. `disconnect` (GATEWAY_NETWORK=none) deletes
eth0 at seal time: only lo is left.

Fail closed: if the host side cannot be set up, environments get a namespace with only lo (never the host's
network), the log says why and /healthz reports `"network": {"mode": "none", ...}`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.isolation import netlink as nl
from gateway.isolation.netlink import Netlink

log = logging.getLogger("gateway.network")

#: a function whose Environment.Variables set this to "none" runs with only lo; "default" or absent: the network
#: above; any other value is refused at CreateFunction and UpdateFunctionConfiguration (gateway/api/function_params)
NETWORK_VARIABLE = "GATEWAY_NETWORK"
NETWORK_MODES = ("default", "none")
#: the environments' addresses: a /16 of this range per gateway
RANGE = ipaddress.IPv4Network("100.64.0.0/10")
SLOTS = 64
BRIDGE_PREFIX = "lgw"
TABLE_PREFIX = "lambda_gateway_"
#: a bridge's alias names its gateway: "lambda-gateway <pid> <start time in clock ticks>"
OWNER = "lambda-gateway"
#: addresses 0 (the network), 1 (the bridge) and 65535 (broadcast) are not an environment's
FIRST_INDEX, LAST_INDEX = 2, 65534
#: the environment's end of its veth pair
ENV_LINK = "eth0"
METADATA = ipaddress.IPv4Network("169.254.0.0/16")
#: where systemd-resolved lists the servers its loopback stub forwards to
UPSTREAM_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
#: taken by gateways of this host while they sweep and claim a slot
LOCK = "/run/lambda-gateway-network.lock"
_VETH = re.compile(r"lgw(\d+)v\d+")
_BRIDGE = re.compile(r"lgw(\d+)")


def bridge_name(slot: int) -> str:
    return f"{BRIDGE_PREFIX}{slot}"


def table_name(slot: int) -> str:
    return f"{TABLE_PREFIX}{slot}"


def subnet(slot: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(RANGE.network_address) + (slot << 16), 16))


def address(slot: int, index: int) -> str:
    """The address of index `index` in slot `slot` (index 1: the bridge, the gateway as environments see it)."""
    return str(subnet(slot).network_address + index)


@dataclass
class HostNetwork:
    """The gateway's side: its slot, bridge and table (`slot` None: none could be made, `reason` says why; then
    environments have no network at all). `port` is the environment-facing listener's TCP port."""

    slot: int | None
    port: int
    reason: str = ""

    @property
    def gateway_address(self) -> str | None:
        """The address environments reach the gateway at (the bridge's), or None without a network."""
        return address(self.slot, 1) if self.slot is not None else None

    def to_wire(self) -> int | None:
        """What the zygote passes to each environment's `attach`: the slot (None: lo only)."""
        return self.slot

    def is_environment_connection(self, sockname: Any) -> bool:
        """Whether a connection accepted with local address `sockname` came in on the environment-facing address:
        only environments (and processes of the host itself) can reach it. Requests on it come from functions."""
        host = self.gateway_address
        if host is None or not isinstance(sockname, tuple) or not sockname or not isinstance(sockname[0], str):
            return False
        return sockname[0].removeprefix("::ffff:") == host  # an IPv4-mapped address on a dual-stack listener

    def describe(self) -> dict[str, Any]:
        if self.slot is None:
            return {"mode": "none", "reason": self.reason}
        return {
            "mode": "namespace per environment",
            "subnet": str(subnet(self.slot)),
            "bridge": bridge_name(self.slot),
            "gateway_address": self.gateway_address,
            "outbound": "masquerade",
        }

    @classmethod
    def create(cls, port: int) -> HostNetwork:
        """Sweep what dead gateways left, claim a free slot and set it up. Blocking. Never raises: on failure the
        result has no slot (environments get no network) and the reason is logged."""
        try:
            with _host_lock(), Netlink() as rt, Netlink(nl.NETLINK_NETFILTER) as nf:
                sweep(rt, nf)
                slot = _claim(rt)
                try:
                    _set_up(rt, nf, slot, port)
                except OSError:
                    _tear_down(rt, nf, slot)
                    raise
        except OSError as exc:
            reason = f"the environments' network could not be set up ({exc}): they run with no network (only lo)"
            log.error("%s", reason)
            return cls(None, port, reason)
        log.info("environments' network: %s via bridge %s, gateway at %s", subnet(slot), bridge_name(slot),
                 address(slot, 1))  # fmt: skip
        return cls(slot, port)

    def close(self) -> None:
        """Remove the table and the bridge (at shutdown, once the environments are gone; their veth pairs go with
        their namespaces). Blocking."""
        if self.slot is None:
            return
        with Netlink() as rt, Netlink(nl.NETLINK_NETFILTER) as nf:
            _tear_down(rt, nf, self.slot)
        self.slot = None


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Held while sweeping and claiming: a bridge is named first and labelled with its owner next, and a gateway
    sweeping in between must not take it for a dead one's. The kernel releases it if we die holding it."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(alias: str) -> bool:
    parts = alias.split()
    if len(parts) != 3 or parts[0] != OWNER or not parts[1].isdigit():
        return False
    return _start_time(int(parts[1])) == parts[2]


def sweep(rt: Netlink, nf: Netlink) -> int:
    """Remove the tables, bridges and veths of gateways that are gone (killed with SIGKILL); returns how many
    bridges. Tables are listed before links: a live gateway makes its bridge before its table, so a table seen
    here without a bridge seen after it is a dead gateway's."""
    tables = [t for t in nl.nft_tables(nf, nl.NFPROTO_INET) if t.startswith(TABLE_PREFIX)]
    links = nl.links(rt)
    live_slots: set[str] = set()
    dead: list[int] = []
    for index, name, kind, alias in links:
        match = _BRIDGE.fullmatch(name)
        if match and kind == "bridge":
            # ours and dead: named by a gateway that is gone, or not yet labelled (its gateway died while claiming;
            # a live one claims under the lock we hold); a bridge someone else labelled is left alone
            if alias == "" or (alias.startswith(OWNER + " ") and not _owner_alive(alias)):
                dead.append(index)
            else:
                live_slots.add(match.group(1))
    for table in tables:
        if table[len(TABLE_PREFIX) :] not in live_slots:
            with contextlib.suppress(OSError):
                nl.nft_batch(nf, nl.NFPROTO_INET, [nl.delete_table(table)])
    for index in dead:
        with contextlib.suppress(OSError):
            rt.request(nl.delete_link(index))
    for index, name, _, _ in links:  # environments' veths left by a dead gateway (they also go with their netns)
        match = _VETH.fullmatch(name)
        if match and match.group(1) not in live_slots:
            with contextlib.suppress(OSError):
                rt.request(nl.delete_link(index))
    if dead:
        log.warning("removed the network of %d gateways that are gone (bridges and firewall tables)", len(dead))
    return len(dead)


def _claim(rt: Netlink) -> int:
    """Make the bridge of the first free slot whose subnet no route of the host overlaps; its alias names us."""
    taken = {name for _, name, _, _ in nl.links(rt)}
    routes = nl.ipv4_routes(rt)
    alias = f"{OWNER} {os.getpid()} {_start_time(os.getpid())}"
    for slot in range(SLOTS):
        net = subnet(slot)
        first, last = int(net.network_address), int(net.broadcast_address)
        if bridge_name(slot) in taken or any(_overlaps(first, last, dst, prefix) for dst, prefix in routes):
            continue
        try:
            nl.create_bridge(rt, bridge_name(slot))
        except FileExistsError:
            continue  # something else took the name meanwhile
        nl.set_alias(rt, socket.if_nametoindex(bridge_name(slot)), alias)
        return slot
    raise OSError(0, f"no free /16 in {RANGE} (every slot is in use or overlaps a route of this host)")


def _overlaps(first: int, last: int, dst: int, prefix: int) -> bool:
    if prefix == 0:
        return False  # a default route overlaps everything and routes nothing in particular
    route = ipaddress.IPv4Network((dst, prefix), strict=False)
    return int(route.network_address) <= last and first <= int(route.broadcast_address)


def _set_up(rt: Netlink, nf: Netlink, slot: int, port: int) -> None:
    bridge = bridge_name(slot)
    with contextlib.suppress(OSError):  # no IPv6 link-local address for environments to talk to
        _write(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6", "1")
    index = socket.if_nametoindex(bridge)
    rt.batch([nl.add_address(index, address(slot, 1), 16), nl.set_up(index)])
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        if f.read().strip() != "1":
            _write("/proc/sys/net/ipv4/ip_forward", "1")
            log.warning("turned on net.ipv4.ip_forward (environments' traffic is forwarded and masqueraded); "
                        "it stays on after the gateway stops")  # fmt: skip
    nl.nft_batch(nf, nl.NFPROTO_INET, _ruleset(slot, port))


def _tear_down(rt: Netlink, nf: Netlink, slot: int) -> None:
    with contextlib.suppress(OSError):
        nl.nft_batch(nf, nl.NFPROTO_INET, [nl.delete_table(table_name(slot))])
    with contextlib.suppress(OSError):
        rt.request(nl.delete_link(socket.if_nametoindex(bridge_name(slot))))


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # not open(): this runs in every environment's set-up
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _ruleset(slot: int, port: int) -> list[tuple[int, int, bytes]]:
    """The table of the module's docstring, as nf_tables messages."""
    table = table_name(slot)
    bridge = nl.ifname(bridge_name(slot))
    gateway = socket.inet_aton(address(slot, 1))
    net = subnet(slot)
    iif, oif = nl.meta(nl.META_IIFNAME), nl.meta(nl.META_OIFNAME)
    ipv4 = [nl.meta(nl.META_NFPROTO), nl.cmp(nl.CMP_EQ, bytes([nl.NFPROTO_IPV4]))]
    to_gateway = [*ipv4, nl.payload(nl.PAYLOAD_NETWORK, 16, 4), nl.cmp(nl.CMP_EQ, gateway)]
    tcp_port = [
        nl.meta(nl.META_L4PROTO),
        nl.cmp(nl.CMP_EQ, bytes([socket.IPPROTO_TCP])),
        nl.payload(nl.PAYLOAD_TRANSPORT, 2, 2),
        nl.cmp(nl.CMP_EQ, struct.pack("!H", port)),
    ]
    replies = [
        nl.ct_state(),
        nl.mask(struct.pack("=I", nl.CT_ESTABLISHED | nl.CT_RELATED)),
        nl.cmp(nl.CMP_NEQ, bytes(4)),
    ]
    metadata = [
        *ipv4,
        nl.payload(nl.PAYLOAD_NETWORK, 16, 4),
        nl.mask(METADATA.netmask.packed),
        nl.cmp(nl.CMP_EQ, METADATA.network_address.packed),
    ]
    from_subnet = [*ipv4, nl.payload(nl.PAYLOAD_NETWORK, 12, 4), nl.mask(net.netmask.packed),
                   nl.cmp(nl.CMP_EQ, net.network_address.packed)]  # fmt: skip
    accept, drop = nl.verdict(nl.NF_ACCEPT), nl.verdict(nl.NF_DROP)
    return [
        nl.new_table(table),
        nl.new_chain(table, "input", nl.HOOK_INPUT, 0, "filter"),
        nl.new_chain(table, "forward", nl.HOOK_FORWARD, 0, "filter"),
        nl.new_chain(table, "postrouting", nl.HOOK_POSTROUTING, 100, "nat"),
        nl.new_rule(table, "input", iif, nl.cmp(nl.CMP_EQ, bridge), *to_gateway, *tcp_port, accept),
        nl.new_rule(table, "input", iif, nl.cmp(nl.CMP_EQ, bridge), drop),
        nl.new_rule(table, "input", *to_gateway, iif, nl.cmp(nl.CMP_NEQ, nl.ifname("lo")), drop),
        nl.new_rule(table, "forward", oif, nl.cmp(nl.CMP_EQ, bridge), *replies, accept),
        nl.new_rule(table, "forward", oif, nl.cmp(nl.CMP_EQ, bridge), drop),
        nl.new_rule(table, "forward", iif, nl.cmp(nl.CMP_EQ, bridge), *metadata, drop),
        nl.new_rule(table, "postrouting", *from_subnet, oif, nl.cmp(nl.CMP_NEQ, bridge), nl.masquerade()),
    ]


def resolver_config(path: str = "/etc/resolv.conf", upstream: str = UPSTREAM_RESOLV_CONF) -> str | None:
    """/etc/resolv.conf as environments need it: the host's, unless it names only loopback servers (systemd-resolved's
    127.0.0.53, a local dnsmasq), which an environment's own loopback does not have; then the servers systemd-resolved
    forwards to (`upstream`). None: nothing readable (the host's file stays, as it is)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    servers = [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]
    with contextlib.suppress(OSError):
        if servers and all(_is_loopback(server) for server in servers):
            with open(upstream) as f:
                return f.read()
    return text


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


# -- the environment's side (in a forked environment, root, before any user code) ------------------------------


class HostSide:
    """What `attach` needs from the host's namespace, taken before the environment leaves it: a netlink socket
    there and the bridge's index. Close it (`attach` does) before any user code: a netlink socket keeps its
    opener's privileges."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.bridge = socket.if_nametoindex(bridge_name(slot))
        self.rt = Netlink()


def attach(host: HostSide) -> str:
    """In an environment that has just entered a network namespace of its own: give it eth0, connected to the
    gateway's bridge, with a free address and a default route via the bridge; returns the address. Closes `host`.
    Raises OSError (the environment must then not run user code)."""
    pid = os.getpid()
    try:
        with contextlib.suppress(OSError):  # eth0 gets no IPv6 address (lo keeps ::1)
            _write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        span = LAST_INDEX - FIRST_INDEX + 1
        for attempt in range(span):
            index = FIRST_INDEX + (pid + attempt) % span
            name = f"{bridge_name(host.slot)}v{index}"
            try:  # isolated before the environment has an address, let alone user code
                host.rt.batch([nl.create_veth(name, host.bridge, ENV_LINK, pid), nl.isolate_port(name)])
                break
            except FileExistsError:
                continue
        else:
            raise OSError(0, "no free address for the environment")
    finally:
        host.rt.close()
    ip = address(host.slot, index)
    with Netlink() as rt:
        eth0 = socket.if_nametoindex(ENV_LINK)
        gateway = address(host.slot, 1)
        rt.batch([nl.set_up(1), nl.add_address(eth0, ip, 16), nl.set_up(eth0), nl.add_default_route(eth0, gateway)])
    return ip


def disconnect() -> None:
    """GATEWAY_NETWORK=none, in an environment `attach`ed earlier (its own namespace): delete eth0 (its veth pair
    goes with it); lo stays. Nothing to do if it has none."""
    try:
        index = socket.if_nametoindex(ENV_LINK)
    except OSError:
        return
    with Netlink() as rt:
        rt.request(nl.delete_link(index))
