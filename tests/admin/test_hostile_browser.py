"""The review's attacks from a real browser (headless Chromium) against `steelyard run`.

Chromium's --host-resolver-rules points attacker.example at 127.0.0.1, as a DNS-rebinding
attacker does. A page of attacker.example posts to the admin API the way a page can without
any permission (fetch with mode no-cors and a text/plain body: a CORS "simple" request, sent
without a preflight); measured on the code before the fix, this page took the groups from
[1, 2] to [1, 2, 3] and its rebalance POST was served too. And the admin API read under the
attacker's name (the rebound origin) answered with the data. Now both are 403, nothing changes.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.browser import Browser
from fixtures.procs import base_config, free_port

ATTACKER = "attacker.example"


class _Page(http.server.BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.html)))
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def attacker_site() -> Iterator[Any]:
    """A web server for the attacker's page, on 127.0.0.1 (reached as attacker.example)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser(tmp_path) -> Iterator[Browser]:
    b = Browser(tmp_path, f"--host-resolver-rules=MAP {ATTACKER} 127.0.0.1")
    yield b
    b.close()


def test_a_hostile_page_cannot_change_or_read_the_cluster(
    tmp_path, redis_servers, steelyard, attacker_site, browser
):
    a, b, c = redis_servers(), redis_servers(), redis_servers()
    cfg = base_config(tmp_path)
    cfg["redis"] = {
        "proxies": [{"listen": f"127.0.0.1:{free_port()}"}],
        "groups": [{"id": 1, "master": a.address}, {"id": 2, "master": b.address}],
    }
    sy = steelyard(cfg)
    admin = f"http://{sy.admin}"
    group = json.dumps({"id": 3, "master": c.address, "weight": 9})
    _Page.html = f"""<!doctype html><title>cute cats</title><script>
    const post = (path, body) => fetch("{admin}" + path, {{method: "POST", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}}, body}});
    post("/api/redis/groups", {json.dumps(group)})
      .then(() => post("/api/redis/rebalance", "{{}}"))
      .finally(() => {{ document.title = "sent"; }});
    </script>""".encode()
    page = f"http://{ATTACKER}:{attacker_site.server_address[1]}/"
    tab = browser.open(page)
    browser.wait(tab, "document.title === 'sent'", "the page's requests sent")
    for path in ("/api/redis/groups", "/api/redis/rebalance"):
        sy.wait_log(rf"event=admin_refused method=POST path={path} status=403 "
                    r"error=\"cross-origin request refused")  # fmt: skip
    view = sy.api("GET", "/api/redis")
    assert [g["id"] for g in view["groups"]] == [1, 2] and view["moves"] == []
    # the rebound origin: the browser asks attacker.example, the request reaches 127.0.0.1
    rebound = browser.open(f"http://{ATTACKER}:{sy.admin.rpartition(':')[2]}/api/redis")
    text = browser.wait(rebound, "document.body && document.body.innerText", "the answer")
    assert "is not a name of this admin API" in text and c.address not in text
    assert a.address not in text
    ui = browser.open(f"http://{ATTACKER}:{sy.admin.rpartition(':')[2]}/ui/redis")
    text = browser.wait(ui, "document.body && document.body.innerText", "the page")
    assert "is not a name of this admin API" in text
    # the page under its own name still works in the same browser
    own = browser.open(f"{admin}/ui/redis")
    browser.wait(own, "document.body.dataset.ready === '1'", "the dashboard rendered")
