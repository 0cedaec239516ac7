"""Two steelyard nodes sharing a virtual IP in a lab of network namespaces (a client, two LB
nodes, a bridge): the master holds the VIP; killed with SIGKILL, the backup takes it within
3 x interval + skew + 100 ms and the client reaches the VIP again; stopped gracefully, the
backup takes over within its skew time + 100 ms, and the first node preempts back when it
returns; after a partition heals there is exactly one master."""

from __future__ import annotations

import signal
import sys
import time

import pytest
import yaml

from fixtures.netns import Lab, assert_for, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import VIP, answer, holds_vip, node_config, serve_name
from steelyard.vrrp.machine import master_down, skew

SKIP = lab_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

INTERVAL = 0.2  # seconds between adverts: short, so the test is
ADVERT_INTERVAL = f"{int(INTERVAL * 1000)}ms"
PRIORITIES = {"lb1": 150, "lb2": 100}


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


@pytest.fixture
def nodes(lab, tmp_path, steelyard):
    client = lab.host("client", "10.0.0.10/24")
    hosts = {name: lab.host(name, f"10.0.0.{i + 1}/24") for i, name in enumerate(PRIORITIES)}

    def start(name: str):
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        cfg = node_config(workdir, priority=PRIORITIES[name], advert_interval=ADVERT_INTERVAL)
        return steelyard(cfg, workdir, hosts[name].argv())

    servers = [serve_name(h) for h in hosts.values()]
    procs = {name: start(name) for name in PRIORITIES}
    yield client, hosts, procs, start
    for server in servers:
        server.kill()
        server.wait()


def takeover_time(host, since: float, limit: float) -> float:
    """Seconds from `since` until `host` holds the VIP (polled every few ms)."""
    while time.monotonic() - since < limit:
        if holds_vip(host):
            return time.monotonic() - since
        time.sleep(0.005)
    raise AssertionError(f"{host.name} did not take the VIP within {limit}s")


def test_sigkill_of_the_master_and_a_graceful_stop(nodes):
    client, hosts, procs, start = nodes
    lb1, lb2 = hosts["lb1"], hosts["lb2"]
    wait_for(lambda: holds_vip(lb1), what="lb1 (priority 150) holding the VIP")
    procs["lb1"].wait_log(r"event=vrrp_state .*new=MASTER", what="lb1 master")
    assert not holds_vip(lb2)
    assert wait_for(lambda: answer(client) == "lb1", what="the client reaching lb1 on the VIP")

    # SIGKILL: no resignation; the backup waits Master_Down_Interval
    killed = time.monotonic()
    procs["lb1"].proc.send_signal(signal.SIGKILL)
    limit = master_down(PRIORITIES["lb2"], int(INTERVAL * 100)) + 0.1
    took = takeover_time(lb2, killed, limit + 2.0)
    assert took <= limit, f"takeover took {took:.3f}s, more than {limit:.3f}s"
    # the dead node's kernel still has the VIP: the client follows the backup's GARP
    lb1.ip("addr", "del", f"{VIP}/24", "dev", "eth0")  # as the node's reboot would
    assert wait_for(lambda: answer(client) == "lb2", what="the client reaching lb2 on the VIP")

    # lb1 returns and preempts (higher priority); then stops gracefully: lb2 takes over at once
    procs["lb1"] = start("lb1")
    wait_for(lambda: holds_vip(lb1) and not holds_vip(lb2), what="lb1 preempting back")
    stopped = time.monotonic()
    procs["lb1"].proc.send_signal(signal.SIGTERM)
    limit = skew(PRIORITIES["lb2"], int(INTERVAL * 100)) + 0.1
    took = takeover_time(lb2, stopped, limit + 2.0)
    assert took <= limit, f"takeover after a graceful stop took {took:.3f}s (> {limit:.3f}s)"
    procs["lb1"].proc.wait(10)
    assert not holds_vip(lb1)  # it resigned and removed the address


