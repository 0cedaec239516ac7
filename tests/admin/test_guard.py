"""The guard's decisions over header values (admin/guard.py) and the admin config keys that
feed it: every Host form a browser can send, Origin against Host, the JSON rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from steelyard.admin.guard import Guard, Refusal, host_name
from steelyard.config.model import AdminConfig


@pytest.mark.parametrize(
    ("authority", "name"),
    [
        ("127.0.0.1:9900", "127.0.0.1"),
        ("LocalHost:1", "localhost"),
        ("[::1]:9900", "::1"),
        ("[::1]", "::1"),
        ("example.com.", "example.com"),
        ("example.com:80", "example.com"),
        ("example.com:x", "example.com:x"),  # not a port: the whole value, a name of nothing
    ],
)
def test_host_name(authority: str, name: str) -> None:
    assert host_name(authority) == name


@pytest.mark.parametrize("host", ["127.0.0.1:9900", "10.1.2.3", "[::1]:1", "[fe80::1]", None,
                                  "localhost", "admin.example:443", "ADMIN.EXAMPLE."])  # fmt: skip
def test_hosts_of_this_api(host: str | None) -> None:
    Guard("127.0.0.1:9900", ["admin.example"]).check_host(host)


FOREIGN = ["attacker.example", "127.0.0.1.nip.io:9900", "", "admin.example.evil",
           "localhost.attacker.example", "[::1"]  # fmt: skip


@pytest.mark.parametrize("host", FOREIGN)
def test_foreign_hosts(host: str) -> None:
    with pytest.raises(Refusal) as refused:
        Guard("127.0.0.1:9900", ["admin.example"]).check_host(host)
    assert refused.value.status == 403


def test_the_listen_name_is_a_host_of_the_api() -> None:
    Guard("steelyard.internal:9900").check_host("steelyard.internal:9900")
    Guard("unix:/run/s.sock").check_host("localhost")
    with pytest.raises(Refusal):
        Guard("unix:/run/s.sock").check_host("steelyard.internal")


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "127.0.0.1:9900"),
        ("http://127.0.0.1:9900", "127.0.0.1:9900"),
        ("HTTP://LOCALHOST:9900", "localhost:9900"),
        ("http://admin.example", "admin.example:80"),
        ("https://admin.example:443", "admin.example"),
        ("http://[::1]:9900", "[::1]:9900"),
    ],
)
def test_same_origin_changes(origin: str | None, host: str) -> None:
    Guard("127.0.0.1:9900", ["admin.example"]).check_change(
        "POST", host, origin, "application/json", True
    )


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://attacker.example", "127.0.0.1:9900"),
        ("null", "127.0.0.1:9900"),
        ("http://127.0.0.1:9901", "127.0.0.1:9900"),  # another port is another origin
        ("https://127.0.0.1:9900", "127.0.0.1:9900:443"),
        ("ftp://127.0.0.1:9900", "127.0.0.1:9900"),
        ("http://127.0.0.1:9900", None),
        ("", "127.0.0.1:9900"),
    ],
)
def test_cross_origin_changes(origin: str, host: str | None) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        with pytest.raises(Refusal) as refused:
            Guard("127.0.0.1:9900").check_change(method, host, origin, "application/json", True)
        assert refused.value.status == 403
    Guard("127.0.0.1:9900").check_change("GET", host, origin, "", False)  # reads: CORS guards


def test_a_change_is_json() -> None:
    guard = Guard("127.0.0.1:9900")
    for content_type in ("", "text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data", "application/octet-stream"):  # fmt: skip
        for method in ("POST", "PUT", "PATCH"):
            with pytest.raises(Refusal) as refused:
                guard.check_change(method, "127.0.0.1:9900", None, content_type, False)
            assert refused.value.status == 415
        with pytest.raises(Refusal):
            guard.check_change("DELETE", "127.0.0.1:9900", None, content_type, True)
    guard.check_change("DELETE", "127.0.0.1:9900", None, "", False)  # nothing to type


def test_admin_config_keys() -> None:
    cfg = AdminConfig()
    assert (cfg.header_timeout, cfg.body_timeout, cfg.keepalive_timeout) == (10.0, 10.0, 15.0)
    assert (cfg.max_connections, cfg.allowed_hosts, cfg.server_networks) == (256, [], [])
    cfg = AdminConfig(
        listen="unix:/run/steelyard/admin.sock",
        allowed_hosts=["LB1.Example.NET."],
        server_networks=["10.1.2.3/16"],
    )
    assert cfg.token is None  # a unix socket is local: only its owner can connect
    assert (cfg.allowed_hosts, cfg.server_networks) == (["lb1.example.net"], ["10.1.0.0/16"])
    for bad, words in [
        ({"listen": "unix:"}, "needs a socket path"),
        ({"listen": "unix:/" + "d" * 120}, "longer than 107 bytes"),
        ({"listen": "0.0.0.0:9900"}, "admin.token is required"),
        ({"allowed_hosts": ["a b"]}, "host name"),
        ({"allowed_hosts": ["http://x"]}, "host name"),
        ({"server_networks": ["10.0.0.0/33"]}, "not a network"),
        ({"header_timeout": "0s"}, "greater than 0"),
        ({"max_connections": 0}, "greater than or equal to 1"),
    ]:
        with pytest.raises(ValidationError, match=words):
            AdminConfig(**bad)
