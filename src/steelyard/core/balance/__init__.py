"""Balancing algorithms, one module each, behind `Balancer` (see base.py)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from steelyard.core.balance.base import Balancer

if TYPE_CHECKING:
    from steelyard.core.backend import Server


_CLASSES = {
    "round_robin": "round_robin:RoundRobin",
    "least_conn": "least_conn:LeastConn",
    "random_two": "random_two:RandomTwo",
    "source_hash": "source_hash:SourceHash",
    "hash": "hashring:KetamaHash",
    "maglev": "maglev:Maglev",
    "first": "first:First",
}

ALGORITHMS = tuple(_CLASSES)


def balancer_class(name: str) -> type[Balancer]:
    # Imported lazily so that `core.backend` and the algorithms can import each other's types.
    try:
        module, cls = _CLASSES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown balance algorithm {name!r}") from None
    return getattr(importlib.import_module(f"steelyard.core.balance.{module}"), cls)


def make_balancer(name: str, servers: Sequence[Server]) -> Balancer:
    return balancer_class(name)(servers)


__all__ = ["ALGORITHMS", "Balancer", "balancer_class", "make_balancer"]
