# SPDX-License-Identifier: BSD-2-Clause
"""Stream sources and sinks for cocotb benches of `amaranth.lib.stream` ports.

Every port of a generated top level is named ``<path>__valid``,
``<path>__ready`` and ``<path>__payload`` (see :mod:`espnic.sim.verilog`).

All drivers of a bench are stepped by one loop, :func:`run_cycles`, with two
awaits per clock cycle instead of one coroutine per stream: at the falling edge
every driver sets its outputs, then in the read-only phase every driver sees
whether its handshake will happen at the next rising edge. That keeps a bench
with thousands of messages fast and its handshakes exact.
"""

import random
from collections import deque

from cocotb.triggers import FallingEdge, ReadOnly

__all__ = ["StreamSource", "StreamSink", "run_cycles", "reset_link_device"]


class StreamSource:
    """Drives ``valid``/``payload`` of an input stream from a queue of ints.

    ``gap_prob`` is the chance of holding ``valid`` low in a cycle when a
    payload is waiting; once raised, ``valid`` stays up until the handshake
    (a stream's sender must not retract).
    """

    def __init__(self, dut, path, *, rng=None, gap_prob=0.0):
        self.valid = getattr(dut, f"{path}__valid")
        self.ready = getattr(dut, f"{path}__ready")
        self.payload = getattr(dut, f"{path}__payload")
        self.queue = deque()
        self.cycles = []          # the cycle number of each handshake
        self._rng = rng or random.Random(0)
        self._gap_prob = gap_prob
        self._offering = False
        self.valid.value = 0

    def extend(self, payloads):
        self.queue.extend(payloads)

    def drive(self):
        if not self._offering and self.queue and self._rng.random() >= self._gap_prob:
            self._offering = True
            self.payload.value = self.queue[0]
        self.valid.value = int(self._offering)

    def sample(self, cycle):
        if self._offering and int(self.ready.value):
            self.queue.popleft()
            self.cycles.append(cycle)
            self._offering = False

    @property
    def idle(self):
        return not self.queue


class StreamSink:
    """Takes payloads of an output stream as ints, with random back-pressure."""

    def __init__(self, dut, path, *, rng=None, stall_prob=0.0):
        self.valid = getattr(dut, f"{path}__valid")
        self.ready = getattr(dut, f"{path}__ready")
        self.payload = getattr(dut, f"{path}__payload")
        self.received = []
        self.cycles = []          # the cycle number of each handshake
        self._rng = rng or random.Random(1)
        self._stall_prob = stall_prob
        self._accepting = False
        self.ready.value = 0

    def drive(self):
        self._accepting = self._rng.random() >= self._stall_prob
        self.ready.value = int(self._accepting)

    def sample(self, cycle):
        if self._accepting and int(self.valid.value):
            self.received.append(int(self.payload.value))
            self.cycles.append(cycle)


async def run_cycles(clk, sources, sinks, *, until, max_cycles):
    """Step every driver once per cycle until ``until()`` holds; return the cycle count.

    Run a bench's whole schedule in one call (``until`` can move the bench through
    its phases): between two calls the drivers keep their last ``valid`` and
    ``ready``, so a handshake can happen unwatched at the rising edge before the
    next call's first falling edge (a source then offers a payload twice).
    Raises :class:`TimeoutError` after ``max_cycles``: a stuck design must fail
    the test, not hang it.
    """
    cycle = 0
    while not until():
        if cycle >= max_cycles:
            raise TimeoutError(f"no progress after {max_cycles} cycles: "
                               f"{[len(s.queue) for s in sources]} payloads still queued, "
                               f"{[len(s.received) for s in sinks]} received")
        await FallingEdge(clk)
        for driver in (*sources, *sinks):
            driver.drive()
        await ReadOnly()
        for driver in (*sources, *sinks):
            driver.sample(cycle)
        cycle += 1
    await FallingEdge(clk)   # leave the read-only phase so the caller may write
    return cycle


async def reset_link_device(dut, cycles: int = 2):
    """Reset an ``EspNicDevice`` with its byte link idle (nothing offered, nothing taken)."""
    dut.host_rx__valid.value = 0
    dut.host_tx__ready.value = 0
    dut.rst.value = 1
    for _ in range(cycles):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
