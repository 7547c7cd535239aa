# SPDX-License-Identifier: BSD-2-Clause
"""One ESP engine: SA table and the ESP data path.

Built so far: the outbound direction. Each packet comes with a ``meta`` beat
naming its SA slot (the classifier's answer); with its length from the first
beat's IP header, the SA table checks the SA, allocates the sequence number
and accounts the packet (lifetimes, events); the packet is then encapsulated
(:class:`EspEncap`) or discarded with the drop counted (in the table's
counters, or the engine's ``no_sa``). A packet for an inbound SA is discarded
and counted in ``inbound_dropped``: the inbound path is not built yet.

Throughput: the SA table needs 3 cycles per packet, and the dispatcher looks
up the next packet once the current one has entered the encapsulator, so the
data path sets the rate (``bench/engine.py``).
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..gcm.layouts import BLOCK_BYTES
from ..packet.layouts import ip_length, packet_beat
from .encap import EspEncap
from .sa import REPLAY_WINDOW
from .sa_table import Action, SaTable

__all__ = ["EspEngine", "engine_meta"]


def engine_meta(slots: int) -> data.StructLayout:
    """Per-packet metadata an engine takes with each packet."""
    return data.StructLayout({"slot": range(slots)})


class EspEngine(wiring.Component):
    """An ESP engine (see the module docstring).

    Parameters
    ----------
    profile : the GCM datapath profile, ``"compact"`` or ``"fast"``.
    slots : SA slots (a power of two; at least 16 on iCE40, 256 on ECP5).
    window : the largest replay window (sets the SA record layout).
    """

    def __init__(self, *, profile="compact", slots: int = 16, window: int = REPLAY_WINDOW):
        self._table = SaTable(slots=slots, window=window)
        self._encap = EspEncap(profile=profile)
        self._slots = slots
        table = self._table.signature.members
        super().__init__({
            "meta":       In(stream.Signature(engine_meta(slots))),
            "i":          In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o":          Out(stream.Signature(packet_beat(BLOCK_BYTES))),
            "host":       table["host"],
            "host_reply": table["host_reply"],
            "events":     table["events"],
            "no_sa":      Out(32),
            "inbound_dropped": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = self._table
        m.submodules.encap = encap = self._encap
        wiring.connect(m, wiring.flipped(self.host), table.host)
        wiring.connect(m, table.host_reply, wiring.flipped(self.host_reply))
        wiring.connect(m, table.events, wiring.flipped(self.events))
        wiring.connect(m, encap.o, wiring.flipped(self.o))
        m.d.comb += self.no_sa.eq(table.no_sa)

        beat = self.i.payload
        length = ip_length(beat.data)    # the cleartext length, from the first beat

        with m.FSM(name="dispatch"):
            with m.State("LOOKUP"):
                m.d.comb += [
                    table.request.payload.slot.eq(self.meta.payload.slot),
                    table.request.payload.bytes.eq(length),
                    table.request.valid.eq(self.meta.valid & self.i.valid),
                    self.meta.ready.eq(table.request.ready & self.i.valid),
                ]
                with m.If(self.meta.valid & self.i.valid & table.request.ready):
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                reply = table.reply.payload
                m.d.comb += encap.job.payload.eq(reply.job)
                with m.If(table.reply.valid):
                    with m.If(reply.action == Action.PROTECT):
                        # The encapsulator takes a job together with a look at the
                        # packet's first beat.
                        wiring.connect(m, wiring.flipped(self.i), encap.i)
                        m.d.comb += [encap.job.valid.eq(1),
                                     table.reply.ready.eq(encap.job.ready)]
                        with m.If(encap.job.ready):
                            m.next = "PASS"
                    with m.Else():
                        m.d.comb += table.reply.ready.eq(1)
                        with m.If(reply.action == Action.INBOUND):
                            m.d.sync += self.inbound_dropped.eq(self.inbound_dropped + 1)
                        m.next = "DISCARD"
            with m.State("PASS"):
                wiring.connect(m, wiring.flipped(self.i), encap.i)
                with m.If(self.i.valid & self.i.ready & beat.last):
                    m.next = "LOOKUP"
            with m.State("DISCARD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & beat.last):
                    m.next = "LOOKUP"

        return m
