"""The admin API's Redis routes: the dashboard's read and write side over HTTP.

  GET    /api/redis                             -> groups, proxies, moves, progress, history
  GET    /api/redis/slots                       -> {"slots": [group id x 1024]}
  GET    /api/redis/migrations                  -> {"moves", "progress", "history", "error"}
  POST   /api/redis/groups                      <- {"id", "master", "replicas": [], "weight"}
  PUT    /api/redis/groups/{id}                 <- {"weight"}
  DELETE /api/redis/groups/{id}
  POST   /api/redis/groups/{id}/servers         <- {"address"}  (made a replica of the master)
  DELETE /api/redis/groups/{id}/servers/{address}
  POST   /api/redis/groups/{id}/promote         <- {"address"}
  POST   /api/redis/slots/assign                <- {"slots": "0-511,600", "group"}  (no key moves)
  POST   /api/redis/migrate                     <- {"slots": "0-99", "to"}
  POST   /api/redis/rebalance                   <- {}
  GET    /ui/redis                              -> the dashboard page (admin/static/redis.html)

Bodies are checked by pydantic models; a refusal by the cluster model is 409 with its reason.
Every server address is an IP:port literal (400 otherwise). A server new to the cluster
(create-group, add-server) must be on a host the cluster already uses or in
`admin.server_networks` (403 otherwise): the dashboard logs in to it with backend_auth, and
the password must not go to a listener of the caller's choosing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import exceptions as redis_errors

from steelyard.config.shared import ServerAddress
from steelyard.log import log
from steelyard.redis.dashboard import Dashboard
from steelyard.redis.model import MAX_GROUP_ID, ModelError
from steelyard.redis.topology import parse_ranges


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NewGroup(_Body):
    id: int = Field(ge=1, le=MAX_GROUP_ID)
    master: ServerAddress
    replicas: list[ServerAddress] = Field(default_factory=list)
    weight: int = Field(1, ge=1, le=1000)


class GroupChange(_Body):
    weight: int = Field(ge=1, le=1000)


class ServerBody(_Body):
    address: ServerAddress


class AssignBody(_Body):
    slots: str
    group: int = Field(ge=0, le=MAX_GROUP_ID)


class MigrateBody(_Body):
    slots: str
    to: int = Field(ge=1, le=MAX_GROUP_ID)


class Empty(_Body):
    pass


class RedisRoutes:
    def __init__(
        self, controller: Any, error: type[Exception], networks: list[str] | None = None
    ) -> None:
        self.controller = controller
        self.error = error  # the API's error type: ApiError(status, message)
        self.networks = list(networks or [])  # admin.server_networks

    def add(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/redis", self.overview)
        r.add_get("/api/redis/slots", self.slots)
        r.add_get("/api/redis/migrations", self.migrations)
        r.add_post("/api/redis/groups", self.create_group)
        r.add_put("/api/redis/groups/{gid}", self.change_group)
        r.add_delete("/api/redis/groups/{gid}", self.remove_group)
        r.add_post("/api/redis/groups/{gid}/servers", self.add_server)
        r.add_delete("/api/redis/groups/{gid}/servers/{address}", self.remove_server)
        r.add_post("/api/redis/groups/{gid}/promote", self.promote)
        r.add_post("/api/redis/slots/assign", self.assign)
        r.add_post("/api/redis/migrate", self.migrate)
        r.add_post("/api/redis/rebalance", self.rebalance)
        r.add_get("/ui/redis", self.page)

    # helpers ---------------------------------------------------------------------------------

    def _dashboard(self) -> Dashboard:
        dashboard = getattr(self.controller, "redis", None)
        if dashboard is None:
            raise self.error(404, "no redis: section in the config")
        return dashboard

    def _status(self) -> dict[str, Any]:
        return self._dashboard().status()

    async def _body(self, request: web.Request, model: type[_Body]) -> Any:
        raw = await request.read()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise self.error(400, f"malformed JSON: {exc}") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise self.error(400, f"{where}: {first['msg']}") from None

    def _admit(self, dashboard: Dashboard, addresses: list[str]) -> None:
        """Refuse a new server the dashboard must not send backend_auth to."""
        for address in addresses:
            reason = dashboard.unknown_host(address, self.networks)
            if reason is not None:
                raise self.error(403, reason)

    def _gid(self, request: web.Request) -> int:
        try:
            return int(request.match_info["gid"])
        except ValueError:
            raise self.error(400, "a group id is a number") from None

    def _slots(self, spec: str) -> list[int]:
        try:
            return parse_ranges(spec)
        except ValueError as exc:
            raise self.error(400, str(exc)) from None

    async def _do(self, request: web.Request, action: str, coro: Any, **fields: Any) -> Any:
        try:
            result = await coro
        except ModelError as exc:
            raise self.error(409, str(exc)) from None
        except (OSError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise self.error(502, f"a Redis server did not answer: {exc}") from None
        except redis_errors.RedisError as exc:
            raise self.error(502, f"a Redis server refused: {exc}") from None
        log("admin_change", action=action, peer=request.remote, **fields)
        return result

    # reads -----------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        self._dashboard()
        html = (Path(__file__).parent / "static" / "redis.html").read_bytes()
        return web.Response(body=html, content_type="text/html", charset="utf-8")

    async def overview(self, request: web.Request) -> web.Response:
        data = dict(self._status())
        data.pop("slots", None)
        return web.json_response(data)

    async def slots(self, request: web.Request) -> web.Response:
        return web.json_response({"slots": self._status()["slots"]})

    async def migrations(self, request: web.Request) -> web.Response:
        s = self._status()
        keys = ("moves", "progress", "history", "error")
        return web.json_response({k: s[k] for k in keys})

    # writes ----------------------------------------------------------------------------------

    async def create_group(self, request: web.Request) -> web.Response:
        b: NewGroup = await self._body(request, NewGroup)
        d = self._dashboard()
        self._admit(d, [b.master, *b.replicas])
        created = d.create_group(b.id, b.master, b.replicas, b.weight)
        await self._do(request, "redis_create_group", created, group=b.id)
        return web.json_response(self._group(b.id), status=201)

    def _group(self, gid: int) -> dict[str, Any]:
        for g in self._status()["groups"]:
            if g["id"] == gid:
                return g
        raise self.error(404, f"there is no group {gid}")

    async def change_group(self, request: web.Request) -> web.Response:
        gid = self._gid(request)
        b: GroupChange = await self._body(request, GroupChange)
        d = self._dashboard()
        await self._do(request, "redis_set_weight", d.set_weight(gid, b.weight), group=gid)
        return web.json_response(self._group(gid))

    async def remove_group(self, request: web.Request) -> web.Response:
        gid = self._gid(request)
        d = self._dashboard()
        await self._do(request, "redis_remove_group", d.remove_group(gid), group=gid)
        return web.json_response({"removed": gid})

    async def add_server(self, request: web.Request) -> web.Response:
        gid = self._gid(request)
        b: ServerBody = await self._body(request, ServerBody)
        d = self._dashboard()
        self._admit(d, [b.address])
        await self._do(request, "redis_add_server", d.add_server(gid, b.address), group=gid)
        return web.json_response(self._group(gid), status=201)

    async def remove_server(self, request: web.Request) -> web.Response:
        gid, address = self._gid(request), request.match_info["address"]
        d = self._dashboard()
        await self._do(request, "redis_remove_server", d.remove_server(gid, address), group=gid)
        return web.json_response(self._group(gid))

    async def promote(self, request: web.Request) -> web.Response:
        gid = self._gid(request)
        b: ServerBody = await self._body(request, ServerBody)
        d = self._dashboard()
        await self._do(request, "redis_promote", d.promote(gid, b.address), group=gid)
        return web.json_response(self._group(gid))

    async def assign(self, request: web.Request) -> web.Response:
        b: AssignBody = await self._body(request, AssignBody)
        slots = self._slots(b.slots)
        d = self._dashboard()
        await self._do(request, "redis_assign", d.assign(slots, b.group), group=b.group)
        return web.json_response({"assigned": len(slots), "group": b.group})

    async def migrate(self, request: web.Request) -> web.Response:
        b: MigrateBody = await self._body(request, MigrateBody)
        slots = self._slots(b.slots)
        d = self._dashboard()
        queued = await self._do(request, "redis_migrate", d.migrate(slots, b.to), to=b.to)
        return web.json_response({"queued": queued, "to": b.to}, status=202)

    async def rebalance(self, request: web.Request) -> web.Response:
        await self._body(request, Empty)
        d = self._dashboard()
        queued = await self._do(request, "redis_rebalance", d.rebalance())
        return web.json_response({"queued": queued}, status=202)
