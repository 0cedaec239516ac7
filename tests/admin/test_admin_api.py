"""The admin REST API over a real socket on 127.0.0.1: views, changes, errors and the token."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from fixtures.admin_scaffold import PoolsController, make_pools
from steelyard.admin.api import AdminServer, make_app, parse_change, start_admin
from steelyard.core.backend import AdminState
from steelyard.core.store import EmbeddedStore
from steelyard.core.store.server_state import restore


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    admin: AdminServer,
    method: str,
    path: str,
    body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send the path exactly as given (encoded=True), a body as JSON (as ctl does), and decode
    the JSON answer."""
    url = URL(admin.url + path, encoded=True)
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers = {"Content-Type": "application/json", **(headers or {})}
    async with http.request(method, url, data=data, headers=headers) as resp:
        raw = await resp.read()
        if resp.content_type == "application/json":
            return resp.status, json.loads(raw)
        return resp.status, raw.decode()


SERVER = "/api/pools/web/servers/127.0.0.1:8081"


# views -------------------------------------------------------------------------------------


async def test_get_pools(http: aiohttp.ClientSession, admin: AdminServer) -> None:
    status, data = await call(http, admin, "GET", "/api/pools")
    assert status == 200
    assert [p["name"] for p in data["pools"]] == ["web", "db"]
    web = data["pools"][0]
    assert web["balance"] == "round_robin"
    assert web["protect_threshold"] == 0.0
    assert data["pools"][1]["protect_threshold"] == 0.5
    first = web["servers"][0]
    assert first == {
        "address": "127.0.0.1:8081",
        "weight": 5,
        "weight_override": None,
        "effective_weight": 5,
        "zone": "a",
        "backup": False,
        "max_conns": 0,
        "health": "up",
        "ejected": False,
        "state": "ready",
        "usable": True,
        "active": 0,
        "total": 0,
        "failures": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "health_flips": 0,
        "ramp": 1.0,
    }
    assert web["servers"][1]["backup"] is True
    assert web["servers"][2]["max_conns"] == 10


async def test_get_one_pool_and_server(http: aiohttp.ClientSession, admin: AdminServer) -> None:
    status, data = await call(http, admin, "GET", "/api/pools/db")
    assert status == 200
    assert data["name"] == "db"
    assert [s["address"] for s in data["servers"]] == ["10.0.0.1:3306"]
    status, data = await call(http, admin, "GET", SERVER)
    assert (status, data["address"], data["weight"]) == (200, "127.0.0.1:8081", 5)


async def test_health_reflects_checks_and_ejection(
    http: aiohttp.ClientSession, admin: AdminServer, controller: PoolsController
) -> None:
    s = controller.pools["web"].servers[0]
    s.healthy = False
    s.ejected = True
    _, data = await call(http, admin, "GET", SERVER)
    assert (data["health"], data["ejected"], data["usable"]) == ("down", True, False)


