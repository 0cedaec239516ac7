"""Bad input from clients: the exact status, nothing forwarded, and the next client served."""

from __future__ import annotations

import httpx
import pytest

from fixtures.web import RawClient, http_config


@pytest.fixture
def proxy(tmp_path, http_backends, steelyard):
    b = http_backends("b1")
    cfg, port = http_config(
        tmp_path,
        {"p": [b.address]},
        [{"path": "/", "pool": "p"}],
        max_header_bytes="4KiB",
        max_uri_bytes="1KiB",
        max_body_bytes="100KiB",
    )
    sy = steelyard(cfg)
    return port, b, sy


def server_count(b) -> int:
    return int(httpx.get(f"http://{b.address}/count").text)


SMUGGLING = {
    "cl_and_te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "two_content_lengths": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    "te_not_chunked_last": b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_only_gzip": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx",
    "bad_chunk_size": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "space_before_colon": b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
    "bare_cr": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n",
    "nul_in_header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "obs_fold": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    # nginx >= 1.21.1: HTTP/1.0 has no chunked coding, a server may frame it otherwise
    "http10_with_te": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    "missing_host": b"GET /echo HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "two_hosts": b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad_host": b"GET /echo HTTP/1.1\r\nHost: a b/c\r\n\r\n",
    "bad_target": b"GET echo HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_malformed_requests_get_400_and_reach_no_server(proxy, name):
    port, b, sy = proxy
    before = server_count(b)
    with RawClient(port) as c:
        c.send(SMUGGLING[name])
        r = c.response()
        assert r.status == 400, r
        assert r.header("connection") == "close"
        assert c.closed()
    assert server_count(b) == before
    sy.wait_log(r"event=bad_request .*status=400", what="bad request logged")
    assert httpx.get(f"http://127.0.0.1:{port}/status/200").status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1234567890\r\n" * 400 + b"\r\n", 431),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n", 413),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n", 417),
    ],
    ids=["uri_414", "header_431", "many_headers_431", "body_413", "connect_405", "expect_417"],
)
def test_limits_and_refused_methods(proxy, request_bytes, status):
    port, b, _ = proxy
    before = server_count(b)
    with RawClient(port) as c:
        c.send(request_bytes)
        r = c.response()
        assert r.status == status, r
        assert c.closed()
    assert server_count(b) == before
    assert httpx.get(f"http://127.0.0.1:{port}/status/200").status_code == 200


def test_header_that_never_ends_is_cut_at_the_limit(proxy):
    port, _, _ = proxy
    with RawClient(port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(10):
            try:
                c.send(b"y" * 1000)
            except (BrokenPipeError, ConnectionResetError):
                break
        r = c.response()
        assert r.status == 431


def test_chunked_body_over_the_limit_is_413(proxy):
    port, _, _ = proxy
    with RawClient(port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(30):
                c.send(b"2000\r\n" + b"u" * 0x2000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.response()
        assert r.status == 413
    assert httpx.get(f"http://127.0.0.1:{port}/status/200").status_code == 200


def test_bad_request_after_a_good_one_on_the_same_connection(proxy):
    port, _, _ = proxy
    with RawClient(port) as c:
        c.send(
            b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        assert c.response().status == 201
        assert c.response().status == 400
        assert c.closed()
