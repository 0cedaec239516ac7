"""Process life: SIGTERM drains, SIGHUP reloads without dropping, workers share one view."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from fixtures.procs import (
    base_config,
    connect,
    free_port,
    recv_all,
    recv_line,
    refused,
    taken_port,
    wait_for,
)
from fixtures.web import RawClient


def one_listener(tmp_path, servers, **top):
    port = free_port()
    cfg = base_config(tmp_path, **top)
    cfg["pools"] = {"p": {"servers": [{"address": a} for a in servers]}}
    cfg["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p"}]
    return cfg, port


def test_sigterm_stops_accepting_and_lets_connections_finish(tmp_path, backends, steelyard):
    e = backends("e", "echo")
    cfg, port = one_listener(tmp_path, [e.address], shutdown_timeout="20s")
    sy = steelyard(cfg)
    held = socket.create_connection(("127.0.0.1", port))
    held.sendall(b"one\n")
    assert recv_line(held) == b"one\n"
    sy.signal(signal.SIGTERM)
    sy.wait_log(r"event=stopping")

    wait_for(lambda: refused(port), what="listener closed")
    held.sendall(b"two\n")
    assert recv_line(held) == b"two\n"  # the established connection still works
    assert sy.proc.poll() is None
    held.close()
    assert sy.proc.wait(15) == 0


def test_sigterm_cuts_connections_after_shutdown_timeout(tmp_path, backends, steelyard):
    e = backends("e", "echo")
    cfg, port = one_listener(tmp_path, [e.address], shutdown_timeout="300ms")
    sy = steelyard(cfg)
    with connect(port) as held:
        held.sendall(b"x\n")
        assert recv_line(held) == b"x\n"
        sy.signal(signal.SIGTERM)
        assert recv_all(held) == b""
        assert sy.proc.wait(15) == 0
    assert "event=shutdown_cut" in sy.log()


def test_sighup_reload_keeps_connections_and_applies_new_pool(tmp_path, backends, steelyard):
    a, b = backends("a"), backends("b")
    cfg, port = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    held = socket.create_connection(("127.0.0.1", port))
    assert recv_line(held) == b"a\n"
    cfg["pools"]["p"]["servers"] = [{"address": b.address}]
    sy.reload(cfg)
    sy.wait_log(r"event=reload .*changes=\"?~pool:p")
    with connect(port) as s:
        assert recv_line(s) == b"b\n"
    held.sendall(b"after reload\n")
    assert recv_line(held) == b"after reload\n"
    held.close()


def test_bad_config_on_reload_is_refused_and_old_one_serves(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    bad = dict(cfg)
    bad["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "nope"}]
    sy.reload(bad)
    sy.wait_log(r"event=reload_refused .*tcp\[0\]\.pool: unknown pool 'nope'")
    sy.wait_log(r"event=reload_failed")
    with connect(port) as s:
        assert recv_line(s) == b"a\n"


def test_listener_added_and_removed_by_reload(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    port2 = free_port()
    cfg["tcp"] = [{"name": "second", "listen": f"127.0.0.1:{port2}", "pool": "p"}]
    sy.reload(cfg)
    with connect(port2) as s:
        assert recv_line(s) == b"a\n"

    wait_for(lambda: refused(port), what="old listener closed")


def test_two_workers_share_listener_and_state(tmp_path, backends, steelyard):
    a, b = backends("a"), backends("b")
    cfg, port = one_listener(tmp_path, [a.address, b.address], workers=2)
    sy = steelyard(cfg)
    assert len(sy.worker_pids()) == 2
    sy.api("PUT", f"/api/pools/p/servers/{a.address}", {"state": "maint"})
    # many connections land on both workers; none may reach the server in maint
    for _ in range(40):
        with connect(port) as s:
            assert recv_line(s) == b"b\n"
    status = sy.api("GET", "/api/status")
    assert {w["pid"] for w in status["workers"]} == set(sy.worker_pids())


def test_dead_worker_is_restarted(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    (old,) = sy.worker_pids()
    os.kill(old, signal.SIGKILL)
    sy.wait_log(r"event=worker_exit .*code=-9")
    wait_for(lambda: sy.worker_pids() and sy.worker_pids() != [old], what="new worker")

    def served() -> bool:
        try:
            with connect(port) as s:
                return recv_line(s) == b"a\n"
        except ConnectionRefusedError:
            return False  # the new worker has not bound its listener yet

    wait_for(served, what="served by the new worker")


def test_probes_run_once_whatever_the_number_of_workers(tmp_path, backends, steelyard):
    a, b = backends("a"), backends("b")
    cfg, _ = one_listener(tmp_path, [a.address, b.address], workers=3)
    cfg["pools"]["p"]["health"] = {"kind": "tcp", "interval": "100ms", "rise": 1, "fall": 1}
    sy = steelyard(cfg)
    assert len(sy.worker_pids()) == 3
    a.stop()
    sy.wait_log(rf"event=health_flip pool=p server={a.address} state=down")
    a.restart()
    sy.wait_log(rf"event=health_flip pool=p server={a.address} state=up")
    # One prober: each transition is decided, and logged, once, not once per worker.
    assert sy.count_log(rf"event=health_flip pool=p server={a.address} state=down") == 1
    assert sy.count_log(rf"event=health_flip pool=p server={a.address} state=up") == 1


def test_reload_changes_the_number_of_workers(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    cfg["workers"] = 3
    sy.reload(cfg)
    wait_for(lambda: len(sy.worker_pids()) == 3, what="three workers")
    cfg["workers"] = 1
    sy.reload(cfg)
    wait_for(lambda: len(sy.worker_pids()) == 1, what="back to one worker")
    for _ in range(5):
        with connect(port) as s:
            assert recv_line(s) == b"a\n"
    assert "event=worker_exit" not in sy.log()  # retired workers stop cleanly, not as crashes


def test_ipv6_listener_and_server(tmp_path, backends, steelyard):
    e = backends("e", "echo")
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["pools"] = {"p": {"servers": [{"address": e.address}]}}
    cfg["tcp"] = [{"name": "v6", "listen": f"[::1]:{port}", "pool": "p"}]
    sy = steelyard(cfg)
    with socket.create_connection(("::1", port), timeout=10) as s:
        s.sendall(b"over v6\n")
        assert recv_line(s) == b"over v6\n"
    assert sy.proc.poll() is None


def test_reload_to_an_admin_address_in_use_is_refused(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    with taken_port() as taken:
        bad = dict(cfg, admin={"listen": f"127.0.0.1:{taken}"})
        extra = {"name": "new", "listen": f"127.0.0.1:{free_port()}", "pool": "p"}
        bad["tcp"] = [*cfg["tcp"], extra]
        sy.reload(bad)
        sy.wait_log(r"event=reload_refused .*admin\.listen")
    assert sy.api("GET", "/healthz") == b"ok"  # the old admin API still answers
    assert refused(int(bad["tcp"][1]["listen"].rsplit(":", 1)[1]))  # nothing half-applied
    with connect(port) as s:
        assert recv_line(s) == b"a\n"


def test_a_burst_of_sighups_leaves_exactly_the_configured_workers(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, _ = one_listener(tmp_path, [a.address])
    sy = steelyard(cfg)
    cfg["workers"] = 3
    sy.write_config(cfg)
    for _ in range(3):  # the kernel may merge some of these; each one delivered is a reload
        sy.signal(signal.SIGHUP)
    wait_for(lambda: sy.count_log(r"event=reload ") >= 1, what="a reload")
    sy.reload()  # one more, serialised after the burst: everything before it has settled
    assert len(sy.worker_pids()) == 3
    tracked = {w["pid"] for w in sy.api("GET", "/api/status")["workers"]}
    assert tracked == set(sy.worker_pids())


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan waits for its new parent to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _orphan_config(tmp_path, echo, web, shutdown_timeout: str):
    cfg, tcp_port = one_listener(tmp_path, [echo.address], shutdown_timeout=shutdown_timeout)
    http_port = free_port()
    cfg["pools"]["web"] = {"servers": [{"address": web.address}]}
    cfg["http"] = [{"name": "web", "listen": f"127.0.0.1:{http_port}", "routes": [{"pool": "web"}]}]
    return cfg, tcp_port, http_port


def test_supervisor_killed_workers_finish_established_connections(tmp_path, backends, steelyard):
    """SIGKILL of the supervisor with a TCP relay and an HTTP keep-alive connection open.

    Before: the worker saw its channel close and stopped with a zero timeout, cutting both
    connections within a second. Now: `supervisor_lost` is logged, the listeners close (new
    clients are refused, a new supervisor's workers may take the ports), both connections
    still work several seconds later, and the worker exits once they have ended.
    """
    cfg, tcp_port, http_port = _orphan_config(
        tmp_path, backends("e", "echo"), backends("w", "http"), "60s"
    )
    sy = steelyard(cfg)
    (worker,) = sy.worker_pids()
    try:
        relay = socket.create_connection(("127.0.0.1", tcp_port), timeout=10)
        relay.sendall(b"one\n")
        assert recv_line(relay) == b"one\n"
        web = RawClient(http_port)
        web.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        r = web.response()
        assert r.status == 200 and r.header("connection") is None  # kept alive

        sy.proc.kill()
        sy.proc.wait(10)
        wait_for(lambda: "event=supervisor_lost" in sy.log(), what="supervisor_lost logged")
        assert re.search(r"event=supervisor_lost .*connections=2 shutdown_timeout=60s", sy.log())
        wait_for(lambda: refused(tcp_port) and refused(http_port), what="listeners closed")
        # What is tested is that nothing is cut after a while (it was, within a second).
        time.sleep(3)
        assert _running(worker)
        relay.sendall(b"two\n")
        assert recv_line(relay) == b"two\n"
        web.send(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        r = web.response()
        assert (r.status, r.body) == (200, b"w\n")
        assert r.header("connection") == "close"  # the last answer on it: no new clients here
        assert web.closed()
        web.close()
        assert _running(worker)  # the relay is still open
        relay.close()
        wait_for(lambda: not _running(worker), what="worker exits once its connections ended")
        assert "event=worker_exit" in sy.log()
        assert "event=shutdown_cut" not in sy.log()
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)


def test_orphaned_worker_cuts_what_is_left_after_shutdown_timeout(tmp_path, backends, steelyard):
    cfg, tcp_port, _ = _orphan_config(tmp_path, backends("e", "echo"), backends("w", "http"), "2s")
    sy = steelyard(cfg)
    (worker,) = sy.worker_pids()
    try:
        with connect(tcp_port) as relay:
            relay.sendall(b"x\n")
            assert recv_line(relay) == b"x\n"
            sy.proc.kill()
            sy.proc.wait(10)
            assert recv_all(relay) == b""  # cut at the shutdown timeout
        wait_for(lambda: not _running(worker), what="worker exit")
        assert re.search(r"event=shutdown_cut .*connections=1", sy.log())
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
