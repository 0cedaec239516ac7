"""Next upstream: which failures are retried on another server, and which are not."""

from __future__ import annotations

import httpx

from fixtures.procs import blackhole, free_port
from fixtures.web import RawClient, http_config


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def count(b) -> int:
    return int(httpx.get(f"http://{b.address}/count").text)


def test_refused_connection_is_retried_on_the_next_server(tmp_path, http_backends, steelyard):
    good = http_backends("good")
    dead = f"127.0.0.1:{free_port()}"
    cfg, port = http_config(tmp_path, {"p": [dead, good.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    assert [httpx.get(url(port, "/x")).text for _ in range(4)] == ["good\n"] * 4
    sy.wait_log(
        rf"event=upstream_error .*server={dead} .*cause=\"connect failed: connection refused\""
    )


def test_every_server_down_is_502_and_logged(tmp_path, steelyard):
    dead1, dead2 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg, port = http_config(tmp_path, {"p": [dead1, dead2]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    r = httpx.get(url(port, "/x"))
    assert r.status_code == 502
    sy.wait_log(rf"event=upstream_error .*server={dead1}")
    sy.wait_log(rf"event=upstream_error .*server={dead2}")


def test_connect_timeout_is_retried(tmp_path, http_backends, steelyard):
    hole, fillers = blackhole()
    dead = f"127.0.0.1:{hole.getsockname()[1]}"
    good = http_backends("good")
    try:
        cfg, port = http_config(
            tmp_path,
            {"p": {"balance": "first", "servers": [{"address": dead}, {"address": good.address}]}},
            [{"path": "/", "pool": "p"}],
            connect_timeout="300ms",
        )
        sy = steelyard(cfg)
        assert httpx.get(url(port, "/x")).text == "good\n"
        sy.wait_log(rf"event=upstream_error .*server={dead} .*connect timeout after 0.3s")
    finally:
        hole.close()
        for f in fillers:
            f.close()


def test_status_in_retry_on_is_retried_for_idempotent_methods(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [a.address, b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    assert {httpx.get(url(port, "/fail-on/a/503")).text for _ in range(4)} == {"b\n"}
    assert {httpx.put(url(port, "/fail-on/a/502"), content=b"x").text for _ in range(4)} == {"b\n"}
    # a status outside retry_on goes to the client as it is
    statuses = {httpx.get(url(port, "/fail-on/a/500")).status_code for _ in range(4)}
    assert statuses == {200, 500}
    sy.wait_log(r"event=upstream_error .*cause=\"status 503\"")


def test_non_idempotent_requests_are_not_retried(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [a.address, b.address]}, [{"path": "/", "pool": "p"}])
    steelyard(cfg)
    statuses = [httpx.post(url(port, "/fail-on/a/503"), content=b"x").status_code for _ in range(4)]
    assert sorted(statuses) == [200, 200, 503, 503]


def test_retry_non_idempotent_opt_in(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(
        tmp_path,
        {"p": [a.address, b.address]},
        [{"path": "/", "pool": "p", "retry_non_idempotent": True}],
    )
    steelyard(cfg)
    assert {httpx.post(url(port, "/fail-on/a/503"), content=b"x").text for _ in range(4)} == {"b\n"}


def test_body_larger_than_retry_buffer_is_not_replayed(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [a.address, b.address]}, [{"path": "/", "pool": "p"}], retry_buffer="1KiB"
    )
    steelyard(cfg)
    small = [httpx.put(url(port, "/fail-on/a/503"), content=b"s" * 1000).text for _ in range(2)]
    assert small == ["b\n", "b\n"]
    big = [
        httpx.put(url(port, "/fail-on/a/503"), content=b"B" * 5000).status_code for _ in range(4)
    ]
    assert sorted(big) == [200, 200, 503, 503]


def test_tries_limits_the_attempts(tmp_path, http_backends, steelyard):
    a, b, c = http_backends("a"), http_backends("b"), http_backends("c")
    cfg, port = http_config(
        tmp_path,
        {"p": [a.address, b.address, c.address]},
        [{"path": "/", "pool": "p", "tries": 3}],
    )
    steelyard(cfg)
    before = [count(s) for s in (a, b, c)]
    r = httpx.get(url(port, "/status/503"))
    assert r.status_code == 503
    assert [count(s) - n for s, n in zip((a, b, c), before, strict=True)] == [1, 1, 1]


def test_no_retry_once_the_response_started(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [a.address, b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    before = count(a) + count(b)
    with RawClient(port) as c:
        c.send(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            c.response()
            raise AssertionError("the cut response should not be complete")
        except ConnectionError:
            pass
    assert count(a) + count(b) == before + 1
    sy.wait_log(r"event=upstream_error .*cause=\"server closed the connection mid-response\"")
    assert httpx.get(url(port, "/status/200")).status_code == 200


def test_garbage_from_the_server_is_502_not_retried(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [a.address, b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    before = count(a) + count(b)
    assert httpx.get(url(port, "/garbage")).status_code == 502
    assert count(a) + count(b) == before + 1
    sy.wait_log(r"event=upstream_error .*cause=\"invalid response from server")
    assert httpx.get(url(port, "/status/200")).status_code == 200


def test_read_timeout_is_504_and_not_retried(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(
        tmp_path, {"p": [a.address, b.address]}, [{"path": "/", "pool": "p"}], read_timeout="300ms"
    )
    sy = steelyard(cfg)
    before = count(a) + count(b)
    assert httpx.get(url(port, "/hang")).status_code == 504
    assert count(a) + count(b) == before + 1
    sy.wait_log(r"event=upstream_error .*cause=\"read timeout after 0.3s\"")
    assert httpx.get(url(port, "/status/200")).status_code == 200


def test_read_timeout_mid_body_cuts_the_client(tmp_path, http_backends, steelyard):
    a = http_backends("a")
    cfg, port = http_config(
        tmp_path, {"p": [a.address]}, [{"path": "/", "pool": "p"}], read_timeout="300ms"
    )
    sy = steelyard(cfg)
    with RawClient(port) as c:
        c.send(b"GET /trickle/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            c.response()
            raise AssertionError("a timed-out body should not complete")
        except ConnectionError:
            pass
    sy.wait_log(r"event=upstream_error .*cause=\"read timeout after 0.3s\"")


def test_tries_timeout_stops_retrying(tmp_path, http_backends, steelyard):
    hole, fillers = blackhole()
    dead = f"127.0.0.1:{hole.getsockname()[1]}"
    good = http_backends("good")
    try:
        cfg, port = http_config(
            tmp_path,
            {"p": {"balance": "first", "servers": [{"address": dead}, {"address": good.address}]}},
            [{"path": "/", "pool": "p", "tries_timeout": "100ms"}],
            connect_timeout="300ms",
        )
        steelyard(cfg)
        assert httpx.get(url(port, "/x")).status_code == 504  # as nginx: a timeout is 504
    finally:
        hole.close()
        for f in fillers:
            f.close()
