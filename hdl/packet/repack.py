# SPDX-License-Identifier: BSD-2-Clause
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import check_width, packet_beat

__all__ = ["Repacker"]


class Repacker(wiring.Component):
    """Packs a packet stream into full beats of another width.

    Input beats may be partial anywhere in a packet (``count`` bytes each, any
    number from 0 to ``in_width``), except that a packet's last beat carries at
    least one byte unless the packet is empty (an output beat cannot be marked
    ``last`` after it has left). The bytes are concatenated and leave as
    beats of ``out_width`` bytes, all full but a packet's last one, with
    ``first``/``last`` marking the packet. Input ``first`` is not needed: a
    packet ends at an input beat with ``last``, and packets never share an
    output beat. Bytes past ``count`` on the input are ignored; on the output
    they are zero. An empty packet (a single ``count == 0`` beat with ``last``)
    leaves as one empty beat.

    This is the gearbox between beat widths (4-byte port beats to 16-byte AES
    blocks) and the aligner after a header of any length has been cut off or
    put in front (send it as a partial beat).

    Latency: a byte can leave in the cycle after it arrives. Throughput: one
    input and one output beat per cycle, sustained, when the widths are equal;
    otherwise the narrower side runs at one beat per cycle. The next packet's
    first beat enters in the cycle the last output beat of the previous one
    leaves, so back-to-back packets need no idle cycle. ``i.ready`` depends
    combinationally on ``o.ready`` (a beat can enter the room one leaves).
    """

    def __init__(self, *, in_width: int, out_width: int):
        self._in_width = check_width("in_width", in_width)
        self._out_width = check_width("out_width", out_width)
        super().__init__({
            "i": In(stream.Signature(packet_beat(in_width))),
            "o": Out(stream.Signature(packet_beat(out_width))),
        })

    def elaborate(self, platform):
        m = Module()
        w_in, w_out = self._in_width, self._out_width
        capacity = w_in + w_out
        # Invariant: the bytes of `buffer` at and past `fill` are zero.
        buffer = Signal(8 * capacity)
        fill = Signal(range(capacity + 1))
        ending = Signal()    # the packet's last input beat is in the buffer
        started = Signal()   # a beat of the packet in the buffer has left

        out_count = Mux(fill >= w_out, w_out, fill)
        m.d.comb += [
            self.o.valid.eq((fill >= w_out) | ending),
            self.o.payload.data.eq(buffer[:8 * w_out]),
            self.o.payload.count.eq(out_count),
            self.o.payload.first.eq(~started),
            self.o.payload.last.eq(ending & (fill <= w_out)),
        ]
        pop = self.o.valid & self.o.ready
        packet_done = pop & self.o.payload.last
        # Shifting by a whole beat also clears a partial last one: the bytes
        # past `fill` are zero.
        shifted = Mux(pop, buffer >> (8 * w_out), buffer)
        base = Signal.like(fill)
        m.d.comb += base.eq(fill - Mux(pop, out_count, 0))

        beat = self.i.payload
        m.d.comb += self.i.ready.eq((~ending | packet_done) & (base + w_in <= capacity))
        take = self.i.valid & self.i.ready

        in_bytes = Array(beat.data[8 * k:8 * (k + 1)] for k in range(w_in))
        index_bits = max(1, (w_in - 1).bit_length())
        written = []
        for position in range(capacity):
            offset = position - base
            mine = take & (position >= base) & (offset < beat.count)
            written.append(Mux(mine, in_bytes[offset[:index_bits]],
                               shifted[8 * position:8 * (position + 1)]))
        m.d.sync += [
            buffer.eq(Cat(written)),
            fill.eq(base + Mux(take, beat.count, 0)),
        ]
        with m.If(take & beat.last):
            m.d.sync += ending.eq(1)
        with m.Elif(packet_done):
            m.d.sync += ending.eq(0)
        with m.If(pop):
            m.d.sync += started.eq(~self.o.payload.last)
        return m
