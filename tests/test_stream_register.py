# SPDX-License-Identifier: BSD-2-Clause
"""StreamRegister, SkidBuffer and HandshakeRegister: every item through in order under
random gaps and stalls; a StreamRegister takes one item every 2 cycles at best, a
SkidBuffer one a cycle, a HandshakeRegister one every 3 and only after the consumer
has taken it; in all three `i.ready` is a flip-flop's (never `o.ready` of the same
cycle)."""

import random

import pytest
from amaranth.lib import data

from espnic.hdl.packet.register import HandshakeRegister, SkidBuffer, StreamRegister
from espnic.sim.amaranth_sim import run_sim, stream_get_n, stream_put_all

ITEM = data.StructLayout({"slot": 4, "bytes": 16})


@pytest.mark.parametrize("cls", [StreamRegister, SkidBuffer, HandshakeRegister])
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


def test_handshake_register_passes_the_item_only_once_the_consumer_has_it():
    """The producer's item is taken the cycle after the consumer took it, every 3
    cycles at best; meanwhile the consumer sees the producer's payload, unchanged;
    i.ready does not follow o.ready within a cycle, nor o.valid i.valid."""
    dut = HandshakeRegister(ITEM)
    taken, given = [], []

    async def bench(ctx):
        item = 0
        for cycle in range(40):
            stall = 12 <= cycle < 20
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"slot": item % 16, "bytes": item})
            before = (ctx.get(dut.i.ready), ctx.get(dut.o.valid))
            ctx.set(dut.o.ready, stall)
            ctx.set(dut.i.valid, 0)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == before
            ctx.set(dut.o.ready, not stall)
            ctx.set(dut.i.valid, 1)
            _clk, _rst, i_ready, o_valid, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload)
            if o_valid and not stall:
                assert o_payload.bytes == item
                given.append((cycle, item))
            if i_ready:
                # Taken by the producer the cycle after the consumer took it.
                assert given and given[-1] == (cycle - 1, item)
                taken.append(cycle)
                item += 1

    run_sim(dut, bench)
    before_stall = [c for c in taken if c < 12]
    assert before_stall == list(range(before_stall[0], 12, 3))
    assert not any(13 <= c < 20 for c in taken)
    assert len(given) == len(taken) or len(given) == len(taken) + 1


@pytest.mark.parametrize("cls", [StreamRegister, SkidBuffer, HandshakeRegister])
def test_shape_is_checked(cls):
    with pytest.raises(TypeError, match="shape"):
        cls("wide")
