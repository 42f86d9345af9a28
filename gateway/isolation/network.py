"""Each jailed environment's own network: outbound to other hosts, nothing of the host or of other environments.

Layout (as root, jail mode), per gateway, in a slot `n` (0..63) that it claims at start-up:

    host:  bridge lgw<n>, address 100.(64+n).0.1/16 (the gateway as environments reach it), IPv6 off; its only
           ports are SUB_BRIDGES trunks, lgw<n>t<k>, each `isolated` (no frames to another port: environments on
           different sub-bridges cannot reach each other, only the host)
           sub-bridges lgw<n>s<k> (no address, IPv6 off, answer no ARP), each joined to lgw<n> by its trunk (a veth
           pair lgw<n>t<k> / lgw<n>u<k>, the lgw<n>u<k> end a plain port of the sub-bridge)
           one veth per environment, lgw<n>v<i>, a port of sub-bridge (i - 2) // PORTS_PER_BRIDGE, `isolated`
    environment (its own network namespace):  lo, and eth0 = 100.(64+n).<i>/16, default route via the bridge

Why sub-bridges: a Linux bridge holds at most 1,023 ports (BR_MAX_PORTS, 10-bit port numbers), and one bridge
capped a node at ~1,023 networked environments. An environment's index fixes its sub-bridge, and an index is held
by one veth at most (its name), so a sub-bridge never has more than PORTS_PER_BRIDGE environments plus its trunk:
none is ever full, and a node holds as many environments as the /16 has addresses (SUB_BRIDGES * PORTS_PER_BRIDGE).
Traffic from environments still reaches the host's IP layer through lgw<n> (frames go to its MAC address), so the
rules below name lgw<n>; the sub-bridges only switch frames.

and one nf_tables table, `inet lambda_gateway_<n>` (isolation/firewall.py):

    prerouting  (raw priority) from a sub-bridge: not tracked. Only br_netfilter (bridge-nf-call-iptables) shows
                IP hooks the frames a sub-bridge switches (with the sub-bridge as the device), and conntrack would
                bind each connection to no NAT there, before lgw<n> routes it and it should be masqueraded.
    input       from the bridge: only TCP to <bridge address>:<port> (the environment-facing listener); the rest,
                the host's loopback services and its other addresses included, is dropped. To the bridge address
                from anywhere but the bridge or lo: dropped (other hosts cannot reach that listener). From a
                sub-bridge (a frame sent to its own MAC address): everything dropped.
    forward     into the bridge: only replies (conntrack established/related), so neither another environment nor
                another host can open a connection to an environment; from the bridge to cloud metadata services
                (firewall.METADATA; Azure's WireServer but for DNS): dropped. Routed from a sub-bridge: dropped
                (frames it switches between its ports pass: with br_netfilter on they show up here with the
                sub-bridge as both devices; other tables' DROP then cuts them: `firewall.bridge_netfilter_warning`).
    postrouting environments' traffic leaving the host is masqueraded (not frames a sub-bridge switches, which
                br_netfilter also shows here).

Forwarding must be on: the gateway sets net.ipv4.ip_forward=1 (and leaves it so: other software may rely on it).

Who does what: the gateway claims a slot, makes the bridge, its sub-bridges and trunks and the table
(`HostNetwork.create`, blocking, run in a thread), and removes them at shutdown (`close`); every start first sweeps
what a gateway killed with SIGKILL left (its bridge names its owner's pid and start time; the rest of its slot goes
with it). Each environment builds its side itself, ahead of demand in the
zygote's spare, while still root and before any user code (`attach`, from runtimes/python/jail.py): it creates its
veth pair with the far end directly in its own new namespace, so the pair dies with that namespace and nothing is
left when it exits. An index free on the host is found by trying veth names (the kernel refuses a taken one), so
two environments never share an address, whichever zygote forked them. `disconnect` (GATEWAY_NETWORK=none) deletes
eth0 at seal time: only lo is left.

Links go before the table (`close`, the sweep): lgw<n> is never up without its firewall; a link that stays keeps it.

Fail closed: if the host side cannot be set up, environments get a namespace with only lo (never the host's
network), the log says why and /healthz reports `"network": {"mode": "none", ...}`.
"""

from __future__ import annotations

import contextlib
import errno
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

