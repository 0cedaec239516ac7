"""`admin.listen: unix:/path` under `steelyard run`: a socket file only its owner can use
(HAProxy's stats socket), a stale file from a killed run replaced, a live one left alone, the
file removed at stop."""

from __future__ import annotations

import os
import signal
import socket
import stat

from fixtures.procs import base_config, refused, run_with_config, wait_for


def unix_get(path: os.PathLike[str] | str, target: str, host: str = "localhost") -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_socket_is_0600_replaces_a_stale_file_and_goes_at_stop(tmp_path, steelyard):
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a killed run's file: nobody accepts on it
    stale.close()
    os.chmod(path, 0o777)
    cfg = base_config(tmp_path)
    cfg["admin"] = {"listen": f"unix:{path}"}  # no token: only this user can connect
    sy = steelyard(cfg)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert unix_get(path, "/healthz").startswith(b"HTTP/1.1 200")
    # curl --unix-socket sends Host: localhost; a rebound name is refused here too
    assert unix_get(path, "/healthz", "attacker.example").startswith(b"HTTP/1.1 403")
    assert "event=admin_listen" in sy.log() and f"listen=unix:{path}" in sy.log()
    # a second instance on the same socket is refused, and the first one's file stays
    second = tmp_path / "second"
    second.mkdir()
    cfg2 = base_config(second)
    cfg2["admin"] = {"listen": f"unix:{path}"}
    out = run_with_config(second, cfg2)
    assert out.returncode != 0
    assert "in use by another process" in out.stdout + out.stderr
    assert unix_get(path, "/healthz").startswith(b"HTTP/1.1 200")
    sy.signal(signal.SIGTERM)
    wait_for(lambda: sy.proc.poll() is not None, 30, "steelyard stopped")
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path):
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    cfg = base_config(tmp_path)
    cfg["admin"] = {"listen": f"unix:{path}"}
    out = run_with_config(tmp_path, cfg)
    assert out.returncode != 0
    assert "exists and is not a socket" in out.stdout + out.stderr
    assert path.read_text() == "keep me"


def test_reload_moves_the_api_to_a_socket_and_back(tmp_path, steelyard):
    """SIGHUP applies admin.listen and allowed_hosts: from TCP to a socket (the port closed,
    a socket file of mode 0600) and back (the file removed)."""
    path = tmp_path / "admin.sock"
    cfg = base_config(tmp_path)
    sy = steelyard(cfg)
    port = int(sy.admin.rpartition(":")[2])
    assert "event=admin_no_token" in sy.log()  # loopback without a token: said plainly
    tcp = dict(cfg["admin"])
    cfg["admin"] = {"listen": f"unix:{path}", "allowed_hosts": ["steelyard.internal"]}
    sy.reload(cfg)
    wait_for(path.exists, what="the socket file")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert unix_get(path, "/healthz", "steelyard.internal").startswith(b"HTTP/1.1 200")
    wait_for(lambda: refused(port), what="the TCP port closed")
    cfg["admin"] = tcp
    sy.reload(cfg)
    wait_for(lambda: not path.exists(), what="the socket file removed")
    assert sy.api("GET", "/healthz") == b"ok"