def test_a_healed_partition_leaves_exactly_one_master(nodes, lab):
    client, hosts, _, _ = nodes
    lb1, lb2 = hosts["lb1"], hosts["lb2"]
    wait_for(lambda: holds_vip(lb1), what="lb1 holding the VIP")
    lab.cut(lb1)  # lb2 no longer hears lb1: both become master
    wait_for(lambda: holds_vip(lb2), what="lb2 master during the partition")
    assert holds_vip(lb1)
    lab.heal(lb1)
    wait_for(lambda: holds_vip(lb1) != holds_vip(lb2), what="one master after the partition")
    assert_for(lambda: holds_vip(lb1) and not holds_vip(lb2), seconds=INTERVAL * 10)
    assert wait_for(lambda: answer(client) == "lb1", what="the client reaching lb1 again")


def test_missing_privileges_and_interfaces_are_named(lab, tmp_path):
    """Without CAP_NET_RAW the node refuses to start, saying so; an interface the host lacks
    is refused by `steelyard check`."""
    host = lab.host("lb1", "10.0.0.1/24")
    cfg_path = tmp_path / "lb1.yaml"
    cfg_path.write_text(yaml.safe_dump(node_config(tmp_path)))
    run = [sys.executable, "-m", "steelyard.cli", "run", "-c", str(cfg_path)]
    dropped = ["setpriv", "--inh-caps=-net_raw,-net_admin", "--bounding-set=-net_raw,-net_admin"]
    out = host.run(*dropped, *run, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "event=vrrp_start_error" in out.stderr and "missing=" in out.stderr, out.stderr
    assert "CAP_NET_RAW" in out.stderr
    assert f"{VIP}/24" not in host.addresses()
    bad = node_config(tmp_path, interface="nosuch0")
    cfg_path.write_text(yaml.safe_dump(bad))
    check = host.run(sys.executable, "-m", "steelyard.cli", "check", "-c", str(cfg_path))
    assert check.returncode != 0
    assert "vrrp.instances[0].interface: no interface 'nosuch0' on this host" in (
        check.stdout + check.stderr
    )


def test_unicast_peers_and_notify(lab, tmp_path, steelyard):
    """Unicast adverts reach the peers named and no one else, and adverts from a host that is
    not a peer are dropped: lb1 and lb2 are a unicast pair; lb3 sends its adverts (priority
    120) to lb2 only, which ignores them, and hears nobody itself. `notify` runs on every
    transition."""
    hosts = {
        name: lab.host(name, f"10.0.0.{i + 1}/24") for i, name in enumerate(("lb1", "lb2", "lb3"))
    }
    script = tmp_path / "notify.sh"
    script.write_text('#!/bin/sh\necho "$1 $2" >> "$(dirname "$0")/notify-$(hostname)-$1.log"\n')
    script.chmod(0o755)
    peers = {"lb1": ["10.0.0.2"], "lb2": ["10.0.0.1"], "lb3": ["10.0.0.2"]}
    procs = {}
    for name, priority in (("lb1", 150), ("lb2", 100), ("lb3", 120)):
        workdir = tmp_path / name
        workdir.mkdir()
        notify = {"notify": str(script)} if name == "lb1" else {}
        cfg = node_config(workdir, priority=priority, unicast_peers=peers[name],
                          name=f"web-{name}", **notify)  # fmt: skip
        procs[name] = steelyard(cfg, workdir, hosts[name].argv())
    wait_for(lambda: holds_vip(hosts["lb1"]), what="lb1 master")
    # lb2 hears lb1's unicast adverts; lb3 hears nobody: master too
    wait_for(lambda: holds_vip(hosts["lb3"]), what="lb3 master on its own")
    assert_for(lambda: not holds_vip(hosts["lb2"]), seconds=4 * INTERVAL * 3)
    procs["lb2"].wait_log(r"event=vrrp_advert_dropped .*source=10\.0\.0\.3 reason=peer ",
                          what="lb3's adverts ignored by lb2: not its peer")  # fmt: skip
    notified = next(tmp_path.glob("notify-*-web-lb1.log"))
    assert notified.read_text().splitlines() == ["web-lb1 BACKUP", "web-lb1 MASTER"]
    procs["lb1"].stop()
    wait_for(lambda: holds_vip(hosts["lb2"]), what="lb2 taking over over unicast")
    wait_for(lambda: notified.read_text().splitlines()[-1] == "web-lb1 INIT",
             what="notify of the stop")  # fmt: skip