async def test_healthz_and_metrics(
    http: aiohttp.ClientSession, admin: AdminServer, controller: PoolsController
) -> None:
    assert await call(http, admin, "GET", "/healthz") == (200, "ok")
    controller.pools["web"].servers[0].total = 12
    async with http.get(admin.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    key = ("steelyard_server_connections_total", (("pool", "web"), ("server", "127.0.0.1:8081")))
    assert samples[key] == 12


# changes -----------------------------------------------------------------------------------


async def test_put_state_and_weight(
    http: aiohttp.ClientSession,
    admin: AdminServer,
    controller: PoolsController,
    store: EmbeddedStore,
    log_lines: io.StringIO,
) -> None:
    status, data = await call(http, admin, "PUT", SERVER, {"state": "drain"})
    assert status == 200
    assert (data["address"], data["state"], data["usable"]) == ("127.0.0.1:8081", "drain", False)
    server = controller.pools["web"].servers[0]
    assert server.admin is AdminState.DRAIN
    assert server not in controller.pools["web"].candidates()

    status, data = await call(http, admin, "PUT", SERVER, {"weight": 9})
    assert status == 200
    assert (data["weight"], data["weight_override"], data["effective_weight"]) == (5, 9, 9)
    assert data["state"] == "drain"

    status, data = await call(http, admin, "PUT", SERVER, {"state": "ready", "weight": 0})
    assert (status, data["state"], data["effective_weight"]) == (200, "ready", 0)

    lines = [line for line in log_lines.getvalue().splitlines() if "event=admin_change" in line]
    assert len(lines) == 3
    assert "pool=web server=127.0.0.1:8081 state=drain peer=127.0.0.1" in lines[0]
    assert "weight=9" in lines[1] and "state=" not in lines[1]

    # persisted: a restart (fresh pools, same store) comes back with the override
    fresh = make_pools()
    assert restore(store, fresh) == 1
    assert fresh["web"].servers[0].weight_override == 0

    # and visible in the metrics
    _, text = await call(http, admin, "GET", "/metrics")
    assert 'steelyard_server_weight{pool="web",server="127.0.0.1:8081"} 0.0' in text


@pytest.mark.parametrize(
    "path",
    [
        "/api/pools/web/servers/[::1]:80",
        "/api/pools/web/servers/%5B%3A%3A1%5D%3A80",
        "/api/pools/web/servers/%5b%3a%3a1%5d%3a80",
    ],
)
async def test_ipv6_address_in_path(
    http: aiohttp.ClientSession, admin: AdminServer, controller: PoolsController, path: str
) -> None:
    status, data = await call(http, admin, "PUT", path, {"state": "maint"})
    assert (status, data["address"], data["state"]) == (200, "[::1]:80", "maint")
    assert controller.pools["web"].server("[::1]:80").admin is AdminState.MAINT  # type: ignore[union-attr]
    status, data = await call(http, admin, "GET", path)
    assert (status, data["address"]) == (200, "[::1]:80")


async def test_percent_encoded_ipv4_address(
    http: aiohttp.ClientSession, admin: AdminServer
) -> None:
    status, data = await call(
        http, admin, "PUT", "/api/pools/web/servers/127.0.0.1%3A8082", {"weight": 3}
    )
    assert (status, data["address"], data["effective_weight"]) == (200, "127.0.0.1:8082", 3)


# errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty body"),
        (b"   ", "empty body"),
        (b"{", "malformed JSON"),
        (b'{"state": "drain",}', "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[]", "body is a JSON list"),
        (b'"drain"', "body is a JSON str"),
        (b"{}", "nothing to change"),
        (b'{"state": "drain", "color": "red"}', "unknown key(s) 'color'"),
        (b'{"admin": "drain"}', "unknown key(s) 'admin'"),
        (b'{"state": "sleep"}', "state must be one of ready, drain, maint, not 'sleep'"),
        (b'{"state": null}', "state must be one of"),
        (b'{"state": "DRAIN"}', "state must be one of"),
        (b'{"weight": -1}', "weight must be an integer from 0 to 1000, not -1"),
        (b'{"weight": 1001}', "weight must be an integer from 0 to 1000, not 1001"),
        (b'{"weight": "x"}', "weight must be an integer from 0 to 1000, not 'x'"),
        (b'{"weight": "5"}', "weight must be an integer"),
        (b'{"weight": 2.5}', "weight must be an integer"),
        (b'{"weight": true}', "weight must be an integer"),
        (b'{"weight": null}', "weight must be an integer"),
    ],
)
async def test_bad_bodies_are_400(
    http: aiohttp.ClientSession,
    admin: AdminServer,
    controller: PoolsController,
    data: bytes,
    message: str,
) -> None:
    status, body = await call(http, admin, "PUT", SERVER, data=data)
    assert status == 400
    assert set(body) == {"error"}
    assert message in body["error"]
    server = controller.pools["web"].servers[0]
    assert (server.admin, server.weight_override) == (AdminState.READY, None)
    # and the API keeps serving
    assert (await call(http, admin, "GET", "/healthz"))[0] == 200


async def test_not_found(http: aiohttp.ClientSession, admin: AdminServer) -> None:
    assert await call(http, admin, "GET", "/api/pools/x") == (404, {"error": "unknown pool 'x'"})
    assert await call(http, admin, "PUT", "/api/pools/x/servers/1.2.3.4:80", {"weight": 1}) == (
        404,
        {"error": "unknown pool 'x'"},
    )
    status, body = await call(
        http, admin, "PUT", "/api/pools/web/servers/1.2.3.4:80", {"state": "drain"}
    )
    assert (status, body) == (404, {"error": "unknown server '1.2.3.4:80' in pool 'web'"})
    status, body = await call(http, admin, "GET", "/api/pools/web/servers/1.2.3.4:80")
    assert (status, body) == (404, {"error": "unknown server '1.2.3.4:80' in pool 'web'"})
    assert await call(http, admin, "GET", "/nope") == (
        404,
        {"error": "no such endpoint: GET /nope"},
    )
    assert (await call(http, admin, "GET", "/api/status"))[0] == 404


async def test_wrong_method_and_huge_body(http: aiohttp.ClientSession, admin: AdminServer) -> None:
    url = URL(admin.url + "/api/pools", encoded=True)
    async with http.post(url) as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert await resp.json() == {"error": "method POST is not allowed on /api/pools"}
    status, body = await call(http, admin, "PUT", SERVER, data=b" " * 200_000)
    assert status == 413
    assert "too large" in body["error"]


