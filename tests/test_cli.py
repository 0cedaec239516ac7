"""The `steelyard` command line: check, ctl, demo, and config errors at run."""

from __future__ import annotations

import signal
import subprocess
import sys

from fixtures.procs import (
    base_config,
    connect,
    free_port,
    recv_line,
    run_with_config,
    taken_port,
    wait_for,
)

STEELYARD = [sys.executable, "-m", "steelyard.cli"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STEELYARD, *args], capture_output=True, text=True, timeout=timeout)


def test_check_ok(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("pools:\n  web:\n    servers: [{address: 127.0.0.1:8081}]\n")
    r = run_cli("check", "-c", str(f))
    assert r.returncode == 0
    assert "test is successful" in r.stdout


def test_check_lists_every_error_with_path_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(
        "pools:\n"
        "  web:\n"
        "    servers: [{address: 127.0.0.1:8081, weight: heavy}]\n"
        "tcp:\n"
        "  - {name: a, listen: 127.0.0.1:9000, pool: webb}\n"
        "  - {name: b, listen: 127.0.0.1:9000, pool: web, retires: 3}\n"
    )
    r = run_cli("check", "-c", str(f))
    assert r.returncode == 1
    err = r.stderr
    assert f"{f}:3: pools.web.servers[0].weight:" in err
    assert f"{f}:5: tcp[0].pool: unknown pool 'webb'" in err
    assert f"{f}:6: tcp[1].retires: unknown key 'retires' (did you mean 'retries'?)" in err
    assert f"{f}:6: tcp[1].listen: 127.0.0.1:9000 is already used by tcp[0].listen" in err
    assert "4 errors" in err


def test_run_refuses_a_bad_config(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("workers: many\n")
    r = run_cli("run", "-c", str(f))
    assert r.returncode == 1
    assert f"{f}:1: workers:" in r.stderr


def test_run_fails_when_a_listener_cannot_bind(tmp_path, backends):
    a = backends("a")
    cfg = base_config(tmp_path)
    cfg["pools"] = {"p": {"servers": [{"address": a.address}]}}
    with taken_port() as port:
        cfg["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p"}]
        r = run_with_config(tmp_path, cfg)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stdout + r.stderr


def test_ctl_pools_set_state_and_weight(tmp_path, backends, steelyard):
    a = backends("a")
    cfg = base_config(tmp_path)
    cfg["pools"] = {"p": {"servers": [{"address": a.address, "weight": 3}]}}
    sy = steelyard(cfg)
    admin = ["--admin", sy.admin]
    r = run_cli("ctl", *admin, "pools")
    assert r.returncode == 0
    assert a.address in r.stdout and "ready" in r.stdout
    r = run_cli("ctl", *admin, "set-state", "p", a.address, "drain")
    assert r.returncode == 0 and "state drain" in r.stdout
    r = run_cli("ctl", *admin, "set-weight", "p", a.address, "7")
    assert r.returncode == 0 and "weight 7" in r.stdout
    s = sy.server("p", a.address)
    assert (s["state"], s["effective_weight"]) == ("drain", 7)
    r = run_cli("ctl", *admin, "set-state", "p", "127.0.0.1:1", "drain")
    assert r.returncode != 0 and "404" in r.stderr


def test_demo_serves_through_its_listener(tmp_path):
    port, http_port, admin = free_port(), free_port(), f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [*STEELYARD, "demo", "--port", str(port), "--http-port", str(http_port), "--admin", admin],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        wait_for(lambda: "Try, in another terminal" in proc.stdout.readline(), what="demo up")
        bodies = set()
        for _ in range(3):
            with connect(port) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while recv_line(s) not in (b"\r\n", b""):
                    pass
                bodies.add(recv_line(s))
        assert any(b"hello from backend-1" in b for b in bodies)
        assert any(b"hello from backend-2" in b for b in bodies)
        import httpx

        r = httpx.get(f"http://127.0.0.1:{http_port}/")
        assert r.text.startswith("hello from backend-") and r.headers["x-served-by"] == "steelyard"
        assert httpx.get(f"http://127.0.0.1:{http_port}/ping").text == "pong\n"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0


def test_run_fails_cleanly_when_the_admin_address_is_taken(tmp_path):
    with taken_port() as port:
        cfg = {"admin": {"listen": f"127.0.0.1:{port}"}, "store": {"path": str(tmp_path / "s")}}
        r = run_with_config(tmp_path, cfg)
    assert r.returncode == 1
    assert "event=admin_listen_error" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout


def test_a_second_instance_on_the_same_port_is_refused(tmp_path, backends, steelyard):
    """SO_REUSEPORT must not let two steelyards silently split one port's traffic."""

    a = backends("a")
    port = free_port()
    cfg = base_config(tmp_path / "one")
    cfg["pools"] = {"p": {"servers": [{"address": a.address}]}}
    cfg["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p"}]
    first_dir = tmp_path / "one"
    first_dir.mkdir()
    steelyard(cfg, workdir=first_dir)
    second = dict(base_config(tmp_path / "two"), pools=cfg["pools"], tcp=cfg["tcp"])
    r = run_with_config(tmp_path, second)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr + r.stdout


def test_ctl_over_the_admin_unix_socket(tmp_path, backends, steelyard):
    """admin.listen: unix:/path; ctl reaches it with --admin unix:/path and through -c, its
    changes sent as JSON with the Host the API accepts."""
    a = backends("a")
    sock = tmp_path / "admin.sock"
    cfg = base_config(tmp_path, pools={"p": {"servers": [{"address": a.address}]}})
    cfg["admin"] = {"listen": f"unix:{sock}"}
    sy = steelyard(cfg)
    r = run_cli("ctl", "--admin", f"unix:{sock}", "set-state", "p", a.address, "maint")
    assert r.returncode == 0 and "state maint" in r.stdout, r.stderr
    r = run_cli("ctl", "-c", str(sy.config_path), "pools")
    assert r.returncode == 0, r.stderr
    assert a.address in r.stdout and "maint" in r.stdout
    r = run_cli("ctl", "--admin", f"unix:{tmp_path / 'nope.sock'}", "pools")
    assert r.returncode != 0 and "cannot reach the admin API at unix:" in r.stderr