from gateway.isolation import firewall
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
#: where systemd-resolved lists the servers its loopback stub forwards to
UPSTREAM_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
#: taken by gateways of this host while they sweep and claim a slot
LOCK = "/run/lambda-gateway-network.lock"
#: environments a sub-bridge holds: a bridge has at most 1,023 ports (the kernel's BR_MAX_PORTS is 1,024, port
#: number 0 is never used), and one of them is the sub-bridge's trunk
PORTS_PER_BRIDGE = 1022
#: sub-bridges per gateway: 16,352 environments (a test may lower both constants). Each costs ~7 ms of the gateway's
#: start and stop; 65 would hold the whole /16 (a node's memory runs out long before: 16,352 x 128 MB is 2 TB)
SUB_BRIDGES = 16
#: net.ipv4.conf.<sub-bridge>.arp_ignore: answer no ARP request at all (it must never pose as the gateway)
ARP_IGNORE_ALL = "8"
#: why an environment could not be connected when every index is taken or every sub-bridge is full
NO_ROOM = "no room on the environments' bridges"
SIOCGIFINDEX = 0x8933
#: the device group of a slot's sub-bridges and trunks is this plus the slot: they go in one deletion
GROUP_BASE = 0x6C677700
#: a slot as a name of ours writes it: no leading zero (`lgw07u1` is nobody's), ASCII digits only
_SLOT = "(0|[1-9][0-9]*)"
_VETH = re.compile(rf"lgw{_SLOT}v[0-9]+")
#: a slot's sub-bridges (s) and the two ends of their trunks (t on lgw<n>, u on the sub-bridge)
_PART = re.compile(rf"lgw{_SLOT}[stu][0-9]+")
_BRIDGE = re.compile(rf"lgw{_SLOT}")
_TABLE = re.compile(rf"{TABLE_PREFIX}{_SLOT}")
#: 1 when br_netfilter shows the host's IP hooks what bridges switch (firewall.bridge_netfilter_warning)
BRIDGE_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def bridge_name(slot: int) -> str:
    return f"{BRIDGE_PREFIX}{slot}"


def sub_bridge_name(slot: int, k: int) -> str:
    return f"{BRIDGE_PREFIX}{slot}s{k}"


def trunk_names(slot: int, k: int) -> tuple[str, str]:
    """The trunk of sub-bridge `k`: (its end on the gateway's bridge, its end on the sub-bridge)."""
    return f"{BRIDGE_PREFIX}{slot}t{k}", f"{BRIDGE_PREFIX}{slot}u{k}"


def capacity() -> int:
    """How many environments a gateway's network holds: an index each, on SUB_BRIDGES sub-bridges."""
    return min(LAST_INDEX - FIRST_INDEX + 1, SUB_BRIDGES * PORTS_PER_BRIDGE)


def sub_bridge_of(index: int) -> int:
    """The sub-bridge the environment with address index `index` is a port of."""
    return (index - FIRST_INDEX) // PORTS_PER_BRIDGE


def _slot(match: re.Match[str] | None) -> int | None:
    """The slot a name of ours (matched by _BRIDGE, _PART, _VETH or _TABLE) is of; None: not one of ours."""
    if match is None:
        return None
    slot = int(match.group(1))
    return slot if slot < SLOTS else None


def table_name(slot: int) -> str:
    return f"{TABLE_PREFIX}{slot}"


def subnet(slot: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(RANGE.network_address) + (slot << 16), 16))


