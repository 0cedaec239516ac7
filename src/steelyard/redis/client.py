"""Clients the supervisor uses to talk to Redis servers (redis-py, asyncio).

The dashboard, the mover and the health probes each decide themselves what a failure means
(retry the batch later, count a failed probe), so these clients never retry on their own: a
probe that silently retried would hide a dead master for several intervals.
"""

from __future__ import annotations

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect(address: str, password: str | None, timeout: float, db: int = 0) -> aredis.Redis:
    host, _, port = address.rpartition(":")
    return aredis.Redis(
        host=host.strip("[]"),
        port=int(port),
        db=db,
        password=password,
        protocol=2,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 5.0),
        retry=Retry(NoBackoff(), 0),
    )
