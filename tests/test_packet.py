# SPDX-License-Identifier: BSD-2-Clause
"""Packet stream layout and the Repacker (Amaranth simulator).

Oracle: the packets' own bytes and :func:`beats_from_bytes` (every output beat
full but the last), never the device.
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.hdl.packet import BEAT_WIDTHS, Repacker, beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get_n, stream_put_all


def _chunked_beats(packet: bytes, width: int, rng: random.Random) -> list[dict]:
    """The packet as input beats of random fill (0..width bytes), last one marked."""
    beats, position = [], 0
    while True:
        count = rng.randint(0, width)
        chunk = packet[position:position + count]
        position += len(chunk)
        # The last beat carries a byte, unless the packet is empty.
        done = position == len(packet) and bool(chunk or not packet)
        beats.append({"data": int.from_bytes(chunk, "little"), "count": len(chunk),
                      "first": int(not beats), "last": int(done)})
        if done:
            return beats


def _run(packets, in_width, out_width, *, gap=0.0, stall=0.0, seed=0):
    dut = Repacker(in_width=in_width, out_width=out_width)
    rng = random.Random(seed)
    in_beats = [beat for packet in packets for beat in _chunked_beats(packet, in_width, rng)]
    expected = [beat for packet in packets for beat in beats_from_bytes(packet, out_width)]
    received = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, in_beats, rng=random.Random(seed + 1), gap_prob=gap,
                             timeout=100)

    async def consumer(ctx):
        received.extend(await stream_get_n(ctx, dut.o, len(expected), rng=random.Random(seed + 2),
                                           stall_prob=stall, timeout=100))

    run_sim(dut, producer, consumer)
    return expected, received


def _as_dicts(beats):
    return [{name: int(getattr(beat, name)) for name in ("data", "count", "first", "last")}
            for beat in beats]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(in_width=st.sampled_from(BEAT_WIDTHS), out_width=st.sampled_from(BEAT_WIDTHS),
       packets=st.lists(st.binary(max_size=70), min_size=1, max_size=6),
       gap=st.sampled_from([0.0, 0.3]), stall=st.sampled_from([0.0, 0.4]),
       seed=st.integers(0, 2**16))
def test_repacker_packs_any_chunking(in_width, out_width, packets, gap, stall, seed):
    """Random partial input beats, gaps and stalls: the bytes and the framing of
    every packet come out as full beats but the last."""
    expected, received = _run(packets, in_width, out_width, gap=gap, stall=stall, seed=seed)
    assert bytes_from_beats(received, out_width) == packets
    assert _as_dicts(received) == expected


@pytest.mark.parametrize("width", [4, 16])
def test_repacker_sustains_a_beat_per_cycle(width):
    """Full beats of equal width, packets back to back: no idle cycle anywhere."""
    packets = [bytes(range(length)) for length in (64, 1, 48, 200, 16)]
    in_beats = [beat for packet in packets for beat in beats_from_bytes(packet, width)]
    count = {}

    dut = Repacker(in_width=width, out_width=width)

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, in_beats, timeout=10)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        seen, cycle = [], 0
        while len(seen) < len(in_beats):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                seen.append(payload)
        count["cycles"], count["beats"] = cycle, seen

    run_sim(dut, producer, consumer)
    assert bytes_from_beats(count["beats"], width) == packets
    # One cycle of latency, then one beat per cycle.
    assert count["cycles"] == len(in_beats) + 1


def test_layout_helpers_check_framing():
    beats = beats_from_bytes(bytes(range(10)), 4)
    assert [b["count"] for b in beats] == [4, 4, 2]
    assert bytes_from_beats(beats, 4) == [bytes(range(10))]
    assert beats_from_bytes(b"", 16) == [{"data": 0, "count": 0, "first": 1, "last": 1}]
    with pytest.raises(ValueError, match="bytes past count"):
        bytes_from_beats([{"data": 0x100, "count": 1, "first": 1, "last": 1}], 4)
    with pytest.raises(ValueError, match="first=0"):
        bytes_from_beats([{"data": 0, "count": 0, "first": 0, "last": 1}], 4)
    with pytest.raises(ValueError, match="no beat with last"):
        bytes_from_beats(beats[:2], 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"in_width": 3, "out_width": 16}, "in_width must be one of"),
    ({"in_width": 4, "out_width": 32}, "out_width must be one of"),
    ({"in_width": "4", "out_width": 4}, "in_width must be one of"),
])
def test_repacker_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Repacker(**kwargs)
