"""VRRP on SIGHUP: a change of priority alone is applied in place (no restart, no resignation),
an added instance starts, a removed one resigns and releases its VIP, and an instance whose
config is the same keeps its state."""

from __future__ import annotations

import pytest

from fixtures.netns import Lab, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import holder, holds_vip, node_config

SKIP = lab_skip_reason()
VIP2 = "10.0.0.101"


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_reload_applies_vrrp_changes(tmp_path, steelyard):
    lab = Lab(tmp_path)
    try:
        lb1, lb2 = lab.host("lb1", "10.0.0.1/24"), lab.host("lb2", "10.0.0.2/24")
        dirs = {h.name: tmp_path / h.name for h in (lb1, lb2)}
        for d in dirs.values():
            d.mkdir()
        cfg1 = node_config(dirs["lb1"], priority=150)
        sy1 = steelyard(cfg1, dirs["lb1"], lb1.argv())
        steelyard(node_config(dirs["lb2"]), dirs["lb2"], lb2.argv())
        wait_for(lambda: holder(lb1, lb2) == "lb1", what="lb1 master")

        # priority only: applied in place; lb2 (100) preempts a master now at 50
        cfg1["vrrp"]["instances"][0]["priority"] = 50
        sy1.reload(cfg1)
        sy1.wait_log(r"event=vrrp_reload .*priority=web")
        wait_for(lambda: holder(lb1, lb2) == "lb2", what="lb2 preempting lb1 at priority 50")
        assert sy1.count_log(r"event=vrrp_state instance=web old=\w+ new=INIT") == 0  # no restart

        # an instance added: alone on VRID 52, lb1 becomes its master; web keeps its state
        db = {"name": "db", "vrid": 52, "priority": 100, "virtual_ips": [f"{VIP2}/24"]}
        cfg2 = node_config(dirs["lb1"], (db,), priority=50)
        cfg2["admin"] = cfg1["admin"]
        sy1.reload(cfg2)
        sy1.wait_log(r"event=vrrp_reload added=db")
        wait_for(lambda: holds_vip(lb1, VIP2), what="lb1 holding db's VIP")
        assert holder(lb1, lb2) == "lb2"

        # removed again: it resigns and its VIP goes
        sy1.reload(cfg1)
        sy1.wait_log(r"event=vrrp_reload removed=db")
        assert not holds_vip(lb1, VIP2)
        assert holder(lb1, lb2) == "lb2"
    finally:
        lab.close()
