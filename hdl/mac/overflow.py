# SPDX-License-Identifier: BSD-2-Clause
"""Where the wire's bytes meet a buffer that can be full."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import MAC_BYTE

__all__ = ["OverflowGuard"]


class OverflowGuard(wiring.Component):
    """Passes frames from ``i``, which cannot wait (a :class:`GmiiReceiver`), to
    ``o``, which can; a frame that meets ``o`` not ready is dropped whole and
    counted (one ``overflow`` pulse per frame).

    Dropped whole: the rest of the frame is thrown away, and if some of its
    bytes had already gone out on ``o``, an extra byte with ``last`` and
    ``abort`` ends it there (whenever ``o`` is next ready), so the buffer behind
    (a :class:`PacketFifo`) throws those away too. While that byte waits, every
    frame that comes is dropped and counted as well.

    Latency: combinational. Throughput: one byte per cycle.
    """

    def __init__(self):
        super().__init__({
            "i":        In(stream.Signature(MAC_BYTE, always_ready=True)),
            "o":        Out(stream.Signature(MAC_BYTE)),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        byte = self.i.payload
        passed = Signal()         # some of this frame's bytes went out on `o`
        dropping = Signal()       # this frame is being thrown away
        owed = Signal()           # `o` is owed a byte that aborts the frame it ended in

        m.d.comb += self.o.valid.eq(owed | (self.i.valid & ~dropping & ~owed))
        with m.If(owed):
            m.d.comb += [self.o.payload.last.eq(1), self.o.payload.abort.eq(1)]
            with m.If(self.o.ready):
                m.d.sync += owed.eq(0)
        with m.Else():
            m.d.comb += self.o.payload.eq(byte)

        m.d.sync += self.overflow.eq(0)
        with m.If(self.i.valid):
            with m.If(dropping):
                m.d.sync += dropping.eq(~byte.last)
            with m.Elif(owed | ~self.o.ready):
                m.d.sync += [self.overflow.eq(1), dropping.eq(~byte.last), passed.eq(0)]
                with m.If(~owed & passed):
                    m.d.sync += owed.eq(1)
            with m.Else():
                m.d.sync += passed.eq(~byte.last)
        return m
