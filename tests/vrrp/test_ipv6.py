"""VRRPv3 over IPv6 in the lab: adverts from each node's link-local address to ff02::12 with hop
limit 255; the master killed with SIGKILL, the backup takes the IPv6 VIP and its unsolicited
neighbour advertisement repoints the client's neighbour entry without any traffic from it; and
a steelyard node and Debian's keepalived take the IPv6 VIP over from each other."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest

from fixtures.netns import Host, Lab, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import answer, holds_vip, keepalived_conf, node_config, serve_name
from steelyard.vrrp.packet import MULTICAST_V6, Advert, build

SKIP = lab_skip_reason()
VIP6 = "fd00::100"
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def v6_host(lab: Lab, name: str, n: int) -> Host:
    host = lab.host(name, f"10.0.0.{n}/24")
    host.ip("addr", "add", f"fd00::{n}/64", "dev", "eth0", "nodad")
    wait_for(host.link_local, what=f"{name}'s IPv6 link-local address out of DAD")
    return host


def neighbour_mac(host: Host, address: str) -> str | None:
    out = host.ip("-6", "neigh", "show", address, "dev", "eth0")
    fields = out.split()
    return fields[fields.index("lladdr") + 1] if "lladdr" in fields else None


def mac(host: Host) -> str:
    return host.run("cat", "/sys/class/net/eth0/address").stdout.strip()


def test_ipv6_failover_and_unsolicited_na(tmp_path, steelyard):
    lab = Lab(tmp_path)
    servers = []
    try:
        client = v6_host(lab, "client", 50)
        lbs = {name: v6_host(lab, name, n) for name, n in (("lb1", 1), ("lb2", 2))}
        procs = {}
        for (name, host), priority in zip(lbs.items(), (150, 100), strict=True):
            servers.append(serve_name(host))
            workdir = tmp_path / name
            workdir.mkdir()
            cfg = node_config(workdir, priority=priority, virtual_ips=[f"{VIP6}/64"])
            procs[name] = steelyard(cfg, workdir, host.argv())
        wait_for(lambda: holds_vip(lbs["lb1"], VIP6) and not holds_vip(lbs["lb2"], VIP6),
                 what="lb1 holding the IPv6 VIP")  # fmt: skip
        assert answer(client, VIP6) == "lb1"
        assert neighbour_mac(client, VIP6) == mac(lbs["lb1"])
        assert "vrrp_advert_dropped" not in procs["lb2"].log()  # lb1's adverts pass every check

        procs["lb1"].proc.kill()
        procs["lb1"].proc.wait()
        lbs["lb1"].ip("addr", "del", f"{VIP6}/64", "dev", "eth0")  # as a dead host's would go
        wait_for(lambda: holds_vip(lbs["lb2"], VIP6), what="lb2 taking the IPv6 VIP")
        # no packet from the client since: only lb2's unsolicited NA can have changed this
        wait_for(lambda: neighbour_mac(client, VIP6) == mac(lbs["lb2"]),
                 what="the client's neighbour entry pointing at lb2")  # fmt: skip
        assert answer(client, VIP6) == "lb2"
    finally:
        for server in servers:
            server.kill()
            server.wait()
        lab.close()


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
def test_ipv6_interop_with_keepalived(tmp_path, steelyard):
    lab = Lab(tmp_path)
    keepalived = None
    try:
        ka_host, sy_host = v6_host(lab, "ka", 1), v6_host(lab, "sy", 2)
        conf = tmp_path / "keepalived.conf"
        conf.write_text(keepalived_conf(150, vip=f"{VIP6}/64"))
        argv = ka_host.argv(
            "keepalived",
            "-n",
            "-l",
            "-G",
            "-P",
            "-f",
            str(conf),
            "-p",
            str(tmp_path / "ka.pid"),
            "-r",
            str(tmp_path / "ka-vrrp.pid"),
        )
        log = open(tmp_path / "keepalived.log", "wb")  # noqa: SIM115 - closed below
        keepalived = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: holds_vip(ka_host, VIP6), what="keepalived holding the IPv6 VIP")
        sy = steelyard(node_config(tmp_path, virtual_ips=[f"{VIP6}/64"]), tmp_path, sy_host.argv())
        sy.wait_log(r"event=vrrp_state .*new=BACKUP", what="steelyard backup")
        keepalived.send_signal(signal.SIGTERM)  # priority 0: steelyard takes over
        keepalived.wait(10)
        wait_for(lambda: holds_vip(sy_host, VIP6), what="steelyard taking the VIP from keepalived")
        keepalived = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: holds_vip(ka_host, VIP6) and not holds_vip(sy_host, VIP6),
                 what="keepalived taking the VIP back from steelyard")  # fmt: skip
        assert "vrrp_advert_dropped" not in sy.log()
        sy.stop()
        log.close()
    finally:
        if keepalived is not None and keepalived.poll() is None:
            keepalived.kill()
            keepalived.wait()
        lab.close()


SENDER6 = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, int(sys.argv[1]))
index = socket.if_nametoindex("eth0")
s.sendto(bytes.fromhex(sys.argv[2]), ("ff02::12", 0, 0, index))
"""


def test_bad_ipv6_adverts_are_dropped(tmp_path, steelyard):
    """A hop limit other than 255, a checksum that does not cover the sender's pseudo-header,
    a cut message: dropped and counted, the master keeps its role."""
    lab = Lab(tmp_path)
    try:
        node, intruder = v6_host(lab, "lb1", 1), v6_host(lab, "x", 9)
        sy = steelyard(node_config(tmp_path, priority=150, virtual_ips=[f"{VIP6}/64"]),
                       tmp_path, node.argv())  # fmt: skip
        wait_for(lambda: holds_vip(node, VIP6), what="the node master")
        source = intruder.link_local()
        assert source is not None
        good = build(Advert(51, 254, 20, (VIP6,)), source, MULTICAST_V6)
        cases = {
            "ttl": (good, 64),
            "checksum": (build(Advert(51, 254, 20, (VIP6,)), "fe80::dead", MULTICAST_V6), 255),
            "length": (good[:8] + good[8:20], 255),
        }
        for reason, (payload, hops) in cases.items():
            out = intruder.run(sys.executable, "-c", SENDER6, str(hops), payload.hex())
            assert out.returncode == 0, out.stderr
            sy.wait_log(rf"event=vrrp_advert_dropped .*reason={reason}", what=f"{reason} dropped")
        assert holds_vip(node, VIP6)
        assert "new=BACKUP" not in sy.log().split("new=MASTER", 1)[1]  # never demoted
    finally:
        lab.close()
