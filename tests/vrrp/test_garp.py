"""Gratuitous ARP on becoming master, seen on the wire by another host: a burst of `count`
frames per VIP from the master's MAC to the broadcast address, sender and target both the VIP,
and one more burst `repeat_after` later (keepalived's garp_master_delay), then silence."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import pytest

from fixtures.netns import Lab, assert_for, lab_skip_reason
from fixtures.procs import wait_for
from fixtures.vrrp_node import VIP, node_config

SKIP = lab_skip_reason()

CAPTURE = r"""
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0))
print("ready", flush=True)
while True:
    frame = s.recv(2048)
    dst, src = frame[0:6].hex(":"), frame[6:12].hex(":")
    op = struct.unpack("!H", frame[20:22])[0]
    sender, target = socket.inet_ntoa(frame[28:32]), socket.inet_ntoa(frame[38:42])
    print(f"{time.monotonic():.4f} {dst} {src} {op} {sender} {target}", flush=True)
"""


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_gratuitous_arp_bursts(tmp_path, steelyard):
    lab = Lab(tmp_path)
    watcher = None
    try:
        lb1, watch = lab.host("lb1", "10.0.0.1/24"), lab.host("watch", "10.0.0.9/24")
        watcher = subprocess.Popen(watch.argv(sys.executable, "-c", CAPTURE),
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
        frames: list[list[str]] = []

        def read() -> None:
            assert watcher is not None and watcher.stdout is not None
            for line in watcher.stdout:
                frames.append(line.split())

        threading.Thread(target=read, daemon=True).start()
        garp = {"count": 3, "interval": "50ms", "repeat_after": "1s"}
        steelyard(node_config(tmp_path, garp=garp), tmp_path, lb1.argv())

        def garps() -> list[list[str]]:
            return [f for f in list(frames) if f[4] == VIP and f[5] == VIP]

        wait_for(lambda: len(garps()) >= 6, what="two bursts of three gratuitous ARPs")
        assert_for(lambda: len(garps()) == 6, seconds=1.5)  # no third burst
        mac = lb1.run("cat", "/sys/class/net/eth0/address").stdout.strip()
        for _, dst, src, op, _, _ in garps():
            assert (dst, src, op) == ("ff:ff:ff:ff:ff:ff", mac, "1")  # broadcast request
        times = [float(f[0]) for f in garps()]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # within a burst frames follow each other by `interval`; the bursts are a second
        # apart: the longest gap is the one between them
        assert gaps.index(max(gaps)) == 2, gaps
    finally:
        if watcher is not None:
            watcher.kill()
            watcher.wait()
        lab.close()
