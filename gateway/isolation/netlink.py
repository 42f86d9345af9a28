"""A small netlink client: the rtnetlink and nf_tables messages the environments' network needs, and nothing more.

Links (a bridge, veth pairs whose far end is created directly in another network namespace), addresses, routes,
a bridge port's `isolated` flag, and nf_tables tables, chains and rules (the few expressions isolation/network.py
uses). Written against the kernel's uapi headers (linux/rtnetlink.h, linux/if_link.h, linux/netfilter/nf_tables.h)
so that neither a Python dependency nor the `nft`/`ip` tools are needed: the environments' side runs in every
forked environment, where an import or a process would cost the cold start.

Every call is blocking and needs CAP_NET_ADMIN in the network namespace the socket was opened in (a socket stays
in the namespace it was made in, even after its process moved: environments rely on that). Errors from the kernel
are `OSError`s with its errno.
"""

from __future__ import annotations

import errno as errno_
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x200, 0x400, 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 24, 26
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_PID, IFLA_IFALIAS = 1, 3, 10, 18, 19, 20
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA, VETH_INFO_PEER = 1, 2, 4, 5, 1
IFLA_BRPORT_ISOLATED = 33
IFLA_GROUP = 27
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
IFF_UP = 1

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 0, 1, 2, 3, 6
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
HOOK_PREROUTING, HOOK_INPUT, HOOK_FORWARD, HOOK_POSTROUTING = 0, 1, 2, 4
#: the raw priority (NF_IP_PRI_RAW): before conntrack
PRIORITY_RAW = -300
NF_DROP, NF_ACCEPT = 0, 1
META_IIFNAME, META_OIFNAME, META_NFPROTO, META_L4PROTO = 6, 7, 15, 16
CMP_EQ, CMP_NEQ = 0, 1
PAYLOAD_NETWORK, PAYLOAD_TRANSPORT = 1, 2
CT_ESTABLISHED, CT_RELATED = 2, 4
REG_VERDICT, REG_1 = 0, 1
IFNAMSIZ = 16

_HEADER = struct.Struct("=IHHII")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + b"\0" * (_align(len(data)) - len(data))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def string(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def be32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("!i", value))


def parse_attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each attribute in `data`."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & ~NLA_F_NESTED, data[offset + 4 : offset + length]
        offset += _align(length)


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    return struct.pack("=BxHiII", family, 0, index, flags, change)


class Netlink:
    """One netlink socket, in the network namespace of the process that opened it. Not thread-safe."""

    def __init__(self, protocol: int = socket.NETLINK_ROUTE) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _message(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, _HEADER.pack(_HEADER.size + len(body), kind, flags, self._seq, 0) + body

    def request(self, message: tuple[int, int, bytes]) -> None:
        """Send one (kind, flags, body) request and wait for the kernel's acknowledgement; OSError if it refused."""
        self.batch([message])

    def batch(self, messages: list[tuple[int, int, bytes]]) -> None:
        """Send (kind, flags, body) messages in one datagram, each with an acknowledgement requested; raise the
        first error once every acknowledgement is in (an nf_tables batch is applied whole or not at all)."""
        sequences: set[int] = set()
        data = b""
        for kind, flags, body in messages:
            seq, message = self._message(kind, flags | NLM_F_REQUEST | NLM_F_ACK, body)
            sequences.add(seq)
            data += message
        self.sock.send(data)
        failure = 0
        while sequences:
            for kind, seq, payload in self._receive():
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    failure = failure or -code
                    sequences.discard(seq)
        if failure:
            raise OSError(failure, os.strerror(failure))

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        """The bodies of a dump request's answers."""
        seq, message = self._message(kind, NLM_F_REQUEST | NLM_F_DUMP, body)
        self.sock.send(message)
        out: list[bytes] = []
        while True:
            for answer, answer_seq, payload in self._receive():
                if answer_seq != seq:
                    continue
                if answer == NLMSG_DONE:
                    return out
                if answer == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return out
                out.append(payload)

    def _receive(self) -> Iterator[tuple[int, int, bytes]]:
        data = self.sock.recv(1 << 20)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                return
            yield kind, seq, data[offset + _HEADER.size : offset + length]
            offset += _align(length)


# -- rtnetlink ------------------------------------------------------------------------------------------------


def create_bridge(nl: Netlink, name: str, group: int = 0) -> None:
    """A new bridge `name` (EEXIST if the name is taken), down, with a MAC address of its own (random, locally
    administered). Without one a bridge takes the lowest of its ports' addresses, so it changes when a port goes:
    the environments' ARP caches would then point at an address that no longer exists, and their packets to the
    gateway would be lost until the entries expire. `group`: its device group (deleted all at once by
    `delete_group`)."""
    mac = bytes([0x02]) + os.urandom(5)
    linkinfo = nested(IFLA_LINKINFO, string(IFLA_INFO_KIND, "bridge"))
    body = ifinfo() + string(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac) + u32(IFLA_GROUP, group) + linkinfo
    nl.request((RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body))


def set_alias(nl: Netlink, index: int, alias: str) -> None:
    """A link's description (`ip link set X alias ...`: a new link's is ignored when it is created)."""
    nl.request((RTM_NEWLINK, 0, ifinfo(index) + string(IFLA_IFALIAS, alias)))


Message = tuple[int, int, bytes]


def create_veth(name: str, master: int, peer: str, peer_pid: int, group: int = 0) -> Message:
    """A veth pair: `name` here, up, a port of the bridge with index `master`; `peer` created directly in the
    network namespace of process `peer_pid` (so it never exists here). EEXIST if `name` is taken. Both ends in
    device group `group`."""
    peer_info = ifinfo() + string(IFLA_IFNAME, peer) + u32(IFLA_NET_NS_PID, peer_pid)
    peer_info += u32(IFLA_GROUP, group) if group else b""
    data = nested(IFLA_INFO_DATA, nested(VETH_INFO_PEER, peer_info))
    linkinfo = nested(IFLA_LINKINFO, string(IFLA_INFO_KIND, "veth"), data)
    body = ifinfo(0, IFF_UP, IFF_UP) + string(IFLA_IFNAME, name) + u32(IFLA_MASTER, master)
    if group:
        body += u32(IFLA_GROUP, group)
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body + linkinfo


def isolate_port(name: str) -> Message:
    """Set the `isolated` flag of bridge port `name`: it exchanges frames with the bridge itself, never with another
    isolated port (`ip link set dev X type bridge_slave isolated on`)."""
    slave = nested(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_ISOLATED, b"\x01"))
    linkinfo = nested(IFLA_LINKINFO, string(IFLA_INFO_SLAVE_KIND, "bridge"), slave)
    return RTM_NEWLINK, 0, ifinfo() + string(IFLA_IFNAME, name) + linkinfo


