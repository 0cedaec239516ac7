"""Runtime state store: where state that must survive a restart lives: one home for it.

`open_store(cfg)` returns the configured `Store`: the embedded SQLite file by default; etcd,
for several steelyard nodes sharing state, will come behind the same interface.
"""

from __future__ import annotations

from steelyard.config.model import StoreConfig
from steelyard.core.store.base import Store
from steelyard.core.store.embedded import EmbeddedStore


def open_store(cfg: StoreConfig) -> Store:
    if cfg.kind == "embedded":
        return EmbeddedStore(cfg.path)
    if cfg.kind == "etcd":
        raise NotImplementedError(
            "store.kind etcd is not implemented yet; use store: {kind: embedded, path: DIR}"
        )
    raise ValueError(f"unknown store kind {cfg.kind!r}")


__all__ = ["EmbeddedStore", "Store", "open_store"]
