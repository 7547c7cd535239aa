# SPDX-License-Identifier: BSD-2-Clause
"""Several packet streams into one, a whole packet at a time."""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import check_width, packet_beat

__all__ = ["PacketMerger"]


class PacketMerger(wiring.Component):
    """Merges ``count`` packet streams (``i[k]``) into ``o``, never interleaving
    the beats of two packets. Between packets the inputs take turns (round
    robin from the one after the last served), so none waits more than
    ``count - 1`` packets. ``source`` says which input the beat on ``o`` comes
    from (valid with ``o.valid``).

    The beats are :func:`packet_beat` ``width`` bytes wide, or of ``layout``
    (any layout with a ``last`` field: a beat with its packet's metadata).

    Latency 0 (``o`` is the chosen input, combinationally); one beat per
    cycle, with no idle cycle between packets.
    """

    def __init__(self, *, count: int, width: int | None = None, layout: data.Layout | None = None):
        if (width is None) == (layout is None):
            raise TypeError("give a beat width or a beat layout, not both nor neither")
        if width is not None:
            layout = packet_beat(check_width("width", width))
        elif not isinstance(layout, data.StructLayout) or "last" not in layout.members:
            raise TypeError(f"layout must be a data.StructLayout with a 'last' field, not {layout!r}")
        if type(count) is not int or count < 2:
            raise ValueError(f"count must be an integer of at least 2, not {count!r}")
        self._count = count
        beat = stream.Signature(layout)
        super().__init__({
            "i":      In(beat).array(count),
            "o":      Out(beat),
            "source": Out(range(count)),
        })

    def elaborate(self, platform):
        m = Module()
        count = self._count
        locked = Signal()                      # inside a packet of `current`
        current = Signal(range(count))
        pick = Signal(range(count))
        # Round robin: the first valid input after `current`, `current` itself last.
        for offset in reversed(range(1, count + 1)):
            index = (current + offset) % count
            with m.If(Array(port.valid for port in self.i)[index]):
                m.d.comb += pick.eq(index)
        chosen = Mux(locked, current, pick)
        m.d.comb += self.source.eq(chosen)
        with m.Switch(chosen):
            for k, port in enumerate(self.i):
                with m.Case(k):
                    m.d.comb += [self.o.payload.eq(port.payload), self.o.valid.eq(port.valid),
                                 port.ready.eq(self.o.ready)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [current.eq(chosen), locked.eq(~self.o.payload.last)]
        return m
