"""HTTP listeners across reloads and shutdown: new routes apply, requests in flight finish."""

from __future__ import annotations

import copy
import threading

import httpx

from fixtures.procs import free_port, refused, wait_for
from fixtures.web import RawClient, http_config


def test_reload_changes_routes_and_listeners(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(
        tmp_path, {"a": [a.address], "b": [b.address]}, [{"path": "/", "pool": "a"}]
    )
    sy = steelyard(cfg)
    with httpx.Client() as c:
        assert c.get(f"http://127.0.0.1:{port}/x").text == "a\n"
        new = copy.deepcopy(cfg)
        new["http"][0]["routes"] = [{"path": "/", "pool": "b"}]
        port2 = free_port()
        new["http"].append(
            {
                "name": "second",
                "listen": f"127.0.0.1:{port2}",
                "routes": [{"path": "/", "pool": "a"}],
            }
        )
        sy.reload(new)
        # the kept-alive client connection goes on, with the new routes
        assert c.get(f"http://127.0.0.1:{port}/x").text == "b\n"
        wait_for(lambda: not refused(port2), what="second listener")
        assert c.get(f"http://127.0.0.1:{port2}/x").text == "a\n"
    sy.wait_log(r"event=reload .*\+http:second .*~http:web")
    del new["http"][1]
    sy.reload(new)
    wait_for(lambda: refused(port2), what="second listener closed")


def test_shutdown_lets_requests_in_flight_finish(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)

    def seen() -> int:
        return int(httpx.get(f"http://{b.address}/count").text)

    before = seen()
    with RawClient(port) as slow, RawClient(port) as idle:
        idle.send(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.response().status == 200
        slow.send(b"GET /slow/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: seen() == before + 2, what="slow request at the server")
        stopper = threading.Thread(target=sy.stop)
        stopper.start()
        r = slow.response()
        assert (r.status, r.body) == (200, b"slow\n")
        assert r.header("connection") == "close"  # no keep-alive while shutting down
        assert idle.closed()  # idle keep-alive connections are closed at once
        stopper.join(30)
    assert sy.proc.returncode == 0
