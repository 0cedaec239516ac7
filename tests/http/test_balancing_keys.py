"""Per-route balancing keys for hash pools, and sticky cookies."""

from __future__ import annotations

import httpx

from fixtures.procs import wait_for
from fixtures.web import http_config


def names(port: int, path: str, n: int = 1, **kw) -> list[str]:
    return [httpx.get(f"http://127.0.0.1:{port}{path}", **kw).text.strip() for _ in range(n)]


def hash_pool(*backends, balance: str = "hash") -> dict:
    return {"balance": balance, "servers": [{"address": b.address} for b in backends]}


def test_hash_by_uri(tmp_path, http_backends, steelyard):
    bs = [http_backends(n) for n in "abc"]
    cfg, port = http_config(
        tmp_path, {"p": hash_pool(*bs)}, [{"path": "/", "pool": "p", "hash_key": "uri"}]
    )
    steelyard(cfg)
    seen = set()
    for i in range(30):
        got = names(port, f"/item/{i}", 3)
        assert len(set(got)) == 1, got  # one URI, one server
        seen.add(got[0])
    assert seen == {"a", "b", "c"}  # and URIs spread over all of them


def test_hash_by_header_and_cookie(tmp_path, http_backends, steelyard):
    bs = [http_backends(n) for n in "abc"]
    routes = [
        {"path": "/h", "pool": "p", "hash_key": "header:X-User"},
        {"path": "/c", "pool": "p", "hash_key": "cookie:uid"},
    ]
    cfg, port = http_config(tmp_path, {"p": hash_pool(*bs, balance="maglev")}, routes)
    steelyard(cfg)
    # 60 users: with three servers, one missing from all of them is a 3 * (2/3)^60 chance
    # (with 20 it was 1 in 1000, and it happened)
    users = [str(u) for u in range(60)]
    by_header = {u: set(names(port, "/h", 2, headers={"X-User": u})) for u in users}
    assert all(len(s) == 1 for s in by_header.values())
    assert len(set().union(*by_header.values())) == 3
    by_cookie = {u: set(names(port, "/c", 2, cookies={"uid": u})) for u in users}
    assert all(len(s) == 1 for s in by_cookie.values())
    assert len(set().union(*by_cookie.values())) == 3


def test_source_hash_keeps_one_client_on_one_server(tmp_path, http_backends, steelyard):
    bs = [http_backends(n) for n in "abc"]
    cfg, port = http_config(
        tmp_path, {"p": hash_pool(*bs, balance="source_hash")}, [{"path": "/", "pool": "p"}]
    )
    steelyard(cfg)
    assert len(set(names(port, "/x", 6))) == 1


def test_sticky_cookie_pins_and_falls_over(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    routes = [{"path": "/", "pool": "p", "sticky": {"cookie": "srv", "max_age": "1h"}}]
    cfg, port = http_config(tmp_path, {"p": [a.address, b.address]}, routes)
    sy = steelyard(cfg)
    with httpx.Client() as c:
        first = c.get(f"http://127.0.0.1:{port}/x")
        set_cookie = first.headers["set-cookie"]
        assert set_cookie.startswith("srv=") and "Max-Age=3600" in set_cookie
        assert "HttpOnly" in set_cookie and "Path=/" in set_cookie
        pinned = first.text
        assert {c.get(f"http://127.0.0.1:{port}/x").text for _ in range(6)} == {pinned}
        # a pinned client is not given a new cookie while its server is up
        assert "set-cookie" not in c.get(f"http://127.0.0.1:{port}/x").headers
        down = a if pinned == "a\n" else b
        sy.api("PUT", f"/api/pools/p/servers/{down.address}", {"state": "maint"})

        def elsewhere() -> httpx.Response | None:
            r = c.get(f"http://127.0.0.1:{port}/x")
            return r if r.text != pinned else None

        moved = wait_for(elsewhere, what="the maint state reached the worker")
        assert "set-cookie" in moved.headers
        assert {c.get(f"http://127.0.0.1:{port}/x").text for _ in range(4)} == {moved.text}
