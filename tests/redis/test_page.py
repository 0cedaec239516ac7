"""The Redis dashboard page (GET /ui/redis) as headless Chromium renders it under `steelyard run`:
the slot map, the groups and proxies tables, slots in flight then moved, and the admin token
(typed into the page's login form: Chromium driven over its DevTools protocol).

Chromium dumps the DOM after the page's first poll; the page marks <body data-ready="1"> once it
has rendered the API's answers, and a dump without that mark is retried."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

import steelyard.admin
from fixtures.browser import Browser, Node, render
from fixtures.procs import base_config, free_port, wait_for
from fixtures.redis_server import RedisServer
from steelyard.redis.slots import slot_of


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


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    b = Browser(tmp_path)
    yield b
    b.close()


def test_page_never_reads_the_url(tmp_path):
    """The token used to come from `?token=`, where history, logs and Referer keep it: the
    page's script must not look at its location at all."""
    html = (Path(steelyard.admin.__file__).parent / "static" / "redis.html").read_text()
    script = html[html.index("<script>") : html.index("</script>")]
    for word in ("location", "URLSearchParams", "document.URL", "document.referrer", "href"):
        assert word not in script
    assert '<form id="login" method="post"' in html  # never a GET that puts it in the URL


def test_token_is_typed_in_a_form_and_sent_as_a_header(tmp_path, redis_servers, steelyard, browser):
    sy, *_ = cluster(tmp_path, steelyard, redis_servers, token="t0k")
    # the page itself holds no data: it loads without a token (a browser cannot send one) ...
    with urllib.request.urlopen(f"http://{sy.admin}/ui/redis", timeout=10) as resp:
        assert resp.status == 200 and b'id="slots"' in resp.read()
        policy = resp.headers["Content-Security-Policy"]  # the page renders under it below
        assert "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
        assert "connect-src 'self'" in policy and resp.headers["X-Frame-Options"] == "DENY"
    # ... while the API it calls still needs it
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{sy.admin}/api/redis", timeout=10)
    assert refused.value.code == 401
    url = f"http://{sy.admin}/ui/redis"
    # an old bookmark with the token in the URL: ignored, the login form is shown instead
    old = browser.open(f"{url}?token=t0k")
    shown = "document.getElementById('error').textContent.includes('missing bearer token')"
    browser.wait(old, shown, "the refusal shown")
    dom = browser.dom(old)
    assert "hidden" not in dom.one(id="login").attrs
    assert "data-ready" not in dom.one("body").attrs
    assert browser.eval(old, "sessionStorage.length") == 0
    # a wrong token: refused, asked again
    tab = browser.open(url)
    browser.wait(tab, "!document.getElementById('login').hidden", "the login form")
    browser.eval(tab, "document.getElementById('token').value = 'wrong';"
                      "document.getElementById('login').requestSubmit()")  # fmt: skip
    browser.wait(tab, "document.getElementById('error').textContent.includes('invalid token')",
                 "the refusal shown")  # fmt: skip
    assert browser.eval(tab, "document.getElementById('login').hidden") is False
    # the right one: the page renders, the token stays in this tab's sessionStorage only
    browser.eval(tab, "document.getElementById('token').value = 't0k';"
                      "document.getElementById('login').requestSubmit()")  # fmt: skip
    browser.wait(tab, "document.body.dataset.ready === '1'", "the page rendered")
    dom = browser.dom(tab)
    assert [c.attrs["data-group"] for c in cells(dom)] == ["1"] * 512 + ["2"] * 512
    assert dom.one(id="error").text == "" and "hidden" in dom.one(id="login").attrs
    assert browser.eval(tab, "location.href") == url  # nothing was put into the URL
    assert browser.eval(tab, "sessionStorage.getItem('steelyard-admin-token')") == "t0k"
    assert browser.eval(tab, "document.getElementById('token').value") == ""
    # "Forget token" clears it, and the API refuses the page again
    browser.eval(tab, "document.getElementById('logout').click()")
    browser.wait(tab, "!document.getElementById('login').hidden", "the login form again")
    assert browser.eval(tab, "sessionStorage.length") == 0
