"""Fixtures for the HTTP proxy tests: real h11 backend processes, always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fixtures.procs import HttpBackend


@pytest.fixture
def http_backends() -> Iterator[Callable[..., HttpBackend]]:
    started: list[HttpBackend] = []

    def start(name: str, port: int = 0) -> HttpBackend:
        b = HttpBackend(name, port=port)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