#: slots never claimed: their /16 holds a cloud's metadata service (36: Alibaba's 100.100.100.200; dropped routed)
UNCLAIMED = frozenset(slot for slot in range(SLOTS) if any(net.subnet_of(subnet(slot)) for net in firewall.METADATA))


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
            "sub_bridges": SUB_BRIDGES,
            "capacity": capacity(),
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
        with contextlib.suppress(OSError), open(BRIDGE_NF_CALL_IPTABLES) as f:
            if (warning := firewall.bridge_netfilter_warning(f.read())) is not None:
                log.warning("%s", warning)
        return cls(slot, port)

    def close(self) -> None:
        """Remove the bridges and trunks, then the table (at shutdown, once the environments are gone; their veth
        pairs go with their namespaces). Blocking. If a link stays, so do the table and `slot` (a later call tries
        again; the next start's sweep removes what is left)."""
        if self.slot is None:
            return
        with Netlink() as rt, Netlink(nl.NETLINK_NETFILTER) as nf:
            if _tear_down(rt, nf, self.slot):
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
    """Remove the bridges (sub-bridges and trunks too), veths and tables of gateways that are gone (killed with
    SIGKILL); returns how many bridges. Tables are listed before links: a live gateway makes its bridge before its
    table, so a table seen here without a bridge seen after it is a dead gateway's. The links are deleted first and
    the tables last, and a dead slot whose bridge stays keeps its table (as `close`)."""
    tables = {slot: t for t in nl.nft_tables(nf, nl.NFPROTO_INET) if (slot := _slot(_TABLE.fullmatch(t))) is not None}
    links = nl.links(rt)
    live: set[int] = set()
    dead: list[tuple[int, int]] = []  # (slot, bridge's index)
    for index, name, kind, alias in links:
        slot = _slot(_BRIDGE.fullmatch(name))
        if slot is not None and kind == "bridge":
            # ours and dead: named by a gateway that is gone, or not yet labelled (its gateway died while claiming;
            # a live one claims under the lock we hold); a bridge someone else labelled is left alone
            if alias == "" or (alias.startswith(OWNER + " ") and not _owner_alive(alias)):
                dead.append((slot, index))
            else:
                live.add(slot)
    for slot in {s for _, name, _, _ in links if (s := _slot(_PART.fullmatch(name))) is not None} - live:
        with contextlib.suppress(OSError):  # a dead slot's sub-bridges and trunks, in one go
            rt.request(nl.delete_group(GROUP_BASE + slot))
    kept: set[int] = set()  # dead slots whose bridge could not be deleted: their tables stay
    for slot, index in dead:
        try:
            rt.request(nl.delete_link(index))
        except OSError as exc:
            if not nl.is_missing(exc):
                kept.add(slot)
    for index, name, _, _ in links:  # environments' veths left by a dead gateway (they also go with their netns)
        slot = _slot(_VETH.fullmatch(name))
        if slot is not None and slot not in live:
            with contextlib.suppress(OSError):
                rt.request(nl.delete_link(index))
    for slot, table in tables.items():
        if slot not in live and slot not in kept:
            with contextlib.suppress(OSError):
                nl.nft_batch(nf, nl.NFPROTO_INET, [nl.delete_table(table)])
    if dead:
        log.warning("removed the network of %d gateways that are gone (bridges and firewall tables)", len(dead))
    if kept:
        log.error("the bridges of dead gateways' slots %s could not be removed: their firewall tables stay", kept)
    return len(dead)


def _claim(rt: Netlink) -> int:
    """Make the bridge of the first free slot (not an UNCLAIMED one) whose subnet no route of the host overlaps; its
    alias names us."""
    taken = {name for _, name, _, _ in nl.links(rt)}
    routes = nl.ipv4_routes(rt)
    alias = f"{OWNER} {os.getpid()} {_start_time(os.getpid())}"
    for slot in range(SLOTS):
        net = subnet(slot)
        first, last = int(net.network_address), int(net.broadcast_address)
        if slot in UNCLAIMED or bridge_name(slot) in taken:
            continue
        if any(_overlaps(first, last, dst, prefix) for dst, prefix in routes):
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
    for k in range(SUB_BRIDGES):
        _set_up_sub_bridge(rt, slot, k, index)
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        if f.read().strip() != "1":
            _write("/proc/sys/net/ipv4/ip_forward", "1")
            log.warning("turned on net.ipv4.ip_forward (environments' traffic is forwarded and masqueraded); "
                        "it stays on after the gateway stops")  # fmt: skip
    nl.nft_batch(nf, nl.NFPROTO_INET, firewall.ruleset(table_name(slot), bridge_name(slot), subnet(slot), port))


