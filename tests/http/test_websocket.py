"""Upgrade requests: tunnelled both ways after the 101, with tunnel_timeout."""

from __future__ import annotations

import httpx
from websockets.sync.client import connect as ws_connect

from fixtures.web import RawClient, http_config


def test_websocket_echo_through_the_proxy(tmp_path, http_backends, steelyard):
    b = http_backends("ws")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    steelyard(cfg)
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        for message in ["hello", "x" * 70000, b"\x00\x01binary"]:
            ws.send(message)
            assert ws.recv(timeout=10) == message
    # the listener still serves plain HTTP
    assert httpx.get(f"http://127.0.0.1:{port}/status/200").status_code == 200


def test_upgrade_refused_by_the_server_is_a_normal_answer(tmp_path, http_backends, steelyard):
    b = http_backends("ws")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    steelyard(cfg)
    with RawClient(port) as c:
        c.send(
            b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        r = c.response()
        assert r.status == 200 and r.header("connection") == "close"
        assert c.closed()


def test_tunnel_timeout_closes_an_idle_tunnel(tmp_path, http_backends, steelyard):
    b = http_backends("ws")
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p", "tunnel_timeout": "300ms"}]
    )
    sy = steelyard(cfg)
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        try:
            ws.recv(timeout=10)
            raise AssertionError("the tunnel should have been closed")
        except Exception as exc:  # websockets raises ConnectionClosed subclasses
            assert "ConnectionClosed" in type(exc).__name__
    sy.wait_log(r"event=tunnel_timeout listener=web")