class RefusingController(PoolsController):
    """The supervisor may refuse a change itself (ValueError) or fail (any other error)."""

    async def set_server(self, pool: str, address: str, state: Any, weight: Any) -> Any:
        if weight == 7:
            raise ValueError("weight 7 is unlucky")
        if weight == 13:
            raise RuntimeError("boom")
        return await super().set_server(pool, address, state, weight)

    def status(self) -> dict[str, Any]:
        return {"pid": 1, "workers": []}


async def test_controller_errors(
    http: aiohttp.ClientSession,
    admin_factory: Callable[..., Any],
    store: EmbeddedStore,
    log_lines: io.StringIO,
) -> None:
    admin = await admin_factory(RefusingController(make_pools(), store))
    assert await call(http, admin, "PUT", SERVER, {"weight": 7}) == (
        400,
        {"error": "weight 7 is unlucky"},
    )
    assert await call(http, admin, "PUT", SERVER, {"weight": 13}) == (
        500,
        {"error": "internal error, see the steelyard log"},
    )
    assert "event=admin_error" in log_lines.getvalue()
    assert "RuntimeError: boom" in log_lines.getvalue()
    assert (await call(http, admin, "PUT", SERVER, {"weight": 8}))[0] == 200
    assert await call(http, admin, "GET", "/api/status") == (200, {"pid": 1, "workers": []})


# token -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/pools", "/healthz", "/metrics", "/nope", "/api/pools/web/servers/[::1]:80"]
)
async def test_token_is_enforced_on_loopback_too(
    http: aiohttp.ClientSession,
    admin_factory: Callable[..., Any],
    controller: PoolsController,
    path: str,
) -> None:
    admin = await admin_factory(controller, token="s3cret-tok")
    for headers, error in (
        (None, "missing bearer token"),
        ({"Authorization": "Bearer wrong"}, "invalid token"),
        ({"Authorization": "Bearer s3cret-to"}, "invalid token"),
        ({"Authorization": "Bearer s3cret-tokk"}, "invalid token"),
        ({"Authorization": "Basic s3cret-tok"}, "missing bearer token"),
        ({"Authorization": "Bearer"}, "missing bearer token"),
    ):
        url = URL(admin.url + path, encoded=True)
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401, headers
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            body = await resp.json()
            assert set(body) == {"error"}
            assert error in body["error"]
    async with http.get(
        URL(admin.url + path, encoded=True), headers={"Authorization": "Bearer s3cret-tok"}
    ) as resp:
        assert resp.status == (404 if path == "/nope" else 200)


async def test_token_guards_changes(
    http: aiohttp.ClientSession, admin_factory: Callable[..., Any], controller: PoolsController
) -> None:
    admin = await admin_factory(controller, token="tok")
    status, _ = await call(http, admin, "PUT", SERVER, {"state": "maint"})
    assert status == 401
    assert controller.pools["web"].servers[0].admin is AdminState.READY
    status, data = await call(
        http, admin, "PUT", SERVER, {"state": "maint"}, headers={"Authorization": "bearer tok"}
    )
    assert (status, data["state"]) == (200, "maint")


async def test_token_required_off_loopback(controller: PoolsController) -> None:
    with pytest.raises(ValueError, match="token is required"):
        make_app(controller, None, require_token=True)
    with pytest.raises(ValueError, match="token is required"):
        # refused before anything binds
        await start_admin(controller, "0.0.0.0:0", None)
    make_app(controller, "tok", require_token=True)
    make_app(controller, None, require_token=False)


# lifecycle ---------------------------------------------------------------------------------


async def test_stop_closes_the_port(controller: PoolsController) -> None:
    admin = await start_admin(controller, "127.0.0.1:0", None)
    port = admin.port
    assert port > 0
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
    await admin.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_parse_change() -> None:
    assert parse_change(b'{"state": "drain"}') == ("drain", None)
    assert parse_change(b'{"weight": 0}') == (None, 0)
    assert parse_change(b'{"state": "maint", "weight": 1000}') == ("maint", 1000)


async def test_every_answer_is_uncached_unsniffed_unframed(
    http: aiohttp.ClientSession, admin: AdminServer
) -> None:
    for method, path in (("GET", "/api/pools"), ("GET", "/nope"), ("PUT", SERVER)):
        async with http.request(method, URL(admin.url + path, encoded=True)) as resp:
            assert resp.status in (200, 404, 415)
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert "Content-Security-Policy" not in resp.headers  # JSON: no page to police
