"""What the kernel services want the table to say, without nftables: the pool's usable
servers with their weights, and the quorum with its hysteresis (lost below quorum -
hysteresis, back at quorum + hysteresis) switching to the sorry server."""

from __future__ import annotations

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
