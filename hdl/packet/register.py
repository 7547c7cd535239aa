# SPDX-License-Identifier: BSD-2-Clause
"""A stream register: one item held in a flip-flop stage, for timing."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """One item of a stream held in a register.

    ``i.ready`` is the register being empty, a flip-flop, and ``o`` is driven from the
    register, so no combinational path crosses it either way: the producer's handshake
    logic and the consumer's are separate paths. Latency 1 cycle; throughput one item
    every 2 cycles (an item goes only into an empty register), which suits a stream of
    requests, not of beats.
    """

    def __init__(self, shape):
        if not isinstance(shape, (data.Layout, int)) and not hasattr(shape, "as_shape"):
            raise TypeError(f"shape must be a data layout or a shape, not {shape!r}")
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        return m
