"""isolation/network.py's pure parts: addresses, the environment-facing check, the resolver an environment gets."""

from __future__ import annotations

from pathlib import Path

from gateway.isolation import network
from gateway.isolation.network import RANGE, HostNetwork, address, resolver_config, subnet


def test_each_slot_is_its_own_slash_16_of_the_range() -> None:
    assert str(subnet(0)) == "100.64.0.0/16" and str(subnet(63)) == "100.127.0.0/16"
    assert all(subnet(s).subnet_of(RANGE) for s in range(64))
    assert address(5, 1) == "100.69.0.1" and address(5, 258) == "100.69.1.2"


def test_only_connections_to_the_bridge_address_come_from_environments() -> None:
    network = HostNetwork(3, 9000)
    assert network.gateway_address == "100.67.0.1"
    assert network.is_environment_connection(("100.67.0.1", 9000))
    assert network.is_environment_connection(("::ffff:100.67.0.1", 9000, 0, 0))  # a dual-stack listener
    assert not network.is_environment_connection(("127.0.0.1", 9000))
    assert not network.is_environment_connection(None) and not network.is_environment_connection("/a/unix/socket")
    down = HostNetwork(None, 9000, "no bridge")
    assert down.gateway_address is None and not down.is_environment_connection(("100.67.0.1", 9000))
    assert down.describe() == {"mode": "none", "reason": "no bridge"}


def test_a_loopback_resolver_is_replaced_by_its_upstream_servers(tmp_path: Path) -> None:
    conf, upstream = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    conf.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 192.0.2.53\n")
    assert resolver_config(str(conf), str(upstream)) == "nameserver 192.0.2.53\n"
    conf.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.54\n")  # one the environment can reach: kept
    assert resolver_config(str(conf), str(upstream)) == conf.read_text()
    conf.write_text("nameserver ::1\n")
    assert resolver_config(str(conf), str(tmp_path / "missing")) == "nameserver ::1\n"  # nothing better known
    assert resolver_config(str(tmp_path / "none"), str(upstream)) is None


def test_the_sub_bridges_hold_the_design_target_and_never_more_than_a_bridge_can() -> None:
    """Issue 19: at least 8,000 networked environments; a sub-bridge holds at most 1,023 ports, one its trunk."""
    assert network.capacity() >= 8000
    assert network.PORTS_PER_BRIDGE + 1 <= 1023
    first, last = network.FIRST_INDEX, network.FIRST_INDEX + network.capacity() - 1
    assert network.sub_bridge_of(first) == 0 and network.sub_bridge_of(last) == network.SUB_BRIDGES - 1
    per_bridge = [0] * network.SUB_BRIDGES
    for index in range(first, last + 1):
        per_bridge[network.sub_bridge_of(index)] += 1
    assert max(per_bridge) == network.PORTS_PER_BRIDGE
    assert len(network.sub_bridge_name(63, network.SUB_BRIDGES - 1)) < 16  # an interface name's limit (IFNAMSIZ)
    assert all(len(name) < 16 for name in network.trunk_names(63, network.SUB_BRIDGES - 1))
