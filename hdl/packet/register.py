# SPDX-License-Identifier: BSD-2-Clause
"""Stream registers that cut a stream's combinational paths, for timing: one item held
(`StreamRegister`, for requests), a two-entry skid buffer at full rate (`SkidBuffer`,
for beats), or the handshake alone with the payload left where it is
(`HandshakeRegister`, for wide items at a host's rate), and :func:`cut`, which puts
one between a source and a sink."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister", "SkidBuffer", "HandshakeRegister", "cut"]


def _signature(shape):
    if not isinstance(shape, (data.Layout, int)) and not hasattr(shape, "as_shape"):
        raise TypeError(f"shape must be a data layout or a shape, not {shape!r}")
    return wiring.Signature({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})


class StreamRegister(wiring.Component):
    """One item of a stream held in a register.

    ``i.ready`` is the register being empty, a flip-flop, and ``o`` is driven from the
    register, so no combinational path crosses it either way: the producer's handshake
    logic and the consumer's are separate paths. Latency 1 cycle; throughput one item
    every 2 cycles (an item goes only into an empty register), which suits a stream of
    requests, not of beats.
    """

    def __init__(self, shape):
        super().__init__(_signature(shape))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        return m


class SkidBuffer(wiring.Component):
    """A stream cut by registers both ways at one item a cycle: a two-entry skid buffer.

    ``o`` is driven from the main register and ``i.ready`` is "the skid register is
    empty", a flip-flop, so neither ``o.ready`` nor ``i.valid`` reaches the other side in
    the same cycle. The skid register catches the one item accepted in the cycle the
    consumer stalls, which is what lets ``i.ready`` be registered without losing a cycle.
    Latency 1 cycle; throughput one item a cycle, sustained; costs twice the payload in
    flip-flops. For a stream of beats between blocks whose handshakes would otherwise
    chain into one long path.
    """

    def __init__(self, shape):
        super().__init__(_signature(shape))

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            # The main register moves on: refill it from the skid, else straight from i.
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class HandshakeRegister(wiring.Component):
    """A stream cut in its handshake only: ``valid`` and ``ready`` cross flip-flops, the
    payload goes straight through.

    A producer keeps its payload as it is until the item is taken (the stream's
    rule), and here the producer's item is taken only in the cycle after the
    consumer has taken it, so the consumer sees the producer's payload unchanged
    without a copy. ``o.valid`` and ``i.ready`` are flip-flops: no combinational
    path from ``i.valid`` to ``o.valid`` or from ``o.ready`` to ``i.ready``; the
    payload's path is the producer's register to the consumer. Latency 1 cycle; an
    item every 3 cycles at best. For wide items at a host's rate (a 1,252-bit SA
    operation): a :class:`StreamRegister` would copy the item into as many
    flip-flops, all on one enable, the kind of net the router finds hardest.
    """

    def __init__(self, shape):
        super().__init__(_signature(shape))

    def elaborate(self, platform):
        m = Module()
        taken = Signal()            # the consumer took the item last cycle
        m.d.comb += [self.o.payload.eq(self.i.payload), self.i.ready.eq(taken)]
        m.d.sync += taken.eq(self.o.valid & self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.Elif(self.i.valid & ~taken):
            m.d.sync += self.o.valid.eq(1)
        return m


def cut(m, name, register, source, sink):
    """Connect `source` to `sink` through a `register` (:class:`StreamRegister`,
    :class:`SkidBuffer` or :class:`HandshakeRegister`), a submodule of `m` named
    `name`: no combinational path between them. Returns the register."""
    m.submodules[name] = between = register(source.payload.shape())
    wiring.connect(m, source, between.i)
    wiring.connect(m, between.o, sink)
    return between
