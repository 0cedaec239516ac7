"""One wakeup of the VRRP socket reads a bounded burst of packets, then gives the event loop
back: a flood on the link cannot hold the supervisor's loop (health checks, the admin API,
the other instances) in the reader.

A real raw socket for protocol 112 on the loopback of a lab namespace of its own, fed by a
raw sender there; the loop's turns are counted by a callback that schedules itself again on
each turn. Before the bound, the 100 queued adverts were all read in one turn.
"""

from __future__ import annotations

import itertools
import json
import sys

import pytest

from fixtures.netns import Lab, lab_skip_reason
from steelyard.vrrp.io import READ_BURST

SKIP = lab_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

FLOOD = 100

READER = """
import asyncio, json, socket, sys
from steelyard.vrrp.io import VrrpSocket
from steelyard.vrrp.packet import Advert, build

n = int(sys.argv[1])
loop = asyncio.new_event_loop()
got = []
vs = VrrpSocket("lo", socket.if_nametoindex("lo"), lambda ad, src, dst: got.append(ad),
                lambda reason, src: None, loop, multicast=False)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
payload = build(Advert(51, 100, 100, ("10.0.0.100",)), "127.0.0.1", "127.0.0.1")
for _ in range(n):
    tx.sendto(payload, ("127.0.0.1", 0))  # queued on the reader's socket at once (loopback)
seen = []

def turn():
    seen.append(len(got))
    if len(got) < n:
        loop.call_soon(turn)
    else:
        loop.stop()

loop.call_soon(turn)
loop.call_later(60, loop.stop)  # a safety net: the assertions say what went wrong
loop.run_forever()
vs.close()
print(json.dumps({"got": len(got), "seen": seen}))
"""


def test_a_flood_is_read_in_bursts_between_other_work(tmp_path):
    lab = Lab(tmp_path)
    try:
        host = lab.host("a", "10.0.0.1/24")
        out = host.run(sys.executable, "-c", READER, str(FLOOD), timeout=120)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
    finally:
        lab.close()
    assert result["got"] == FLOOD, result
    seen = result["seen"]
    steps = [b - a for a, b in itertools.pairwise(seen)]
    # other callbacks ran between reads, and no turn read more than a burst
    assert max(steps) <= READ_BURST, seen
    assert len([s for s in steps if s > 0]) >= FLOOD // READ_BURST, seen
