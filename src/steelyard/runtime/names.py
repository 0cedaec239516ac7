"""How listeners are named in logs: tcp and http ones by their `name`, others by their tier."""

from __future__ import annotations

from typing import Any


def listener_name(lst: Any) -> str:
    name = getattr(lst, "name", None)
    if name:
        return str(name)
    kind = type(lst).__name__
    return kind.removesuffix("ListenerConfig").removesuffix("ProxyConfig").lower()
