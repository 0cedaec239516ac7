"""Malformed or foreign VRRP packets sent to a steelyard node from another host of the lab: a
TTL other than 255, a bad checksum, a short packet, version 4, another VRID, other virtual
addresses. Each is dropped, counted and logged once per source and reason a minute, and the
node keeps its role."""

from __future__ import annotations

import json
import sys
import urllib.error

import pytest

from fixtures.netns import Lab, assert_for, lab_skip_reason
from fixtures.procs import free_port, wait_for
from fixtures.vrrp_node import VIP, holds_vip, node_config
from steelyard.vrrp.packet import Advert, build

SKIP = lab_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, int(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.0.0.9"))
for _ in range(int(sys.argv[3])):
    s.sendto(bytes.fromhex(sys.argv[2]), ("224.0.0.18", 0))
"""


def test_bad_adverts_are_dropped_counted_and_logged_once(tmp_path, steelyard):
    lab = Lab(tmp_path)
    try:
        node = lab.host("lb1", "10.0.0.1/24")
        intruder = lab.host("x", "10.0.0.9/24")
        sy = steelyard(node_config(tmp_path, priority=150), tmp_path, node.argv())
        wait_for(lambda: holds_vip(node), what="the node master")

        def send(payload: bytes, ttl: int = 255, count: int = 3) -> None:
            out = intruder.run(sys.executable, "-c", SENDER, str(ttl), payload.hex(), str(count))
            assert out.returncode == 0, out.stderr

        # a higher priority in each: taken seriously, any of them would demote the node
        good = build(Advert(51, 254, 20, (VIP,)), "10.0.0.9", "224.0.0.18")
        cases = {
            "ttl": (good, 64),
            "checksum": (good[:6] + bytes((good[6] ^ 1, good[7])) + good[8:], 255),
            "length": (good[:6], 255),
            "version": (bytes((0x41,)) + good[1:], 255),
            "vrid": (build(Advert(52, 254, 20, (VIP,)), "10.0.0.9", "224.0.0.18"), 255),
        }
        for reason, (payload, ttl) in cases.items():
            send(payload, ttl)
            sy.wait_log(rf"event=vrrp_advert_dropped .*source=10\.0\.0\.9 reason={reason} ",
                        what=f"the {reason} drop logged")  # fmt: skip
        # three of each were sent: logged once per source and reason
        for reason in cases:
            assert sy.count_log(rf"event=vrrp_advert_dropped .*reason={reason} ") == 1
        # and the node is still master
        assert_for(lambda: holds_vip(node), seconds=1.0)
        assert "new=BACKUP" not in sy.log().split("new=MASTER", 1)[1]
        # the counts, in the admin API and the metrics (asked from inside the node)
        view = json.loads(node.run("curl", "-sf", f"http://{sy.admin}/api/vrrp").stdout)
        (inst,) = view["instances"]
        assert (inst["name"], inst["state"], inst["priority"], inst["master"]) == (
            "web", "MASTER", 150, "10.0.0.1",
        )  # fmt: skip
        assert inst["dropped"] == {reason: 3 for reason in cases}, inst["dropped"]
        assert inst["sent"] > 0 and inst["received"] == 0
        metrics = node.run("curl", "-sf", f"http://{sy.admin}/metrics").stdout
        assert 'steelyard_vrrp_state{instance="web",state="MASTER",vrid="51"} 1.0' in metrics
        assert (
            'steelyard_vrrp_adverts_dropped_total{instance="web",reason="ttl",vrid="51"} 3.0'
            in (metrics)
        )
    finally:
        lab.close()


def test_adverts_for_other_virtual_addresses_are_dropped(tmp_path, steelyard):
    """An advert for our VRID and a higher priority, but with another address count or list
    (a router configured for other VIPs, or a forger who got the VRID right), does not demote
    the master: dropped as `addresses` with keepalived's reason in the log. The same advert,
    once the check is turned off (`skip_check_adv_addr`, keepalived's), takes the role: the
    check is what held."""
    lab = Lab(tmp_path)
    try:
        node = lab.host("lb1", "10.0.0.1/24")
        intruder = lab.host("x", "10.0.0.9/24")
        cfg = node_config(tmp_path, priority=150)
        sy = steelyard(cfg, tmp_path, node.argv())
        wait_for(lambda: holds_vip(node), what="the node master")

        def send(addresses: tuple[str, ...], count: int = 3) -> None:
            payload = build(Advert(51, 254, 20, addresses), "10.0.0.9", "224.0.0.18")
            out = intruder.run(sys.executable, "-c", SENDER, "255", payload.hex(), str(count))
            assert out.returncode == 0, out.stderr

        send((VIP, "10.0.0.101"))
        sy.wait_log(r"event=vrrp_advert_dropped .*source=10\.0\.0\.9 reason=addresses .*"
                    r"detail=.*2 addresses, expected 1", what="the count drop logged")  # fmt: skip
        send(("10.0.0.101",))
        wait_for(lambda: view(node, sy)["dropped"].get("addresses") == 6, what="6 drops counted")
        assert_for(lambda: holds_vip(node), seconds=1.0)
        inst = view(node, sy)
        assert (inst["state"], inst["master"], inst["received"]) == ("MASTER", "10.0.0.1", 0)
        assert inst["dropped"] == {"addresses": 6}
        assert sy.count_log(r"event=vrrp_advert_dropped .*reason=addresses ") == 1

        cfg["vrrp"]["instances"][0]["skip_check_adv_addr"] = True
        sy.reload(cfg)
        send(("10.0.0.101",), count=1)
        sy.wait_log(r"event=vrrp_state .*old=MASTER new=BACKUP", what="demoted by the advert")
    finally:
        lab.close()


def view(node, sy) -> dict:
    (inst,) = json.loads(node.run("curl", "-sf", f"http://{sy.admin}/api/vrrp").stdout)["instances"]
    return inst


def test_without_a_vrrp_section_the_route_says_so(tmp_path, steelyard):
    sy = steelyard({"admin": {"listen": f"127.0.0.1:{free_port()}"},
                    "store": {"kind": "embedded", "path": str(tmp_path / "store")}})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        sy.api("GET", "/api/vrrp")
    assert refused.value.code == 404
    assert json.loads(refused.value.read()) == {"error": "no vrrp: section in the config"}
