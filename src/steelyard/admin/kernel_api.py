"""The admin API's kernel route: the nftables virtual services on this node.

  GET /api/kernel -> {"table", "applies", "errors", "ruleset",
                      "services": [{address, protocol, pool, scheduler, persistence_timeout,
                                    method, quorum, quorum_lost,
                                    servers: [{address, weight, active, sorry,
                                               connections, packets, bytes}]}]}

`connections` counts the connections scheduled to a server, `packets` and `bytes` what it
forwarded both ways (the table's counters; they survive updates, not a restart). 404 without
`virtual_services:`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from steelyard.admin.body import message


class KernelRoutes:
    def __init__(self, controller: Any, error: type[Exception]) -> None:
        self.controller = controller
        self.error = error

    def add(self, app: web.Application) -> None:
        app.router.add_get("/api/kernel", self.overview)

    async def overview(self, request: web.Request) -> web.Response:
        view = getattr(self.controller, "kernel_view", None)
        if view is None:
            raise self.error(404, "this controller has no kernel tier")
        try:
            return web.json_response(await view())
        except LookupError as exc:
            raise self.error(404, message(exc)) from None
