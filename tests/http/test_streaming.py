"""Bodies are streamed with backpressure: 1 GiB each way keeps the worker's peak RSS small."""

from __future__ import annotations

import json
import subprocess

from fixtures.web import http_config

GIB = 1 << 30
RSS_LIMIT_KB = 100 * 1024


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_one_gib_download_and_upload_keep_rss_low(tmp_path, http_backends, steelyard):
    b = http_backends("big")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    (worker,) = sy.worker_pids()
    down = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
         f"http://127.0.0.1:{port}/bytes/{GIB}"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert down.stdout == f"{GIB} 200"
    # chunked upload from a pipe: curl -T - streams what `head` produces
    up = subprocess.run(
        f"head -c {GIB} /dev/zero | curl -sS -T - http://127.0.0.1:{port}/upload",
        shell=True, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert json.loads(up.stdout)["size"] == GIB
    assert peak_rss_kb(worker) < RSS_LIMIT_KB, f"peak RSS {peak_rss_kb(worker)} kB"


def test_slow_reader_pauses_the_server_side(tmp_path, http_backends, steelyard):
    """A client that stops reading must not make the proxy buffer the whole response."""
    import socket
    import time

    b = http_backends("big")
    cfg, port = http_config(tmp_path, {"p": [b.address]}, [{"path": "/", "pool": "p"}])
    sy = steelyard(cfg)
    (worker,) = sy.worker_pids()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(f"GET /bytes/{256 << 20} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # Read a little, then stall: a proxy without backpressure would pull the rest of the
    # 256 MiB from the server into memory meanwhile (VmHWM keeps the peak for us).
    got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")
    time.sleep(1.0)
    total = len(got) - got.index(b"\r\n\r\n") - 4
    while total < (256 << 20):
        data = s.recv(1 << 20)
        assert data
        total += len(data)
    s.close()
    assert total == 256 << 20
    assert peak_rss_kb(worker) < RSS_LIMIT_KB, f"peak RSS {peak_rss_kb(worker)} kB"
