"""A hostile web page and a hostile local listener against a real `steelyard run`'s admin API.

The attacks of the hardening review, replayed as a browser would send them: a form's
`text/plain` POST from another origin (it created a Redis group and started a rebalance), a
DNS-rebound page (Host is the attacker's name, the request reaches 127.0.0.1), and Redis admin
bodies pointing the dashboard at a listener of the attacker's choosing (it received
`AUTH <backend_auth>`). Each is refused with its status and a JSON reason, nothing changes,
and the next, proper request is served.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for

PASSWORD = "backend-s3cret"


def send(
    admin: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> tuple[int, Any]:
    """One request with exactly these headers (Host too: `host`, default the real one)."""
    conn = http.client.HTTPConnection(admin, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or admin)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(raw)
        return resp.status, raw
    finally:
        conn.close()


def redis_config(tmp_path, port: int, *servers, **admin: Any) -> dict:
    cfg = base_config(tmp_path)
    cfg["admin"].update(admin)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}", "backend_auth": PASSWORD}],
        "groups": [{"id": i + 1, "master": s.address} for i, s in enumerate(servers)],
    }
    return cfg


def locked(server) -> None:
    """requirepass set after the start (the fixture's readiness PING needs none)."""
    server.command(b"CONFIG", b"SET", b"requirepass", PASSWORD.encode())


def redis_state(sy) -> tuple[list[int], list[Any]]:
    view = sy.api("GET", "/api/redis")
    return [g["id"] for g in view["groups"]], view["moves"]


def test_cross_site_form_post_changes_nothing(tmp_path, redis_servers, steelyard):
    """The review's repro: a page on attacker.example submits a text/plain form (no preflight)
    to create a group on a server of its choice, then to rebalance. Before: 201 and 202, a
    group 3 and 512 slots queued. Now: 403 (foreign Host, foreign Origin, Origin null) or
    415 (not JSON), the model untouched; the same requests as ctl sends them still work."""
    a, b, c = redis_servers(), redis_servers(), redis_servers()
    for s in (a, b, c):
        locked(s)
    port = free_port()
    sy = steelyard(redis_config(tmp_path, port, a, b))
    body = json.dumps({"id": 3, "master": c.address, "weight": 9}).encode()
    form = {"Content-Type": "text/plain"}
    own = f"http://{sy.admin}"
    cases = [
        # DNS rebinding: the attacker's name resolves to 127.0.0.1
        ({**form, "Origin": "http://attacker.example"}, "attacker.example", 403, "Host"),
        ({**form, "Origin": "http://attacker.example:80"}, "attacker.example:9900", 403, "Host"),
        # classic CSRF: the form posts to 127.0.0.1 itself
        ({**form, "Origin": "http://attacker.example"}, None, 403, "cross-origin"),
        ({**form, "Origin": "null"}, None, 403, "cross-origin"),  # sandboxed iframe, file://
        ({"Content-Type": "application/json", "Origin": "http://attacker.example"}, None, 403,
         "cross-origin"),
        (form, None, 415, "application/json"),  # no Origin (an old browser): still not JSON
        ({**form, "Origin": own}, None, 415, "application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, None, 415, "application/json"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, None, 415, "application/json"),
    ]  # fmt: skip
    for headers, host, status, reason in cases:
        for path, data in (("/api/redis/groups", body), ("/api/redis/rebalance", b"{}")):
            got, answer = send(sy.admin, "POST", path, data, headers, host)
            assert got == status, (headers, host, answer)
            assert set(answer) == {"error"} and reason in answer["error"]
    assert redis_state(sy) == ([1, 2], [])
    assert sy.count_log(r"event=admin_refused .*status=40[3]") >= 10
    # the same change as ctl (JSON, no Origin) and as the dashboard page (same Origin) works
    page = {"Content-Type": "application/json; charset=utf-8", "Origin": own}
    status, group = send(sy.admin, "POST", "/api/redis/groups", body, page)
    assert (status, group["id"], group["master"]) == (201, 3, c.address)
    status, answer = send(sy.admin, "POST", "/api/redis/rebalance", b"{}",
                          {"Content-Type": "application/json"})  # fmt: skip
    assert status == 202 and len(answer["queued"]) > 0
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    assert r.set("still", "served") and r.get("still") == b"served"


def test_rebinding_host_is_refused_on_every_route(tmp_path, backends, steelyard):
    """A rebound page is same-origin with the API and would read everything: every route
    (GET included, pages and metrics too) answers 403 to a Host that is not a name of this
    API; IP literals, localhost and admin.allowed_hosts are names of it."""
    be = backends("a")
    cfg = base_config(tmp_path, pools={"p": {"servers": [{"address": be.address}]}})
    cfg["admin"]["allowed_hosts"] = ["admin.example.net"]
    sy = steelyard(cfg)
    port = sy.admin.rpartition(":")[2]
    for path in ("/api/pools", "/healthz", "/metrics", "/api/pools/p", "/nope"):
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io",
                     f"ADMIN.example.net.evil:{port}", "localhost.attacker.example"):  # fmt: skip
            status, answer = send(sy.admin, "GET", path, host=host)
            assert status == 403, (path, host)
            assert "is not a name of this admin API" in answer["error"]
    for host in (sy.admin, f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "10.9.8.7",
                 f"admin.example.net:{port}", "Admin.Example.Net."):  # fmt: skip
        status, answer = send(sy.admin, "GET", "/api/pools", host=host)
        assert status == 200, host
        assert answer["pools"][0]["servers"][0]["address"] == be.address


def test_a_change_not_sent_as_json_is_415(tmp_path, backends, steelyard):
    """PUT (and DELETE with a body) must be application/json: 415 otherwise, nothing changed."""
    be = backends("a")
    sy = steelyard(base_config(tmp_path, pools={"p": {"servers": [{"address": be.address}]}}))
    path = f"/api/pools/p/servers/{be.address}"
    body = b'{"state": "maint"}'
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/jsonx"},
                    {"Content-Type": "text/json"}):  # fmt: skip
        status, answer = send(sy.admin, "PUT", path, body, headers)
        assert status == 415, headers
        assert "Content-Type: application/json" in answer["error"]
    assert sy.server("p", be.address)["state"] == "ready"
    status, answer = send(sy.admin, "PUT", path, body, {"Content-Type": "application/json"})
    assert (status, answer["state"]) == (200, "maint")


