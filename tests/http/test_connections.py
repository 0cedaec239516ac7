"""Client and server connection lifetimes: timeouts, keep-alive limits, max_conns, ejection."""

from __future__ import annotations

import json

import httpx

from fixtures.procs import wait_for
from fixtures.web import RawClient, http_config


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def test_trickled_headers_get_408(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], client_header_timeout="300ms"
    )
    sy = steelyard(cfg)
    with RawClient(port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        r = c.response()
        assert r.status == 408
        assert c.closed()
    sy.wait_log(r"event=client_timeout .*phase=header")
    assert httpx.get(url(port, "/status/200")).status_code == 200


def test_stalled_body_gets_408(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], client_body_timeout="300ms"
    )
    sy = steelyard(cfg)
    with RawClient(port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part")
        r = c.response()
        assert r.status == 408
        assert c.closed()
    sy.wait_log(r"event=client_timeout .*phase=body")


def test_idle_keep_alive_client_is_closed(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], keepalive_timeout="300ms"
    )
    steelyard(cfg)
    with RawClient(port) as c:
        c.send(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().status == 200
        assert c.closed()  # blocks until the proxy closes it, after about 300ms


def test_keepalive_requests_limit(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], keepalive_requests=2
    )
    steelyard(cfg)
    with RawClient(port) as c:
        c.send(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().header("connection") is None
        c.send(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().header("connection") == "close"
        assert c.closed()


def test_upstream_keepalive_limits(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path,
        {"p": [b.address]},
        [{"path": "/", "pool": "p"}],
        upstream_keepalive_requests=3,
        upstream_keepalive_timeout="300ms",
    )
    steelyard(cfg)
    with httpx.Client() as c:
        docs = [c.get(url(port, "/echo")).json() for _ in range(4)]
        # three requests per server connection, then a new one
        assert [d["n"] for d in docs] == [1, 2, 3, 1]
        assert docs[3]["conn"] != docs[0]["conn"]
        last = docs[3]["conn"]
        # after the idle timeout the kept connection is gone: the next request opens another
        wait_for(lambda: c.get(url(port, "/echo")).json()["conn"] != last, what="idle closed")


def test_upstream_keepalive_zero_means_a_connection_per_request(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], upstream_keepalive=0
    )
    steelyard(cfg)
    with httpx.Client() as c:
        conns = {c.get(url(port, "/echo")).json()["conn"] for _ in range(3)}
    assert len(conns) == 3


def test_stale_kept_connection_is_replayed_transparently(tmp_path, http_backends, steelyard):
    """The server closes an idle kept-alive connection: the next request must not fail."""
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    steelyard(cfg)
    with httpx.Client() as c:
        assert c.get(url(port, "/status/200")).status_code == 200
        b.restart()  # kills the kept connection on the server side
        assert c.get(url(port, "/status/200")).status_code == 200


def test_listener_max_conns(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], max_conns=2)
    sy = steelyard(cfg)
    with RawClient(port) as c1, RawClient(port) as c2:
        for c in (c1, c2):
            c.send(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.response().status == 200
        with RawClient(port) as c3:
            assert c3.response().status == 503
            assert c3.closed()
    sy.wait_log(r"event=max_conns listener=web")
    wait_for(lambda: httpx.get(url(port, "/status/200")).status_code == 200, what="slot free")


def test_consecutive_5xx_ejects_the_server(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    pool = {
        "servers": [{"address": a.address}, {"address": b.address}],
        "passive": {"consecutive_5xx": 3, "eject_for": "30s", "max_ejected": 0.5},
    }
    cfg, port = http_config(tmp_path, {"p": pool}, [{"path": "/", "pool": "p", "retry_on": []}])
    sy = steelyard(cfg)
    for _ in range(6):  # round robin: three 500s from a
        httpx.get(url(port, "/fail-on/a/500"))
    sy.wait_log(rf"event=passive_eject pool=p server={a.address} .*kind=5xx")
    wait_for(lambda: sy.server("p", a.address)["ejected"], what="a ejected")
    assert {httpx.get(url(port, "/fail-on/a/500")).text for _ in range(4)} == {"b\n"}


def test_connect_failures_feed_passive_ejection(tmp_path, http_backends, steelyard):
    from fixtures.procs import free_port

    b = http_backends("b")
    dead = f"127.0.0.1:{free_port()}"
    pool = {
        "servers": [{"address": dead}, {"address": b.address}],
        "passive": {"consecutive_failures": 2, "eject_for": "30s"},
    }
    cfg, port = http_config(tmp_path, {"p": pool}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    for _ in range(4):
        assert httpx.get(url(port, "/x")).text == "b\n"
    sy.wait_log(rf"event=passive_eject pool=p server={dead}")


def test_server_answering_before_the_body_ends(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    steelyard(cfg)
    with RawClient(port) as c:
        c.send(b"POST /early/413 HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        c.send(b"x" * 1000)
        r = c.response()
        assert (r.status, r.body) == (413, b"early")
        assert r.header("connection") == "close"
        assert c.closed()
    assert json.loads(httpx.get(url(port, "/echo")).text)["name"] == "b"


def test_send_timeout_to_a_server_that_stops_reading(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], send_timeout="500ms"
    )
    sy = steelyard(cfg)
    with RawClient(port) as c:
        size = 64 << 20
        c.send(b"POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        try:
            for _ in range(size // (1 << 20)):
                c.send(b"s" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy gave up on the request and closed
        r = c.response()
        assert r.status == 504
    sy.wait_log(r"event=upstream_error .*cause=\"send timeout after 0.5s\"")
    assert httpx.get(url(port, "/status/200")).status_code == 200


def test_connection_level_response_headers_stop_at_the_proxy(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    steelyard(cfg)
    r = httpx.get(url(port, "/hop"))
    assert r.text == "hop" and r.headers["x-end"] == "kept"
    assert "x-hop" not in r.headers and "keep-alive" not in r.headers


def test_oversized_response_head_is_502(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    assert httpx.get(url(port, "/bighead")).status_code == 502
    sy.wait_log(r"event=upstream_error .*response header from server too large")
    assert httpx.get(url(port, "/status/200")).status_code == 200


def test_client_gone_mid_upload_frees_the_server_side(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    c = RawClient(port)
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"u" * 1000)
    wait_for(lambda: sy.server("p", b.address)["active"] == 1, what="request in flight")
    c.close()
    wait_for(lambda: sy.server("p", b.address)["active"] == 0, what="slot released")
    assert httpx.get(url(port, "/status/200")).status_code == 200
