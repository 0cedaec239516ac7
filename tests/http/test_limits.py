"""limit_req (429 with Retry-After) and limit_conn (503), per source or per header."""

from __future__ import annotations

import httpx

from fixtures.procs import wait_for
from fixtures.web import RawClient, http_config
from steelyard.http.limits import ConnLimiter, RateLimiter, retry_after


def test_rate_limiter_follows_nginx_accounting():
    rl = RateLimiter(rate=2.0, burst=1)
    assert rl.check(b"a", 0.0) == 0.0
    assert rl.check(b"a", 0.0) == 0.0  # the burst
    wait = rl.check(b"a", 0.0)
    assert wait == 0.5  # one request drains in 1/rate seconds
    assert rl.check(b"b", 0.0) == 0.0  # keys are independent
    assert rl.check(b"a", 0.5) == 0.0
    assert rl.check(b"a", 0.5) > 0
    rl.prune(100.0)
    assert len(rl) == 0  # drained keys are forgotten
    assert retry_after(0.01) == b"1" and retry_after(2.2) == b"3"


def test_conn_limiter_counts_and_releases():
    cl = ConnLimiter(2)
    assert cl.acquire(b"k") and cl.acquire(b"k") and not cl.acquire(b"k")
    cl.release(b"k")
    assert cl.acquire(b"k")
    cl.release(b"k")
    cl.release(b"k")
    assert cl.active(b"k") == 0


def test_limit_req_answers_429_with_retry_after(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    routes = [{"path": "/", "pool": "p", "limit_req": {"rate": "1/m", "burst": 2}}]
    cfg, port = http_config(tmp_path, {"p": [b.address]}, routes)
    sy = steelyard(cfg)
    with httpx.Client() as c:
        codes = [c.get(f"http://127.0.0.1:{port}/status/200") for _ in range(5)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    assert 1 <= int(codes[3].headers["retry-after"]) <= 60
    sy.wait_log(r"event=limit_req listener=web .*key=127.0.0.1")


def test_limit_req_by_header(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    limit = {"rate": "1/m", "burst": 0, "key": "header:X-Api-Key"}
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], limit_req=limit
    )
    steelyard(cfg)

    def get(key: str | None) -> int:
        headers = {"X-Api-Key": key} if key else {}
        return httpx.get(f"http://127.0.0.1:{port}/status/200", headers=headers).status_code

    assert [get("alice"), get("alice"), get("bob")] == [200, 429, 200]
    assert [get(None), get(None)] == [200, 200]  # no key: not limited


def test_limit_conn_answers_503(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    routes = [{"path": "/", "pool": "p", "limit_conn": {"max": 1}}]
    cfg, port = http_config(tmp_path, {"p": [b.address]}, routes)
    sy = steelyard(cfg)

    def seen() -> int:
        return int(httpx.get(f"http://{b.address}/count").text)

    before = seen()
    with RawClient(port) as slow:
        slow.send(b"GET /slow/3000 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: seen() == before + 1, what="slow request at the server")
        r = httpx.get(f"http://127.0.0.1:{port}/status/200")
        assert r.status_code == 503
        assert slow.response().status == 200
    assert httpx.get(f"http://127.0.0.1:{port}/status/200").status_code == 200
    sy.wait_log(r"event=limit_conn listener=web .*max=1")
