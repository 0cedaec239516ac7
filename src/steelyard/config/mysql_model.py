"""The `mysql:` part of the config contract: listeners that speak the MySQL protocol, the users
they accept, how they log in to the servers, and where statements go.

`primary` and `replicas` name pools of `pools:` (the same pools, algorithms and health checks
as every tier); a pool whose `health` is `{kind: mysql}` without a user is checked as this
listener's `backend_user`.
"""

from __future__ import annotations

import ipaddress
import os

from pydantic import Field, field_validator, model_validator

from steelyard.config.shared import Address, Duration, Size, Strict
from steelyard.config.tls_model import TlsConfig


class MysqlUserConfig(Strict):
    name: str = Field(min_length=1, max_length=80)
    password: str = ""
    max_connections: int = Field(0, ge=0)  # 0: no limit (MySQL's max_user_connections)
    # sees every session in SHOW PROCESSLIST and may KILL any (MySQL's PROCESS privilege);
    # without it a user sees and kills its own sessions only
    process: bool = False


class FirewallConfig(Strict):
    block_unbounded_writes: bool = False  # UPDATE and DELETE without WHERE


class MysqlTlsConfig(TlsConfig):
    # refuse clients that do not ask for TLS (MySQL's require_secure_transport)
    required: bool = False


class MysqlBackendTlsConfig(Strict):
    """TLS from the proxy to its MySQL servers (ProxySQL's use_ssl): the login and every
    statement inside it."""

    verify: bool = True  # the server's certificate, against `ca` (else the system's CAs)
    ca: str | None = None
    cert: str | None = None  # a client certificate, for users that REQUIRE X509
    key: str | None = None
    server_name: str | None = None  # the name the certificate must show; default its host

    @field_validator("ca", "cert", "key")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isfile(v):
            raise ValueError(f"{v}: no such file")
        return v

    @model_validator(mode="after")
    def _pair(self) -> MysqlBackendTlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class MysqlListenerConfig(Strict):
    listen: Address
    users: list[MysqlUserConfig] = Field(min_length=1)
    backend_user: str = Field(min_length=1)
    backend_password: str = ""
    primary: str  # a pool name
    replicas: str | None = None  # a pool name; None: every statement goes to the primary
    max_replication_lag: Duration = 5.0  # replicas further behind leave read rotation
    causal_reads: bool = False  # read-your-writes on MariaDB (MASTER_GTID_WAIT)
    causal_reads_timeout: Duration = 10.0  # then the read goes to the primary (as MaxScale)
    allow: list[str] = Field(default_factory=list)  # client CIDRs; empty: everyone
    firewall: FirewallConfig = Field(default_factory=FirewallConfig)
    max_allowed_packet: Size = 64 * 1024 * 1024
    # what clients are told; None: the primary's own version (clients adapt to the server)
    server_version: str | None = None
    max_clients: int = Field(10000, ge=1)
    # statements one client may keep prepared (MariaDB's max_prepared_stmt_count is for the
    # whole server, 16382)
    max_prepared_stmt_count: int = Field(1024, ge=1)
    # a client that has not logged in by then is cut off (MariaDB's connect_timeout)
    login_timeout: Duration = Field(10.0, gt=0)
    # a logged-in client that sends no command for this long is closed (MariaDB's
    # wait_timeout, 8 hours); 0: never
    idle_timeout: Duration = Field(28800.0, ge=0)
    # a client that reads nothing of an answer for this long is closed (net_write_timeout)
    write_timeout: Duration = Field(60.0, gt=0)
    # a client in the middle of a LOCAL INFILE upload that sends nothing for this long is
    # closed (net_read_timeout)
    read_timeout: Duration = Field(30.0, gt=0)
    backend_pool_size: int = Field(64, ge=1)  # connections kept per server per worker
    tls: MysqlTlsConfig | None = None  # TLS for clients (CLIENT_SSL), as MySQL's own
    backend_tls: MysqlBackendTlsConfig | None = None  # TLS to the servers; None: cleartext
    # LOAD DATA LOCAL INFILE: offered to clients (CLIENT_LOCAL_FILES) and asked of the servers;
    # a server's request for a file is passed on only for a LOAD DATA / XML LOCAL statement
    local_infile: bool = False

    @field_validator("allow")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or a CIDR block") from None
        return v

    @model_validator(mode="after")
    def _users(self) -> MysqlListenerConfig:
        names = [u.name for u in self.users]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"user {name!r} is listed twice")
        return self


class MysqlConfig(Strict):
    listeners: list[MysqlListenerConfig] = Field(default_factory=list)
