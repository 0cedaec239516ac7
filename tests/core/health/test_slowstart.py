"""SlowStart with injected time: the ramp, its steps, its end, and when it does not apply."""

from __future__ import annotations

from itertools import pairwise

import pytest

from steelyard.core.backend import Pool, Server
from steelyard.core.health.slowstart import SlowStart


def test_begin_sets_a_small_ramp_at_once() -> None:
    ss, s = SlowStart(), Server("10.0.0.1:80", weight=100)
    assert ss.begin("web", s, 10.0, now=0.0) is True
    assert s.ramp == pytest.approx(0.01)
    assert s.effective_weight == 1  # almost nothing, never zero
    assert ss.ramping("web", s)


def test_ramp_grows_linearly_to_full_weight() -> None:
    ss, s = SlowStart(), Server("10.0.0.1:80", weight=100)
    ss.begin("web", s, 10.0, now=100.0)
    assert ss.tick(102.5) == [("web", s)]
    assert s.ramp == pytest.approx(0.25) and s.effective_weight == 25
    assert ss.tick(107.5) == [("web", s)]
    assert s.ramp == pytest.approx(0.75)
    assert ss.tick(110.0) == [("web", s)]
    assert s.ramp == 1.0 and s.effective_weight == 100
    assert not ss.ramping("web", s) and len(ss) == 0
    assert ss.tick(111.0) == []


def test_only_steps_of_five_percent_are_reported() -> None:
    ss, s = SlowStart(step=0.05), Server("10.0.0.1:80", weight=10)
    ss.begin("web", s, 10.0, now=0.0)
    reports, ramps = 0, []
    t = 0.0
    while ss.ramping("web", s):
        t += 0.1  # a tick every 100ms, 1% of the ramp each
        if ss.tick(t):
            reports += 1
            ramps.append(s.ramp)
    assert ramps[-1] == 1.0
    assert 19 <= reports <= 20  # about 1/step, not one per tick
    # Every move is a full step, except the last one, which lands on exactly 1.0.
    assert all(b - a >= 0.05 - 1e-9 for a, b in pairwise(ramps[:-1]))


def test_no_ramp_when_slow_start_is_zero() -> None:
    ss, s = SlowStart(), Server("10.0.0.1:80", weight=10)
    assert ss.begin("web", s, 0.0, now=0.0) is False
    assert s.ramp == 1.0 and len(ss) == 0
    assert ss.tick(1.0) == []


def test_zero_duration_ends_a_ramp_in_progress() -> None:
    ss, s = SlowStart(), Server("10.0.0.1:80", weight=10)
    ss.begin("web", s, 10.0, now=0.0)
    ss.begin("web", s, 0.0, now=1.0)  # slow start turned off by a reload
    assert s.ramp == 1.0 and not ss.ramping("web", s)


def test_begin_again_restarts_the_ramp() -> None:
    ss, s = SlowStart(), Server("10.0.0.1:80", weight=10)
    ss.begin("web", s, 10.0, now=0.0)
    ss.tick(5.0)
    assert s.ramp == pytest.approx(0.5)
    ss.begin("web", s, 10.0, now=6.0)  # went down and came back
    assert s.ramp == pytest.approx(0.01)
    ss.tick(8.0)
    assert s.ramp == pytest.approx(0.2)


def test_cancel_gives_full_weight() -> None:
    ss, s = SlowStart(), Server("10.0.0.1:80", weight=10)
    ss.begin("web", s, 10.0, now=0.0)
    assert ss.cancel("web", s) is True
    assert s.ramp == 1.0 and ss.tick(1.0) == []
    assert ss.cancel("web", s) is False


def test_prune_and_status() -> None:
    ss = SlowStart()
    a, b = Server("10.0.0.1:80"), Server("10.0.0.2:80")
    ss.begin("web", a, 10.0, now=0.0)
    ss.begin("web", b, 10.0, now=0.0)
    assert ss.status(4.0)["web"]["10.0.0.1:80"] == {"ramp": 0.01, "remaining": 6.0}
    ss.prune({"web": Pool("web", [b])})
    assert not ss.ramping("web", a) and ss.ramping("web", b)
    assert [s for _, s in ss.tick(10.0)] == [b]
