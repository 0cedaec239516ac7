"""What the kernel services want the table to say, without nftables: the pool's usable
servers with their weights, and the quorum with its hysteresis (lost below quorum -
hysteresis, back at quorum + hysteresis) switching to the sorry server; a hung quorum program
killed with its process group."""

from __future__ import annotations

import asyncio

from fixtures.processes import SHELL_AND_CHILD, log_records, read_pids, sh, wait_gone
from steelyard.config.kernel_model import VirtualServiceConfig
from steelyard.core.backend import Pool, Server
from steelyard.kernel.services import KernelServices


def test_quorum_with_hysteresis_and_the_sorry_server():
    servers = [Server(f"10.0.0.{i}:80", weight=1) for i in (11, 12, 13)]
    pool = Pool("web", servers)
    cfg = VirtualServiceConfig.model_validate({
        "address": "10.0.0.100:80", "pool": "web", "quorum": 2, "hysteresis": 1,
        "sorry_server": "10.0.0.99:80",
    })  # fmt: skip
    ks = KernelServices([cfg], lambda: {"web": pool})

    def targets() -> list[str]:
        return [t.address for t in ks.desired()[0].targets]

    def health(*up: bool) -> None:
        for server, ok in zip(servers, up, strict=True):
            server.healthy = ok
        pool.refresh()

    assert targets() == ["10.0.0.11:80", "10.0.0.12:80", "10.0.0.13:80"]
    health(True, False, False)  # live weight 1: not below quorum - hysteresis = 1
    assert targets() == ["10.0.0.11:80"] and not ks.quorum_lost
    health(False, False, False)  # 0 < 1: lost, the sorry server takes it
    assert targets() == ["10.0.0.99:80"] and ks.quorum_lost == {"10.0.0.100:80"}
    health(True, True, False)  # 2: not yet quorum + hysteresis = 3
    assert targets() == ["10.0.0.99:80"]
    health(True, True, True)
    assert len(targets()) == 3 and not ks.quorum_lost
    servers[0].weight_override = 4
    pool.refresh()
    assert [t.weight for t in ks.desired()[0].targets] == [4, 1, 1]
    assert [t.address for t in ks.desired()[0].counted][-1] == "10.0.0.99:80"


async def test_a_hung_quorum_program_is_killed_with_its_child(tmp_path):
    """quorum_down stuck on a child: killed with its process group at `script_timeout` and
    logged; before, it and its child ran on, one more each time the quorum flipped."""
    pids = tmp_path / "pids"
    server = Server("10.0.0.11:80", weight=1)
    pool = Pool("web", [server])
    cfg = VirtualServiceConfig.model_validate({
        "address": "10.0.0.100:80", "pool": "web",
        "quorum_down": sh(SHELL_AND_CHILD, str(pids)), "script_timeout": "300ms",
    })  # fmt: skip
    assert VirtualServiceConfig.model_validate({"address": "10.0.0.100:80", "pool": "web"}
                                               ).script_timeout == 10.0  # fmt: skip
    ks = KernelServices([cfg], lambda: {"web": pool})
    with log_records() as records:
        server.healthy = False
        pool.refresh()
        ks.desired()  # the quorum is lost ...
        assert ks.quorum_lost == {"10.0.0.100:80"} and not ks._scripts
        ks.announce_quorum_changes()  # ... and once nft has the table, quorum_down starts
        started = await read_pids(pids, 2)
        await asyncio.gather(*ks._scripts)
    for pid in started:
        await wait_gone(pid)
    [f] = [r.fields for r in records if r.getMessage() == "kernel_script_failed"]  # type: ignore[attr-defined]
    assert (f["service"], f["cause"], f["action"]) == (
        "10.0.0.100:80", "timeout after 300ms", "killed with its process group",
    )  # fmt: skip
