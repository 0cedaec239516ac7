"""Health, passive ejection and operator state, seen end to end through a running steelyard."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from fixtures.procs import base_config, connect, free_port, recv_line, wait_for


def pool_cfg(tmp_path, servers, **pool):
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["pools"] = {"p": {"servers": [{"address": s} for s in servers], **pool}}
    cfg["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p"}]
    return cfg, port


def hello(port):
    with connect(port) as s:
        return recv_line(s).strip()


def test_active_check_marks_down_and_up_with_one_log_line_each(tmp_path, backends, steelyard):
    a, b = backends("a"), backends("b")
    health = {"kind": "tcp", "interval": "100ms", "timeout": "100ms", "rise": 2, "fall": 2}
    cfg, port = pool_cfg(tmp_path, [a.address, b.address], health=health)
    sy = steelyard(cfg)
    a.stop()
    sy.wait_log(rf"event=health_flip pool=p server={a.address} state=down")
    wait_for(lambda: sy.server("p", a.address)["health"] == "down", what="api shows down")
    check = sy.server("p", a.address)["check"]
    assert (check["check"], check["last_ok"]) == ("tcp", False)
    assert "refused" in check["last_detail"] and check["consecutive_fail"] >= 2
    assert all(hello(port) == b"b" for _ in range(5))
    a.restart()
    sy.wait_log(rf"event=health_flip pool=p server={a.address} state=up")
    assert sy.count_log(rf"event=health_flip pool=p server={a.address} state=down") == 1
    wait_for(lambda: b"a" in {hello(port) for _ in range(4)}, what="a back in rotation")


def test_http_check_uses_path_and_status(tmp_path, backends, steelyard):
    good, other = backends("good", "http"), backends("other", "hello")
    health = {"kind": "http", "path": "/health", "interval": "100ms", "fall": 1, "rise": 1}
    cfg, _ = pool_cfg(tmp_path, [good.address, other.address], health=health)
    sy = steelyard(cfg)
    # the hello backend doesn't speak HTTP: it fails the check
    sy.wait_log(rf"event=health_flip pool=p server={other.address} state=down")
    assert sy.server("p", good.address)["health"] == "up"


def test_passive_ejection_after_consecutive_failures(tmp_path, backends, steelyard):
    dead = f"127.0.0.1:{free_port()}"
    live = backends("live")
    passive = {"consecutive_failures": 2, "eject_for": "30s", "max_ejected": 0.5}
    cfg, port = pool_cfg(tmp_path, [dead, live.address], passive=passive)
    sy = steelyard(cfg)
    for _ in range(6):
        assert hello(port) == b"live"
    sy.wait_log(rf"event=passive_eject .*server={dead}")
    wait_for(lambda: sy.server("p", dead)["ejected"], what="ejected in the api")
    record = sy.server("p", dead)["passive"]
    assert record["ejected"] and 0 < record["remaining"] <= 30 and record["times"] == 1
    before = sy.count_log(rf"event=connect_failed .*server={dead}")
    for _ in range(6):
        assert hello(port) == b"live"
    assert sy.count_log(rf"event=connect_failed .*server={dead}") == before


def test_operator_state_survives_restart_and_removed_servers_are_forgotten(
    tmp_path, backends, steelyard
):
    a, b = backends("a"), backends("b")
    cfg, port = pool_cfg(tmp_path, [a.address, b.address])
    sy = steelyard(cfg)
    sy.api("PUT", f"/api/pools/p/servers/{a.address}", {"state": "maint", "weight": 4})
    sy.stop()
    sy2 = steelyard(cfg)
    s = sy2.server("p", a.address)
    assert (s["state"], s["effective_weight"]) == ("maint", 4)
    assert all(hello(port) == b"b" for _ in range(4))
    # remove a from the config: its saved state is dropped, and re-adding starts fresh
    cfg["pools"]["p"]["servers"] = [{"address": b.address}]
    sy2.reload(cfg)
    cfg["pools"]["p"]["servers"] = [{"address": a.address}, {"address": b.address}]
    sy2.reload(cfg)
    assert sy2.server("p", a.address)["state"] == "ready"


def test_metrics_count_connections_and_bytes(tmp_path, backends, steelyard):
    e = backends("e", "echo")
    cfg, port = pool_cfg(tmp_path, [e.address])
    sy = steelyard(cfg)
    for _ in range(3):
        with connect(port) as s:
            s.sendall(b"0123456789\n")
            assert recv_line(s) == b"0123456789\n"

    def samples():
        text = sy.api("GET", "/metrics").decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                if smp.labels.get("server") == e.address:
                    out[smp.name] = smp.value
        return out

    wait_for(lambda: samples().get("steelyard_server_connections_total") == 3, what="3 conns")
    m = samples()
    assert m["steelyard_server_bytes_in_total"] == 33
    assert m["steelyard_server_bytes_out_total"] == 33
    assert m["steelyard_server_up"] == 1


def test_slow_start_ramps_weight_after_a_server_comes_back(tmp_path, backends, steelyard):
    a, b = backends("a"), backends("b")
    health = {"kind": "tcp", "interval": "100ms", "timeout": "100ms", "rise": 1, "fall": 1}
    cfg, _ = pool_cfg(tmp_path, [a.address, b.address], health=health, slow_start="3s")
    cfg["pools"]["p"]["servers"][0]["weight"] = 100
    sy = steelyard(cfg)
    assert sy.server("p", a.address)["effective_weight"] == 100  # no ramp at start
    a.stop()
    sy.wait_log(rf"event=health_flip pool=p server={a.address} state=down")
    a.restart()
    sy.wait_log(rf"event=health_flip pool=p server={a.address} state=up")
    seen = [sy.server("p", a.address)["effective_weight"]]
    assert seen[0] < 100  # back, but not at full weight yet
    wait_for(
        lambda: seen.append(sy.server("p", a.address)["effective_weight"]) or seen[-1] == 100,
        what="ramped to full weight",
    )
    assert seen == sorted(seen)  # it only grows
    assert len(set(seen)) > 2  # in steps, not at once
