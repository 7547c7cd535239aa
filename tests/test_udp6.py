# SPDX-License-Identifier: BSD-2-Clause
"""Udp6ChecksumFill alone (Amaranth simulator): marked IPv6/UDP packets leave with the
checksum scapy computes, the others unchanged, all in order, the flag with each
packet's last beat; input gaps and output back-pressure."""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from espnic.hdl.engine.udp6 import Udp6ChecksumFill, udp6_fill_limit
from espnic.hdl.gcm.layouts import BLOCK_BYTES
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get_n, stream_put_all
from espnic.sim.model.esp import internet_checksum


def _udp6(size, seed):
    """An IPv6/UDP datagram with a zero checksum, as the encapsulator sends it."""
    payload = bytes(random.Random(seed).randrange(256) for _ in range(size))
    packet = IPv6(src="2001:db8::1", dst="2001:db8:ffff::2") / UDP(sport=4500, dport=4500,
                                                                     chksum=0) / Raw(payload)
    return bytes(packet)


def _filled(packet):
    """What RFC 8200 wants on the wire: scapy's checksum of it."""
    parsed = IPv6(packet)
    del parsed[UDP].chksum
    return bytes(parsed)


def _run(packets, *, gap=0.0, stall=0.0, seed=0, beats=None):
    """``packets`` = [(bytes, fill, flag)]; returns the output packets and their flags."""
    dut = Udp6ChecksumFill() if beats is None else Udp6ChecksumFill(beats=beats)
    beats = []
    for packet, fill, flag in packets:
        for beat in beats_from_bytes(packet, BLOCK_BYTES):
            beats.append({**beat, "fill": fill, "flag": flag and beat["last"]})
    total = len(beats)
    out = []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(seed), gap_prob=gap,
                             timeout=10_000)

    async def collect(ctx):
        out.extend(await stream_get_n(ctx, dut.o, total, rng=random.Random(seed + 1),
                                      stall_prob=stall, timeout=10_000))

    run_sim(dut, feed, collect)
    flags = [bool(beat.flag) for beat in out if beat.last]
    return bytes_from_beats(out, BLOCK_BYTES), flags


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.tuples(st.integers(0, 1500), st.booleans(), st.booleans()),
                      min_size=1, max_size=6),
       gap=st.sampled_from([0.0, 0.3]), stall=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_udp6_fill_random(sizes, gap, stall, seed):
    packets = []
    for index, (size, fill, flag) in enumerate(sizes):
        packet = _udp6(size, seed + index) if fill else bytes(IP() / UDP() / Raw(bytes(size)))
        packets.append((packet, fill, flag))
    released, flags = _run(packets, gap=gap, stall=stall, seed=seed)
    assert released == [_filled(packet) if fill else packet for packet, fill, _ in packets]
    assert flags == [flag for _, _, flag in packets]


def test_udp6_fill_largest_and_zero_sum():
    """The largest packet the stage holds (what `udp6_fill_limit` is computed for), and a
    datagram whose checksum comes out 0 (sent as 0xffff)."""
    largest = _udp6(BLOCK_BYTES * 128 - 48, 1)
    assert len(largest) == udp6_fill_limit() + 85
    # A payload whose checksum computes to 0: its last word is chosen to make it so.
    base = _udp6(30, 2)
    for tweak in range(65536):
        candidate = base[:-2] + tweak.to_bytes(2, "big")
        pseudo = candidate[8:40] + struct.pack("!IxxxB", len(candidate) - 40, 17)
        if internet_checksum(pseudo + candidate[40:]) == 0:
            break
    else:
        raise AssertionError("no tweak gives a zero checksum")
    released, _ = _run([(largest, True, False), (candidate, True, True)], stall=0.3)
    assert released == [_filled(largest), _filled(candidate)]
    assert released[1][46:48] == b"\xff\xff"


@pytest.mark.parametrize("stall", [0.0, 0.9])
def test_udp6_fill_checksum_queue_full(stall):
    """The shortest filled packets (3 beats, an empty datagram) back to back in a small
    stage (16 rows), whose checksum queue (4 entries) fills before its rows do: the
    input waits for room rather than losing a checksum still on its way to the queue."""
    packets = [(_udp6(0, seed), True, seed % 2 == 0) for seed in range(12)]
    released, flags = _run(packets, stall=stall, beats=16)
    assert released == [_filled(packet) for packet, _, _ in packets]
    assert flags == [flag for _, _, flag in packets]


def test_udp6_fill_parameters():
    with pytest.raises(ValueError, match="beats"):
        Udp6ChecksumFill(beats=100)
    with pytest.raises(ValueError, match="beats"):
        Udp6ChecksumFill(beats=4)
