# SPDX-License-Identifier: BSD-2-Clause
"""EthernetStrip (Amaranth simulator) against scapy's frames: IPv4 and IPv6, untagged
and behind an 802.1Q tag, padded short frames, every packet length mod 16; ARP and
other EtherTypes counted in ``not_ip``, runts in ``runt``; the IP packets out
realigned, in order; input gaps and back-pressure."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from espnic.hdl.forwarder.ethernet import EthernetStrip
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get_packets, stream_put_all


def _frame(kind, tagged, size):
    l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if tagged:
        l2 = l2 / Dot1Q(vlan=42)
    if kind == "arp":
        return bytes(l2 / ARP()), None
    ip = (IP() if kind == "v4" else IPv6()) / UDP() / Raw(bytes(size))
    frame = bytes(l2 / ip)
    frame += bytes(max(0, 60 - len(frame)))         # Ethernet padding
    return frame, frame[18 if tagged else 14:]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.tuples(st.sampled_from(["v4", "v6", "arp", "runt"]), st.booleans(),
                                 st.integers(0, 100)), min_size=1, max_size=10),
       gap=st.sampled_from([0.0, 0.3]), stall=st.sampled_from([0.0, 0.4]),
       seed=st.integers(0, 2**16))
def test_ethernet_strip(frames, gap, stall, seed):
    sent, expected, counts = [], [], {"not_ip": 0, "runt": 0}
    for kind, tagged, size in frames:
        if kind == "runt":
            frame, _ = _frame("v4", tagged, 0)
            sent.append(frame[:(18 if tagged else 14) - size % 3])
            counts["runt"] += 1
            continue
        frame, packet = _frame(kind, tagged, size)
        sent.append(frame)
        if packet is None:
            counts["not_ip"] += 1
        else:
            expected.append(packet)
    dut = EthernetStrip()
    out, seen = [], {}

    async def feed(ctx):
        beats = [beat for frame in sent for beat in beats_from_bytes(frame, 16)]
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(seed), gap_prob=gap,
                             timeout=5000)
        for _ in range(10):
            await ctx.tick()
        seen.update(not_ip=ctx.get(dut.not_ip), runt=ctx.get(dut.runt))

    async def collect(ctx):
        out.extend(await stream_get_packets(ctx, dut.o, len(expected), rng=random.Random(seed),
                                            stall_prob=stall, timeout=5000))

    run_sim(dut, feed, collect)
    assert bytes_from_beats(out, 16) == expected
    assert seen == counts
