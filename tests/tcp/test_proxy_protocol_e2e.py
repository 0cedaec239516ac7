"""PROXY protocol through the running proxy: sent to servers, accepted from clients, bad input."""

from __future__ import annotations

import re

import pytest

from fixtures.procs import base_config, connect, fd_count, free_port, recv_all, recv_line, wait_for
from steelyard.tcp.proxy_protocol import encode_v1, encode_v2


def setup(tmp_path, backend, **opts):
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["pools"] = {"p": {"servers": [{"address": backend.address}]}}
    cfg["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p", **opts}]
    return cfg, port


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_sent_to_server_carries_client_address(tmp_path, backends, steelyard, version):
    b = backends("pp", "proxy")
    cfg, port = setup(tmp_path, b, proxy_protocol=version)
    steelyard(cfg)
    with connect(port) as s:
        local = s.getsockname()
        s.sendall(b"payload\n")
        line = recv_line(s).decode()
        assert line == f"pp {version[1]} src={local[0]}:{local[1]} dst=127.0.0.1:{port}\n"
        assert recv_line(s) == b"payload\n"  # the header is not forwarded as data


@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
def test_header_accepted_from_client_and_passed_on(tmp_path, backends, steelyard, encode):
    b = backends("pp", "proxy")
    cfg, port = setup(tmp_path, b, accept_proxy_protocol=True, proxy_protocol="v2")
    steelyard(cfg)
    with connect(port) as s:
        s.sendall(encode(("203.0.113.7", 40000), ("198.51.100.1", 443)) + b"data\n")
        # both original addresses are passed on, as HAProxy does
        assert recv_line(s) == b"pp 2 src=203.0.113.7:40000 dst=198.51.100.1:443\n"
        assert recv_line(s) == b"data\n"


def test_garbage_header_closes_with_one_log_line(tmp_path, backends, steelyard):
    b = backends("h", "hello")
    cfg, port = setup(tmp_path, b, accept_proxy_protocol=True)
    sy = steelyard(cfg)
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_all(s) == b""
    sy.wait_log(r"event=proxy_protocol_error listener=front peer=127\.0\.0\.1:\d+ cause=")
    # the next, well-behaved client is served
    with connect(port) as s:
        s.sendall(encode_v1(("10.1.2.3", 1234), ("10.1.2.4", 80)))
        assert recv_line(s) == b"h\n"


def test_client_that_never_sends_the_header_is_cut(tmp_path, backends, steelyard):
    b = backends("h", "hello")
    cfg, port = setup(tmp_path, b, accept_proxy_protocol=True, proxy_protocol_timeout="200ms")
    sy = steelyard(cfg)
    (worker,) = sy.worker_pids()
    baseline = fd_count(worker)
    with connect(port) as s:
        assert recv_all(s) == b""
    m = sy.wait_log(r"event=proxy_protocol_error .*cause=\"([^\"]+)\"")
    assert re.search("timeout", m.group(1))
    wait_for(lambda: fd_count(worker) <= baseline, what="fds back to baseline")
