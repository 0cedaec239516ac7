"""The `http:` config: what `steelyard check` accepts and the errors it names."""

from __future__ import annotations

import pytest

from steelyard.config.load import check_config_text
from steelyard.config.model import Config

BASE = """
pools:
  web: {servers: [{address: 127.0.0.1:8081}]}
http:
  - name: front
    listen: 127.0.0.1:8080
    read_timeout: 5s
    routes:
"""


def issues(routes: str, extra: str = "") -> list[str]:
    _, found = check_config_text(BASE + routes + extra)
    return [f"{i.line}: {i.path}: {i.message}" for i in found]


def test_a_full_listener_is_valid():
    cfg, found = check_config_text(
        BASE
        + """      - {host: "*.example.com", path: /api/, methods: [get, POST], pool: web,
         strip_prefix: /api, hash_key: "header:X-User", read_timeout: 1s,
         sticky: {cookie: srv}, limit_req: {rate: 10/s, burst: 5}}
      - {path_regex: '^/img/.*\\.png$', pool: web, retry_on: [502, 503], tries: 3}
      - {path: /ping, return: {status: 200, body: "pong"}}
      - {path: /old, redirect: {status: 308, location: "https://$host/new"}}
"""
    )
    assert found == []
    assert cfg is not None
    lst = cfg.http[0]
    assert lst.routes[0].methods == ["GET", "POST"]
    assert lst.resolve(lst.routes[0])["read_timeout"] == 1.0
    assert lst.resolve(lst.routes[1])["read_timeout"] == 5.0  # the listener's
    assert lst.routes[0].limit_req is not None and lst.routes[0].limit_req.rate == 10.0
    # the config survives the trip to the workers (JSON, "return" by its alias)
    again = Config.model_validate(cfg.model_dump(mode="json"))
    assert again.http[0].routes[2].return_ is not None


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ("      - {path: /, pool: nope}\n", "routes[0].pool: unknown pool 'nope'"),
        ("      - {path: /}\n", "exactly one of pool, return, redirect"),
        ("      - {path: /, pool: web, return: {status: 200}}\n", "found: pool, return"),
        ("      - {path: nope, pool: web}\n", "must start with /"),
        ("      - {path_regex: '(', pool: web}\n", "bad regular expression"),
        ("      - {path: /, pool: web, hash_key: body}\n", "key must be one of"),
        ("      - {path: /, pool: web, retry_on: [404]}\n", "404 is not a retryable status"),
        ("      - {path: /, pool: web, limit_req: {rate: fast}}\n", "rate must look like"),
        ("      - {path: /, pool: web, methods: ['G T']}\n", "is not a method name"),
        ("      - {host: 'a b', pool: web}\n", "host must be a name"),
        ("      - {path: /, pool: web, set_request_headers: {'X Y': a}}\n", "valid header name"),
        ("      - {path: /, pool: web, redirect: {status: 200, location: /}}\n", "redirect"),
        ("      - {path: /, pool: web, read_timout: 1s}\n", "read_timout"),
    ],
)
def test_route_errors_name_the_key(routes, expected):
    found = issues(routes)
    assert any(expected in f for f in found), found
    assert all(not f.startswith("None:") for f in found), found  # every issue has a line


def test_http_and_tcp_listeners_cannot_share_an_address():
    found = issues(
        "      - {path: /, pool: web}\n",
        "tcp:\n  - {name: t, listen: 127.0.0.1:8080, pool: web}\n",
    )
    expected = "http[0].listen: 127.0.0.1:8080 is already used by tcp[0]"
    assert any(expected in f for f in found), found


def test_missing_certificate_is_reported(tmp_path):
    found = issues(
        "      - {path: /, pool: web}\n",
        f"    tls: {{certs: [{{cert: {tmp_path}/no.crt, key: {tmp_path}/no.key}}]}}\n",
    )
    assert any("http[0].tls.certs[0]: cannot load" in f for f in found), found


def test_sizes_accept_units():
    routes = "      - {path: /, pool: web}\n"
    _, found = check_config_text(
        BASE + routes + "    max_body_bytes: 10m\n    max_header_bytes: 16KiB\n"
    )
    assert found == []
    assert issues(routes, "    max_body_bytes: lots\n")
