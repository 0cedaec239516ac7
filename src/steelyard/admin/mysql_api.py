"""The admin API's MySQL routes: what each MySQL listener is doing, and servers taken offline.

  GET  /api/mysql                     -> {"listeners": [{listen, primary, replicas, sessions,
                                          workers, counters, rates, servers: [...]}, ...]}
  PUT  /api/mysql/servers/{address}   <- {"state": "offline" | "online"}
                                      -> {"address", "state", "servers": [rows after the change]}

A server row: address, pool, role (primary or replica, by the pool it is in), read_only and
version (from the health check), health, admin state, replication lag and threads, backend
connections open / idle / busy and logins, summed over the workers.

Offline is the admin state `drain` in every MySQL pool (a listener's primary or replicas) that
holds the address, online is `ready`: the supervisor's `set_server`, so the change is stored and
pushed to every worker like any other. An operator thinks "take this replica out", not "drain it
in pool X and pool Y": this route is that verb.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from steelyard.admin.body import json_object, message
from steelyard.log import log


class MysqlRoutes:
    def __init__(self, controller: Any, error: type[Exception]) -> None:
        self.controller = controller
        self.error = error  # the API's error type: ApiError(status, message)

    def add(self, app: web.Application) -> None:
        app.router.add_get("/api/mysql", self.overview)
        app.router.add_put("/api/mysql/servers/{address}", self.set_server)

    def _method(self, name: str) -> Any:
        method = getattr(self.controller, name, None)
        if method is None:  # a controller without a MySQL tier (the admin tests' scaffold)
            raise self.error(404, "this controller has no mysql tier")
        return method

    async def overview(self, request: web.Request) -> web.Response:
        try:
            view = self._method("mysql_view")()
        except LookupError as exc:
            raise self.error(404, message(exc)) from None
        return web.json_response(view)

    async def set_server(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        state = parse_state(await request.read(), self.error)
        try:
            result = await self._method("set_mysql_server")(address, state)
        except LookupError as exc:
            raise self.error(404, message(exc)) from None
        except ValueError as exc:
            raise self.error(400, message(exc)) from None
        log("admin_change", action="mysql_" + state, server=address, peer=request.remote)
        return web.json_response(result)


def parse_state(body: bytes, error: type[Exception]) -> Any:
    """A PUT body: a JSON object with only `state` (its value is the supervisor's to check)."""
    usage = 'expected a JSON object like {"state": "offline"} or {"state": "online"}'
    return json_object(body, frozenset({"state"}), usage, error).get("state")
