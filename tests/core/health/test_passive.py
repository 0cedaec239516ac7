"""PassiveEjector with injected time: thresholds, the ejected-fraction cap, expiry, backoff."""

from __future__ import annotations

from steelyard.config.model import PassiveConfig
from steelyard.core.backend import Pool, Server
from steelyard.core.health.passive import PassiveEjector


def make_pool(n: int = 4, name: str = "web") -> Pool:
    return Pool(name, [Server(f"10.0.0.{i + 1}:80") for i in range(n)])


CFG = PassiveConfig(consecutive_failures=3, eject_for="10s", max_ejected=0.5)


def fail(ej: PassiveEjector, pool: Pool, s: Server, times: int, now: float, cfg=CFG) -> list[bool]:
    return [ej.record(pool, cfg, s, False, now) for _ in range(times)]


def test_ejects_at_the_threshold_and_logs(log_lines) -> None:
    ej, pool = PassiveEjector(), make_pool()
    s = pool.servers[0]
    assert fail(ej, pool, s, 3, now=100.0) == [False, False, True]
    assert s.ejected and not s.up and s.healthy  # ejection is kept apart from health
    [line] = log_lines("passive_eject")
    assert "pool=web" in line and "server=10.0.0.1:80" in line and "failures=3" in line
    assert "until=" in line and "duration=10" in line and "level=warn" in line
    assert ej.next_expiry() == 110.0


def test_a_success_resets_the_count() -> None:
    ej, pool = PassiveEjector(), make_pool()
    s = pool.servers[0]
    for _ in range(5):
        assert fail(ej, pool, s, 2, now=1.0) == [False, False]
        assert ej.record(pool, CFG, s, True, now=1.0) is False
    assert not s.ejected


def test_results_while_ejected_are_ignored() -> None:
    ej, pool = PassiveEjector(), make_pool()
    s = pool.servers[0]
    fail(ej, pool, s, 3, now=0.0)
    assert fail(ej, pool, s, 10, now=1.0) == [False] * 10
    assert ej.record(pool, CFG, s, True, now=1.0) is False
    assert ej.next_expiry() == 10.0  # not extended by failures of connections in flight


def test_expire_returns_the_server_when_its_time_has_passed(log_lines) -> None:
    ej, pool = PassiveEjector(), make_pool()
    s = pool.servers[1]
    fail(ej, pool, s, 3, now=50.0)
    assert ej.expire(59.9) == []
    assert s.ejected
    assert ej.expire(60.0) == [("web", s)]
    assert not s.ejected and s.up
    assert ej.expire(61.0) == []
    assert ej.next_expiry() is None
    [line] = log_lines("passive_return")
    assert "server=10.0.0.2:80" in line and "failures=3" in line and "ejected_for=10" in line
    # After its return it needs a full new streak.
    assert fail(ej, pool, s, 3, now=62.0) == [False, False, True]


def test_ejections_in_a_row_back_off_up_to_ten_times() -> None:
    ej, pool = PassiveEjector(), make_pool()
    s = pool.servers[0]
    now = 0.0
    durations = []
    for _ in range(12):
        assert fail(ej, pool, s, 3, now) == [False, False, True]
        until = ej.next_expiry()
        durations.append(until - now)
        now = until
        assert ej.expire(now) == [("web", s)]
        now += 1.0  # fails again soon after coming back
    assert durations == [10.0 * min(i, 10) for i in range(1, 13)]


def test_staying_in_as_long_as_the_last_ejection_resets_the_backoff() -> None:
    ej, pool = PassiveEjector(), make_pool()
    s = pool.servers[0]
    fail(ej, pool, s, 3, now=0.0)
    ej.expire(10.0)
    fail(ej, pool, s, 3, now=15.0)  # back 5s < 10s: in a row
    assert ej.next_expiry() == 15.0 + 20.0
    ej.expire(35.0)
    fail(ej, pool, s, 3, now=35.0 + 20.0)  # stayed in 20s, as long as the last ejection
    assert ej.next_expiry() == 55.0 + 10.0


def test_max_ejected_caps_the_fraction_of_a_pool(log_lines) -> None:
    ej, pool = PassiveEjector(), make_pool(4)
    a, b, c, d = pool.servers
    assert fail(ej, pool, a, 3, now=0.0)[-1] is True
    assert fail(ej, pool, b, 3, now=1.0)[-1] is True  # 2/4 = 0.5: allowed
    assert fail(ej, pool, c, 3, now=2.0) == [False, False, False]  # 3/4 > 0.5
    assert fail(ej, pool, c, 5, now=3.0) == [False] * 5
    assert not c.ejected
    [refused] = log_lines("passive_eject_refused")  # once per streak, not per failure
    assert "server=10.0.0.3:80" in refused and "ejected=2" in refused and "servers=4" in refused
    # Once a slot frees, the still-failing server is ejected by its next failure.
    assert ej.expire(10.0) == [("web", a)]
    assert ej.record(pool, CFG, c, False, now=10.5) is True
    assert c.ejected and not d.ejected


def test_a_single_server_pool_is_never_emptied_by_the_default_cap() -> None:
    ej, pool = PassiveEjector(), make_pool(1)
    assert fail(ej, pool, pool.servers[0], 10, now=0.0) == [False] * 10


def test_max_ejected_one_allows_ejecting_everything() -> None:
    cfg = PassiveConfig(consecutive_failures=1, eject_for="5s", max_ejected=1.0)
    ej, pool = PassiveEjector(), make_pool(3)
    assert [ej.record(pool, cfg, s, False, 0.0) for s in pool.servers] == [True] * 3
    assert sorted(s.address for _, s in ej.expire(5.0)) == [s.address for s in pool.servers]


def test_pools_are_counted_apart() -> None:
    ej = PassiveEjector()
    web, api = make_pool(2, "web"), make_pool(2, "api")
    assert fail(ej, web, web.servers[0], 3, now=0.0)[-1] is True
    assert fail(ej, api, api.servers[0], 3, now=0.0)[-1] is True
    assert fail(ej, web, web.servers[1], 3, now=0.0)[-1] is False
    assert {p for p, _ in ej.expire(10.0)} == {"web", "api"}


def test_prune_forgets_servers_that_left() -> None:
    ej, pool = PassiveEjector(), make_pool(4)
    fail(ej, pool, pool.servers[0], 3, now=0.0)
    smaller = Pool("web", pool.servers[1:])
    ej.prune({"web": smaller})
    assert ej.expire(100.0) == []
    assert ej.status(100.0) == {}


def test_status() -> None:
    ej, pool = PassiveEjector(), make_pool(4)
    fail(ej, pool, pool.servers[0], 3, now=0.0)
    fail(ej, pool, pool.servers[1], 1, now=0.0)
    st = ej.status(4.0)["web"]
    assert st["10.0.0.1:80"] == {"failures": 3, "ejected": True, "remaining": 6.0, "times": 1}
    assert st["10.0.0.2:80"]["failures"] == 1 and st["10.0.0.2:80"]["ejected"] is False
