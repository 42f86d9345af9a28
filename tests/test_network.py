"""isolation/network.py's pure parts: addresses, the environment-facing check, the resolver an environment gets."""

from __future__ import annotations

import errno
import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.isolation import firewall, network
from gateway.isolation import netlink as nl
from gateway.isolation.network import RANGE, HostNetwork, address, resolver_config, subnet, table_name


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


def test_br_netfilter_gets_a_warning_with_the_rule_other_firewalls_need() -> None:
    warning = firewall.bridge_netfilter_warning("1\n")
    assert warning is not None
    assert 'iifname "lgw*" oifname "lgw*" accept' in warning and "-I FORWARD -i lgw+ -o lgw+ -j ACCEPT" in warning
    assert firewall.bridge_netfilter_warning("0\n") is None and firewall.bridge_netfilter_warning("") is None


def test_the_slot_whose_slash_16_holds_alibabas_metadata_service_is_never_claimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert {36} == network.UNCLAIMED and ipaddress.IPv4Address("100.100.100.200") in subnet(36)
    made: list[str] = []
    monkeypatch.setattr(nl, "links", lambda rt: [(i + 1, f"lgw{i}", "bridge", "") for i in range(36)])
    monkeypatch.setattr(nl, "ipv4_routes", lambda rt: [])
    monkeypatch.setattr(nl, "create_bridge", lambda rt, name, group=0: made.append(name))
    monkeypatch.setattr(nl, "set_alias", lambda rt, index, alias: None)
    monkeypatch.setattr(network.socket, "if_nametoindex", lambda name: 99)
    assert network._claim(FakeNetlink()) == 37 and made == ["lgw37"]  # slots 0..35 taken, 36 skipped


class FakeNetlink:
    """Records the rtnetlink requests made (and refuses those in `refuse` with EBUSY); nft batches go to `log` too."""

    def __init__(self, log: list[Any] | None = None, refuse: tuple[Any, ...] = ()) -> None:
        self.log = log if log is not None else []
        self.refuse = refuse

    def request(self, message: Any) -> None:
        if message in self.refuse:
            raise OSError(errno.EBUSY, "refused")
        self.log.append(message)


def _fake_host(monkeypatch: pytest.MonkeyPatch, links: list[tuple[int, str, str, str]], tables: list[str]) -> None:
    """nl's listings answer `links` (as it is when asked) and `tables`; nft batches are logged by the rt given."""
    monkeypatch.setattr(nl, "links", lambda rt: list(links))
    monkeypatch.setattr(nl, "nft_tables", lambda nf, family: list(tables))
    monkeypatch.setattr(nl, "nft_batch", lambda nf, family, messages: nf.log.extend(messages))


def test_at_stop_the_links_go_first_and_the_table_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """S1 (review 19): with the table first, a failure (or our death) between the steps left lgw<n> up unfiltered."""
    links = [(5, "lgw3", "bridge", ""), (6, "lgw3s0", "bridge", ""), (7, "lgw3t0", "veth", "")]
    _fake_host(monkeypatch, [], [])
    monkeypatch.setattr(network.socket, "if_nametoindex", lambda name: 5)
    log: list[Any] = []
    rt = nf = FakeNetlink(log)
    assert network._tear_down(rt, nf, 3)  # type: ignore[arg-type]
    group, bridge, table = nl.delete_group(network.GROUP_BASE + 3), nl.delete_link(5), nl.delete_table(table_name(3))
    assert log == [group, bridge, table]
    # a link that cannot be deleted keeps the table: lgw3 stays filtered until the next start's sweep
    _fake_host(monkeypatch, links, [])
    log.clear()
    rt = nf = FakeNetlink(log, refuse=(group, bridge))
    assert not network._tear_down(rt, nf, 3)  # type: ignore[arg-type]
    assert log == []


def test_the_sweep_compares_slots_as_numbers_and_deletes_links_before_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """N1: stray names (a leading zero, a slot beyond 63, a table of another form) never delete a live gateway's
    parts; a dead gateway's links go before its table, which stays if its bridge does."""
    alive = f"{network.OWNER} {os.getpid()} {network._start_time(os.getpid())}"
    dead = f"{network.OWNER} 4194305 1"  # beyond any pid_max: gone
    links = [
        (1, "lgw7", "bridge", alive), (2, "lgw7s0", "bridge", ""), (3, "lgw07u1", "veth", ""),
        (4, "lgw007s0", "bridge", ""), (5, "lgw99s1", "bridge", ""), (6, "lgw07v9", "veth", ""),
        (10, "lgw3", "bridge", dead), (11, "lgw3s0", "bridge", ""), (12, "lgw3v2", "veth", ""),
        (20, "lgw4", "bridge", dead),
    ]  # fmt: skip
    tables = ["lambda_gateway_7", "lambda_gateway_07", "lambda_gateway_x", "lambda_gateway_3", "lambda_gateway_4"]
    _fake_host(monkeypatch, links, tables)
    log: list[Any] = []
    rt = nf = FakeNetlink(log, refuse=(nl.delete_link(20),))  # lgw4 cannot be deleted
    assert network.sweep(rt, nf) == 2  # type: ignore[arg-type]
    assert log == [
        nl.delete_group(network.GROUP_BASE + 3),
        nl.delete_link(10),
        nl.delete_link(12),
        nl.delete_table("lambda_gateway_3"),  # lambda_gateway_4 stays: its bridge is still there
    ]
