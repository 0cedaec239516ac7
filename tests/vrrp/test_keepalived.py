"""A steelyard node and a real keepalived (Debian's, VRRPv3) in the same VRID: each takes the
virtual IP over from the other, with keepalived's default checksum (IPv4 pseudo-header) and
with `v3_checksum_as_v2` on both sides."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from fixtures.netns import Lab, assert_for, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import holds_vip, keepalived_conf, node_config
from steelyard.vrrp.machine import master_down

SKIP = lab_skip_reason() or (None if shutil.which("keepalived") else "keepalived is not installed")
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.mark.parametrize("as_v2", [False, True], ids=["pseudo_header", "checksum_as_v2"])
def test_steelyard_and_keepalived_take_over_from_each_other(tmp_path, steelyard, as_v2):
    lab = Lab(tmp_path)
    keepalived = None
    try:
        ka_host = lab.host("ka", "10.0.0.1/24")
        sy_host = lab.host("sy", "10.0.0.2/24")
        conf = tmp_path / "keepalived.conf"
        conf.write_text(keepalived_conf(150, as_v2))
        log = open(tmp_path / "keepalived.log", "wb")  # noqa: SIM115 - closed below
        keepalived = subprocess.Popen(
            ka_host.argv("keepalived", "-n", "-l", "-G", "-P", "-f", str(conf),
                         "-p", str(tmp_path / "ka.pid"), "-r", str(tmp_path / "ka-vrrp.pid")),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: holds_vip(ka_host), what="keepalived (priority 150) holding the VIP")
        sy = steelyard(node_config(tmp_path, checksum_as_v2=as_v2), tmp_path, sy_host.argv())
        sy.wait_log(r"event=vrrp_state .*new=BACKUP", what="steelyard backup")
        # steelyard hears keepalived's adverts: it stays backup (three times its
        # Master_Down_Interval), nothing dropped
        assert_for(lambda: not holds_vip(sy_host), seconds=3 * master_down(100, 20))
        assert "vrrp_advert_dropped" not in sy.log()
        # keepalived stops (priority 0 sent): steelyard takes over
        keepalived.send_signal(signal.SIGTERM)
        keepalived.wait(10)
        wait_for(lambda: holds_vip(sy_host), what="steelyard taking the VIP from keepalived")
        # keepalived returns with more priority: it preempts, steelyard yields
        keepalived = subprocess.Popen(
            ka_host.argv("keepalived", "-n", "-l", "-G", "-P", "-f", str(conf),
                         "-p", str(tmp_path / "ka.pid"), "-r", str(tmp_path / "ka-vrrp.pid")),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: holds_vip(ka_host) and not holds_vip(sy_host),
                 what="keepalived taking the VIP back from steelyard")  # fmt: skip
        assert "vrrp_advert_dropped" not in sy.log()
        sy.stop()
    finally:
        if keepalived is not None and keepalived.poll() is None:
            keepalived.terminate()
            keepalived.wait(10)
        lab.close()
