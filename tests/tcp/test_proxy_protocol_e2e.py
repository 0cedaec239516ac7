"""PROXY protocol through the running proxy: sent to servers, accepted from clients, bad input."""

from __future__ import annotations

import ipaddress
import re
import socket
from types import SimpleNamespace

import pytest

from fixtures.procs import (
    base_config,
    connect,
    fd_count,
    free_port,
    recv_all,
    recv_line,
    run_with_config,
    wait_for,
)
from steelyard.core.netaddr import in_networks
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


def connect_from(source: str, port: int) -> socket.socket:
    """A client connection from `source` (any 127.0.0.0/8 address is this host's)."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def refused_unread(s: socket.socket) -> bool:
    """Closed with nothing sent back: EOF, or a reset (the kernel's answer to a close with
    our bytes unread)."""
    try:
        return recv_all(s) == b""
    except ConnectionResetError:
        return True


def test_header_only_from_the_configured_networks(tmp_path, backends, steelyard):
    """`accept_proxy_protocol: {from: [...]}`, nginx's set_real_ip_from.

    Before: `accept_proxy_protocol: true` was the only form, so any client that could reach
    the listener could claim any source address to the servers (and their ACLs or logs).
    Now a client outside the networks is refused before a byte is read, and logged; one
    inside is served with its header's addresses passed on.
    """
    b = backends("pp", "proxy")
    cfg, port = setup(
        tmp_path,
        b,
        accept_proxy_protocol={"from": ["10.0.0.0/8", "127.0.0.2/32"]},
        proxy_protocol="v1",
    )
    sy = steelyard(cfg)
    header = encode_v1(("203.0.113.7", 40000), ("198.51.100.1", 443))
    with connect_from("127.0.0.1", port) as s:
        s.sendall(header + b"data\n")
        assert refused_unread(s)  # and no server was connected to (it would send a line)
    sy.wait_log(
        r"event=proxy_protocol_refused listener=front peer=127\.0\.0\.1:\d+ "
        r"cause=\"source not in accept_proxy_protocol\.from\""
    )
    with connect_from("127.0.0.2", port) as s:
        s.sendall(header + b"data\n")
        assert recv_line(s) == b"pp 1 src=203.0.113.7:40000 dst=198.51.100.1:443\n"
        assert recv_line(s) == b"data\n"
    assert sy.count_log(r"event=proxy_protocol_refused") == 1

    # A reload that widens the networks applies to the next connection.
    cfg["tcp"][0]["accept_proxy_protocol"] = {"from": ["127.0.0.0/8"]}
    sy.reload(cfg)
    with connect_from("127.0.0.1", port) as s:
        s.sendall(header + b"again\n")
        assert recv_line(s) == b"pp 1 src=203.0.113.7:40000 dst=198.51.100.1:443\n"
        assert recv_line(s) == b"again\n"
    assert sy.count_log(r"event=proxy_protocol_refused") == 1


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # an IPv4 client of a dual-stack listener
        ("127.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::5", True),
        ("fd01::5", False),
    ],
)
def test_source_networks_match_ipv4_and_ipv6(ip, trusted):
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/16"))
    assert in_networks(ip, networks) is trusted


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"from": ["10.0.0.0/33"]}, "is not a network like"),
        ({"from": []}, "needs at least 1 entry"),
        ({"networks": ["10.0.0.0/8"]}, "networks"),
        ("sometimes", "expected true or false"),
    ],
)
def test_accept_proxy_protocol_bad_values_are_config_errors(tmp_path, value, error):
    server = SimpleNamespace(address="127.0.0.1:1")
    cfg, _ = setup(tmp_path, server, accept_proxy_protocol=value)
    out = run_with_config(tmp_path, cfg)
    assert out.returncode != 0
    assert "tcp[0].accept_proxy_protocol" in out.stderr + out.stdout
    assert error in out.stderr + out.stdout
