# SPDX-License-Identifier: BSD-2-Clause
"""The GCM core's credit count (`credit_counter`) in front of a real FIFO, in Amaranth's simulator.

Items are promised a place when they enter a fixed-latency pipeline and written to
the FIFO when they leave it, as the fast core's text blocks are (AES unit, then
the output FIFO). The oracle is the FIFO itself: it must never be written while
full, must hand out every item in order, and must fill up under a stalled reader
(the count gives every place out); with a reader that is always ready, the count
must let one item in every cycle once the loop is as short as the FIFO is deep.
"""

import random

import pytest
from amaranth import *
from amaranth.lib import fifo

from espnic.hdl.packet.credit import credit_counter
from espnic.sim.amaranth_sim import run_sim


class CreditedFifo(Elaboratable):
    """`want` enters a `latency`-cycle delay line when the count allows; the line
    ends in a FIFO of `depth` read with `read`."""

    def __init__(self, *, depth, latency, registered):
        self.depth, self.latency, self.registered = depth, latency, registered
        self.want = Signal()
        self.read = Signal()
        self.spent = Signal()
        self.overflow = Signal()      # sticky: written while full
        self.level = Signal(range(depth + 1))
        self.r_data = Signal(16)
        self.taken = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = out = fifo.SyncFIFOBuffered(width=16, depth=self.depth)
        room = credit_counter(m, "out", self.depth, spent=self.spent,
                               freed=out.r_en & out.r_rdy, registered=self.registered)
        sequence = Signal(16)
        m.d.comb += self.spent.eq(self.want & room)
        with m.If(self.spent):
            m.d.sync += sequence.eq(sequence + 1)
        valid, payload = self.spent, sequence
        for stage in range(self.latency):
            next_valid, next_payload = Signal(name=f"v{stage}"), Signal(16, name=f"d{stage}")
            m.d.sync += [next_valid.eq(valid), next_payload.eq(payload)]
            valid, payload = next_valid, next_payload
        m.d.comb += [
            out.w_en.eq(valid), out.w_data.eq(payload), out.r_en.eq(self.read),
            self.level.eq(out.level), self.r_data.eq(out.r_data),
            self.taken.eq(out.r_en & out.r_rdy),
        ]
        with m.If(out.w_en & ~out.w_rdy):
            m.d.sync += self.overflow.eq(1)
        return m


def _run(dut, cycles, read_prob_of, want_prob=0.9, check_overflow=True):
    rng = random.Random(dut.depth * 1000 + dut.latency * 2 + dut.registered)
    seen = {"next": 0, "max_level": 0, "spent": []}

    async def bench(ctx):
        for cycle in range(cycles):
            ctx.set(dut.want, rng.random() < want_prob)
            ctx.set(dut.read, rng.random() < read_prob_of(cycle))
            if ctx.get(dut.taken):
                # An overflow drops an item, so the order only holds without one.
                assert (ctx.get(dut.r_data) == seen["next"] % 2**16
                        or not check_overflow), f"cycle {cycle}: out of order"
                seen["next"] += 1
            seen["spent"].append(ctx.get(dut.spent))
            seen["max_level"] = max(seen["max_level"], ctx.get(dut.level))
            await ctx.tick()
            if check_overflow:
                assert not ctx.get(dut.overflow), f"cycle {cycle}: FIFO written while full"
        seen["overflow"] = ctx.get(dut.overflow)

    run_sim(dut, bench)
    return seen


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("depth, latency", [(1, 0), (3, 3), (5, 7), (16, 4)])
def test_stalled_reader_never_overflows_and_fills_the_fifo(depth, latency, registered):
    """Bursts of a reader stalled 95 % of the time, then free-running, then stalled."""
    dut = CreditedFifo(depth=depth, latency=latency, registered=registered)
    seen = _run(dut, 1200, lambda cycle: 0.05 if (cycle // 200) % 2 == 0 else 0.8)
    assert seen["max_level"] == depth, "the count never gave out the FIFO's last place"
    assert seen["next"] > 100, "too few items to tell"


@pytest.mark.parametrize("registered", [False, True])
def test_always_ready_reader_takes_an_item_every_cycle(registered):
    """The fast core's loop: 64 places against ~50 cycles from promise to read."""
    dut = CreditedFifo(depth=64, latency=48, registered=registered)
    seen = _run(dut, 400, lambda cycle: 1.0, want_prob=1.0)
    assert all(seen["spent"]), f"idle in cycle {seen['spent'].index(0)}"


def test_two_entries_overflow_which_is_why_the_profile_refuses_them():
    """A 2-entry `SyncFIFOBuffered` is one memory entry and the output register: two
    writes in a row into the empty FIFO find the memory entry still full (its item
    moves to the output register a cycle later), so no count of places keeps it from
    overflowing; `resolve_profile` refuses ``out_depth=2``. Also shows that the
    oracle above sees an overflow."""
    dut = CreditedFifo(depth=2, latency=3, registered=True)
    seen = _run(dut, 600, lambda cycle: 0.05 if (cycle // 200) % 2 == 0 else 0.8,
                check_overflow=False)
    assert seen["overflow"]
