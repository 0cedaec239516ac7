"""The `vrrp:` config: values named by their key path, tracked pools that must exist."""

from __future__ import annotations

from steelyard.config.load import check_config_text

BASE = """pools:
  web: {servers: [{address: 127.0.0.1:8080}]}
vrrp:
  instances:
    - name: web
      interface: lo
      vrid: 51
      virtual_ips: [10.0.0.100/24]
"""


def issues(extra: str = "") -> list[str]:
    _, found = check_config_text(BASE + extra)
    return [f"{i.path}: {i.message}" for i in found]


def test_a_plain_instance_is_valid():
    assert issues() == []
    assert issues("      track: {pools: [{name: web, weight: -20}]}\n") == []


def test_vrrp_tracks_only_pools_that_exist():
    found = issues("      track: {pools: [{name: nosuch}]}\n")
    assert "vrrp.instances[0].track.pools[0].name: no pool named 'nosuch' in pools:" in found


def test_bad_values_are_named():
    found = issues("      priority: 0\n      advert_interval: 50s\n")
    assert any(f.startswith("vrrp.instances[0].priority") for f in found), found
    assert any(f.startswith("vrrp.instances[0].advert_interval") for f in found), found


SECOND = """    - {name: db, interface: lo, vrid: 52, virtual_ips: [10.0.1.100/24]}
"""


def test_sync_groups_name_instances_that_exist_once():
    assert issues(SECOND + "  sync_groups: [{name: router, instances: [web, db]}]\n") == []
    found = issues(SECOND + "  sync_groups: [{name: router, instances: [web, nosuch]}]\n")
    assert any("sync group 'router': no instance 'nosuch'" in f for f in found), found
    twice = "[{name: a, instances: [web, db]}, {name: b, instances: [db, web]}]"
    found = issues(SECOND + f"  sync_groups: {twice}\n")
    assert any("instance 'db' is in sync groups 'a' and 'b'" in f for f in found), found
    found = issues(SECOND + "  sync_groups: [{name: a, instances: [web]}]\n")
    assert any(f.startswith("vrrp.sync_groups[0].instances") for f in found), found


def test_ipv6_instances_are_one_family():
    v6 = BASE.replace("virtual_ips: [10.0.0.100/24]", "virtual_ips: [fd00::100/64]")
    assert check_config_text(v6)[1] == []
    _, found = check_config_text(v6.replace("[fd00::100/64]", "[fd00::100/64, 10.0.0.1/24]"))
    assert any("IPv4 and IPv6 virtual IPs need an instance each" in i.message for i in found)
    _, found = check_config_text(v6 + "      unicast_peers: [10.0.0.2]\n")
    assert any("unicast_peers must be of the virtual IPs' family" in i.message for i in found)
    _, found = check_config_text(v6 + "      checksum_as_v2: true\n")
    assert any("checksum_as_v2 is IPv4 only" in i.message for i in found)
