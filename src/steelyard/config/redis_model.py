"""The `redis:` part of the config contract: proxies, groups and the sharding settings.

Groups are the starting topology; once the slot map is in the store, runtime changes (groups
created or removed, slots moved) live there and the config only seeds what the store lacks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steelyard.config.shared import Address, Duration, ServerAddress, Size, Strict

MAX_GROUP_ID = 9999  # as Codis


class OutputBufferLimit(Strict):
    """Redis's client-output-buffer-limit for one client's replies not yet sent: past `hard`
    it is closed at once, past `soft` for `soft_seconds` too. 0 = no limit. Redis leaves
    normal clients unlimited; here a client that never reads would grow the worker without
    bound, so it is limited. `hard` counts what is buffered beyond the largest single reply
    being written (since the buffer last drained): one reply bigger than `hard`, such as the
    largest value Redis allows (512 MB, max_bulk_bytes) whether streamed or written whole
    (MGET, EXEC, a replica read), still reaches a client that reads it, provided it reads
    it within `soft_seconds` of passing `soft`. A client closing after QUIT or a protocol
    error is held to the same limits."""

    hard: Size = 512 * 1024**2
    soft: Size = 128 * 1024**2
    soft_seconds: Duration = 60.0


class RedisProxyConfig(Strict):
    listen: Address
    auth: str | None = None  # what clients must send with AUTH (None: no AUTH needed)
    backend_auth: str | None = None  # sent with AUTH on every backend connection
    read_from_replicas: bool = False
    max_clients: int = Field(10000, ge=1)
    max_pipeline: int = Field(10000, ge=1)  # requests in flight per client connection
    # A client that sent nothing for this long is closed (Redis's `timeout`; 30 min as Codis's
    # session_recv_timeout), except one blocked in BLPOP and the like or subscribed. 0 = never.
    idle_timeout: Duration = 1800.0
    # With `auth` set: a client not authenticated this long after connecting is closed. 0 = never.
    auth_timeout: Duration = 10.0
    # One client's unread input at most (Redis's client-query-buffer-limit): closed beyond it.
    client_query_buffer_limit: Size = Field(1024**3, ge=1024 * 1024)
    client_output_buffer_limit: OutputBufferLimit = Field(default_factory=OutputBufferLimit)


class RedisGroupConfig(Strict):
    id: int = Field(ge=1, le=MAX_GROUP_ID)
    master: ServerAddress
    replicas: list[ServerAddress] = Field(default_factory=list)
    weight: int = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def _distinct(self) -> RedisGroupConfig:
        seen = {self.master}
        for r in self.replicas:
            if r in seen:
                raise ValueError(f"{r} is listed twice in group {self.id}")
            seen.add(r)
        return self


class SentinelConfig(Strict):
    addresses: list[ServerAddress] = Field(min_length=1)
    # Sentinel master names are `{prefix}-{group id}`, as Codis names them.
    prefix: str = "steelyard"
    password: str | None = None
    # Register every group with the sentinels (SENTINEL MONITOR + SET), as Codis's dashboard
    # does; off when the sentinels are configured by hand.
    monitor: bool = True
    quorum: int | None = Field(None, ge=1)  # None: a majority of `addresses`
    down_after: Duration = 30.0  # Codis's defaults
    failover_timeout: Duration = 300.0
    parallel_syncs: int = Field(1, ge=1)


class RedisConfig(Strict):
    proxies: list[RedisProxyConfig] = Field(default_factory=list)
    groups: list[RedisGroupConfig] = Field(default_factory=list)
    databases: int = Field(16, ge=1, le=16)
    allow_fanout: bool = False  # KEYS, FLUSHDB, FLUSHALL across every group
    # EVAL, EVALSHA, FCALL and their _RO forms: `allow` (as Codis) forwards them to the keys'
    # group, where a script may call any command the backend user may run, including those
    # the proxy refuses (FLUSHALL): the backend's ACL is the real guard. `deny` refuses them.
    scripts: Literal["allow", "deny"] = "allow"
    # A command whose keys hash to several slots (SUNIONSTORE, RENAME, BLMOVE, MULTI/EXEC...):
    # `group` runs it on the group that owns all those slots (CROSSSLOT when they belong to
    # several groups), as a single Redis would; `refuse` answers CROSSSLOT as Redis Cluster does.
    cross_slot: Literal["group", "refuse"] = "group"
    max_bulk_bytes: Size = 512 * 1024 * 1024
    big_key_bytes: Size = 64 * 1024 * 1024  # copied in chunks when moved
    migrate_batch: int = Field(100, ge=1, le=10000)  # keys per MIGRATE
    migrate_timeout: Duration = 30.0
    health_interval: Duration = 1.0
    auto_failover: bool = False
    sentinel: SentinelConfig | None = None

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, groups: list[RedisGroupConfig]) -> list[RedisGroupConfig]:
        ids: set[int] = set()
        servers: dict[str, int] = {}
        for g in groups:
            if g.id in ids:
                raise ValueError(f"group id {g.id} is used twice")
            ids.add(g.id)
            for address in [g.master, *g.replicas]:
                if address in servers:
                    raise ValueError(
                        f"{address} is in group {servers[address]} and in group {g.id}"
                    )
                servers[address] = g.id
        return groups

    @model_validator(mode="after")
    def _failover(self) -> RedisConfig:
        if self.auto_failover and self.sentinel is not None:
            raise ValueError("use auto_failover or sentinel, not both")
        return self
