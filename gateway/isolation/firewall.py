"""The nf_tables table of a gateway's environments' network: what isolation/network.py's docstring says of it.

Built as netlink messages (isolation/netlink.py), applied in one batch by `network.HostNetwork.create`. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from gateway.isolation import netlink as nl

#: cloud metadata services environments never reach: the link-local range (AWS, GCP, Azure's IMDS, OpenStack, ...) and
#: Alibaba Cloud's ECS metadata service (inside the environments' own 100.64.0.0/10: network.py never claims its /16)
METADATA = (ipaddress.IPv4Network("169.254.0.0/16"), ipaddress.IPv4Network("100.100.100.200/32"))
#: AWS's instance metadata over IPv6 (Nitro instances in a dual-stack subnet). Environments have no IPv6 today:
#: dropped all the same, should one ever get it
METADATA_V6 = ipaddress.IPv6Network("fd00:ec2::254/128")
#: Azure's WireServer (the VM agent's goal state, extensions' settings): dropped but for DNS (TCP and UDP port 53),
#: as it is also an Azure VM's resolver, which environments are given (network.resolver_config)
WIRESERVER = ipaddress.IPv4Address("168.63.129.16")
DNS_PORT = 53


def bridge_netfilter_warning(bridge_nf_call_iptables: str) -> str | None:
    """What to tell the operator when net.bridge.bridge-nf-call-iptables (br_netfilter, loaded by Docker or
    Kubernetes) reads `bridge_nf_call_iptables` "1": every table's IP forward hook then sees the frames the
    sub-bridges switch (untracked, in and out of one sub-bridge), and another table's DROP there cannot be overridden
    by ours. None otherwise. Accepting lgw* to lgw* in the other table opens nothing: this table's drops still hold."""
    if bridge_nf_call_iptables.strip() != "1":
        return None
    return (
        "net.bridge.bridge-nf-call-iptables is 1 (br_netfilter, loaded by Docker or Kubernetes): the host's other "
        "firewalls see the frames the environments' sub-bridges switch in their FORWARD chains (untracked, in and "
        "out of one lgw<n>s<k>); a DROP there (Docker's FORWARD policy, ufw's, firewalld's) cuts every environment "
        'off. Accept them there: nftables \'iifname "lgw*" oifname "lgw*" accept\', iptables '
        "'-I FORWARD -i lgw+ -o lgw+ -j ACCEPT' (Docker: in DOCKER-USER); the gateway's own table still filters "
        "what is routed (SECURITY.md)"
    )


def ruleset(table: str, bridge_name: str, net: ipaddress.IPv4Network, port: int) -> list[nl.Message]:
    """Table `table` for the gateway whose bridge is `bridge_name` (its sub-bridges: that name, "s" and a number),
    at the first host address of `net`, with its environment-facing listener on TCP `port`."""
    bridge = nl.ifname(bridge_name)
    subs = nl.ifname(bridge_name + "s*")  # every sub-bridge of the slot (a prefix: "lgw1s" is not "lgw10s")
    gateway = (net.network_address + 1).packed
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
    from_bridge = [iif, nl.cmp(nl.CMP_EQ, bridge)]
    from_subnet = [*ipv4, nl.payload(nl.PAYLOAD_NETWORK, 12, 4), nl.mask(net.netmask.packed),
                   nl.cmp(nl.CMP_EQ, net.network_address.packed)]  # fmt: skip
    not_out_of_bridges = [oif, nl.cmp(nl.CMP_NEQ, bridge), oif, nl.cmp(nl.CMP_NEQ, subs)]
    accept, drop = nl.verdict(nl.NF_ACCEPT), nl.verdict(nl.NF_DROP)
    return [
        nl.new_table(table),
        nl.new_chain(table, "prerouting", nl.HOOK_PREROUTING, nl.PRIORITY_RAW, "filter"),
        nl.new_chain(table, "input", nl.HOOK_INPUT, 0, "filter"),
        nl.new_chain(table, "forward", nl.HOOK_FORWARD, 0, "filter"),
        nl.new_chain(table, "postrouting", nl.HOOK_POSTROUTING, 100, "nat"),
        # frames a sub-bridge switches are not tracked: with br_netfilter on, conntrack would otherwise see each
        # connection there first and bind it to no NAT, and its masquerade on the way out would never happen
        nl.new_rule(table, "prerouting", iif, nl.cmp(nl.CMP_EQ, subs), nl.notrack()),
        nl.new_rule(table, "input", iif, nl.cmp(nl.CMP_EQ, bridge), *to_gateway, *tcp_port, accept),
        nl.new_rule(table, "input", iif, nl.cmp(nl.CMP_EQ, bridge), drop),
        nl.new_rule(table, "input", *to_gateway, iif, nl.cmp(nl.CMP_NEQ, nl.ifname("lo")), drop),
        nl.new_rule(table, "input", iif, nl.cmp(nl.CMP_EQ, subs), drop),  # sent to a sub-bridge's own MAC address
        nl.new_rule(table, "forward", oif, nl.cmp(nl.CMP_EQ, bridge), *replies, accept),
        nl.new_rule(table, "forward", oif, nl.cmp(nl.CMP_EQ, bridge), drop),
        *(nl.new_rule(table, "forward", *from_bridge, *_to(metadata), drop) for metadata in (*METADATA, METADATA_V6)),
        *_wireserver(table, from_bridge),
        # routed from a sub-bridge: never (what it switches between its own ports shows up as in and out of it)
        nl.new_rule(table, "forward", iif, nl.cmp(nl.CMP_EQ, subs), oif, nl.cmp(nl.CMP_NEQ, subs), drop),
        nl.new_rule(table, "postrouting", *from_subnet, *not_out_of_bridges, nl.masquerade()),
    ]


def _to(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[bytes]:
    """Expressions matching packets (of net's IP version) whose destination is in `net`."""
    if net.version == 4:
        family, offset = nl.NFPROTO_IPV4, 16
    else:
        family, offset = nl.NFPROTO_IPV6, 24
    where = nl.payload(nl.PAYLOAD_NETWORK, offset, len(net.network_address.packed))
    return [nl.meta(nl.META_NFPROTO), nl.cmp(nl.CMP_EQ, bytes([family])), where, nl.mask(net.netmask.packed),
            nl.cmp(nl.CMP_EQ, net.network_address.packed)]  # fmt: skip


def _wireserver(table: str, from_bridge: list[bytes]) -> list[nl.Message]:
    """Drop what the bridge routes to Azure's WireServer, but for DNS: anything not TCP or UDP, then TCP and UDP to
    another port (the forward hook sees reassembled packets: conntrack's defragmentation comes first)."""
    to = [*from_bridge, *_to(ipaddress.IPv4Network(WIRESERVER))]
    l4 = nl.meta(nl.META_L4PROTO)
    tcp, udp = bytes([socket.IPPROTO_TCP]), bytes([socket.IPPROTO_UDP])
    drop = nl.verdict(nl.NF_DROP)
    not_dns = [nl.payload(nl.PAYLOAD_TRANSPORT, 2, 2), nl.cmp(nl.CMP_NEQ, struct.pack("!H", DNS_PORT))]
    return [
        nl.new_rule(table, "forward", *to, l4, nl.cmp(nl.CMP_NEQ, tcp), l4, nl.cmp(nl.CMP_NEQ, udp), drop),
        nl.new_rule(table, "forward", *to, l4, nl.cmp(nl.CMP_EQ, tcp), *not_dns, drop),
        nl.new_rule(table, "forward", *to, l4, nl.cmp(nl.CMP_EQ, udp), *not_dns, drop),
    ]
