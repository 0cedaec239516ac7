"""The `virtual_services:` config: a pool that exists, one service per protocol and address,
IPv4 only, and (steelyard check) an address this node can receive: its own or a VRRP VIP."""

from __future__ import annotations

from steelyard.config.load import check_config_text

BASE = """pools:
  web: {servers: [{address: 127.0.0.1:8080}]}
vrrp:
  instances:
    - {name: web, interface: lo, vrid: 51, virtual_ips: [10.0.0.100/24]}
virtual_services:
"""


def issues(services: str) -> list[str]:
    _, found = check_config_text(BASE + services)
    return [f"{i.path}: {i.message}" for i in found]


def test_a_service_on_a_vip_or_an_own_address_is_valid():
    assert issues("  - {address: 10.0.0.100:80, pool: web}\n") == []
    assert issues("  - {address: '127.0.0.1:80', protocol: udp, pool: web,"
                  " persistence_timeout: 5m, quorum: 2, sorry_server: 127.0.0.1:9,"
                  " method: nat}\n") == []  # fmt: skip


def test_bad_services_are_named():
    found = issues("  - {address: 10.0.0.100:80, pool: nosuch}\n")
    assert "virtual_services[0].pool: unknown pool 'nosuch'" in found
    found = issues("  - {address: 10.0.0.100:80, pool: web}\n"
                   "  - {address: 10.0.0.100:80, pool: web}\n")  # fmt: skip
    assert any(f.startswith("virtual_services[1].address: tcp 10.0.0.100:80 is already")
               for f in found), found  # fmt: skip
    assert issues("  - {address: 10.0.0.100:80, protocol: udp, pool: web}\n"
                  "  - {address: 10.0.0.100:80, pool: web}\n") == []  # fmt: skip
    found = issues("  - {address: '[::1]:80', pool: web}\n")
    assert any("kernel virtual services are IPv4" in f for f in found), found
    found = issues("  - {address: 10.0.0.100:80, pool: web, protocol: sctp}\n")
    assert any(f.startswith("virtual_services[0].protocol") for f in found), found
    found = issues("  - {address: 10.0.0.100:80, pool: web, quorum: 0}\n")
    assert any(f.startswith("virtual_services[0].quorum") for f in found), found
    found = issues("  - {address: 10.9.9.9:80, pool: web}\n")
    assert any("10.9.9.9 is neither a VRRP virtual IP nor an address of this host" in f
               for f in found), found  # fmt: skip
