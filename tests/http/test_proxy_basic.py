"""The HTTP proxy end to end: real steelyard, h11 backends, httpx and raw-socket clients."""

from __future__ import annotations

import hashlib
import json
import subprocess

import httpx
import pytest

from fixtures.web import RawClient, http_config, raw_exchange


@pytest.fixture
def one(tmp_path, http_backends, steelyard):
    """A listener with one pool of one backend, all paths routed to it."""
    b = http_backends("b1")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    return port, b, sy


def echo(port: int, path: str = "/echo", **kw) -> dict:
    r = httpx.get(f"http://127.0.0.1:{port}{path}", **kw)
    assert r.status_code == 200, r.text
    return r.json()


def lower_headers(doc: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in doc["headers"]}


def test_get_with_forwarding_headers(one):
    port, _, _ = one
    doc = echo(port, "/echo?x=1", headers={"X-Forwarded-For": "10.1.1.1"})
    assert doc["name"] == "b1" and doc["target"] == "/echo?x=1"
    h = lower_headers(doc)
    assert h["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == f"127.0.0.1:{port}"
    assert h["host"] == f"127.0.0.1:{port}"
    assert h["via"] == "1.1 steelyard"
    assert len(h["x-request-id"]) == 32


def test_request_id_is_kept_and_unique(one):
    port, _, _ = one
    assert lower_headers(echo(port, headers={"X-Request-ID": "abc-1"}))["x-request-id"] == "abc-1"
    ids = {lower_headers(echo(port))["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_hop_by_hop_headers_stop_at_the_proxy(one):
    port, _, _ = one
    req = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: a\r\n"
        b"Upgrade: h2c\r\nX-Kept: yes\r\n\r\n"
    )
    r = raw_exchange(port, req)
    h = lower_headers(json.loads(r.body))
    for gone in ("x-secret", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert gone not in h, gone
    assert "connection" not in h  # HTTP/1.1 to the server: keep-alive is the default
    assert h["x-kept"] == "yes"


def test_client_and_server_connections_are_kept_alive(one):
    port, _, _ = one
    with httpx.Client() as c:
        docs = [c.get(f"http://127.0.0.1:{port}/echo").json() for _ in range(5)]
    # one server connection carried every request, in order
    assert {d["conn"] for d in docs} == {docs[0]["conn"]}
    assert [d["n"] for d in docs] == list(range(docs[0]["n"], docs[0]["n"] + 5))


def test_pipelined_requests_are_answered_in_order(one):
    port, _, _ = one
    with RawClient(port) as c:
        c.send(
            b"GET /slow/200 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, second, third = c.response(), c.response(), c.response()
    assert (first.status, first.body) == (200, b"slow\n")
    assert (second.status, second.body) == (201, b"b1 201")
    assert third.status == 200 and json.loads(third.body)["target"] == "/echo"


@pytest.mark.parametrize("size", [0, 1, 100_000, 3_000_000])
def test_bodies_with_content_length_both_ways(one, size):
    port, _, _ = one
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    r = httpx.post(f"http://127.0.0.1:{port}/upload", content=body)
    assert r.status_code == 200
    assert r.json() == {"size": size, "sha256": hashlib.sha256(body).hexdigest()}
    r = httpx.get(f"http://127.0.0.1:{port}/bytes/{size}")
    assert r.headers["content-length"] == str(size) and len(r.content) == size


def test_chunked_upload_and_download(one):
    port, _, _ = one
    parts = [b"a" * 1000, b"b" * 70000, b"c"]

    def gen():
        yield from parts

    r = httpx.post(f"http://127.0.0.1:{port}/upload", content=gen())
    whole = b"".join(parts)
    assert r.json() == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    r = httpx.get(f"http://127.0.0.1:{port}/chunked/200000")
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.content == b"c" * 200000


def test_close_delimited_response_becomes_chunked_for_http11(one):
    port, _, _ = one
    with RawClient(port) as c:
        c.send(b"GET /close/5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response()
        assert r.header("transfer-encoding") == "chunked" and r.body == b"z" * 5000
        # the client connection stays usable
        c.send(b"GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().status == 202


def test_http10_client_gets_close_delimited_body(one):
    port, _, _ = one
    with RawClient(port) as c:
        c.send(b"GET /close/3000 HTTP/1.0\r\n\r\n")
        r = c.response()
        assert r.body == b"z" * 3000 and r.header("transfer-encoding") is None
        assert c.closed()


def test_http10_keep_alive(one):
    port, _, _ = one
    with RawClient(port) as c:
        c.send(b"GET /status/200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.header("connection") == "keep-alive"
        c.send(b"GET /status/203 HTTP/1.0\r\n\r\n")
        assert c.response().status == 203
        assert c.closed()


def test_head_204_304_have_no_body(one):
    port, _, _ = one
    with RawClient(port) as c:
        c.send(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response(head_request=True)
        assert r.status == 200 and r.header("content-length") == "5000"
        c.send(b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().status == 204
        c.send(b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().status == 304
        # nothing stray was left on the connection: the next answer is the right one
        c.send(b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().body == b"b1 201"


def test_informational_responses_are_not_forwarded(one):
    port, _, _ = one
    with RawClient(port) as c:
        c.send(b"GET /hints HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response()
        assert (r.status, r.body) == (200, b"after hints\n")


def test_expect_100_continue_with_curl(one):
    port, _, _ = one
    body = b"q" * 2_000_000
    out = subprocess.run(
        [
            "curl", "-sS", "-v", "--data-binary", "@-", "-H", "Expect: 100-continue",
            f"http://127.0.0.1:{port}/upload",
        ],
        input=body, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    assert b"HTTP/1.1 100 Continue" in out.stderr
    assert json.loads(out.stdout) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_server_connection_close_is_not_reused(one):
    port, _, _ = one
    with httpx.Client() as c:
        assert c.get(f"http://127.0.0.1:{port}/connclose").text == "bye\n"
        a = c.get(f"http://127.0.0.1:{port}/echo").json()
        b = c.get(f"http://127.0.0.1:{port}/echo").json()
    assert a["conn"] == b["conn"] and b["n"] == a["n"] + 1


def test_concurrent_mixed_traffic_keeps_every_answer_with_its_request(one):
    """Many clients at once, bodies both ways, over shared server connections: no cross-talk."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    port, _, _ = one

    def client(seed: int) -> int:
        rng = random.Random(seed)
        done = 0
        with httpx.Client(timeout=30) as c:
            for i in range(30):
                size = rng.choice([0, 10, 5000, 70000, 300000])
                body = rng.randbytes(size)
                if i % 3 == 0:
                    r = c.get(f"http://127.0.0.1:{port}/bytes/{size}")
                    assert r.status_code == 200 and len(r.content) == size
                elif i % 3 == 1:
                    r = c.post(f"http://127.0.0.1:{port}/upload", content=body)
                    assert r.json() == {"size": size, "sha256": hashlib.sha256(body).hexdigest()}
                else:
                    r = c.get(f"http://127.0.0.1:{port}/echo?client={seed}&i={i}")
                    assert r.json()["target"] == f"/echo?client={seed}&i={i}"
                done += 1
        return done

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(client, range(16))) == 16 * 30


def test_deep_pipeline_with_bodies_stays_in_order(one):
    port, _, _ = one
    requests = []
    for i in range(40):
        if i % 2:
            body = bytes([i]) * (i * 1000)
            requests.append(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        else:
            requests.append(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    with RawClient(port) as c:
        c.send(b"".join(requests))
        for i in range(40):
            r = c.response()
            doc = json.loads(r.body)
            if i % 2:
                assert doc["size"] == i * 1000, i
            else:
                assert doc["target"] == f"/echo?i={i}", i
