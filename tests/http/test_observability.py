"""Access log lines, the 5xx error log, and per route/server metrics in /metrics and /api/pools."""

from __future__ import annotations

import json
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fixtures.procs import free_port, wait_for
from fixtures.web import http_config


def test_combined_access_log_with_upstream_fields(tmp_path, http_backends, steelyard):
    b = http_backends("b")
    log_path = tmp_path / "access.log"
    cfg, port = http_config(
        tmp_path,
        {"p": [b.address]},
        [{"path": "/", "pool": "p"}],
        access_log={"path": str(log_path)},
    )
    steelyard(cfg)
    httpx.get(
        f"http://127.0.0.1:{port}/status/201?q=1",
        headers={"User-Agent": "tester/1", "Referer": "http://r/", "X-Request-ID": "rid-1"},
    )
    line = wait_for(lambda: log_path.exists() and log_path.read_text(), what="access line")
    m = re.match(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /status/201\?q=1 '
        r'HTTP/1\.1" 201 5 "http://r/" "tester/1" rt=\d+\.\d{3} uct=\d+\.\d{3} '
        r'uht=\d+\.\d{3} ua="(?P<ua>[^"]+)" us="201" rid=rid-1 route="0:p"\n$',
        line,
    )
    assert m, line
    assert m["ua"] == b.address


def test_json_access_log_lists_every_attempt(tmp_path, http_backends, steelyard):
    good = http_backends("good")
    dead = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "access.json"
    cfg, port = http_config(
        tmp_path,
        {"p": {"balance": "first", "servers": [{"address": dead}, {"address": good.address}]}},
        [{"path": "/", "pool": "p"}],
        access_log={"path": str(log_path), "format": "json"},
    )
    steelyard(cfg)
    assert httpx.get(f"http://127.0.0.1:{port}/x").status_code == 200
    text = wait_for(lambda: log_path.exists() and log_path.read_text(), what="access line")
    doc = json.loads(text.splitlines()[0])
    assert doc["status"] == 200 and doc["body_bytes_sent"] == 5
    assert doc["upstream_addr"] == f"{dead}, {good.address}"
    assert doc["upstream_status"] == "502, 200"
    assert len(doc["request_id"]) == 32


def samples(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_and_api_count_requests_per_route_and_server(tmp_path, http_backends, steelyard):
    a, b = http_backends("a"), http_backends("b")
    cfg, port = http_config(
        tmp_path,
        {"p": [a.address, b.address]},
        [{"path": "/ping", "return": {"status": 200, "body": "pong"}}, {"path": "/", "pool": "p"}],
    )
    sy = steelyard(cfg)
    for _ in range(4):  # round robin: two of them hit a, whose 503 is retried on b
        assert httpx.get(f"http://127.0.0.1:{port}/fail-on/a/503").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/ping").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/status/404").status_code == 404

    def b_requests() -> dict[tuple, float]:
        text = httpx.get(f"http://{sy.admin}/metrics").text
        return samples(text, "steelyard_http_requests_total")

    def key(route: str, pool: str, server: str, code: str) -> tuple:
        labels = {"listener": "web", "route": route, "pool": pool, "server": server, "code": code}
        return tuple(sorted(labels.items()))

    got = wait_for(
        lambda: (r := b_requests()).get(key("1:p", "p", b.address, "2xx")) == 4.0 and r,
        what="b's answers in /metrics",
    )
    assert got[key("0:return", "-", "-", "2xx")] == 1.0
    assert sum(v for k, v in got.items() if ("code", "4xx") in k) == 1.0
    text = httpx.get(f"http://{sy.admin}/metrics").text
    retries = samples(text, "steelyard_http_retries_total")
    assert retries[tuple(sorted({"listener": "web", "route": "1:p", "pool": "p",
                                 "server": a.address}.items()))] == 2.0  # fmt: skip
    buckets = samples(text, "steelyard_http_request_duration_seconds_count")
    assert sum(buckets.values()) == 6.0
    view = sy.api("GET", "/api/pools")
    servers = {s["address"]: s for p in view["pools"] for s in p["servers"]}
    assert servers[b.address]["http"]["requests"]["2xx"] == 4
    assert servers[a.address]["http"]["retries"] == 2
    assert servers[b.address]["http"]["mean_latency"] > 0