def test_redis_admin_addresses_are_ip_literals_of_the_cluster(
    tmp_path, redis_servers, steelyard, recorder
):
    """The leak of the review: POST a group (or a server) whose address is a listener of the
    caller's choosing, and the dashboard logged in to it with `AUTH <backend_auth>`. Now a
    name is 400, a host the cluster does not use is 403 (admin.server_networks widens it), and
    the listener never sees a connection, let alone the password."""
    a, b = redis_servers(), redis_servers()
    for s in (a, b):
        locked(s)
    port = free_port()
    sy = steelyard(redis_config(tmp_path, port, a, b))
    json_ = {"Content-Type": "application/json"}
    name = f"localhost:{recorder.address.rpartition(':')[2]}"
    refusals = [
        ("/api/redis/groups", {"id": 3, "master": recorder.address}, 403),
        ("/api/redis/groups", {"id": 3, "master": a.address.replace("1:", "1 :")}, 400),
        ("/api/redis/groups", {"id": 3, "master": name}, 400),
        ("/api/redis/groups", {"id": 3, "master": "redis.attacker.example:6379"}, 400),
        ("/api/redis/groups/1/servers", {"address": recorder.address}, 403),
        ("/api/redis/groups/1/servers", {"address": name}, 400),
        ("/api/redis/groups/1/servers", {"address": f"[::ffff:127.0.0.2]:{port}"}, 403),
        ("/api/redis/groups/1/promote", {"address": name}, 400),
    ]
    for path, body, status in refusals:
        got, answer = send(sy.admin, "POST", path, json.dumps(body).encode(), json_)
        assert got == status, (body, answer)
        assert "address" in answer["error"] or "not a host of this cluster" in answer["error"]
    # a replica on a foreign host in an otherwise fine group: refused before any server is told
    body = {"id": 3, "master": a.address.replace(str(a.port), str(free_port())),
            "replicas": [recorder.address]}  # fmt: skip
    got, answer = send(sy.admin, "POST", "/api/redis/groups", json.dumps(body).encode(), json_)
    assert got == 403 and recorder.address in answer["error"]
    # and the cross-site form version of it
    send(sy.admin, "POST", "/api/redis/groups/1/servers",
         json.dumps({"address": recorder.address}).encode(),
         {"Content-Type": "text/plain", "Origin": "http://attacker.example"})  # fmt: skip
    assert redis_state(sy) == ([1, 2], [])
    assert sy.api("GET", "/api/redis")["groups"][0]["replicas"] == []
    # The health probes (every second, with backend_auth) reach the model's servers only.
    wait_for(lambda: _probed(sy, a.address), 30, "a probe of a real server")
    assert recorder.connections == 0
    assert PASSWORD.encode() not in recorder.received and b"AUTH" not in recorder.received
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    assert r.set("k", "v") and r.get("k") == b"v"


def _probed(sy, address: str) -> bool:
    groups = sy.api("GET", "/api/redis")["groups"]
    return any((g["servers"].get(address) or {}).get("up") for g in groups)


def test_server_networks_let_a_new_host_in(tmp_path, redis_servers, steelyard):
    """admin.server_networks names the networks where new servers may live: a group on a host
    the cluster did not use is created (and served) once its network is listed."""
    a = redis_servers()
    c = redis_servers("--bind", "127.0.0.3", "127.0.0.1")
    for s in (a, c):
        locked(s)
    port = free_port()
    sy = steelyard(redis_config(tmp_path, port, a, server_networks=["127.0.0.3/32"]))
    address = f"127.0.0.3:{c.port}"
    status, group = send(sy.admin, "POST", "/api/redis/groups",
                         json.dumps({"id": 2, "master": address}).encode(),
                         {"Content-Type": "application/json"})  # fmt: skip
    assert (status, group["master"]) == (201, address)
    wait_for(lambda: _probed(sy, address), 30, "the new server probed with backend_auth")
