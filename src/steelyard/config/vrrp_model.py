"""The `vrrp:` part of the config contract: virtual routers that share virtual IPs between
steelyard nodes (and keepalived), VRRPv3 over IPv4 or IPv6 (one family per instance).

```yaml
vrrp:
  instances:
    - {name: web, interface: eth0, vrid: 51, priority: 150, advert_interval: 1s,
       virtual_ips: [10.0.0.100/24], unicast_peers: [], preempt: true, notify: null}
  sync_groups:
    - {name: router, instances: [web, db]}
```
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from steelyard.config.shared import Duration, Name, Strict


class GarpConfig(Strict):
    count: int = Field(5, ge=1, le=100)  # gratuitous ARPs per VIP in a burst
    interval: Duration = 0.01  # between two of one burst
    repeat_after: Duration = 5.0  # a second burst this long after becoming master (0: none)


class TrackInterface(Strict):
    name: str = Field(min_length=1, max_length=15)
    # 0: the instance goes to FAULT while the interface is down; else its priority moves by
    # the weight (added while up when positive, while down when negative), as keepalived's
    weight: int = Field(0, ge=-253, le=253)


class TrackScript(Strict):
    name: Name
    command: list[str] = Field(min_length=1)  # exit 0: up
    interval: Duration = 1.0
    timeout: Duration = 1.0
    weight: int = Field(0, ge=-253, le=253)
    rise: int = Field(1, ge=1)
    fall: int = Field(1, ge=1)


class TrackPool(Strict):
    name: Name  # a pool of `pools:`: up while at least one of its servers is usable
    weight: int = Field(0, ge=-253, le=253)


class TrackConfig(Strict):
    interfaces: list[TrackInterface] = Field(default_factory=list)
    scripts: list[TrackScript] = Field(default_factory=list)
    pools: list[TrackPool] = Field(default_factory=list)
    interval: Duration = 1.0  # how often interfaces are looked at


class VrrpInstanceConfig(Strict):
    name: Name
    interface: str = Field(min_length=1, max_length=15)
    vrid: int = Field(ge=1, le=255)
    priority: int = Field(100, ge=1, le=255)  # 255: the owner of the addresses
    advert_interval: Duration = 1.0
    virtual_ips: list[str] = Field(min_length=1)  # CIDR, on `interface`; one family
    unicast_peers: list[str] = Field(default_factory=list)  # empty: multicast 224.0.0.18
    preempt: bool = True
    preempt_delay: Duration = 0.0
    notify: str | None = None  # a program run with the instance's name and new state
    # notify programs (this instance's, and its sync group's when its change settles the group)
    # are killed with their process group past this (keepalived's script timeouts: 10 s)
    script_timeout: Duration = Field(10.0, gt=0)
    checksum_as_v2: bool = False  # RFC 9568 / Cisco / Juniper; keepalived's default is False
    # accept adverts whose virtual addresses differ from ours (keepalived's skip_check_adv_addr)
    skip_check_adv_addr: bool = False
    garp: GarpConfig = Field(default_factory=GarpConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)

    @field_validator("advert_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not 0.01 <= v <= 40.95:
            raise ValueError("advert_interval must be between 10ms and 40.95s (VRRPv3)")
        return v

    @field_validator("virtual_ips")
    @classmethod
    def _vips(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_interface(cidr)  # a bare address is a /32
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        if len({ipaddress.ip_interface(c).version for c in v}) > 1:
            # VRRPv3 carries one family per virtual router (keepalived splits them too)
            raise ValueError("IPv4 and IPv6 virtual IPs need an instance each")
        return v

    @field_validator("unicast_peers")
    @classmethod
    def _peers(cls, v: list[str]) -> list[str]:
        for peer in v:
            try:
                ipaddress.ip_address(peer)
            except ValueError:
                raise ValueError(f"{peer!r} is not an IP address") from None
        return v

    @model_validator(mode="after")
    def _family(self) -> VrrpInstanceConfig:
        if any(ipaddress.ip_address(p).version != (6 if self.ipv6 else 4)
               for p in self.unicast_peers):  # fmt: skip
            raise ValueError("unicast_peers must be of the virtual IPs' family")
        if self.ipv6 and self.checksum_as_v2:
            raise ValueError("checksum_as_v2 is IPv4 only: IPv6 adverts always have the "
                             "pseudo-header")  # fmt: skip
        return self

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_interface(self.virtual_ips[0]).version == 6

    @property
    def interval_cs(self) -> int:
        return max(1, round(self.advert_interval * 100))

    def addresses(self) -> list[str]:
        """The virtual IPs without their prefix length (what adverts carry)."""
        return [cidr.split("/")[0] for cidr in self.virtual_ips]


class SyncGroupConfig(Strict):
    """Instances that change state together (keepalived's vrrp_sync_group)."""

    name: Name
    instances: list[Name] = Field(min_length=2)
    notify: str | None = None  # a program run with the group's name and each state it settles in


class VrrpConfig(Strict):
    instances: list[VrrpInstanceConfig] = Field(min_length=1)
    sync_groups: list[SyncGroupConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> VrrpConfig:
        names: set[str] = set()
        routers: set[tuple[str, int]] = set()
        for inst in self.instances:
            if inst.name in names:
                raise ValueError(f"instance name {inst.name!r} is used twice")
            if (inst.interface, inst.vrid) in routers:
                raise ValueError(f"vrid {inst.vrid} is used twice on {inst.interface}")
            names.add(inst.name)
            routers.add((inst.interface, inst.vrid))
        grouped: dict[str, str] = {}  # instance -> its group
        groups: set[str] = set()
        for group in self.sync_groups:
            if group.name in groups:
                raise ValueError(f"sync group name {group.name!r} is used twice")
            groups.add(group.name)
            for member in group.instances:
                if member not in names:
                    raise ValueError(f"sync group {group.name!r}: no instance {member!r}")
                if member in grouped:
                    raise ValueError(
                        f"instance {member!r} is in sync groups {grouped[member]!r} "
                        f"and {group.name!r}"
                    )
                grouped[member] = group.name
        return self
