"""Read-only admin routes that answer one of the controller's views as JSON (GET /api/vrrp,
GET /api/kernel): 404 when the controller has no such tier or the config has no section for
it (the view raises LookupError), the view's dict otherwise, awaited when it is a coroutine."""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web

from steelyard.admin.body import message


def add_view(
    app: web.Application, path: str, controller: Any, method: str, tier: str,
    error: type[Exception],
) -> None:  # fmt: skip
    """GET `path` answers `controller.<method>()`."""

    async def handler(request: web.Request) -> web.Response:
        view = getattr(controller, method, None)
        if view is None:
            raise error(404, f"this controller has no {tier} tier")
        try:
            body = view()
            if inspect.isawaitable(body):
                body = await body
        except LookupError as exc:
            raise error(404, message(exc)) from None
        return web.json_response(body)

    app.router.add_get(path, handler)
