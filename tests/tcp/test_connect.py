"""Choosing and reaching a server: balancing, retries on failed connects, queueing at max_conns."""

from __future__ import annotations

import socket
from collections import Counter

from fixtures.procs import (
    base_config,
    blackhole,
    connect,
    free_port,
    recv_all,
    recv_line,
    wait_for,
)


def listener(tmp_path, pool: dict, **opts):
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["pools"] = {"p": pool}
    cfg["tcp"] = [{"name": "front", "listen": f"127.0.0.1:{port}", "pool": "p", **opts}]
    return cfg, port


def hello(port: int) -> bytes:
    with connect(port) as s:
        return recv_line(s).strip()


def test_weighted_round_robin_order(tmp_path, backends, steelyard):
    a, b, c = backends("a"), backends("b"), backends("c")
    servers = [
        {"address": a.address, "weight": 5},
        {"address": b.address, "weight": 1},
        {"address": c.address, "weight": 1},
    ]
    cfg, port = listener(tmp_path, {"servers": servers})
    steelyard(cfg)
    seq = b"".join(hello(port) for _ in range(14))
    assert seq == b"aabacaa" * 2  # nginx smooth weighted round robin, bit-exact


def test_failed_connect_retries_next_server_and_is_logged(tmp_path, backends, steelyard):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    live = backends("live")
    cfg, port = listener(
        tmp_path, {"servers": [{"address": dead}, {"address": live.address}]}, retries=2
    )
    sy = steelyard(cfg)
    assert all(hello(port) == b"live" for _ in range(6))
    sy.wait_log(rf"event=connect_failed .*server={dead}.*cause=\"?connection refused")


def test_all_servers_down_closes_client_with_one_log_line(tmp_path, steelyard):
    dead1, dead2 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg, port = listener(tmp_path, {"servers": [{"address": dead1}, {"address": dead2}]})
    sy = steelyard(cfg)
    with connect(port) as s:
        assert recv_all(s) == b""
    sy.wait_log(r"event=no_server_left listener=front .*attempts=2")


def test_server_that_never_answers_connect_times_out_then_next(tmp_path, backends, steelyard):
    hole, fillers = blackhole()
    dead = f"127.0.0.1:{hole.getsockname()[1]}"
    live = backends("live")
    cfg, port = listener(
        tmp_path,
        {"balance": "first", "servers": [{"address": dead}, {"address": live.address}]},
        connect_timeout="300ms",
    )
    sy = steelyard(cfg)
    try:
        assert hello(port) == b"live"
        sy.wait_log(rf"event=connect_failed .*server={dead}.*cause=\"connect timeout after 0.3s\"")
    finally:
        for f in fillers:
            f.close()
        hole.close()


def test_max_conns_queues_then_serves(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = listener(
        tmp_path, {"servers": [{"address": a.address, "max_conns": 1}]}, queue_timeout="10s"
    )
    sy = steelyard(cfg)
    first = socket.create_connection(("127.0.0.1", port))
    assert recv_line(first) == b"a\n"
    second = socket.create_connection(("127.0.0.1", port))
    second.settimeout(0.3)
    try:
        second.recv(1)
        raise AssertionError("the second client was served beyond max_conns")
    except TimeoutError:
        pass
    assert sy.server("p", a.address)["active"] <= 1
    first.close()
    second.settimeout(10)
    assert recv_line(second) == b"a\n"  # served once the slot freed
    second.close()


def test_queue_timeout_closes_client(tmp_path, backends, steelyard):
    a = backends("a")
    cfg, port = listener(
        tmp_path, {"servers": [{"address": a.address, "max_conns": 1}]}, queue_timeout="200ms"
    )
    sy = steelyard(cfg)
    with connect(port) as first:
        assert recv_line(first) == b"a\n"
        with connect(port) as second:
            assert recv_all(second) == b""
        sy.wait_log(r"event=queue_timeout listener=front")
        first.sendall(b"still here\n")
        assert recv_line(first) == b"still here\n"


def test_source_hash_pins_a_client(tmp_path, backends, steelyard):
    names = [backends(n) for n in "abc"]
    cfg, port = listener(
        tmp_path, {"balance": "source_hash", "servers": [{"address": b.address} for b in names]}
    )
    steelyard(cfg)
    got = Counter(hello(port) for _ in range(10))
    assert len(got) == 1  # one client address, one server


def test_drained_server_gets_no_new_connections(tmp_path, backends, steelyard):
    a, b = backends("a"), backends("b")
    cfg, port = listener(tmp_path, {"servers": [{"address": a.address}, {"address": b.address}]})
    sy = steelyard(cfg)
    held = socket.create_connection(("127.0.0.1", port))
    first = recv_line(held).strip()
    drained = a if first == b"a" else b
    sy.api("PUT", f"/api/pools/p/servers/{drained.address}", {"state": "drain"})
    assert all(hello(port) != drained.name.encode() for _ in range(6))
    held.sendall(b"existing connection still works\n")
    assert recv_line(held) == b"existing connection still works\n"
    held.close()
    wait_for(lambda: sy.server("p", drained.address)["active"] == 0, what="drained")


def test_queue_serves_waiters_in_arrival_order(tmp_path, backends, steelyard):
    a = backends("a", "echo")
    cfg, port = listener(
        tmp_path, {"servers": [{"address": a.address, "max_conns": 1}]}, queue_timeout="20s"
    )
    steelyard(cfg)
    holder = socket.create_connection(("127.0.0.1", port))
    holder.sendall(b"0\n")
    assert recv_line(holder) == b"0\n"
    waiters = []
    for i in (1, 2, 3):
        w = socket.create_connection(("127.0.0.1", port), timeout=10)
        w.sendall(b"%d\n" % i)  # buffered until the waiter gets its slot
        waiters.append(w)
    holder.close()
    for i, w in enumerate(waiters, 1):
        assert recv_line(w) == b"%d\n" % i  # served one after another, first come first
        w.close()


def test_max_conns_holds_across_workers(tmp_path, backends, steelyard):
    """Workers share the count: max_conns 1 with 3 workers still means one connection."""
    import select

    a = backends("a")
    cfg, port = listener(
        tmp_path, {"servers": [{"address": a.address, "max_conns": 1}]}, queue_timeout="20s"
    )
    cfg["workers"] = 3
    sy = steelyard(cfg)
    assert len(sy.worker_pids()) == 3
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
    try:
        for _ in range(6):
            # exactly one client is served at a time, whichever worker accepted it
            ready, _, _ = select.select(clients, [], [], 5)
            assert len(ready) == 1
            (served,) = ready
            assert recv_line(served) == b"a\n"
            ready, _, _ = select.select(clients, [], [], 0.3)
            assert served not in ready and not ready  # nobody else got in meanwhile
            clients.remove(served)
            served.close()
    finally:
        for c in clients:
            c.close()
