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

import json
from typing import Any

from aiohttp import web

from steelyard.log import log

STATES = ("offline", "online")


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
            raise self.error(404, _message(exc)) from None
        return web.json_response(view)

    async def set_server(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        state = parse_state(await request.read(), self.error)
        try:
            result = await self._method("set_mysql_server")(address, state)
        except LookupError as exc:
            raise self.error(404, _message(exc)) from None
        except ValueError as exc:
            raise self.error(400, _message(exc)) from None
        log("admin_change", action="mysql_" + state, server=address, peer=request.remote)
        return web.json_response(result)


def parse_state(body: bytes, error: type[Exception]) -> str:
    """A PUT body -> "offline" or "online"; error(400, reason) otherwise."""
    usage = 'expected a JSON object like {"state": "offline"} or {"state": "online"}'
    if not body.strip():
        raise error(400, f"empty body: {usage}")
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise error(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(400, f"body is a JSON {type(data).__name__}: {usage}")
    unknown = sorted(set(data) - {"state"})
    if unknown:
        raise error(400, f"unknown key(s) {', '.join(map(repr, unknown))}: {usage}")
    state = data.get("state")
    if state not in STATES:
        raise error(400, f"state must be offline or online, not {state!r}")
    return str(state)


def _message(exc: Exception) -> str:
    # str(KeyError('x')) is "'x'"; the first argument is the message we mean.
    return str(exc.args[0]) if exc.args else type(exc).__name__
