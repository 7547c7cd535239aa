# SPDX-License-Identifier: BSD-2-Clause
"""The Ethernet stage of a port that carries Ethernet frames (a per-port option).

:class:`EthernetStrip` takes frames (no FCS: the MAC has checked and removed
it) and hands on the IP packet inside: EtherType 0x0800 or 0x86DD, directly
or behind one 802.1Q tag (0x8100), with the 14- or 18-byte header cut off and
the packet realigned to the beat (a :class:`Repacker`). Bytes after the IP
packet (Ethernet padding of short frames) stay: the IP length says where the
packet ends and the engines go by it; a bypassed packet keeps them (the egress
does not trim).

Dropped and counted: other EtherTypes (``not_ip``; ARP and the like will go to
the host's exception queue once there is one), and frames that end before the
first byte of their payload (``runt``).
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..packet.layouts import packet_beat
from ..packet.repack import Repacker

__all__ = ["EthernetStrip"]

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6, _ETHERTYPE_VLAN = 0x0800, 0x86DD, 0x8100
_WIDTH = 16


class EthernetStrip(wiring.Component):
    """Ethernet frames in, IP packets out (see the module docstring).

    Latency: the Repacker's cycle; one beat per cycle (a tagged frame's first
    beat carries no payload, so it costs no output cycle either).
    """

    def __init__(self):
        super().__init__({
            "i":      In(stream.Signature(packet_beat(_WIDTH))),
            "o":      Out(stream.Signature(packet_beat(_WIDTH))),
            "not_ip": Out(32),
            "runt":   Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.repack = repack = Repacker(in_width=_WIDTH, out_width=_WIDTH)
        wiring.connect(m, repack.o, wiring.flipped(self.o))

        beat = self.i.payload
        octet = [beat.data[8 * k:8 * (k + 1)] for k in range(_WIDTH)]
        ethertype = Cat(octet[13], octet[12])
        inner_type = Cat(octet[1], octet[0])          # behind a tag: bytes 16..17

        def is_ip(value):
            return (value == _ETHERTYPE_IPV4) | (value == _ETHERTYPE_IPV6)

        feed = repack.i.payload
        taken = self.i.valid & self.i.ready

        def forward(skip):
            # This beat's bytes from `skip` on, moved down to lane 0.
            m.d.comb += [
                feed.data.eq(beat.data >> (8 * skip)),
                feed.count.eq(beat.count - skip),
                feed.first.eq(0),               # the Repacker finds packets by `last`
                feed.last.eq(beat.last),
                repack.i.valid.eq(self.i.valid),
                self.i.ready.eq(repack.i.ready),
            ]

        def drop(counter, at_end):
            # Counted once, then the rest of the frame (if this beat is not its last) skipped.
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += counter.eq(counter + 1)
                with m.If(at_end):
                    m.next = "FIRST"
                with m.Else():
                    m.next = "DROP"

        with m.FSM(name="ethernet"):
            with m.State("FIRST"):
                with m.If(self.i.valid & beat.last & (beat.count < 14)):
                    drop(self.runt, C(1))                  # not even an EtherType
                with m.Elif(self.i.valid & (ethertype == _ETHERTYPE_VLAN)):
                    with m.If(beat.last):
                        drop(self.runt, C(1))
                    with m.Else():
                        m.d.comb += self.i.ready.eq(1)     # nothing of the payload here
                        m.next = "TAGGED"
                with m.Elif(self.i.valid & is_ip(ethertype)):
                    with m.If(beat.last & (beat.count <= 14)):
                        drop(self.runt, C(1))
                    with m.Else():
                        forward(14)
                        with m.If(taken & ~beat.last):
                            m.next = "PAYLOAD"
                with m.Elif(self.i.valid):
                    drop(self.not_ip, beat.last)
            with m.State("TAGGED"):
                with m.If(self.i.valid & beat.last & (beat.count <= 2)):
                    drop(self.runt, C(1))
                with m.Elif(self.i.valid & ~is_ip(inner_type)):
                    drop(self.not_ip, beat.last)
                with m.Elif(self.i.valid):
                    forward(2)
                    with m.If(taken & beat.last):
                        m.next = "FIRST"
                    with m.Elif(taken):
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                forward(0)
                with m.If(taken & beat.last):
                    m.next = "FIRST"
            with m.State("DROP"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & beat.last):
                    m.next = "FIRST"
        return m
