# SPDX-License-Identifier: BSD-2-Clause
"""The engine fabric: what engines send each other, and the link that carries it.

An SA's live state goes from one engine to another as a short message of
:func:`fabric_beat` beats: a ``HEADER`` beat with the SA record (key and salt
included: they never leave the chip) and its counters, then for an inbound SA
every word of its anti-replay ring (``RING``) and its head row (``HEAD``), the
last beat marked ``last``. :class:`FabricLink` carries each engine's messages
to the engine they name, a message at a time.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..engine.replay import ring_words
from ..engine.sa import SA_COUNTERS
from ..engine.sa_table import control_layout
from ..packet.merge import PacketMerger

__all__ = ["MAX_ENGINES", "BeatKind", "fabric_beat", "FabricLink"]

#: The most engines a fabric links (an engine number's width).
MAX_ENGINES = 16


class BeatKind(enum.Enum, shape=2):
    HEADER = 0   # record and counters, for slot `slot` of engine `engine`
    RING   = 1   # ring word `index` of the SA's replay window
    HEAD   = 2   # the window's head row: top, word, valid


def fabric_beat(slots: int, window: int) -> data.StructLayout:
    """One beat of an engine-to-engine message (see the module docstring)."""
    words = ring_words(window)
    return data.StructLayout({
        "engine":   range(MAX_ENGINES),      # the engine it is for
        "slot":     range(slots),            # and the slot there
        "kind":     BeatKind,
        "record":   control_layout(window),  # HEADER
        "counters": SA_COUNTERS,             # HEADER
        "index":    range(words),            # RING
        "top":      64,                      # HEAD
        "word":     32,                      # RING, HEAD
        "valid":    words,                   # HEAD
        "last":     1,
    })


class FabricLink(wiring.Component):
    """Carries each of ``engines`` engines' messages (``i[k]``) to the engine they
    name (``o[engine]``), a whole message at a time; messages for one engine take
    turns (round robin), each engine's own stay in order. A message for an engine
    the link does not have is taken and dropped (``misrouted``).

    Latency 0 (combinational); one beat per cycle per destination.
    """

    def __init__(self, *, engines: int, slots: int, window: int):
        if type(engines) is not int or not 1 <= engines <= MAX_ENGINES:
            raise ValueError(f"engines must be an integer from 1 to {MAX_ENGINES}, "
                             f"not {engines!r}")
        self._engines = engines
        self._layout = fabric_beat(slots, window)
        beat = stream.Signature(self._layout)
        super().__init__({
            "i":         In(beat).array(engines),
            "o":         Out(beat).array(engines),
            "misrouted": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        engines = self._engines
        # Each destination merges the sources whose current beat is for it.
        inputs = [[stream.Signature(self._layout).create() for _ in range(engines)]
                  for _ in range(engines)]
        for dest in range(engines):
            if engines == 1:
                source = inputs[dest][0]
                wiring.connect(m, source, wiring.flipped(self.o[dest]))
                continue
            m.submodules[f"to{dest}"] = merger = PacketMerger(layout=self._layout, count=engines)
            for src in range(engines):
                wiring.connect(m, inputs[dest][src], merger.i[src])
            wiring.connect(m, merger.o, wiring.flipped(self.o[dest]))
        lost = []
        for src, port in enumerate(self.i):
            target = port.payload.engine
            taken = []
            for dest in range(engines):
                lane = inputs[dest][src]
                m.d.comb += [lane.payload.eq(port.payload),
                             lane.valid.eq(port.valid & (target == dest))]
                taken.append(lane.ready & (target == dest))
            nowhere = target >= engines
            m.d.comb += port.ready.eq(Cat(*taken).any() | nowhere)
            lost.append(port.valid & nowhere & port.payload.last)
        m.d.sync += self.misrouted.eq(self.misrouted + sum(lost))
        return m
