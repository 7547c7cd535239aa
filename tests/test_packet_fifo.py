# SPDX-License-Identifier: BSD-2-Clause
"""PacketFifo (Amaranth simulator): whole packets out, aborted and oversize ones
dropped and counted. Oracle: the input packets themselves, filtered in Python."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.hdl.forwarder.egress import EGRESS_BEAT
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats, packet_beat
from espnic.hdl.packet.fifo import PacketFifo
from espnic.sim.amaranth_sim import run_sim, stream_get_packets, stream_put_all

DEPTH = 8


def _run(packets, *, gap, stall, seed):
    """`packets` as (bytes, aborted) through a PacketFifo of DEPTH beats."""
    dut = PacketFifo(layout=EGRESS_BEAT, depth=DEPTH)
    beats = []
    for packet, aborted in packets:
        chunk = beats_from_bytes(packet, 16)
        chunk[-1] = {**chunk[-1], "abort": int(aborted)}
        beats += chunk
    kept = [p for p, aborted in packets if not aborted and -(-len(p) // 16) <= DEPTH]
    received, early = [], []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(seed), gap_prob=gap,
                             timeout=200)

    async def consumer(ctx):
        received.extend(await stream_get_packets(ctx, dut.o, len(kept),
                                                 rng=random.Random(seed + 1),
                                                 stall_prob=stall, timeout=400))

    async def watch(ctx):
        # A first beat offered while its packet's last beat has not gone in yet would
        # let an aborted packet's head through.
        last_in = 0
        out_first = 0
        async for _clk, _rst, i_valid, i_ready, i_last, o_valid, o_ready, o_first in \
                ctx.tick().sample(dut.i.valid, dut.i.ready, dut.i.payload.last,
                                  dut.o.valid, dut.o.ready, dut.o.payload.first):
            if o_valid and o_ready and o_first:
                out_first += 1
                early.append(out_first > last_in)
            if i_valid and i_ready and i_last:
                last_in += 1

    run_sim(dut, producer, consumer, processes=[watch])
    return kept, received, early


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(st.tuples(st.binary(min_size=1, max_size=16 * DEPTH + 40),
                                  st.booleans()), min_size=1, max_size=8),
       gap=st.sampled_from([0.0, 0.3]), stall=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 1000))
def test_packet_fifo_keeps_whole_good_packets(packets, gap, stall, seed):
    kept, received, early = _run(packets, gap=gap, stall=stall, seed=seed)
    assert bytes_from_beats(received, 16) == kept
    assert not any(beat.abort for beat in received)
    # No packet's first beat offered before that packet's last beat went in (dropped
    # packets' last beats count too, which only makes the check weaker).
    assert not any(early)


def test_packet_fifo_counts_its_drops():
    rng = random.Random(3)
    packets = [(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16 * DEPTH + 30))),
                rng.random() < 0.3) for _ in range(30)]
    too_long = sum(-(-len(p) // 16) > DEPTH for p, _aborted in packets)
    aborted = sum(a and -(-len(p) // 16) <= DEPTH for p, a in packets)
    assert too_long and aborted
    dut = PacketFifo(layout=EGRESS_BEAT, depth=DEPTH)
    kept = [p for p, a in packets if not a and -(-len(p) // 16) <= DEPTH]
    counted, received = {}, []

    async def producer(ctx):
        beats = []
        for packet, abort in packets:
            chunk = beats_from_bytes(packet, 16)
            chunk[-1] = {**chunk[-1], "abort": int(abort)}
            beats += chunk
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(1), gap_prob=0.2,
                             timeout=200)
        await ctx.tick().repeat(4)
        counted["dropped"], counted["oversize"] = ctx.get(dut.dropped), ctx.get(dut.oversize)

    async def drain(ctx):
        received.extend(await stream_get_packets(ctx, dut.o, len(kept), rng=random.Random(2),
                                                 stall_prob=0.3, timeout=400))

    run_sim(dut, producer, drain)
    assert bytes_from_beats(received, 16) == kept
    assert counted == {"dropped": aborted, "oversize": too_long}


def test_packet_fifo_parameters():
    with pytest.raises(ValueError, match="power of two"):
        PacketFifo(layout=EGRESS_BEAT, depth=6)
    with pytest.raises(TypeError, match="'last' and 'abort'"):
        PacketFifo(layout=packet_beat(16), depth=8)
