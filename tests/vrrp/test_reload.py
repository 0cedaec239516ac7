"""VRRP on SIGHUP: changes of priority, preemption, notify, gratuitous ARP and tracking are
applied in place (no restart, no resignation; a tracker never lifts its group's fault),
an added instance starts, a removed one resigns and releases its VIP, and an instance whose
config is the same keeps its state."""

from __future__ import annotations

import asyncio

import pytest

from fixtures.netns import Lab, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import holder, holds_vip, node_config
from steelyard.config.vrrp_model import VrrpInstanceConfig
from steelyard.vrrp.instance import Instance, reconfigurable
from steelyard.vrrp.machine import State

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

        # tracking added, in place: a failing script with weight 0 puts the master in FAULT
        web = cfg1["vrrp"]["instances"][0]
        web["track"] = {"scripts": [{"name": "no", "command": ["false"], "interval": "100ms"}]}
        sy1.reload(cfg1)
        sy1.wait_log(r"event=vrrp_reload in_place=web")
        wait_for(lambda: holder(lb1, lb2) == "lb2", what="lb2 taking over from lb1 in FAULT")
        sy1.wait_log(r"event=vrrp_state instance=web old=MASTER new=FAULT")

        # tracking gone and priority 50, in place: lb1 leaves FAULT and stays BACKUP under 100
        del web["track"]
        web["priority"] = 50
        sy1.reload(cfg1)
        sy1.wait_log(r"event=vrrp_state instance=web old=FAULT new=BACKUP")
        assert holder(lb1, lb2) == "lb2"
        assert sy1.count_log(r"event=vrrp_state instance=web old=\w+ new=INIT") == 0  # no restart
        assert sy1.count_log(r"event=vrrp_reload in_place=web") == 2

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


def test_what_a_reload_may_change_in_place():
    base = {"name": "web", "interface": "eth0", "vrid": 51, "virtual_ips": ["10.0.0.100/24"]}
    old = VrrpInstanceConfig.model_validate(base)

    def with_(**change) -> VrrpInstanceConfig:
        return VrrpInstanceConfig.model_validate({**base, **change})

    track = {"interfaces": [{"name": "lo"}]}
    for change in ({"priority": 50}, {"preempt": False}, {"notify": "/bin/true"},
                   {"garp": {"count": 2}}, {"track": track},
                   {"skip_check_adv_addr": True}):  # fmt: skip
        assert reconfigurable(old, with_(**change)), change
    for change in ({"vrid": 52}, {"advert_interval": "2s"}, {"virtual_ips": ["10.0.0.101/24"]},
                   {"unicast_peers": ["10.0.0.2"]}, {"priority": 255}):  # fmt: skip
        assert not reconfigurable(old, with_(**change)), change


def test_a_tracker_never_lifts_a_sync_groups_fault():
    async def run() -> None:
        cfg = VrrpInstanceConfig.model_validate({"name": "web", "interface": "lo", "vrid": 51,
                                                 "virtual_ips": ["10.0.0.100/24"]})  # fmt: skip
        inst = Instance(cfg, asyncio.get_running_loop())
        now = inst.loop.time()
        inst._apply(inst.machine.start(now), forced=True)
        inst._apply(inst.machine.fault("sync group router: db", now), forced=True)
        inst._tracked(set(), -10)  # a tracked object moved the priority
        assert inst.machine.state is State.FAULT
        assert inst.machine.faults == {"sync group router: db"}
        inst._tracked({"interface eth1"}, 0)
        inst._tracked(set(), 0)  # its own fault lifted, the group's stays
        assert inst.machine.faults == {"sync group router: db"}

    asyncio.run(run())
