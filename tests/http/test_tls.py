"""TLS: certificates chosen by SNI, TLS 1.2 and up, https to servers, redirect_https."""

from __future__ import annotations

import socket
import ssl
import subprocess

import httpx
import pytest
import trustme

from fixtures.certs import write_cert
from fixtures.procs import free_port, wait_for
from fixtures.web import http_config


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_proxy(tmp_path, ca, http_backends, steelyard):
    b = http_backends("b")
    certs = [
        write_cert(ca, tmp_path, "a.example.test"),
        write_cert(ca, tmp_path, "*.b.example.test", "b.example.test"),
    ]
    cfg, port = http_config(
        tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}], tls={"certs": certs}
    )
    steelyard(cfg)
    return port


def peer_names(port: int, ca, sni: str | None, **ctx_opts) -> tuple[set[str], str]:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = False
    for k, v in ctx_opts.items():
        setattr(ctx, k, v)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as s,
    ):
        cert = s.getpeercert()
        return {v for k, v in cert["subjectAltName"] if k == "DNS"}, s.version()


def test_sni_picks_the_certificate(tls_proxy, ca):
    assert "a.example.test" in peer_names(tls_proxy, ca, "a.example.test")[0]
    assert "*.b.example.test" in peer_names(tls_proxy, ca, "shop.b.example.test")[0]
    assert "b.example.test" in peer_names(tls_proxy, ca, "b.example.test")[0]
    # unknown name or no SNI: the first certificate, as nginx's default server
    assert "a.example.test" in peer_names(tls_proxy, ca, "other.test")[0]
    assert "a.example.test" in peer_names(tls_proxy, ca, None)[0]


def test_tls12_is_accepted(tls_proxy, ca):
    _, version = peer_names(tls_proxy, ca, "a.example.test", maximum_version=ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"


def test_requests_over_tls_with_curl(tls_proxy, ca, tmp_path):
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca_path), "--resolve",
         f"a.example.test:{tls_proxy}:127.0.0.1", f"https://a.example.test:{tls_proxy}/echo"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    import json

    headers = {k.lower(): v for k, v in json.loads(out.stdout)["headers"]}
    assert headers["x-forwarded-proto"] == "https"


def test_min_version_13_refuses_tls12(tmp_path, ca, http_backends, steelyard):
    b = http_backends("b")
    certs = [write_cert(ca, tmp_path, "a.example.test")]
    cfg, port = http_config(
        tmp_path,
        {"p": [b.address]},
        [{"path": "/", "pool": "p"}],
        tls={"certs": certs, "min_version": "1.3"},
    )
    steelyard(cfg)
    with pytest.raises(ssl.SSLError):
        peer_names(port, ca, "a.example.test", maximum_version=ssl.TLSVersion.TLSv1_2)
    assert peer_names(port, ca, "a.example.test")[1] == "TLSv1.3"


def test_plain_http_to_a_tls_listener_is_refused_and_next_served(tls_proxy, ca):
    with socket.create_connection(("127.0.0.1", tls_proxy), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(1000)
        assert not data.startswith(b"HTTP/1.1 200")
    assert "a.example.test" in peer_names(tls_proxy, ca, "a.example.test")[0]


def test_redirect_https(tmp_path, steelyard):
    cfg, port = http_config(tmp_path, {}, [{"path": "/", "redirect_https": True}])
    steelyard(cfg)
    r = httpx.get(f"http://127.0.0.1:{port}/a/b?c=1", headers={"Host": "shop.test"})
    assert r.status_code == 301
    assert r.headers["location"] == "https://shop.test/a/b?c=1"


@pytest.fixture
def tls_nginx(tmp_path, ca):
    """nginx serving https on 127.0.0.1 with a certificate for that IP."""
    cert = ca.issue_cert("127.0.0.1", "upstream.test")
    cert.private_key_pem.write_to_path(tmp_path / "up.key")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "up.crt")
    port = free_port()
    (tmp_path / "ngx").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""daemon off; master_process off; worker_processes 1; error_log stderr;
pid {tmp_path}/ngx/pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/ngx/b; proxy_temp_path {tmp_path}/ngx/p;
  fastcgi_temp_path {tmp_path}/ngx/f; uwsgi_temp_path {tmp_path}/ngx/u;
  scgi_temp_path {tmp_path}/ngx/s;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {tmp_path}/up.crt; ssl_certificate_key {tmp_path}/up.key;
    location / {{ return 200 "tls upstream $ssl_server_name\\n"; }}
  }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path / "ngx"), "-c", str(conf)])

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(up, what="nginx tls")
    yield port
    proc.terminate()
    proc.wait(10)


def test_upstream_tls_verified_with_a_ca_file(tmp_path, ca, tls_nginx, steelyard):
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_path)
    address = f"127.0.0.1:{tls_nginx}"
    routes = [
        {
            "path": "/ok",
            "pool": "p",
            "upstream_tls": True,
            "ca": str(ca_path),
            "sni": "upstream.test",
        },
        {"path": "/unverified", "pool": "p", "upstream_tls": True, "verify": False},
        {"path": "/untrusted", "pool": "p", "upstream_tls": True},
    ]
    cfg, port = http_config(tmp_path, {"p": [address]}, routes)
    sy = steelyard(cfg)
    assert httpx.get(f"http://127.0.0.1:{port}/ok").text == "tls upstream upstream.test\n"
    assert httpx.get(f"http://127.0.0.1:{port}/unverified").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/untrusted").status_code == 502
    sy.wait_log(r"event=upstream_error .*certificate verify failed")
