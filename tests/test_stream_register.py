# SPDX-License-Identifier: BSD-2-Clause
"""StreamRegister: every item through in order under random gaps and stalls, one
item every 2 cycles at best, and `i.ready` a flip-flop's (never `o.ready` of the
same cycle)."""

import random

import pytest
from amaranth.lib import data

from espnic.hdl.packet.register import StreamRegister
from espnic.sim.amaranth_sim import run_sim, stream_get_n, stream_put_all

ITEM = data.StructLayout({"slot": 4, "bytes": 16})


@pytest.mark.parametrize("gap, stall", [(0.0, 0.0), (0.3, 0.5)])
def test_items_go_through_in_order(gap, stall):
    dut = StreamRegister(ITEM)
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


def test_shape_is_checked():
    with pytest.raises(TypeError, match="shape"):
        StreamRegister("wide")
