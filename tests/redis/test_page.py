"""The Redis dashboard page (GET /ui/redis) as headless Chromium renders it under `steelyard run`:
the slot map, the groups and proxies tables, slots in flight then moved, and the admin token.

Chromium dumps the DOM after the page's first poll; the page marks <body data-ready="1"> once it
has rendered the API's answers, and a dump without that mark is retried."""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

from fixtures.procs import base_config, free_port, wait_for
from fixtures.redis_server import RedisServer
from steelyard.redis.slots import slot_of

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=3000"]  # fmt: skip
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.text = tag, attrs, ""
        self.inner: list[Node] = []  # every descendant, in document order

    def all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        """Descendants by tag, class and attributes (data_group= matches data-group)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}.items()
        return [n for n in self.inner if n.matches(tag, cls) and want <= n.attrs.items()]

    def matches(self, tag: str | None, cls: str | None) -> bool:
        return tag in (None, self.tag) and cls in (None, *self.attrs.get("class", "").split())

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        (node,) = self.all(tag, **attrs)
        return node


class Dom(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        for open_node in self.stack:
            open_node.inner.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        for open_node in self.stack:
            open_node.text += data


def render(url: str, tmp_path: Path) -> Node:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return Dom(out.stdout).root


def page(url: str, tmp_path: Path) -> Node:
    def ready() -> Node | None:
        dom = render(url, tmp_path)
        return dom if dom.one("body").attrs.get("data-ready") == "1" else None

    return wait_for(ready, 60, f"{url} rendered")


Cluster = tuple[Any, RedisServer, RedisServer, int, redis_py.Redis]


def cluster(tmp_path: Path, steelyard: Any, redis_servers: Any, **admin: str) -> Cluster:
    """Two groups of one master each, a proxy on `port`, and a client `r` to it."""
    a, b = redis_servers(), redis_servers()
    port = free_port()
    cfg = base_config(tmp_path)
    cfg["admin"].update(admin)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{port}"}],
        "groups": [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}],
    }
    sy = steelyard(cfg)
    r = redis_py.Redis(port=port, protocol=2, socket_timeout=10)
    wait_for(r.ping, what="redis listener")
    return sy, a, b, port, r


def cells(dom: Node) -> list[Node]:
    return dom.one(id="slots").all("div", cls="slot")


def test_slot_map_groups_and_proxies(tmp_path, redis_servers, steelyard):
    sy, a, b, port, r = cluster(tmp_path, steelyard, redis_servers)
    keys = [f"k{i}" for i in range(40)]
    for k in keys:
        r.set(k, "v")
    expected = Counter(1 if slot_of(k.encode()) < 512 else 2 for k in keys)

    def probed() -> bool:
        groups = sy.api("GET", "/api/redis")["groups"]
        return all((g["servers"][g["master"]] or {}).get("keys") == expected[g["id"]]
                   for g in groups)  # fmt: skip

    wait_for(probed, what="health probe counted the keys")
    dom = page(f"http://{sy.admin}/ui/redis", tmp_path)
    slots = cells(dom)
    assert [c.attrs["data-slot"] for c in slots] == [str(s) for s in range(1024)]
    assert [c.attrs["data-group"] for c in slots] == ["1"] * 512 + ["2"] * 512
    colours = [re.search(r"background-color:\s*([^;]+)", c.attrs["style"])[1] for c in slots]
    assert len(set(colours[:512])) == len(set(colours[512:])) == 1
    assert colours[0] != colours[512]
    assert slots[7].attrs["title"] == "slot 7: group 1"
    legend = dom.one(id="legend").text
    assert "group 1" in legend and "group 2" in legend
    table = dom.one(id="groups")
    for gid, server, ranges in ((1, a, "0-511"), (2, b, "512-1023")):
        tds = [td.text.strip() for td in table.one("tr", data_group=str(gid)).all("td")]
        assert tds[:4] == [str(gid), "1", "512", ranges]
        assert tds[4:7] == [server.address, "master", "up"]
        assert re.fullmatch(r"\d+(\.\d)? (B|KB|MB|GB)", tds[7])
        assert tds[8] == str(expected[gid])
    (proxy,) = dom.one(id="proxies").all("tr", data_listen=f"127.0.0.1:{port}")
    assert proxy.all("td")[0].text == f"127.0.0.1:{port}"
    assert dom.one(id="version").text == str(sy.api("GET", "/api/redis")["version"])
    assert dom.one(id="updated").text != "never"
    assert "No slot is moving" in dom.one(id="migrations").text
    assert dom.one(id="history").all("li") == []


def test_migrating_slots_are_marked_then_moved(tmp_path, redis_servers, steelyard):
    sy, a, _, _, r = cluster(tmp_path, steelyard, redis_servers)
    moving = [k for k in (f"m{i}" for i in range(20000)) if slot_of(k.encode()) < 10][:5]
    for k in moving:
        r.set(k, "v")
    a.proc.send_signal(signal.SIGSTOP)  # the source cannot answer: the moves stay in flight
    try:
        out = sy.api("POST", "/api/redis/migrate", {"slots": "0-9", "to": 2})
        assert out["queued"] == list(range(10))
        dom = page(f"http://{sy.admin}/ui/redis", tmp_path)
        slots = cells(dom)
        for c in slots[:10]:
            assert "moving" in c.attrs["class"].split()
            assert (c.attrs["data-group"], c.attrs["data-to"]) == ("1", "2")
            assert re.fullmatch(r"slot \d+: group 1 -> group 2 \(\w+\)", c.attrs["title"])
        assert "moving" not in slots[10].attrs["class"] and "data-to" not in slots[10].attrs
        assert len(dom.all("div", cls="moving")) == 10
        summary = dom.one(id="migrations").text
        assert "10 slot(s) moving" in summary and "group 1 -> group 2" in summary
    finally:
        a.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: sy.api("GET", "/api/redis/migrations")["moves"] == [], 60, "moves done")
    dom = page(f"http://{sy.admin}/ui/redis", tmp_path)
    slots = cells(dom)
    assert [c.attrs["data-group"] for c in slots[:11]] == ["2"] * 10 + ["1"]
    assert dom.all(cls="moving", tag="div") == []
    (entry,) = dom.one(id="history").all("li")
    assert "slots 0-9 from group 1" in entry.text and f"{len(moving)} keys moved" in entry.text
    assert "No slot is moving" in dom.one(id="migrations").text


def test_token_from_the_url_is_sent_on_every_fetch(tmp_path, redis_servers, steelyard):
    sy, *_ = cluster(tmp_path, steelyard, redis_servers, token="t0k")
    # the page itself holds no data: it loads without a token (a browser cannot send one) ...
    with urllib.request.urlopen(f"http://{sy.admin}/ui/redis", timeout=10) as resp:
        assert resp.status == 200 and b'id="slots"' in resp.read()
    # ... while the API it calls still needs it
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{sy.admin}/api/redis", timeout=10)
    assert refused.value.code == 401
    url = f"http://{sy.admin}/ui/redis"
    dom = page(f"{url}?token=t0k", tmp_path)
    assert [c.attrs["data-group"] for c in cells(dom)] == ["1"] * 512 + ["2"] * 512
    assert dom.one(id="error").text == ""

    def refused_shown() -> Node | None:
        dom = render(url, tmp_path)  # no ?token=: the page sends no header
        return dom if "missing bearer token" in dom.one(id="error").text else None

    dom = wait_for(refused_shown, 60, "the refusal shown")
    assert "hidden" not in dom.one(id="error").attrs
    assert "data-ready" not in dom.one("body").attrs
