"""The config contract (the README's "Configuration") as pydantic models.

Every model forbids unknown keys, so a typo is an error with its key path rather than a silently
ignored setting. Durations are parsed into float seconds. Cross-references (pool names, duplicate
listeners, duplicate servers) live in `cross_check`, which returns each problem with its key path;
`Config`'s validator runs it to guard programmatic construction, and the loader (load.py) skips
that by validating with `context={SKIP_CROSS_CHECK: True}` and reports each problem on its own.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from steelyard.config.http_model import HttpListenerConfig
from steelyard.config.kernel_model import VirtualServiceConfig
from steelyard.config.mysql_model import MysqlBackendTlsConfig, MysqlConfig
from steelyard.config.redis_model import RedisConfig
from steelyard.config.shared import (
    Address,
    Duration,
    Name,
    ServerAddress,
    Strict,
    Timeout,
    parse_status_ranges,
)
from steelyard.config.vrrp_model import VrrpConfig
from steelyard.core.backend import split_address
from steelyard.core.balance import ALGORITHMS

# Validation context flag: leave cross-references to the caller, who calls `cross_check` itself.
SKIP_CROSS_CHECK = "skip_cross_check"


def _skip_cross_check(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(SKIP_CROSS_CHECK))


def format_path(path: tuple[str | int, ...]) -> str:
    """('pools', 'web', 'servers', 1) -> `pools.web.servers[1]`; () -> ''."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            # Keys with dots or spaces would make the dotted form ambiguous.
            out += f"[{part!r}]"
    return out


class HealthConfig(Strict):
    kind: Literal["tcp", "http", "mysql", "misc", "none"] = "tcp"
    interval: Duration = 2.0
    timeout: Duration = 1.0
    rise: int = Field(2, ge=1, le=100)
    fall: int = Field(3, ge=1, le=100)
    # http checker
    path: str = "/"
    method: Literal["GET", "HEAD", "OPTIONS"] = "GET"
    host: str | None = None
    expect_status: str = "200-399"
    # mysql checker: logs in as this user and runs SELECT 1 (as HAProxy's mysql-check does
    # the handshake; this goes as far as a statement)
    user: str | None = None
    password: str = ""
    # mysql checker on replicas: a replica that stopped replicating or lags more than this
    # fails its check (and leaves read rotation). Set from a mysql listener's
    # max_replication_lag for its replicas pool; 0 = not checked.
    max_replication_lag: Duration = 0.0
    # mysql checker: TLS to the server; set from a mysql listener's backend_tls
    tls: MysqlBackendTlsConfig | None = None
    # misc checker (Keepalived's MISC_CHECK): the program and its arguments as a list, run
    # without a shell so that no quoting rules stand between the config and the argv. Numbers
    # must be quoted ("5"): YAML reads 010 as 8, so guessing the string would run another argv.
    command: list[str] | None = None
    # misc checker: lets the script set the server's weight (Keepalived's misc_dynamic), so a
    # busy server can ask for less traffic without failing its check: exit 1 = down,
    # exit 2..255 = up with weight exit - 2, exit 0 = up with the weight unchanged.
    misc_dynamic: bool = False

    @field_validator("expect_status", mode="before")
    @classmethod
    def _status(cls, v: object) -> str:
        v = str(v)
        parse_status_ranges(v)
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in " \r\n\t")):
            raise ValueError("host must be a non-empty name without spaces")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c in v for c in " \r\n"):
            raise ValueError("path must start with / and contain no spaces")
        return v

    @model_validator(mode="after")
    def _timing(self) -> HealthConfig:
        if self.kind != "none" and self.interval <= 0:
            raise ValueError("interval must be above 0")
        if self.kind != "none" and self.timeout <= 0:
            raise ValueError("timeout must be above 0")
        return self

    @model_validator(mode="after")
    def _misc(self) -> HealthConfig:
        # Refused rather than ignored elsewhere: a command under kind tcp reads as if it ran.
        if self.kind == "misc" and not (self.command and self.command[0]):
            raise ValueError("kind misc needs command: the program to run and its arguments")
        if self.kind != "misc" and self.command is not None:
            raise ValueError(f"command is only for kind misc, not kind {self.kind}")
        if self.kind != "misc" and self.misc_dynamic:
            raise ValueError(f"misc_dynamic is only for kind misc, not kind {self.kind}")
        return self


