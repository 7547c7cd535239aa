# SPDX-License-Identifier: BSD-2-Clause
"""Packet beats to bytes (the other way from :class:`BytesToBeats`)."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..packet.layouts import check_width, packet_beat

__all__ = ["BeatsToBytes"]


class BeatsToBytes(wiring.Component):
    """Splits packet beats ``width`` bytes wide into a byte stream.

    ``i`` carries :func:`packet_beat` beats with any further fields of `layout`
    beside them; ``o`` carries one byte per item (``data``), ``last`` on a
    packet's last byte, and those further fields: ``abort`` (if `layout` has it)
    only with ``last``, as the beat's layout gives it with the last beat; others
    with every byte. An empty packet (a beat with ``count == 0``) has no byte to
    carry ``last``, so it is taken and gives nothing.

    Throughput: one byte per cycle, across beats too (the next beat is taken as
    the held one's last byte goes). Latency: a beat's first byte is offered the
    cycle after the beat is taken.
    """

    def __init__(self, *, layout: data.StructLayout, width: int = 16):
        check_width("width", width)
        if not isinstance(layout, data.StructLayout) or \
                not set(packet_beat(width).members) <= set(layout.members):
            raise TypeError(f"layout must be a data.StructLayout with the fields of "
                            f"packet_beat({width}), not {layout!r}")
        self._width = width
        self._extra = {name: shape for name, shape in layout.members.items()
                       if name not in packet_beat(width).members}
        byte = data.StructLayout({"data": 8, "last": 1, **self._extra})
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(byte)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._width
        # The beat being split, held in a register: `i.ready` then depends on
        # registers only, not on the beat a block RAM is offering (whose read
        # address depends on `i.ready`: a path too long for 125 MHz on ECP5).
        beat = Signal.like(self.i.payload)
        full = Signal()
        final_index = Signal(range(width))           # of the held beat's last byte
        index = Signal(range(width))
        final = index == final_index
        lanes = Array(beat.data[8 * k:8 * (k + 1)] for k in range(width))
        done = full & ((beat.count == 0) | (self.o.ready & final))
        m.d.comb += [
            self.o.valid.eq(full & (beat.count != 0)),
            self.o.payload.data.eq(lanes[index]),
            self.o.payload.last.eq(beat.last & final),
            *(getattr(self.o.payload, name).eq(getattr(beat, name)) for name in self._extra),
            self.i.ready.eq(~full | done),
        ]
        if "abort" in self._extra:
            m.d.comb += self.o.payload.abort.eq(beat.abort & beat.last & final)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += index.eq(Mux(final, 0, index + 1))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [beat.eq(self.i.payload), full.eq(1),
                         final_index.eq(self.i.payload.count - 1), index.eq(0)]
        with m.Elif(done):
            m.d.sync += full.eq(0)
        return m
