"""HealthState: rise/fall hysteresis flips exactly at the thresholds, and only there."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steelyard.core.health.state import HealthState


def feed(state: HealthState, results: str) -> list[int]:
    """Feed 'o'/'x' results; return the indexes at which the verdict flipped."""
    return [i for i, c in enumerate(results) if state.record(c == "o", None if c == "o" else c)]


def test_starts_up_and_goes_down_after_fall_failures() -> None:
    s = HealthState(rise=2, fall=3)
    assert s.up and s.flips == 0
    assert feed(s, "xx") == []
    assert s.up and s.consecutive_fail == 2
    assert s.record(False, "connection refused") is True
    assert not s.up and s.flips == 1 and s.last_error == "connection refused"
    assert feed(s, "xxx") == []  # already down: more failures flip nothing
    assert s.consecutive_fail == 6


def test_comes_back_after_rise_successes() -> None:
    s = HealthState(rise=2, fall=3, initially_up=False)
    assert feed(s, "o") == []
    assert not s.up and s.consecutive_ok == 1
    assert s.record(True) is True
    assert s.up and s.flips == 1
    assert feed(s, "ooo") == []


def test_opposite_result_resets_the_streak() -> None:
    s = HealthState(rise=2, fall=3)
    assert feed(s, "xxoxxoxx") == []  # never three failures in a row
    assert s.up
    assert feed(s, "x") == [0]
    assert feed(s, "oxoxo") == []  # never two successes in a row
    assert not s.up
    assert feed(s, "o") == [0]


def test_alternating_results_never_flip() -> None:
    for rise, fall in ((2, 2), (2, 3), (5, 2)):
        for start in (True, False):
            for seq in ("ox" * 50, "xo" * 50):
                s = HealthState(rise, fall, initially_up=start)
                assert feed(s, seq) == []
                assert s.up is start


def test_rise_and_fall_of_one_follow_every_change() -> None:
    s = HealthState(rise=1, fall=1)
    assert feed(s, "oxxoox") == [1, 3, 5]


def test_last_change_uses_the_given_clock() -> None:
    s = HealthState(rise=1, fall=2, now=10.0)
    assert s.last_change == 10.0
    s.record(False, "a", now=11.0)
    assert s.last_change == 10.0  # no flip, no change
    s.record(False, "b", now=12.0)
    assert s.last_change == 12.0 and s.last_error == "b"
    s.record(True, now=13.0)
    assert s.last_change == 13.0 and s.up


def test_reconfigure_keeps_verdict_and_streak() -> None:
    s = HealthState(rise=2, fall=5)
    feed(s, "xxx")
    s.reconfigure(rise=2, fall=4)
    assert s.up and s.consecutive_fail == 3
    assert s.record(False) is True
    with pytest.raises(ValueError):
        s.reconfigure(0, 1)
    with pytest.raises(ValueError):
        HealthState(rise=1, fall=0)


def reference_flips(results: str, rise: int, fall: int, up: bool) -> list[int]:
    """An independent model: a flip happens where the run of equal results ending at i
    reaches the threshold of the direction the server is not in."""
    flips = []
    for i, c in enumerate(results):
        run = 1
        while run <= i and results[i - run] == c:
            run += 1
        if (c == "x" and up and run == fall) or (c == "o" and not up and run == rise):
            up = not up
            flips.append(i)
    return flips


@given(
    results=st.text(alphabet="ox", max_size=200),
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
    up=st.booleans(),
)
def test_flips_match_the_reference_model(results: str, rise: int, fall: int, up: bool) -> None:
    s = HealthState(rise, fall, initially_up=up)
    flips = feed(s, results)
    assert flips == reference_flips(results, rise, fall, up)
    assert s.flips == len(flips)
    # Each flip is preceded by exactly the threshold number of equal results.
    for i in flips:
        c = results[i]
        need = fall if c == "x" else rise
        assert results[i - need + 1 : i + 1] == c * need


@given(
    n=st.integers(1, 100),
    rise=st.integers(2, 6),
    fall=st.integers(2, 6),
    up=st.booleans(),
    first_ok=st.booleans(),
)
def test_alternating_sequences_never_flip(
    n: int, rise: int, fall: int, up: bool, first_ok: bool
) -> None:
    s = HealthState(rise, fall, initially_up=up)
    ok = first_ok
    for _ in range(n):
        assert s.record(ok) is False
        ok = not ok
    assert s.up is up