class PassiveConfig(Strict):
    consecutive_failures: int = Field(5, ge=1)
    # HTTP: responses with a 5xx status in a row (0 = off), as Envoy's consecutive_5xx.
    consecutive_5xx: int = Field(0, ge=0)
    eject_for: Duration = 30.0
    max_ejected: float = Field(0.5, ge=0.0, le=1.0)


class ServerConfig(Strict):
    address: ServerAddress
    weight: int = Field(1, ge=0, le=1000)
    zone: str | None = None
    backup: bool = False
    max_conns: int = Field(0, ge=0)


class PoolConfig(Strict):
    balance: Literal[
        "round_robin", "least_conn", "random_two", "source_hash", "hash", "maglev", "first"
    ] = "round_robin"
    protect_threshold: float = Field(0.0, ge=0.0, le=1.0)
    health: HealthConfig | None = None
    passive: PassiveConfig | None = None
    slow_start: Duration = 0.0
    servers: list[ServerConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_servers(self, info: ValidationInfo) -> PoolConfig:
        # cross_check reports this too, with the duplicate's own key path.
        if _skip_cross_check(info):
            return self
        seen: set[tuple[str, int]] = set()
        for s in self.servers:
            key = split_address(s.address)
            if key in seen:
                raise ValueError(f"server {s.address} is listed twice")
            seen.add(key)
        return self


class AcceptProxyProtocol(Strict):
    """PROXY headers taken only from these source networks (nginx's set_real_ip_from): a
    connection from anywhere else is refused, since its header could claim any address."""

    from_: list[str] = Field(alias="from", min_length=1)

    model_config = Strict.model_config | {"populate_by_name": True, "serialize_by_alias": True}

    @field_validator("from_")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        out = []
        for net in v:
            try:
                out.append(str(ipaddress.ip_network(str(net), strict=False)))
            except ValueError:
                raise ValueError(f"{net!r} is not a network like 10.0.0.0/8 or ::1/128") from None
        return out


def _accept_kind(value: object) -> str:
    return "from" if isinstance(value, dict | AcceptProxyProtocol) else "bool"


# One branch checked, so an error names what was wrong with that form only.
AcceptProxy = Annotated[
    Annotated[bool, Tag("bool")] | Annotated[AcceptProxyProtocol, Tag("from")],
    Discriminator(_accept_kind),
]


class TcpListenerConfig(Strict):
    name: Name
    listen: Address
    pool: str
    connect_timeout: Timeout = 3.0
    retries: int = Field(2, ge=0, le=100)
    idle_timeout: Duration = 300.0  # 0 = never
    queue_timeout: Timeout = 3.0
    max_queue: int = Field(1024, ge=0)
    proxy_protocol: Literal["v1", "v2"] | None = None
    # true: from any source; {from: [networks]}: only from those
    accept_proxy_protocol: AcceptProxy = False
    proxy_protocol_timeout: Timeout = 3.0
    backlog: int = Field(1024, ge=1)


UNIX_PREFIX = "unix:"
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


def _check_admin_listen(value: object) -> object:
    """`host:port`, or `unix:/path/to.sock` (a socket file only its owner may use)."""
    if isinstance(value, str) and value.startswith(UNIX_PREFIX):
        path = value[len(UNIX_PREFIX) :]
        if not path or "\0" in path:
            raise ValueError("unix: needs a socket path, like unix:/run/steelyard.sock")
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ValueError(f"unix socket path {path!r} is longer than {MAX_UNIX_PATH} bytes")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address host:port, like 127.0.0.1:9900, got {value!r}")
    split_address(value)
    return value


AdminListen = Annotated[str, BeforeValidator(_check_admin_listen)]


def _check_host_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", value):
        raise ValueError(f"expected a host name like steelyard.example.com, got {value!r}")
    return value.lower().rstrip(".")


def _check_network(value: object) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not a network like 10.0.0.0/8 or 127.0.0.1/32") from None


class AdminConfig(Strict):
    listen: AdminListen | None = "127.0.0.1:9900"
    token: str | None = None
    # Names a browser may use for this API besides IP literals and `localhost` (the Host check
    # against DNS rebinding); a name in front of 0.0.0.0 or a reverse proxy belongs here.
    allowed_hosts: list[Annotated[str, BeforeValidator(_check_host_name)]] = Field(
        default_factory=list
    )
    # Networks a Redis server added at runtime (create-group, add-server) may be in, besides
    # the hosts of the servers the cluster already has: the dashboard sends backend_auth to it.
    server_networks: list[Annotated[str, BeforeValidator(_check_network)]] = Field(
        default_factory=list
    )
    header_timeout: Timeout = 10.0  # from a request's first byte to the end of its headers
    body_timeout: Timeout = 10.0  # to receive a request's body
    keepalive_timeout: Timeout = 15.0  # an idle connection between requests
    max_connections: int = Field(256, ge=1, le=65536)

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AdminConfig:
        if self.listen and not self.token and not is_local(self.listen):
            raise ValueError("admin.token is required when admin.listen is not a loopback address")
        return self


def is_unix(listen: str) -> bool:
    return listen.startswith(UNIX_PREFIX)


def is_local(listen: str) -> bool:
    """A unix socket or a loopback address: only this host's users can reach it."""
    return is_unix(listen) or is_loopback(listen)


def is_loopback(address: str) -> bool:
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StoreConfig(Strict):
    # etcd (shared by several nodes) comes with the multi-node issues; the key exists so that
    # configs can name it, and validation says it is not available yet.
    kind: Literal["embedded", "etcd"] = "embedded"
    path: str = "./steelyard-data"
    endpoints: list[str] = Field(default_factory=list)
    prefix: str = "/steelyard"

    @model_validator(mode="after")
    def _etcd(self) -> StoreConfig:
        if self.kind == "etcd":
            raise ValueError("store kind etcd is not available yet: use kind: embedded")
        return self


def _workers(value: object) -> int:
    import os

    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('workers must be a number or "auto"')
    if not 1 <= value <= 256:
        raise ValueError("workers must be between 1 and 256")
    return value


class Config(Strict):
    workers: Annotated[int, BeforeValidator(_workers)] = 1
    admin: AdminConfig = Field(default_factory=AdminConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    shutdown_timeout: Duration = 30.0
    pools: dict[Name, PoolConfig] = Field(default_factory=dict)
    tcp: list[TcpListenerConfig] = Field(default_factory=list)
    http: list[HttpListenerConfig] = Field(default_factory=list)
    redis: RedisConfig | None = None
    mysql: MysqlConfig | None = None
    vrrp: VrrpConfig | None = None
    virtual_services: list[VirtualServiceConfig] = Field(default_factory=list)

    def listeners(self) -> list[Any]:
        """Every listening section (tcp, http, redis proxies, mysql); each has a `listen`."""
        out: list[Any] = [*self.tcp, *self.http]
        if self.redis is not None:
            out += self.redis.proxies
        if self.mysql is not None:
            out += self.mysql.listeners
        return out

    @model_validator(mode="after")
    def _mysql_checks(self) -> Config:
        """A pool checked with `kind: mysql` and no user logs in as the backend user of the
        mysql listener that uses it (runs before the cross-check below)."""
        if self.mysql is None:
            return self
        for lst in self.mysql.listeners:
            for name in (lst.primary, lst.replicas):
                pool = self.pools.get(name) if name else None
                hc = pool.health if pool is not None else None
                if hc is not None and hc.kind == "mysql":
                    if not hc.user:
                        hc.user, hc.password = lst.backend_user, lst.backend_password
                    if hc.tls is None:
                        hc.tls = lst.backend_tls
                    if name == lst.replicas and not hc.max_replication_lag:
                        hc.max_replication_lag = lst.max_replication_lag
        return self

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Config:
        # Raised as one error per problem by load.py's cross-check, which knows the key paths;
        # here we only guard programmatic construction.
        if _skip_cross_check(info):
            return self
        problems = cross_check(self)
        if problems:
            raise ValueError("; ".join(msg for _, msg in problems))
        return self


def cross_check(cfg: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Errors that span several keys, each with the key path it belongs to."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    listens: dict[tuple[str, int], tuple[str | int, ...]] = {}
    names: set[str] = set()
    for pool_name, pool in cfg.pools.items():
        servers: dict[tuple[str, int], int] = {}
        for j, server in enumerate(pool.servers):
            key = split_address(server.address)
            path: tuple[str | int, ...] = ("pools", pool_name, "servers", j, "address")
            if key in servers:
                first = format_path(("pools", pool_name, "servers", servers[key]))
                problems.append(
                    (path, f"server {server.address} is listed twice (first at {first})")
                )
            else:
                servers[key] = j
    if cfg.admin.listen and not is_unix(cfg.admin.listen):
        listens[split_address(cfg.admin.listen)] = ("admin", "listen")

    def claim(listen: str, path: tuple[str | int, ...]) -> None:
        """One listening address per section: a second user of it is a problem."""
        key = split_address(listen)
        if key in listens:
            problems.append((path, f"{listen} is already used by {format_path(listens[key])}"))
        else:
            listens[key] = path

    listeners: list[tuple[str, int, TcpListenerConfig | HttpListenerConfig]] = [
        *(("tcp", i, lst) for i, lst in enumerate(cfg.tcp)),
        *(("http", i, lst) for i, lst in enumerate(cfg.http)),
    ]
    for tier, i, lst in listeners:
        if isinstance(lst, TcpListenerConfig) and lst.pool not in cfg.pools:
            problems.append(((tier, i, "pool"), f"unknown pool {lst.pool!r}"))
        if isinstance(lst, HttpListenerConfig):
            for j, route in enumerate(lst.routes):
                if route.pool is not None and route.pool not in cfg.pools:
                    problems.append(
                        ((tier, i, "routes", j, "pool"), f"unknown pool {route.pool!r}")
                    )
        if lst.name in names:
            problems.append(((tier, i, "name"), f"duplicate listener name {lst.name!r}"))
        names.add(lst.name)
        claim(lst.listen, (tier, i, "listen"))
    for pool_name, pool in cfg.pools.items():
        if pool.health is not None and pool.health.kind == "mysql" and not pool.health.user:
            why = "the mysql check logs in: give it a user, or use the pool in a mysql listener"
            problems.append((("pools", pool_name, "health"), why))
    if cfg.mysql is not None:
        for i, my in enumerate(cfg.mysql.listeners):
            for key in ("primary", "replicas"):
                name = getattr(my, key)
                if name is not None and name not in cfg.pools:
                    problems.append((("mysql", "listeners", i, key), f"unknown pool {name!r}"))
            claim(my.listen, ("mysql", "listeners", i, "listen"))
    if cfg.redis is not None:
        for i, proxy in enumerate(cfg.redis.proxies):
            claim(proxy.listen, ("redis", "proxies", i, "listen"))
    for i, inst in enumerate(cfg.vrrp.instances if cfg.vrrp else []):
        for j, tracked in enumerate(inst.track.pools):
            if tracked.name not in cfg.pools:
                path = ("vrrp", "instances", i, "track", "pools", j, "name")
                problems.append((path, f"no pool named {tracked.name!r} in pools:"))
    services: dict[tuple[str, str], int] = {}
    for i, vs in enumerate(cfg.virtual_services):
        if vs.pool not in cfg.pools:
            problems.append((("virtual_services", i, "pool"), f"unknown pool {vs.pool!r}"))
        key = (vs.protocol, vs.address)
        if key in services:
            first = format_path(("virtual_services", services[key]))
            why = f"{vs.protocol} {vs.address} is already a virtual service (at {first})"
            problems.append((("virtual_services", i, "address"), why))
        services.setdefault(key, i)
    return problems


__all__ = [
    "ALGORITHMS",
    "SKIP_CROSS_CHECK",
    "AdminConfig",
    "Config",
    "HealthConfig",
    "HttpListenerConfig",
    "PassiveConfig",
    "PoolConfig",
    "ServerConfig",
    "StoreConfig",
    "TcpListenerConfig",
    "cross_check",
    "format_path",
    "is_local",
    "is_loopback",
    "is_unix",
    "parse_status_ranges",
]
