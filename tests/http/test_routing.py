"""Routes: host, path, regex, methods, headers; local answers, redirects, rewrites, 404."""

from __future__ import annotations

import httpx
import pytest

from fixtures.web import http_config, raw_exchange


@pytest.fixture
def routed(tmp_path, http_backends, steelyard):
    a, b, c = http_backends("a"), http_backends("b"), http_backends("c")
    routes = [
        {"host": "api.example.com", "path": "/v1/", "pool": "a", "strip_prefix": "/v1"},
        {"host": "*.example.com", "pool": "b"},
        {"path_regex": r"^/img/.*\.png$", "pool": "c", "add_prefix": "/echo"},
        {"path": "/admin", "methods": ["POST"], "pool": "c"},
        {"path": "/canary", "headers": {"X-Env": "canary"}, "pool": "b"},
        {"path": "/canary", "pool": "a"},
        {"path": "/ping", "return": {"status": 200, "body": "pong\n"}},
        {"path": "/old", "redirect": {"status": 301, "location": "https://$host/new"}},
        {
            "path": "/echo",
            "pool": "a",
            "set_request_headers": {"X-Added": "1", "User-Agent": ""},
            "remove_request_headers": ["X-Drop"],
            "set_response_headers": {"X-Served-By": "steelyard"},
            "remove_response_headers": ["Content-Type"],
        },
    ]
    cfg, port = http_config(
        tmp_path, {"a": [a.address], "b": [b.address], "c": [c.address]}, routes
    )
    steelyard(cfg)
    return port


def get(port: int, path: str, host: str = "x", method: str = "GET", **kw) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", headers={"Host": host, **kw})


def test_host_and_prefix_with_strip(routed):
    r = get(routed, "/v1/echo?q=1", host="api.example.com")
    assert r.json()["name"] == "a" and r.json()["target"] == "/echo?q=1"


def test_wildcard_host(routed):
    assert get(routed, "/anything", host="shop.example.com").text == "b\n"
    assert get(routed, "/anything", host="SHOP.Example.COM:8080").text == "b\n"
    # the bare domain is not covered by *.example.com
    assert get(routed, "/anything", host="example.com").status_code == 404


def test_regex_and_add_prefix(routed):
    doc = get(routed, "/img/cat.png?s=2").json()
    assert doc["name"] == "c" and doc["target"] == "/echo/img/cat.png?s=2"
    assert get(routed, "/img/cat.gif").status_code == 404


def test_methods(routed):
    assert get(routed, "/admin", method="POST").text == "c\n"
    assert get(routed, "/admin", method="GET").status_code == 404


def test_header_condition_then_fallthrough(routed):
    assert get(routed, "/canary", **{"X-Env": "canary"}).text == "b\n"
    assert get(routed, "/canary", **{"X-Env": "stable"}).text == "a\n"


def test_local_return_and_redirect(routed):
    r = get(routed, "/ping")
    assert (r.status_code, r.text) == (200, "pong\n")
    r = get(routed, "/old", host="shop.example.org")
    assert r.status_code == 301 and r.headers["location"] == "https://shop.example.org/new"


def test_no_route_is_404_with_a_body(routed):
    r = get(routed, "/nothing/here")
    assert r.status_code == 404 and "no route" in r.text


def test_header_rewrites(routed):
    r = get(routed, "/echo", **{"X-Drop": "1", "X-Keep": "2", "User-Agent": "ua"})
    assert r.headers["x-served-by"] == "steelyard"
    assert "content-type" not in r.headers
    h = {k.lower(): v for k, v in r.json()["headers"]}
    assert h["x-added"] == "1" and h["x-keep"] == "2"
    assert "x-drop" not in h and "user-agent" not in h  # an empty value removes


def test_local_answer_to_head_has_no_body(routed):
    r = raw_exchange(routed, b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n", head_request=True)
    assert r.status == 200 and r.header("content-length") == "5" and r.body == b""
