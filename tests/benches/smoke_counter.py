# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench for the simulation plumbing's smoke device, ``SmokeCounter``
(defined in tests/test_sim_plumbing.py).

The device takes beats ``{step, clear}`` on stream ``i`` and emits, one cycle
later and one per beat, the count advanced by ``step`` modulo ``2**width`` on
stream ``o``; ``clear`` restarts the count from zero before adding ``step``.
Expectations come from :func:`expected_counts`, never from the device. Ports
and payload fields are looked up in the port sidecar, not hard-coded.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from espnic.sim.cocotb_runner import bench_params, bench_ports

CLOCK_NS = 10


def expected_counts(beats: list[dict], width: int) -> list[int]:
    """Reference model: the counts the device must emit for ``beats``."""
    count, counts = 0, []
    for beat in beats:
        count = ((0 if beat["clear"] else count) + beat["step"]) % (1 << width)
        counts.append(count)
    return counts


class TB:
    """Clock, reset, an ``i`` driver with random idle cycles and an ``o``
    monitor with random back-pressure."""

    def __init__(self, dut, *, gap_prob: float = 0.0, stall_prob: float = 0.0):
        self.dut = dut
        self.width = bench_params()["width"]
        ports = bench_ports()
        self.fields = ports["i__payload"]["fields"]
        assert ports["o__payload"]["width"] == self.width, ports["o__payload"]
        assert self.fields["step"]["width"] == self.width, self.fields
        self.gap_prob, self.stall_prob = gap_prob, stall_prob
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.cycles = 0

    def pack(self, beat: dict) -> int:
        word = 0
        for field, value in beat.items():
            place = self.fields[field]
            assert 0 <= value < (1 << place["width"]), (field, value)
            word |= value << place["offset"]
        return word

    async def start(self) -> None:
        Clock(self.dut.clk, CLOCK_NS, unit="ns").start()
        self.dut.i__valid.value = 0
        self.dut.o__ready.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        cocotb.start_soon(self._count_cycles())

    async def _count_cycles(self) -> None:
        while True:
            await RisingEdge(self.dut.clk)
            self.cycles += 1

    def random_beats(self, n: int, clear_prob: float = 0.1) -> list[dict]:
        return [{"step": self.rng.randrange(1 << self.width),
                 "clear": int(self.rng.random() < clear_prob)} for _ in range(n)]

    # Both coroutines drive right after a clock edge, then read settled values
    # in ReadOnly: a transfer happens at the next edge iff valid & ready there.
    async def send(self, beats: list[dict]) -> None:
        clk = self.dut.clk
        for beat in beats:
            while self.rng.random() < self.gap_prob:
                self.dut.i__valid.value = 0
                await RisingEdge(clk)
            self.dut.i__payload.value = self.pack(beat)
            self.dut.i__valid.value = 1
            while True:
                await ReadOnly()
                taken = int(self.dut.i__ready.value) == 1
                await RisingEdge(clk)
                if taken:
                    break
        self.dut.i__valid.value = 0

    async def receive(self, n: int) -> list[int]:
        clk = self.dut.clk
        counts = []
        while len(counts) < n:
            ready = int(self.rng.random() >= self.stall_prob)
            self.dut.o__ready.value = ready
            await ReadOnly()
            if ready and int(self.dut.o__valid.value) == 1:
                counts.append(int(self.dut.o__payload.value))
            await RisingEdge(clk)
        self.dut.o__ready.value = 0
        return counts


@cocotb.test(timeout_time=200, timeout_unit="us")
async def test_counts_back_to_back(dut):
    """Without gaps or stalls the device takes and emits one beat per cycle."""
    tb = TB(dut)
    await tb.start()
    beats = tb.random_beats(200)
    cocotb.start_soon(tb.send(beats))
    first_cycle = tb.cycles
    counts = await tb.receive(len(beats))
    assert counts == expected_counts(beats, tb.width)
    # One cycle of latency plus the handshake edges; a stall would show here.
    assert tb.cycles - first_cycle <= len(beats) + 2, (tb.cycles - first_cycle, len(beats))


@cocotb.test(timeout_time=500, timeout_unit="us")
async def test_counts_with_gaps_and_back_pressure(dut):
    """Random idle cycles on the input and random back-pressure on the output
    lose, duplicate or reorder nothing."""
    tb = TB(dut, gap_prob=0.3, stall_prob=0.4)
    await tb.start()
    beats = tb.random_beats(300, clear_prob=0.2)
    cocotb.start_soon(tb.send(beats))
    counts = await tb.receive(len(beats))
    assert counts == expected_counts(beats, tb.width)


@cocotb.test(skip=os.environ.get("ESPNIC_SMOKE_EXPECT_FAILURE") != "1")
async def test_deliberate_failure(dut):
    """Fails on purpose (only when asked) so the runner's failure report can be tested."""
    tb = TB(dut)
    await tb.start()
    beats = [{"step": 1, "clear": 1}]
    cocotb.start_soon(tb.send(beats))
    counts = await tb.receive(1)
    assert counts == [2], f"deliberate failure: device counted {counts}"
