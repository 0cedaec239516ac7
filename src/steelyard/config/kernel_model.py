"""The `virtual_services:` part of the config contract: L4 services balanced inside the kernel
(nftables), as LVS virtual servers are, over the servers of a pool.

```yaml
virtual_services:
  - {address: 10.0.0.100:80, protocol: tcp, pool: web}
```
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from steelyard.config.shared import Duration, ServerAddress, Strict
from steelyard.core.backend import split_address


class VirtualServiceConfig(Strict):
    address: ServerAddress  # VIP:port; an IPv4 address the node holds (or VRRP gives it)
    protocol: Literal["tcp", "udp"] = "tcp"
    pool: str
    # > 0: a client keeps its server while it comes back within this long (LVS persistence);
    # 0: every new connection is scheduled by the pool's balance
    persistence_timeout: Duration = 0.0
    # masquerade: the servers see this node as the client and answer it (no routing to set up);
    # nat: they see the client's address and must route their answers through this node (LVS NAT)
    method: Literal["masquerade", "nat"] = "masquerade"
    quorum: int = Field(1, ge=1)  # live weight below which the sorry server takes the traffic
    # lost below quorum - hysteresis, back at quorum + hysteresis (keepalived's), so one server
    # flapping at the edge does not flip the service back and forth
    hysteresis: int = Field(0, ge=0)
    sorry_server: ServerAddress | None = None
    # programs (argv) run when the quorum is lost / back, with STEELYARD_SERVICE=address
    quorum_down: list[str] | None = Field(None, min_length=1)
    quorum_up: list[str] | None = Field(None, min_length=1)
    # killed with their process group past this (keepalived's script timeouts: 10 s)
    script_timeout: Duration = Field(10.0, gt=0)

    @field_validator("address", "sorry_server")
    @classmethod
    def _ipv4(cls, v: str | None) -> str | None:
        if v is not None and ipaddress.ip_address(split_address(v)[0]).version != 4:
            raise ValueError(f"{v!r}: kernel virtual services are IPv4")
        return v

    @field_validator("persistence_timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0 <= v <= 86400 * 7:
            raise ValueError("persistence_timeout must be between 0 and 7 days")
        return v

    @property
    def vip(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]
