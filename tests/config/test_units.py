"""Durations: parsed with their unit, and written back exactly (the config crosses to the
workers as JSON through this pair)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steelyard.config.units import MAX_DURATION, MIN_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("12d", 1036800.0), (0, 0.0)],
)
def test_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5", 5, "5 parsecs", "-1s", "2y", "366d", "0.0000001s", True])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.floats(min_value=MIN_DURATION, max_value=MAX_DURATION) | st.just(0.0))
def test_format_round_trips_exactly(seconds):
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-9)
    assert "e" not in text


def test_large_and_precise_values_survive():
    for seconds in (1036800.0, 1234.567, 0.000123, 31536000.0):
        assert parse_duration(format_duration(seconds)) == seconds


def _errors(text: str) -> list[str]:
    from steelyard.config.load import ConfigError, parse_config_text

    with pytest.raises(ConfigError) as info:
        parse_config_text(text)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_zero_timeouts_and_names_and_etcd_are_refused():
    text = (
        "store: {kind: etcd}\n"
        "pools:\n"
        "  web: {servers: [{address: 'backend.internal:80'}]}\n"
        "tcp:\n"
        "  - {name: a, listen: 127.0.0.1:9000, pool: web, connect_timeout: 0, queue_timeout: 0s}\n"
    )
    errors = _errors(text)
    assert "store: store kind etcd is not available yet: use kind: embedded" in errors
    assert any(e.startswith("pools.web.servers[0].address: server address") for e in errors)
    assert any(e.startswith("tcp[0].connect_timeout:") for e in errors)
    assert any(e.startswith("tcp[0].queue_timeout:") for e in errors)