def enslave(name: str, master: int) -> Message:
    """Make link `name` a port of the bridge with index `master`, and up."""
    return RTM_NEWLINK, 0, ifinfo(0, IFF_UP, IFF_UP) + string(IFLA_IFNAME, name) + u32(IFLA_MASTER, master)


def set_up(index: int) -> Message:
    return RTM_NEWLINK, 0, ifinfo(index, IFF_UP, IFF_UP)


def delete_link(index: int) -> Message:
    return RTM_DELLINK, 0, ifinfo(index)


def delete_group(group: int) -> Message:
    """Delete every link of device group `group` at once (one unregistration, not one RCU grace period each)."""
    return RTM_DELLINK, 0, ifinfo() + u32(IFLA_GROUP, group)


def add_address(index: int, address: str, prefix: int) -> Message:
    packed = socket.inet_aton(address)
    body = struct.pack("=BBBBI", socket.AF_INET, prefix, 0, 0, index) + attr(IFA_LOCAL, packed)
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body + attr(IFA_ADDRESS, packed)


def add_default_route(index: int, gateway: str) -> Message:
    # family, dst_len, src_len, tos, table (main), protocol (boot), scope (universe), type (unicast), flags
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
    body += attr(RTA_GATEWAY, socket.inet_aton(gateway)) + u32(RTA_OIF, index)
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body


def links(nl: Netlink) -> list[tuple[int, str, str, str]]:
    """(index, name, kind, alias) of every link in this namespace; kind and alias are "" when absent."""
    out = []
    for payload in nl.dump(RTM_GETLINK, ifinfo()):
        index = struct.unpack_from("=i", payload, 4)[0]
        name = kind = alias = ""
        for key, value in parse_attrs(payload[16:]):
            if key == IFLA_IFNAME:
                name = value.rstrip(b"\0").decode(errors="replace")
            elif key == IFLA_IFALIAS:
                alias = value.rstrip(b"\0").decode(errors="replace")
            elif key == IFLA_LINKINFO:
                for info_key, info in parse_attrs(value):
                    if info_key == IFLA_INFO_KIND:
                        kind = info.rstrip(b"\0").decode(errors="replace")
        out.append((index, name, kind, alias))
    return out


def ipv4_routes(nl: Netlink) -> list[tuple[int, int]]:
    """(destination as an integer, prefix length) of every IPv4 route in every routing table."""
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    out = []
    for payload in nl.dump(RTM_GETROUTE, body):
        prefix = payload[1]
        dst = 0
        for key, value in parse_attrs(payload[12:]):
            if key == RTA_DST and len(value) == 4:
                dst = int.from_bytes(value, "big")
        out.append((dst, prefix))
    return out


