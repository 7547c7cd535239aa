# SPDX-License-Identifier: BSD-2-Clause
"""The dispatcher: each classified packet to its engine's queue, the bypass or the host.

:class:`Dispatcher` takes the classifier's decision for a packet and then the
packet's beats, and sends the beats on

* ``engine[k]`` for ``ENGINE`` with engine ``k``, each beat carrying the SA
  slot (:func:`dispatch_beat`), so a packet and the slot it is for travel as
  one, through whatever merges the ports in front of an engine;
* ``bypass`` for ``BYPASS``; ``host`` (the exception queue) for ``HOST``;
* nowhere for ``DROP`` (the classifier counted why), nor for an engine the
  device does not have (``no_engine``: the host named one; fail closed).

A fence (a decision with ``fence`` set, which has no beats) becomes a
*marker* on ``engine[k]``: one beat with ``fence`` set, no bytes and the
fence's slot, behind every packet the dispatcher sent that engine before it.

:class:`EngineQueue` sits in front of each engine: a beat FIFO and a FIFO of
the packets' slots, so that an engine that is busy with a long packet holds
only its own queue, not the dispatcher, until that queue is full. Packets of
one SA keep their order: one SA lives on one engine, and every path from a
port to an engine is first in, first out.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..engine.engine import engine_meta
from ..packet.layouts import packet_beat
from .classifier import Decision, decision_layout

__all__ = ["dispatch_beat", "Dispatcher", "EngineQueue"]

_WIDTH = 16


def dispatch_beat(slots: int) -> data.StructLayout:
    """A packet beat on its way to an engine, with the SA slot it is for; or, with
    ``fence``, a marker (one beat, no bytes) for that slot."""
    return data.StructLayout({**packet_beat(_WIDTH).members, "slot": range(slots),
                              "fence": 1})


class Dispatcher(wiring.Component):
    """Steers each packet by its decision (see the module docstring).

    Parameters
    ----------
    engines, slots : as the :class:`Classifier`'s.

    Latency 0 (the outputs are the input, combinationally). One beat per cycle,
    and the next packet's decision is taken with the last beat of the one
    before, so there is no idle cycle between packets.
    """

    def __init__(self, *, engines: int, slots: int):
        if type(engines) is not int or not 1 <= engines <= 16:
            raise ValueError(f"engines must be an integer from 1 to 16, not {engines!r}")
        self._engines, self._slots = engines, slots
        beat = stream.Signature(packet_beat(_WIDTH))
        super().__init__({
            "decision":  In(stream.Signature(decision_layout(engines, slots))),
            "i":         In(beat),
            "engine":    Out(stream.Signature(dispatch_beat(slots))).array(engines),
            "bypass":    Out(beat),
            "host":      Out(beat),
            "bypassed":  Out(32),
            "to_host":   Out(32),
            "no_engine": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        engines = self._engines
        # Where the current packet goes: engine k is k, then the bypass, the host, nowhere.
        bypass, host, drop = engines, engines + 1, engines + 2
        route = Signal(range(engines + 3))
        slot = Signal(range(self._slots))
        active = Signal()
        marker = Signal()                        # the current "packet" is a fence's marker

        beat = self.i.payload
        outputs = [*self.engine, self.bypass, self.host]
        ready = Signal()
        with m.Switch(route):
            for index, port in enumerate(outputs):
                with m.Case(index):
                    m.d.comb += ready.eq(port.ready)
            with m.Default():
                m.d.comb += ready.eq(1)          # dropped: consumed at the line rate
        offered = Mux(marker, active, self.i.valid & active)
        for index, port in enumerate(outputs):
            m.d.comb += [port.payload.eq(beat), port.valid.eq(offered & (route == index))]
        for port in self.engine:
            m.d.comb += port.payload.slot.eq(slot)
            with m.If(marker):
                m.d.comb += [port.payload.data.eq(0), port.payload.count.eq(0),
                             port.payload.first.eq(1), port.payload.last.eq(1),
                             port.payload.fence.eq(1)]
        m.d.comb += self.i.ready.eq(active & ~marker & ready)
        moved = self.i.valid & self.i.ready
        marked = active & marker & ready

        # The next decision with the last beat of this packet: no bubble between packets.
        free = ~active | (moved & beat.last) | marked
        m.d.comb += self.decision.ready.eq(free)
        with m.If((moved & beat.last) | marked):
            m.d.sync += active.eq(0)
        with m.If(self.decision.valid & free):
            order = self.decision.payload
            m.d.sync += [active.eq(1), slot.eq(order.target.slot), marker.eq(order.fence)]
            with m.Switch(order.decision):
                with m.Case(Decision.ENGINE):
                    with m.If(order.target.engine < engines):
                        m.d.sync += route.eq(order.target.engine)
                    with m.Else():
                        m.d.sync += [route.eq(drop), self.no_engine.eq(self.no_engine + 1)]
                with m.Case(Decision.BYPASS):
                    m.d.sync += [route.eq(bypass), self.bypassed.eq(self.bypassed + 1)]
                with m.Case(Decision.HOST):
                    m.d.sync += [route.eq(host), self.to_host.eq(self.to_host + 1)]
                with m.Default():
                    m.d.sync += route.eq(drop)
        return m


class EngineQueue(wiring.Component):
    """The queue in front of one engine: ``depth`` beats and ``packets`` slots.

    Takes :func:`dispatch_beat` beats on ``i``; gives the engine the packets'
    beats on ``o`` and, independently, each packet's slot on ``meta`` (as
    :class:`EspEngine` takes them); a fence's marker goes to ``meta`` only (with
    ``fence`` set). A packet's first beat waits for room in both FIFOs. Latency
    1 cycle (the FIFOs' read registers); one beat per cycle.
    """

    def __init__(self, *, slots: int, depth: int = 64, packets: int = 16):
        for name, value, least in (("depth", depth, 4), ("packets", packets, 2)):
            if type(value) is not int or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, not {value!r}")
        self._slots, self._depth, self._packets = slots, depth, packets
        super().__init__({
            "i":    In(stream.Signature(dispatch_beat(slots))),
            "o":    Out(stream.Signature(packet_beat(_WIDTH))),
            "meta": Out(stream.Signature(engine_meta(slots))),
        })

    def elaborate(self, platform):
        m = Module()
        beat_layout = packet_beat(_WIDTH)
        m.submodules.beats = beats = SyncFIFOBuffered(width=beat_layout.size, depth=self._depth)
        m.submodules.slots = slots = SyncFIFOBuffered(width=engine_meta(self._slots).size,
                                                      depth=self._packets)
        meta_in = engine_meta(self._slots)(slots.w_data)
        beat = self.i.payload
        first = beat.first
        room = Mux(beat.fence, slots.w_rdy, beats.w_rdy & (slots.w_rdy | ~first))
        m.d.comb += [
            beats.w_data.eq(Cat(*(beat[name] for name in beat_layout.members))),
            beats.w_en.eq(self.i.valid & room & ~beat.fence),
            meta_in.slot.eq(beat.slot),
            meta_in.fence.eq(beat.fence),
            slots.w_en.eq(self.i.valid & room & first),
            self.i.ready.eq(room),
            self.o.payload.eq(beats.r_data),
            self.o.valid.eq(beats.r_rdy),
            beats.r_en.eq(self.o.ready),
            self.meta.payload.eq(slots.r_data),
            self.meta.valid.eq(slots.r_rdy),
            slots.r_en.eq(self.meta.ready),
        ]
        return m
