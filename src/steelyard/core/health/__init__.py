"""Health: one state machine per server, fed by active probes and by passive results.

Rise/fall hysteresis (`HealthState`), acting only on flips; admin state is
kept apart from health; probes run once per process group, in the supervisor (`HealthMonitor`),
which pushes verdicts to the workers. Passive ejection (`PassiveEjector`) and the slow-start ramp
(`SlowStart`) are sans-IO, driven by the supervisor's clock.

  state.py      HealthState (rise/fall), CheckResult
  tcp.py        check_tcp: connect and close
  http.py       check_http: one HTTP/1.1 request, status in the expected ranges
  misc.py       check_misc: run a program, its exit status is the verdict (MISC_CHECK)
  monitor.py    HealthMonitor: one probe task per checked server, flips -> on_change
  passive.py    PassiveEjector: consecutive failures -> ejection, with a cap per pool
  slowstart.py  SlowStart: linear weight ramp for servers coming back
"""

from steelyard.core.health.http import check_http
from steelyard.core.health.misc import check_misc
from steelyard.core.health.monitor import HealthMonitor
from steelyard.core.health.passive import PassiveEjector
from steelyard.core.health.slowstart import SlowStart
from steelyard.core.health.state import CheckResult, HealthState
from steelyard.core.health.tcp import check_tcp

__all__ = [
    "CheckResult",
    "HealthMonitor",
    "HealthState",
    "PassiveEjector",
    "SlowStart",
    "check_http",
    "check_misc",
    "check_tcp",
]
