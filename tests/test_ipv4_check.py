# SPDX-License-Identifier: BSD-2-Clause
"""Ipv4HeaderCheck alone (Amaranth simulator): every packet leaves unchanged and in
order, and its verdict says "wrong" exactly when its IPv4 header checksum is wrong (or
its header is cut short), with 0..40 bytes of options, IPv6 and non-IP packets never
wrong; input gaps, output back-pressure, and verdicts taken before each packet's first
beat (as the engine's lookup does) or long after it."""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.hdl.packet.ipv4 import Ipv4HeaderCheck
from espnic.sim.amaranth_sim import run_sim, stream_put_all
from espnic.sim.model.esp import internet_checksum

WIDTH = 16


def _ipv4(options, size, corrupt):
    """IPv4/UDP with `options` bytes of NOP options (checksum right), maybe one bit off."""
    plain = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(bytes(size)))
    header = bytearray(plain[:20] + b"\x01" * options)
    header[0] = 0x45 + options // 4
    header[2:4] = struct.pack("!H", len(plain) + options)
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    packet = header + plain[20:]
    if corrupt:
        packet[random.Random(size).randrange((packet[0] & 15) * 4)] ^= 0x20
    return bytes(packet)


def _expected_bad(packet):
    """The independent verdict: RFC 1071 over the header scapy built (or mangled)."""
    if not packet or packet[0] >> 4 != 4:
        return False
    ihl = (packet[0] & 15) * 4
    return ihl < 20 or len(packet) < ihl or internet_checksum(packet[:ihl]) != 0


def _run(packets, *, gap, stall, seed, verdict_first=True, verdict_stall=None):
    """Feed `packets`; collect the beats and the verdicts. With `verdict_first`, a
    packet's first beat is taken only after its verdict (the engine's order); without,
    the verdicts are read by their own process, with stalls of their own."""
    dut = Ipv4HeaderCheck(width=WIDTH)
    beats = [beat for packet in packets for beat in beats_from_bytes(packet, WIDTH)]
    out, marks = [], []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(seed), gap_prob=gap,
                             timeout=10_000)

    async def collect(ctx):
        rng = random.Random(seed + 1)
        while len(out) < len(beats):
            # Between packets, with `verdict_first`, the next packet's verdict is due.
            between = not out or out[-1].last
            due = verdict_first and between and len(marks) == sum(beat.first for beat in out)
            ready = not due and not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.verdict.ready, due)
            _clk, _rst, valid, beat, v_valid, bad = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.verdict.valid, dut.verdict.payload)
            if due and v_valid:
                marks.append(bool(bad))
            if valid and ready:
                out.append(beat)

    verdict_stall = stall if verdict_stall is None else verdict_stall

    async def verdicts(ctx):
        rng = random.Random(seed + 2)
        for _cycle in range(20_000):       # a lost verdict ends the run here
            if len(marks) == len(packets):
                break
            ready = not (verdict_stall and rng.random() < verdict_stall)
            ctx.set(dut.verdict.ready, ready)
            _clk, _rst, valid, bad = await ctx.tick().sample(dut.verdict.valid,
                                                             dut.verdict.payload)
            if valid and ready:
                marks.append(bool(bad))

    if verdict_first:
        run_sim(dut, feed, collect)
    else:
        run_sim(dut, feed, collect, verdicts)
    assert len(marks) == len(packets)
    return bytes_from_beats(out, WIDTH), marks


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(st.sampled_from(["v4", "v6", "short", "raw"]),
                                st.integers(0, 10), st.integers(0, 100), st.booleans()),
                      min_size=1, max_size=8),
       gap=st.sampled_from([0.0, 0.3]), stall=st.sampled_from([0.0, 0.4]),
       seed=st.integers(0, 2**16), verdict_first=st.booleans())
def test_ipv4_header_check(cases, gap, stall, seed, verdict_first):
    packets = []
    for kind, options, size, corrupt in cases:
        if kind == "v4":
            packets.append(_ipv4(4 * options, size, corrupt))
        elif kind == "v6":
            packets.append(bytes(IPv6() / UDP() / Raw(bytes(size))))
        elif kind == "short":      # cut inside its own header
            packets.append(_ipv4(4 * options, 0, False)[:max(1, 20 + 4 * options - 1 - size)])
        else:
            packets.append(bytes([0x12] * (size + 1)))
    released, marks = _run(packets, gap=gap, stall=stall, seed=seed,
                           verdict_first=verdict_first)
    assert released == packets
    assert marks == [_expected_bad(packet) for packet in packets]


def test_ipv4_header_check_cut_where_the_rest_is_zero():
    """A header cut after byte 16 whose missing bytes are zero (destination 10.0.0.0):
    its checksum would come out right over the bytes present, but it is cut short."""
    whole = bytes(IP(src="10.0.0.1", dst="10.0.0.0") / UDP() / Raw(bytes(8)))
    packets = [whole[:17], whole, whole[:19]]
    released, marks = _run(packets, gap=0.0, stall=0.0, seed=0)
    assert released == packets
    assert marks == [True, False, True]


@pytest.mark.parametrize("seed", [1, 2])
def test_ipv4_header_check_verdicts_pile_up(seed):
    """One-beat packets whose verdicts are taken seldom while their beats leave at
    once: the verdict queue fills, the input waits, and no verdict is lost (those of
    the beats still in the summing stages included)."""
    rng = random.Random(seed)
    packets = [_ipv4(0, 0, False)[:rng.randrange(1, WIDTH + 1)] if rng.random() < 0.5
               else bytes([0x12] * rng.randrange(1, WIDTH + 1)) for _ in range(40)]
    released, marks = _run(packets, gap=0.0, stall=0.0, seed=seed, verdict_first=False,
                           verdict_stall=0.9)
    assert released == packets
    assert marks == [_expected_bad(packet) for packet in packets]


def test_ipv4_header_check_parameters():
    with pytest.raises(ValueError, match="depth"):
        Ipv4HeaderCheck(width=16, depth=4)
    with pytest.raises(ValueError, match="width"):
        Ipv4HeaderCheck(width=5)
