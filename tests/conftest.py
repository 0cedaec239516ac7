"""Shared pytest fixtures: real backends and real steelyard processes, always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.procs import Backend, Steelyard


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def start(name: str, mode: str = "hello", port: int = 0) -> Backend:
        b = Backend(name, mode, port)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def steelyard(tmp_path: Path) -> Iterator[Callable[..., Steelyard]]:
    started: list[Steelyard] = []

    def start(
        config: dict[str, Any] | str, workdir: Path | None = None, prefix: list[str] | None = None
    ) -> Steelyard:
        s = Steelyard(workdir or tmp_path, config, prefix)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(timeout=10)
