# SPDX-License-Identifier: BSD-2-Clause
"""The UDP checksum of outbound UDP-encapsulated ESP over IPv6.

RFC 3948 sends a zero UDP checksum over IPv4, but RFC 8200 (8.1) forbids a zero
checksum over IPv6 outside the tunnels of RFC 6935, so the model (and Linux, and
scapy) fill in a real one. It covers the whole datagram -- the ciphertext and
the ICV -- and sits in front of them, so a cut-through encapsulator cannot write
it: :class:`Udp6ChecksumFill` holds such a packet until its last byte has
passed, then sends it with the checksum in place. Every other packet goes
through it cut-through, in order.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..gcm.layouts import BLOCK_BYTES
from ..packet.ipv4 import IPV6_HEADER_BYTES
from ..packet.layouts import big_endian, ones_fold, packet_beat, words16
from .protocol import ESP_HEADER_BYTES, ESP_TRAILER_BYTES, ICV_BYTES, PROTO_UDP, UDP_HEADER_BYTES

__all__ = ["UDP6_FILL_BEATS", "udp6_fill_limit", "FILL_IN", "FILL_OUT", "Udp6ChecksumFill"]

#: Beats a :class:`Udp6ChecksumFill` holds by default (2 KiB).
UDP6_FILL_BEATS = 128

#: Where the UDP checksum of a packet with a plain 40-byte IPv6 header sits.
_CHECKSUM_AT = IPV6_HEADER_BYTES + 6
#: Most an ESP packet adds to its cleartext packet: (tunnel) an outer IPv6 header, the
#: UDP header, the ESP header and IV, 3 bytes of padding, the trailer, the ICV.
_GROWTH = (IPV6_HEADER_BYTES + UDP_HEADER_BYTES + ESP_HEADER_BYTES + 3 + ESP_TRAILER_BYTES
           + ICV_BYTES)

#: One beat in: the packet beat, ``fill`` (this packet needs its checksum; the same on
#: every beat of a packet) and ``flag`` (carried to the output beat, for the caller).
_BEAT = {name: field.shape for name, field in packet_beat(BLOCK_BYTES)}
FILL_IN = data.StructLayout({**_BEAT, "fill": 1, "flag": 1})
FILL_OUT = data.StructLayout({**_BEAT, "flag": 1})


def udp6_fill_limit(beats: int = UDP6_FILL_BEATS) -> int:
    """The longest cleartext packet (bytes) whose ESP packet a fill stage of `beats`
    beats holds whole: an SA table refuses longer ones that need the checksum."""
    return BLOCK_BYTES * beats - _GROWTH


class Udp6ChecksumFill(wiring.Component):
    """A FIFO of ``beats`` 16-byte beats in front of the egress. A packet marked
    ``fill`` (an IPv6 packet with a plain 40-byte header and the UDP header right
    after it, checksum 0) is summed as it goes in -- the pseudo-header (addresses,
    UDP length, next header 17) and the datagram -- and leaves only once it is
    all in, with the checksum in bytes 46..47 (0 sent as 0xffff, RFC 768). The
    others leave as soon as they are in, behind whatever is ahead of them.

    A ``fill`` packet must fit (``beats`` beats; :func:`udp6_fill_limit` for the
    cleartext length that guarantees it), or it would never leave.

    Latency: 2 cycles for a cut-through packet, its last beat's arrival + 4 for a
    filled one (its checksum is summed and folded in three steps). One beat per cycle
    in and out.
    """

    def __init__(self, *, beats: int = UDP6_FILL_BEATS):
        if type(beats) is not int or beats < 8 or beats & (beats - 1):
            raise ValueError(f"beats must be a power of two of at least 8, not {beats!r}")
        self._beats = beats
        super().__init__({
            "i": In(stream.Signature(FILL_IN)),
            "o": Out(stream.Signature(FILL_OUT)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rows = rows = SyncFIFOBuffered(width=FILL_IN.size, depth=self._beats)
        # One checksum per filled packet that is all in. A filled packet has at least
        # three beats, so a quarter of the rows seldom fills; when it does, the input
        # waits.
        m.submodules.sums = sums = SyncFIFO(width=16, depth=max(4, self._beats // 4))

        # ---- in: every beat into the rows; a filled packet's words summed -------------
        # Three steps a cycle apart, so that the adder tree, the running total and the
        # fold are not one path: a beat's words are summed as it is taken; the sums are
        # added up; after a filled packet's last beat, its total is folded into `sums`.
        beat = self.i.payload
        words = words16(beat.data)
        taken = self.i.valid & self.i.ready
        # Beat 0: the payload length (= the UDP length: no extension header) and the
        # source address's first half; the next-header word of the pseudo-header.
        beat_sum = Signal(20)
        beat_first = Signal()
        beat_in = Signal()
        beat_closes = Signal()   # the last beat of a filled packet
        m.d.sync += [
            beat_sum.eq(Mux(beat.first, words[2] + sum(words[4:]) + PROTO_UDP, sum(words))),
            beat_first.eq(beat.first),
            beat_in.eq(taken),
            beat_closes.eq(taken & beat.fill & beat.last),
        ]
        total = Signal(32)
        summed = Signal()        # `total` is a filled packet's, all of it
        m.d.sync += summed.eq(beat_closes)
        with m.If(beat_in):
            m.d.sync += total.eq(Mux(beat_first, 0, total) + beat_sum)
        checksum = ~ones_fold(total)[:16]
        # Up to two checksums are on their way to `sums` behind the beat being taken.
        room = sums.level < sums.depth - 2
        m.d.comb += [
            rows.w_data.eq(beat),
            rows.w_en.eq(taken),
            self.i.ready.eq(rows.w_rdy & room),
            sums.w_data.eq(Mux(checksum == 0, 0xffff, checksum)),
            sums.w_en.eq(summed),
        ]

        # ---- out: a filled packet waits for its checksum ------------------------------
        row = FILL_IN(rows.r_data)
        index = Signal(range(self._beats + 1))      # of the beat on `o` in its packet
        lane = _CHECKSUM_AT % BLOCK_BYTES
        here = row.fill & (index == _CHECKSUM_AT // BLOCK_BYTES)
        out = Signal(8 * BLOCK_BYTES)
        m.d.comb += out.eq(row.data)
        with m.If(here):
            m.d.comb += out[8 * lane:8 * (lane + 2)].eq(big_endian(sums.r_data, 2))
        go = rows.r_rdy & (~row.fill | sums.r_rdy)
        sent = self.o.valid & self.o.ready
        m.d.comb += [
            self.o.payload.data.eq(out),
            self.o.payload.count.eq(row.count),
            self.o.payload.first.eq(row.first),
            self.o.payload.last.eq(row.last),
            self.o.payload.flag.eq(row.flag),
            self.o.valid.eq(go),
            rows.r_en.eq(sent),
            sums.r_en.eq(sent & row.fill & row.last),
        ]
        with m.If(sent):
            m.d.sync += index.eq(Mux(row.last, 0, index + 1))
        return m