def _set_up_sub_bridge(rt: Netlink, slot: int, k: int, bridge: int) -> None:
    """Sub-bridge `k`, up, with no IPv6 and no ARP answers of its own, joined to the gateway's bridge (index
    `bridge`) by its trunk, whose end there is isolated."""
    name = sub_bridge_name(slot, k)
    trunk, peer = trunk_names(slot, k)
    nl.create_bridge(rt, name, GROUP_BASE + slot)
    _write(f"/proc/sys/net/ipv4/conf/{name}/arp_ignore", ARP_IGNORE_ALL)
    sub = socket.if_nametoindex(name)
    # the trunk's two ends are made here (peer_pid: our own namespace), then its far end joins the sub-bridge
    trunk_pair = nl.create_veth(trunk, bridge, peer, os.getpid(), GROUP_BASE + slot)
    rt.batch([trunk_pair, nl.isolate_port(trunk), nl.enslave(peer, sub), nl.set_up(sub)])
    for link in (name, trunk, peer):
        with contextlib.suppress(OSError):
            _write(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6", "1")


def _tear_down(rt: Netlink, nf: Netlink, slot: int) -> bool:
    """Remove slot `slot`'s links, then its table: deleting the links cuts every environment off at L2, so lgw<n> is
    never up without its firewall, whatever fails or wherever we die. A link that stays (its deletion failed) keeps
    the table: logged, and the next start's sweep removes both. Returns whether everything went."""
    with contextlib.suppress(OSError):  # sub-bridges and trunks (the environments' veths are not in the group)
        rt.request(nl.delete_group(GROUP_BASE + slot))
    with contextlib.suppress(OSError):  # OSError from if_nametoindex: gone already
        rt.request(nl.delete_link(socket.if_nametoindex(bridge_name(slot))))
    try:
        ours = (name for _, name, _, _ in nl.links(rt))
        left = [name for name in ours if _slot(_BRIDGE.fullmatch(name) or _PART.fullmatch(name)) == slot]
    except OSError as exc:
        left = [f"unknown: the links could not be listed ({exc})"]
    if left:
        log.error("the environments' network of slot %d could not be removed (left: %s): its firewall table %s stays "
                  "until the next start's sweep", slot, ", ".join(left), table_name(slot))  # fmt: skip
        return False
    with contextlib.suppress(OSError):
        nl.nft_batch(nf, nl.NFPROTO_INET, [nl.delete_table(table_name(slot))])
    return True


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # not open(): this runs in every environment's set-up
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


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
    there, through which it also looks up the sub-bridges' indexes (an ioctl on a socket acts in the socket's
    namespace). Close it (`attach` does) before any user code: a netlink socket keeps its opener's privileges."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.rt = Netlink()

    def sub_bridge(self, k: int) -> int:
        """The host's index of sub-bridge `k` of our slot (OSError if there is none)."""
        request = struct.pack("16si20x", sub_bridge_name(self.slot, k).encode(), 0)  # struct ifreq: name, index
        answer = fcntl.ioctl(self.rt.sock.fileno(), SIOCGIFINDEX, request)
        return int(struct.unpack_from("i", answer, 16)[0])


def attach(host: HostSide) -> str:
    """In an environment that has just entered a network namespace of its own: give it eth0, connected to its
    sub-bridge of the gateway's network, with a free address and a default route via the bridge; returns the
    address. Closes `host`. Raises OSError (the environment must then not run user code), EXFULL when no bridge has
    room (`NO_ROOM`)."""
    pid = os.getpid()
    try:
        with contextlib.suppress(OSError):  # eth0 gets no IPv6 address (lo keeps ::1)
            _write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        index = _connect(host, pid)
    finally:
        host.rt.close()
    ip = address(host.slot, index)
    with Netlink() as rt:
        eth0 = socket.if_nametoindex(ENV_LINK)
        gateway = address(host.slot, 1)
        rt.batch([nl.set_up(1), nl.add_address(eth0, ip, 16), nl.set_up(eth0), nl.add_default_route(eth0, gateway)])
    return ip


def _connect(host: HostSide, pid: int) -> int:
    """Make our veth pair on the sub-bridge of the first free index from one our pid picks; returns the index. An
    index is one veth name, so a sub-bridge holds at most PORTS_PER_BRIDGE of ours; one that is full anyway (ports
    someone else added) is skipped whole."""
    span = capacity()
    full: set[int] = set()
    for attempt in range(span):
        index = FIRST_INDEX + (pid + attempt) % span
        k = sub_bridge_of(index)
        if k in full:
            continue
        name = f"{bridge_name(host.slot)}v{index}"
        try:  # isolated before the environment has an address, let alone user code
            host.rt.batch([nl.create_veth(name, host.sub_bridge(k), ENV_LINK, pid), nl.isolate_port(name)])
            return index
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno != errno.EXFULL:  # the kernel's answer when a bridge has no port number left
                raise
            full.add(k)
    raise OSError(errno.EXFULL, NO_ROOM)


def disconnect() -> None:
    """GATEWAY_NETWORK=none, in an environment `attach`ed earlier (its own namespace): delete eth0 (its veth pair
    goes with it); lo stays. Nothing to do if it has none."""
    try:
        index = socket.if_nametoindex(ENV_LINK)
    except OSError:
        return
    with Netlink() as rt:
        rt.request(nl.delete_link(index))
