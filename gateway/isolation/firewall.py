"""The nf_tables table of a gateway's environments' network: what isolation/network.py's docstring says of it.

Built as netlink messages (isolation/netlink.py), applied in one batch by `network.HostNetwork.create`. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from gateway.isolation import netlink as nl

#: cloud metadata services' link-local range: environments never reach it
METADATA = ipaddress.IPv4Network("169.254.0.0/16")


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
    metadata = [
        *ipv4,
        nl.payload(nl.PAYLOAD_NETWORK, 16, 4),
        nl.mask(METADATA.netmask.packed),
        nl.cmp(nl.CMP_EQ, METADATA.network_address.packed),
    ]
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
        nl.new_rule(table, "forward", iif, nl.cmp(nl.CMP_EQ, bridge), *metadata, drop),
        # routed from a sub-bridge: never (what it switches between its own ports shows up as in and out of it)
        nl.new_rule(table, "forward", iif, nl.cmp(nl.CMP_EQ, subs), oif, nl.cmp(nl.CMP_NEQ, subs), drop),
        nl.new_rule(table, "postrouting", *from_subnet, *not_out_of_bridges, nl.masquerade()),
    ]
