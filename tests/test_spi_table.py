# SPDX-License-Identifier: BSD-2-Clause
"""SpiTable (Amaranth simulator) against SpiTableModel: every host operation's status
(INSERT, COLLISION, FULL, REMOVE, REPLACE, NOT_FOUND) and every lookup, over random
operation sequences on small tables where buckets fill up; and a value replaced
while lookups of it stream one per cycle: each lookup sees the old value or the new,
and every lookup issued after the reply sees the new one."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from amaranth.lib import data

from espnic.hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus, SpiTable, bucket_of
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put
from espnic.sim.model.forwarder import SpiTableModel

VALUE = data.StructLayout({"engine": 4, "slot": 12})


def _key(spi, dst, udp):
    return SPI_KEY.const({"spi": spi, "dst": dst, "udp": udp}).as_value().value


def _value(number):
    return {"engine": number & 15, "slot": number >> 4 & 0xfff}


def _as_number(value):
    return value.engine | value.slot << 4


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries_ways=st.sampled_from([(8, 1), (16, 2), (16, 4), (64, 8)]),
       steps=st.lists(st.tuples(st.sampled_from(["insert", "remove", "replace", "lookup"]),
                                st.integers(0, 11), st.integers(0, 2**16 - 1)),
                      min_size=1, max_size=60),
       stall=st.sampled_from([0.0, 0.4]), seed=st.integers(0, 2**16))
def test_spi_table_against_the_model(entries_ways, steps, stall, seed):
    entries, ways = entries_ways
    # Twelve keys: a few SPIs and destinations, ESP and UDP-ESP, so buckets collide.
    keys = [_key(0x1000 + n % 4, (n // 4) << 24 | 0xc0000201, n & 1) for n in range(12)]
    dut = SpiTable(entries=entries, ways=ways, value=VALUE)
    model = SpiTableModel(entries=entries, ways=ways)
    rng = random.Random(seed)
    seen, expected = [], []

    async def bench(ctx):
        for kind, which, number in steps:
            key = keys[which]
            if kind == "lookup":
                await stream_put(ctx, dut.lookup, SPI_KEY.from_bits(key), timeout=100)
                result = await stream_get(ctx, dut.result, timeout=100)
                seen.append(_as_number(result.value) if result.hit else None)
                expected.append(model.lookup(key))
            else:
                op = {"insert": SpiOp.INSERT, "remove": SpiOp.REMOVE,
                      "replace": SpiOp.REPLACE}[kind]
                await stream_put(ctx, dut.host, {"op": op, "key": SPI_KEY.from_bits(key),
                                                 "value": _value(number)}, timeout=100)
                while stall and rng.random() < stall:
                    await ctx.tick()
                reply = await stream_get(ctx, dut.host_reply, timeout=100)
                status = (model.insert(key, number) if kind == "insert" else model.remove(key)
                          if kind == "remove" else model.replace(key, number))
                seen.append(reply.status)
                expected.append(status)
            assert ctx.get(dut.used) == model.used

    run_sim(dut, bench)
    assert seen == expected


def test_spi_table_replace_under_lookups():
    """Lookups every cycle (of one key, and of a key never inserted) while the key is
    inserted, replaced, removed and inserted again: each lookup sees the value before
    the operation or after it, never a mix, and every lookup taken after the reply sees
    the value after it."""
    dut = SpiTable(entries=16, ways=4, value=VALUE)
    key, other = _key(0x4242, 0x0a000001, 0), _key(0x4243, 0x0a000001, 1)
    ops = [(SpiOp.INSERT, 1), (SpiOp.REPLACE, 0x7ff2), (SpiOp.REMOVE, None), (SpiOp.INSERT, 0x333)]
    lookups, replies = [], []    # (cycle taken, key, value or None); (cycle, value after)

    async def bench(ctx):
        ctx.set(dut.result.ready, 1)
        ctx.set(dut.host_reply.ready, 1)
        in_flight, cycle, turn, index, wait = [], 0, 0, 0, 3
        while index < len(ops) or wait:
            want = other if turn % 3 == 0 else key
            ctx.set(dut.lookup.payload, SPI_KEY.from_bits(want))
            ctx.set(dut.lookup.valid, 1)
            offering = index < len(ops) and wait == 0
            if offering:
                op, value = ops[index]
                ctx.set(dut.host.payload, {"op": op, "key": SPI_KEY.from_bits(key),
                                           "value": _value(value or 0)})
            ctx.set(dut.host.valid, offering)
            _clk, _rst, l_ready, r_valid, r_payload, h_ready, a_valid = \
                await ctx.tick().sample(dut.lookup.ready, dut.result.valid, dut.result.payload,
                                        dut.host.ready, dut.host_reply.valid)
            cycle += 1
            if l_ready:
                in_flight.append((cycle, want))
                turn += 1
            if r_valid:
                taken, which = in_flight.pop(0)
                lookups.append((taken, which, _as_number(r_payload.value) if r_payload.hit
                                else None))
            if offering and h_ready:
                wait = -1                       # waiting for the reply
            elif wait == -1 and a_valid:
                replies.append((cycle, ops[index][1]))
                index, wait = index + 1, 4      # a few cycles of lookups alone
            elif wait > 0:
                wait -= 1
        ctx.set(dut.lookup.valid, 0)

    run_sim(dut, bench)
    assert len(replies) == len(ops) and len(lookups) > 20
    for taken, which, value in lookups:
        if which == other:
            assert value is None
            continue
        now = [after for cycle, after in replies if cycle < taken]
        settled = now[-1] if now else None
        pending = replies[len(now)][1] if len(now) < len(replies) else settled
        assert value in (settled, pending), (taken, value, settled, pending)
    # And the lookups did overlap the operations.
    assert any(replies[0][0] - 6 < taken < replies[-1][0] for taken, _, _ in lookups)


def test_spi_table_rate_and_latency():
    """Lookups back to back with the result always taken: one taken every cycle (the
    result queue's credits never run out), each result offered 5 cycles after its
    lookup, in order; then, with the result held, the table takes exactly as many
    lookups as its queue has places and loses none of them."""
    dut = SpiTable(entries=16, ways=4, value=VALUE)
    key = _key(0x1234, 0x0a000002, 0)
    taken, offered, held_taken, held_results = [], [], [], []

    async def bench(ctx):
        await stream_put(ctx, dut.host, {"op": SpiOp.INSERT, "key": SPI_KEY.from_bits(key),
                                         "value": _value(0x155)}, timeout=50)
        assert (await stream_get(ctx, dut.host_reply, timeout=50)).status == SpiStatus.OK
        ctx.set(dut.lookup.payload, SPI_KEY.from_bits(key))
        ctx.set(dut.result.ready, 1)
        for cycle in range(30):
            ctx.set(dut.lookup.valid, cycle < 20)
            _clk, _rst, l_ready, r_valid, payload = await ctx.tick().sample(
                dut.lookup.ready, dut.result.valid, dut.result.payload)
            if cycle < 20 and l_ready:
                taken.append(cycle)
            if r_valid:
                assert payload.hit and _as_number(payload.value) == 0x155
                offered.append(cycle)
        ctx.set(dut.result.ready, 0)
        ctx.set(dut.lookup.valid, 1)
        for cycle in range(40):
            _clk, _rst, l_ready = await ctx.tick().sample(dut.lookup.ready)
            held_taken.append(l_ready)
        ctx.set(dut.lookup.valid, 0)
        ctx.set(dut.result.ready, 1)
        for cycle in range(40):
            _clk, _rst, r_valid, payload = await ctx.tick().sample(dut.result.valid,
                                                                   dut.result.payload)
            if r_valid:
                held_results.append(_as_number(payload.value))

    run_sim(dut, bench)
    assert taken == list(range(20))
    assert offered == [cycle + 5 for cycle in taken]
    # The queue's places: the pipeline's 3 cycles, the FIFO's 2, the credit's 2.
    assert sum(held_taken) == len(held_results) == 3 + 2 + 2
    assert held_results == [0x155] * len(held_results)


def test_spi_table_parameters_and_hash():
    with pytest.raises(ValueError, match="ways"):
        SpiTable(entries=16, ways=3, value=VALUE)
    with pytest.raises(ValueError, match="entries"):
        SpiTable(entries=24, ways=4, value=VALUE)
    with pytest.raises(TypeError, match="value"):
        SpiTable(entries=16, ways=4, value=16)
    # The hash spreads: 4096 keys of one destination over 1024 buckets, none above 16.
    counts = {}
    for spi in range(4096):
        bucket = bucket_of(_key(0x100000 + spi * 7, 0xc0000201, 0), 1024)
        counts[bucket] = counts.get(bucket, 0) + 1
    assert max(counts.values()) <= 16 and len(counts) > 900
