# SPDX-License-Identifier: BSD-2-Clause
"""A store-and-forward packet FIFO that drops aborted packets."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["PacketFifo"]


class PacketFifo(wiring.Component):
    """Whole packets from ``i`` to ``o``: a packet is offered on ``o`` only once its
    last beat is in, so nothing downstream sees a packet that is later aborted.

    A packet whose last beat has ``abort`` set is dropped (``dropped``), as is one
    longer than the FIFO (``oversize``: its beats are taken and thrown away up to
    its last), so a bad packet never blocks the stream. Otherwise a full FIFO holds
    ``i`` until ``o`` takes beats.

    Parameters
    ----------
    layout : the beat, a :class:`data.StructLayout` with ``last`` and ``abort``
        fields (``o`` carries the same, ``abort`` always 0).
    depth : beats of block RAM, a power of two of at least 4; the longest packet
        passed is `depth` beats.

    Throughput: one beat per cycle in and out. Latency: a packet's first beat is
    offered the cycle after its last beat was taken in.
    """

    def __init__(self, *, layout: data.StructLayout, depth: int):
        if not isinstance(layout, data.StructLayout) or \
                not {"last", "abort"} <= set(layout.members):
            raise TypeError(f"layout must be a data.StructLayout with 'last' and 'abort' "
                            f"fields, not {layout!r}")
        if type(depth) is not int or depth < 4 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two of at least 4, not {depth!r}")
        self._layout, self._depth = layout, depth
        super().__init__({
            "i":        In(stream.Signature(layout)),
            "o":        Out(stream.Signature(layout)),
            "dropped":  Out(32),
            "oversize": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.rows = rows = Memory(shape=self._layout, depth=depth, init=[])
        write = rows.write_port()
        read = rows.read_port(transparent_for=(write,))
        # Pointers one bit wider than an address: equal is empty, `depth` apart full.
        head = Signal(range(2 * depth))     # next row written
        kept = Signal(range(2 * depth))     # end of the last whole packet written
        tail = Signal(range(2 * depth))     # next row read
        used = Signal(range(2 * depth + 1))
        m.d.comb += used.eq((head - tail)[:len(head)])
        # The packet being written fills the whole FIFO: it can never be passed.
        too_long = ((head - kept)[:len(head)] == depth)
        discarding = Signal()

        beat = self.i.payload
        room = used != depth
        m.d.comb += [
            self.i.ready.eq(discarding | room | too_long),
            write.addr.eq(head[:-1]),
            write.data.eq(beat),
            write.en.eq(self.i.valid & ~discarding & room),
        ]
        with m.If(self.i.valid & self.i.ready):
            with m.If(discarding | ~room):
                # The rest of an oversize packet: thrown away, up to its last beat.
                m.d.sync += discarding.eq(~beat.last)
                with m.If(~discarding):
                    m.d.sync += [head.eq(kept), self.oversize.eq(self.oversize + 1)]
            with m.Elif(beat.last & beat.abort):
                m.d.sync += [head.eq(kept), self.dropped.eq(self.dropped + 1)]
            with m.Elif(beat.last):
                m.d.sync += [head.eq(head + 1), kept.eq(head + 1)]
            with m.Else():
                m.d.sync += head.eq(head + 1)

        # The read port gives the row at the address of the cycle before: ask for the
        # row after the one taken, so the head of the FIFO is always on `read.data`.
        take = self.o.valid & self.o.ready
        following = Signal.like(tail)
        m.d.comb += [
            following.eq(tail + take),
            read.addr.eq(following[:-1]),
            self.o.valid.eq(tail != kept),
            self.o.payload.eq(read.data),
            self.o.payload.abort.eq(0),
        ]
        m.d.sync += tail.eq(following)
        return m
