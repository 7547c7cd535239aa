# SPDX-License-Identifier: BSD-2-Clause
"""StreamRegister and SkidBuffer: every item through in order under random gaps and
stalls; a StreamRegister takes one item every 2 cycles at best, a SkidBuffer one a
cycle; in both `i.ready` is a flip-flop's (never `o.ready` of the same cycle)."""

import random

import pytest
from amaranth.lib import data

from espnic.hdl.packet.register import SkidBuffer, StreamRegister
from espnic.sim.amaranth_sim import run_sim, stream_get_n, stream_put_all

ITEM = data.StructLayout({"slot": 4, "bytes": 16})


@pytest.mark.parametrize("cls", [StreamRegister, SkidBuffer])
@pytest.mark.parametrize("gap, stall", [(0.0, 0.0), (0.3, 0.5), (0.0, 0.7)])
def test_items_go_through_in_order(cls, gap, stall):
    dut = cls(ITEM)
    items = [{"slot": k % 16, "bytes": (k * 977) % 65536} for k in range(60)]
    received, ready_seen = [], []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, items, rng=random.Random(1), gap_prob=gap, timeout=50)

    async def consumer(ctx):
        received.extend(await stream_get_n(ctx, dut.o, len(items), rng=random.Random(2),
                                           stall_prob=stall, timeout=50))

    async def watch(ctx):
        async for _clk, _rst, i_ready, o_valid in ctx.tick().sample(dut.i.ready, dut.o.valid):
            ready_seen.append((i_ready, o_valid))

    run_sim(dut, producer, consumer, processes=[watch])
    assert [{"slot": r.slot, "bytes": r.bytes} for r in received] == items
    if cls is StreamRegister:
        # Ready is exactly "the register is empty", whatever the consumer does.
        assert all(i_ready == (not o_valid) for i_ready, o_valid in ready_seen)


def test_one_item_every_two_cycles_at_best():
    dut = StreamRegister(ITEM)
    taken = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for cycle in range(20):
            _clk, _rst, ready = await ctx.tick().sample(dut.i.ready)
            if ready:
                taken.append(cycle)

    run_sim(dut, bench)
    assert taken == list(range(taken[0], 20, 2))


def test_skid_buffer_takes_an_item_every_cycle_and_none_is_lost_when_stalled():
    dut = SkidBuffer(ITEM)
    taken, given = [], []

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        for cycle in range(40):
            # The consumer stalls for cycles 10-14: the skid takes the item of cycle 10,
            # then i.ready is low until the cycle after the stall; one a cycle again.
            # i.ready is a flip-flop's: o.ready of the same cycle does not reach it.
            ready_before = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, 10 <= cycle < 15)
            assert ctx.get(dut.i.ready) == ready_before
            ctx.set(dut.o.ready, not 10 <= cycle < 15)
            assert ctx.get(dut.i.ready) == ready_before
            ctx.set(dut.i.payload, {"slot": cycle % 16, "bytes": cycle})
            _clk, _rst, i_ready, o_valid, o_ready, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
            if i_ready:
                taken.append(cycle)
            if o_valid and o_ready:
                given.append(o_payload.bytes)

    run_sim(dut, bench)
    assert taken == [c for c in range(40) if not 11 <= c <= 15]
    # In order, none lost: everything taken came out but the last, still in the register.
    assert given == taken[:-1]


@pytest.mark.parametrize("cls", [StreamRegister, SkidBuffer])
def test_shape_is_checked(cls):
    with pytest.raises(TypeError, match="shape"):
        cls("wide")
