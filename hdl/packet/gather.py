# SPDX-License-Identifier: BSD-2-Clause
"""Bytes to packet beats."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import check_width, packet_beat

__all__ = ["BytesToBeats"]


class BytesToBeats(wiring.Component):
    """Gathers a byte stream into packet beats ``width`` bytes wide.

    ``i`` carries one byte per item (``data``), ``last`` on a packet's last byte,
    and any further fields of ``layout`` (a packet's port, an ``abort`` flag...);
    ``o`` carries :func:`packet_beat` beats with those fields, taken from the byte
    that completes each beat (so the last beat has the last byte's ``abort``).
    Beats are full but for a packet's last.

    Throughput: one byte per cycle. Latency: a beat is offered the cycle after
    its last byte is taken; ``i`` waits only while a complete beat is not taken.
    """

    def __init__(self, *, layout: data.StructLayout, width: int = 16):
        check_width("width", width)
        if not isinstance(layout, data.StructLayout) or \
                not {"data", "last"} <= set(layout.members) or \
                data.Layout.cast(layout)["data"].width != 8:
            raise TypeError(f"layout must be a data.StructLayout with an 8-bit 'data' and a "
                            f"'last' field, not {layout!r}")
        self._width = width
        self._extra = {name: shape for name, shape in layout.members.items()
                       if name not in ("data", "last")}
        beat = data.StructLayout({**packet_beat(width).members, **self._extra})
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(beat)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._width
        gathered = Signal(8 * width)            # the bytes of the beat so far
        count = Signal(range(width))
        first = Signal(init=1)                  # the next beat starts a packet
        byte = self.i.payload
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with_byte = Signal.like(gathered)
            m.d.comb += with_byte.eq(gathered)
            with m.Switch(count):
                for n in range(width):
                    with m.Case(n):
                        m.d.comb += with_byte[8 * n:8 * (n + 1)].eq(byte.data)
            with m.If(byte.last | (count == width - 1)):
                # Bytes past the count stay zero, as packet beats have them.
                m.d.sync += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(with_byte),
                    self.o.payload.count.eq(count + 1),
                    self.o.payload.first.eq(first),
                    self.o.payload.last.eq(byte.last),
                    *(getattr(self.o.payload, name).eq(getattr(byte, name))
                      for name in self._extra),
                    gathered.eq(0),
                    count.eq(0),
                    first.eq(byte.last),
                ]
            with m.Else():
                m.d.sync += [gathered.eq(with_byte), count.eq(count + 1)]
        return m