# -- nf_tables ------------------------------------------------------------------------------------------------


def _nfgen(family: int, res_id: int = 0) -> bytes:
    return struct.pack("!BBH", family, 0, res_id)


def nft_batch(nl: Netlink, family: int, messages: list[tuple[int, int, bytes]]) -> None:
    """Apply nf_tables (message type, flags, attributes) as one transaction, all or nothing."""
    subsys = NFNL_SUBSYS_NFTABLES << 8
    begin = (NFNL_MSG_BATCH_BEGIN, 0, _nfgen(socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES))
    end = (NFNL_MSG_BATCH_END, 0, _nfgen(socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES))
    body = [(subsys | kind, flags, _nfgen(family) + attrs) for kind, flags, attrs in messages]
    nl.batch([begin, *body, end])


def nft_tables(nl: Netlink, family: int) -> list[str]:
    names = []
    for payload in nl.dump((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, _nfgen(family)):
        for key, value in parse_attrs(payload[4:]):
            if key == 1:  # NFTA_TABLE_NAME
                names.append(value.rstrip(b"\0").decode(errors="replace"))
    return names


def new_table(name: str) -> tuple[int, int, bytes]:
    return NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, string(1, name)


def delete_table(name: str) -> tuple[int, int, bytes]:
    return NFT_MSG_DELTABLE, 0, string(1, name)


def new_chain(table: str, name: str, hook: int, priority: int, chain_type: str) -> tuple[int, int, bytes]:
    """A base chain on `hook` with policy accept (our rules drop what they must; what they do not match is
    left to the host's other rules)."""
    hook_attrs = nested(4, be32(1, hook), be32(2, priority))  # NFTA_CHAIN_HOOK: HOOKNUM, PRIORITY
    attrs = string(1, table) + string(3, name) + hook_attrs + be32(5, NF_ACCEPT) + string(7, chain_type)
    return NFT_MSG_NEWCHAIN, NLM_F_CREATE, attrs


def new_rule(table: str, chain: str, *expressions: bytes) -> tuple[int, int, bytes]:
    attrs = string(1, table) + string(2, chain) + nested(4, *expressions)  # NFTA_RULE_EXPRESSIONS
    return NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, attrs


def _expr(name: str, *data: bytes) -> bytes:
    return nested(1, string(1, name), nested(2, *data))  # NFTA_LIST_ELEM: NFTA_EXPR_NAME, NFTA_EXPR_DATA


def _value(kind: int, value: bytes) -> bytes:
    return nested(kind, attr(1, value))  # NFTA_DATA_VALUE


def meta(key: int) -> bytes:
    """Load meta `key` into register 1."""
    return _expr("meta", be32(1, REG_1), be32(2, key))


def payload(base: int, offset: int, length: int) -> bytes:
    """Load `length` bytes at `offset` of a header (`base`) into register 1."""
    return _expr("payload", be32(1, REG_1), be32(2, base), be32(3, offset), be32(4, length))


def cmp(op: int, value: bytes) -> bytes:
    """Compare register 1 with `value`; the rule stops here unless it holds."""
    return _expr("cmp", be32(1, REG_1), be32(2, op), _value(3, value))


def mask(value: bytes) -> bytes:
    """Register 1 &= `value`."""
    n = len(value)
    return _expr("bitwise", be32(1, REG_1), be32(2, REG_1), be32(3, n), _value(4, value), _value(5, b"\0" * n))


def ct_state() -> bytes:
    return _expr("ct", be32(1, REG_1), be32(2, 0))  # NFT_CT_STATE


def verdict(code: int) -> bytes:
    data = nested(2, nested(2, be32(1, code)))  # NFTA_IMMEDIATE_DATA: NFTA_DATA_VERDICT: NFTA_VERDICT_CODE
    return _expr("immediate", be32(1, REG_VERDICT), data)


def notrack() -> bytes:
    """Leave the packet untracked by conntrack (in a chain of raw priority)."""
    return nested(1, string(1, "notrack"))


def masquerade() -> bytes:
    return nested(1, string(1, "masq"))


def ifname(name: str) -> bytes:
    """An interface name as meta iifname/oifname holds it; a trailing '*' matches a prefix."""
    if name.endswith("*"):
        return name[:-1].encode()
    return name.encode().ljust(IFNAMSIZ, b"\0")


def is_missing(exc: OSError) -> bool:
    return exc.errno in (errno_.ENOENT, errno_.ENODEV)
