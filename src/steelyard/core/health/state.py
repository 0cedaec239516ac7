"""The health verdict of one server: rise/fall hysteresis over check results.

Sans-IO on purpose: the state machine knows nothing about sockets or event loops, so active
checkers (tcp.py, http.py, driven by monitor.py) and any other source of pass/fail results feed
the same object, and its behaviour is tested with plain sequences of booleans.

The rules are HAProxy's `rise`/`fall` as its documentation states them (and Envoy's
`healthy_threshold`/`unhealthy_threshold`): an UP server goes DOWN after `fall` consecutive failed
checks, a DOWN server comes back UP after `rise` consecutive successful ones, and a result of the
other kind resets the streak. Callers act only when `record()` reports a flip, so one flapping
check never rebuilds balancing tables or floods the log.

`CheckResult` lives here too: it is the plain value every checker returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one probe found. Checkers return it and never raise."""

    ok: bool
    detail: str  # "status 200", "connection refused", "timeout after 1s (connecting)"
    duration: float  # seconds the probe took
    # What the probe learnt besides the verdict, for the admin view (the mysql check: read_only,
    # version, replication lag and threads); None when the checker gathers nothing.
    facts: dict[str, Any] | None = None


class HealthState:
    """Rise/fall hysteresis for one server.

    A server starts UP (`initially_up=True`): a freshly configured server gets traffic at once
    and needs `fall` failed checks to be taken out, as in HAProxy. Pass `initially_up=False` to
    carry a DOWN verdict over (restored state, reload): it then needs `rise` successes.
    """

    __slots__ = (
        "consecutive_fail",
        "consecutive_ok",
        "fall",
        "flips",
        "last_change",
        "last_error",
        "rise",
        "up",
    )

    def __init__(
        self, rise: int = 2, fall: int = 3, initially_up: bool = True, now: float | None = None
    ) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = initially_up
        self.consecutive_ok = 0
        self.consecutive_fail = 0
        self.last_error: str | None = None
        self.flips = 0
        self.last_change = time.monotonic() if now is None else now

    def record(self, ok: bool, error: str | None = None, now: float | None = None) -> bool:
        """Feed one result; True only when the verdict flips (down after `fall`, up after `rise`).

        `error` is kept as `last_error` for failed results. `now` (monotonic seconds) stamps
        `last_change` on a flip; it defaults to the clock.
        """
        if ok:
            self.consecutive_ok += 1
            self.consecutive_fail = 0
            flipped = not self.up and self.consecutive_ok >= self.rise
        else:
            self.consecutive_fail += 1
            self.consecutive_ok = 0
            self.last_error = error
            flipped = self.up and self.consecutive_fail >= self.fall
        if flipped:
            self.up = not self.up
            self.flips += 1
            self.last_change = time.monotonic() if now is None else now
        return flipped

    def reconfigure(self, rise: int, fall: int) -> None:
        """New thresholds on reload; the verdict and the current streak are kept."""
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall

    @property
    def streak(self) -> int:
        """Length of the current run of equal results (what a flip log calls `checks`)."""
        return self.consecutive_ok or self.consecutive_fail

    def __repr__(self) -> str:
        verdict = "up" if self.up else "down"
        return (
            f"HealthState({verdict}, ok={self.consecutive_ok}/{self.rise}, "
            f"fail={self.consecutive_fail}/{self.fall}, flips={self.flips})"
        )
