# SPDX-License-Identifier: BSD-2-Clause
"""The forwarder's parser: what the classifier needs to know of an IP packet.

:class:`IpParser` reads a raw IP packet (IPv4 with options, or IPv6) as it
passes and hands the classifier one :data:`PARSED` record per packet, before
the packet's first beat: the addresses, the protocol, the ports, and for ESP
(protocol 50) and UDP-encapsulated ESP (RFC 3948: UDP with port 4500 at
either end, a non-zero SPI) the SPI. ``sim/model/forwarder.py: parse`` is the
same in Python.

What makes a packet ``malformed`` (the forwarder counts and drops it): not IP
version 4 or 6; IPv4 IHL below 5, total length below the IHL, a wrong header
checksum; IPv6 payload length 0 (jumbograms are not forwarded); a stream that
ends before the headers the record is read from (the IP header, and the
first 4 bytes after it, 12 for UDP) -- a packet whose stream ends later than
that but before its IP length is the engine's to call truncated, or the
egress's.

Not walked (the record says what the first header says): IPv6 extension
headers (``proto`` is the first next header; an ESP packet behind extension
headers is not recognised as ESP, the engine would refuse it anyway), IPv4
fragments are flagged (``fragment``) and not looked into past the IP header:
their ports and SPI are zero.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..engine.protocol import PROTO_ESP, PROTO_FRAGMENT, PROTO_UDP
from ..packet.layouts import big_endian, check_width, ones_fold, packet_beat
from ..packet.ipv4 import IPV6_HEADER_BYTES, header_words, ip_header_length
from ..packet.register import SkidBuffer

__all__ = ["PacketKind", "PARSED", "NATT_PORT", "IpParser"]

#: RFC 3948: UDP-encapsulated ESP and IKE share this port.
NATT_PORT = 4500
_PROTO_TCP = 6
_PROTO_SCTP = 132
#: Protocols whose first 4 bytes after the IP header are the two ports (RFC 4301 4.4.1.1).
_PORTED = (_PROTO_TCP, PROTO_UDP, _PROTO_SCTP)


class PacketKind(enum.Enum, shape=2):
    IP      = 0   # not ESP: selectors apply (outbound, or bypass / discard)
    ESP     = 1   # protocol 50
    UDP_ESP = 2   # RFC 3948 UDP-encapsulated ESP (non-zero SPI after the UDP header)


#: One per packet, before its first beat. Addresses in wire order (byte i at bits 8i):
#: an IPv4 address is the first 4 bytes, the rest zero. Numbers are numbers.
PARSED = data.StructLayout({
    "kind":      PacketKind,
    "malformed": 1,
    "ipv6":      1,
    "fragment":  1,     # IPv4 MF or a non-zero offset; IPv6: the first next header is 44
    "proto":     8,     # IPv4 protocol / IPv6 first next header
    "src":       128,
    "dst":       128,
    "sport":     16,    # TCP / UDP / SCTP, else 0
    "dport":     16,
    "spi":       32,    # ESP / UDP-ESP, else 0
    "length":    17,    # the IP length the header announces (IPv6: 40 + payload length)
})

#: A beat's eight 16-bit words add up to less than 2**19.
_BEAT_SUM_BITS = 19
#: The record is complete once this many bytes after the IP header have passed.
_L4_BYTES = 12


class IpParser(wiring.Component):
    """Parses each IP packet on ``i`` into one :data:`PARSED` on ``parsed`` and
    passes the packet on ``o`` unchanged (see the module docstring).

    The packet waits in a FIFO until its record is complete: at most 72 bytes
    in (a 60-byte IPv4 header and 12 bytes of UDP and SPI), so the record comes
    out with or before the packet's first beat; the classifier reads it while
    the first beat waits.

    Parameters
    ----------
    width : beat width in bytes (16).
    depth : beats of FIFO (at least the 5 beats of 72 bytes, plus one).
    extra : fields (a dict of name to shape, or a struct layout) that ride on
        every beat of ``i`` and ``o`` beside the :func:`packet_beat` ones and
        leave as they came (the egress's ``abort``); none by default.

    Latency: the record and the first beat are offered 5 cycles after the beat
    that completes the record came in (3 of them in the registers in front, for
    timing: one ends the producer's paths, two the checksum's adder tree). One
    beat per cycle.
    """

    def __init__(self, *, width: int = 16, depth: int = 8, extra=None):
        check_width("width", width)
        if width != 16:
            raise ValueError(f"width must be 16 (bytes) for now, not {width!r}")
        if type(depth) is not int or depth < 6:
            raise ValueError(f"depth must be an integer of at least 6 (beats), not {depth!r}")
        if extra is None:
            extra = {}
        elif isinstance(extra, data.StructLayout):
            extra = {name: field.shape for name, field in extra}
        elif not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict of field shapes or a struct layout, "
                            f"not {extra!r}")
        clash = set(extra) & set(packet_beat(width).members)
        if clash:
            raise ValueError(f"extra must not redefine the beat's own fields, "
                             f"not {sorted(clash)!r}")
        self._width, self._depth = width, depth
        self._layout = data.StructLayout({**packet_beat(width).members, **extra})
        super().__init__({
            "i":      In(stream.Signature(self._layout)),
            "o":      Out(stream.Signature(self._layout)),
            "parsed": Out(stream.Signature(PARSED)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._width
        layout = self._layout
        m.submodules.beats = beats = SyncFIFOBuffered(width=layout.size, depth=self._depth)
        m.submodules.records = records = SyncFIFO(width=PARSED.size, depth=self._depth)

        # Three registered stages before the record logic, for timing: the beat as it
        # came (the producer's logic ends there), then with its header checksum words
        # added in pairs, then with the pairs added up (the adder tree in two cycles:
        # whole, after the choice of a first beat's header words, it was the
        # parser's deepest path).
        m.submodules.arriving = arriving = SkidBuffer(layout)
        words = header_words(m, arriving.o.payload, arriving.o.valid & arriving.o.ready, width)
        pairs = len(words.pairs)
        m.submodules.paired = paired_beats = SkidBuffer(
            data.StructLayout({"beat": layout, "pair_sums": data.ArrayLayout(17, pairs)}))
        m.submodules.summed = summed_beats = SkidBuffer(
            data.StructLayout({"beat": layout, "header_sum": _BEAT_SUM_BITS}))
        wiring.connect(m, wiring.flipped(self.i), arriving.i)
        paired = paired_beats.o.payload
        m.d.comb += [
            paired_beats.i.payload.beat.eq(arriving.o.payload),
            *(paired_beats.i.payload.pair_sums[k].eq(pair) for k, pair in enumerate(words.pairs)),
            paired_beats.i.valid.eq(arriving.o.valid),
            arriving.o.ready.eq(paired_beats.i.ready),
            summed_beats.i.payload.beat.eq(paired.beat),
            summed_beats.i.payload.header_sum.eq(sum(paired.pair_sums[k] for k in range(pairs))),
            summed_beats.i.valid.eq(paired_beats.o.valid),
            paired_beats.o.ready.eq(summed_beats.i.ready),
        ]
        incoming = summed_beats.o

        beat = incoming.payload.beat
        octet = [beat.data[8 * k:8 * (k + 1)] for k in range(width)]
        word32 = Array(beat.data[32 * k:32 * (k + 1)] for k in range(width // 4))
        record = Signal(PARSED)
        offset = Signal(8)              # of this beat in its packet (saturates)
        done = Signal()                 # this packet's record is in `records`
        ihl_bytes = Signal(6)           # the IP header's length (IPv6: 40)
        total = Signal(22)              # IPv4 header words so far
        l4 = Signal(32)                 # the word right after the IP header
        l4_spi = Signal(32)             # the word 8 bytes after it (UDP-ESP's SPI)

        kept_version = Signal(4)
        taken = incoming.valid & incoming.ready
        first = beat.first
        at = Mux(first, 0, offset)
        version = Mux(first, octet[0][4:], kept_version)
        header_len = ip_header_length(beat, ihl_bytes)

        def word_at(position):
            """The 32-bit word at packet byte `position` (4-aligned) if this beat holds it."""
            return Mux(at[4:] == position[4:], word32[position[2:4]], 0)

        def holds(position):
            return at[4:] == position[4:]

        # ---- the record as the beats pass (the values of this beat folded in) ----------
        now = Signal(PARSED)
        now_l4 = Signal(32)
        now_spi = Signal(32)
        m.d.comb += [now.eq(Mux(first, 0, record)), now_l4.eq(Mux(first, 0, l4)),
                     now_spi.eq(Mux(first, 0, l4_spi))]
        with m.If(first):
            v6 = octet[0][4:] == 6
            m.d.comb += [
                now.ipv6.eq(v6),
                now.length.eq(Mux(v6, Cat(octet[5], octet[4]) + IPV6_HEADER_BYTES,
                                  Cat(octet[3], octet[2]))),
                now.proto.eq(Mux(v6, octet[6], octet[9])),
                now.fragment.eq(Mux(v6, octet[6] == PROTO_FRAGMENT,
                                    Cat(octet[7], octet[6][:6]) != 0)),
                now.src[:32].eq(Mux(v6, beat.data[64:96], beat.data[96:128])),
                now.src[32:64].eq(Mux(v6, beat.data[96:128], 0)),
            ]
        with m.Else():
            with m.If(record.ipv6):
                with m.If(at == 16):
                    m.d.comb += [now.src[64:128].eq(beat.data[:64]), now.dst[:64].eq(beat.data[64:])]
                with m.If(at == 32):
                    m.d.comb += now.dst[64:128].eq(beat.data[:64])
            with m.Else():
                with m.If(at == 16):
                    m.d.comb += now.dst[:32].eq(beat.data[:32])
        after = header_len
        with m.If(holds(after)):
            m.d.comb += now_l4.eq(word_at(after))
        with m.If(holds(after + 8)):
            m.d.comb += now_spi.eq(word_at(after + 8))

        # IPv4 header checksum over the IHL words.
        summed = Mux(first, 0, total) + incoming.payload.header_sum
        complete = at + width >= header_len + _L4_BYTES
        # The IP header is all in (a last beat holds only `count` bytes).
        header_in = at + Mux(beat.last, beat.count, width) >= header_len

        # ---- the record, finished ------------------------------------------------------
        out = Signal(PARSED)
        ported = Cat(now.proto == p for p in _PORTED).any() & ~now.fragment
        sport = Cat(now_l4[8:16], now_l4[:8])
        dport = Cat(now_l4[24:32], now_l4[16:24])
        udp_esp = ((now.proto == PROTO_UDP) & ~now.fragment
                   & ((sport == NATT_PORT) | (dport == NATT_PORT)) & (now_spi != 0))
        esp = (now.proto == PROTO_ESP) & ~now.fragment
        v4_bad = ((header_len < 20) | (now.length < header_len)
                  | header_in & (ones_fold(summed) != 0xffff) | ~header_in)
        v6_bad = now.length == IPV6_HEADER_BYTES
        m.d.comb += [
            out.eq(now),
            out.malformed.eq(Mux(version == 6, v6_bad, Mux(version == 4, v4_bad, 1))
                             | (beat.last & ~complete & ~header_in)),
            out.sport.eq(Mux(ported, sport, 0)),
            out.dport.eq(Mux(ported, dport, 0)),
            out.kind.eq(Mux(esp, PacketKind.ESP, Mux(udp_esp, PacketKind.UDP_ESP, PacketKind.IP))),
            out.spi.eq(Mux(esp, big_endian(now_l4, 4), Mux(udp_esp, big_endian(now_spi, 4), 0))),
        ]
        # Fields past the stream's end read as zero; only what the header says counts.
        write = taken & (first | ~done) & (complete | beat.last)
        m.d.comb += [
            beats.w_data.eq(beat),
            beats.w_en.eq(taken),
            incoming.ready.eq(beats.w_rdy & records.w_rdy),
            records.w_data.eq(out),
            records.w_en.eq(write),
        ]
        with m.If(taken):
            m.d.sync += [
                record.eq(now), l4.eq(now_l4), l4_spi.eq(now_spi), total.eq(summed),
                offset.eq(Mux(beat.last, 0, Mux(at >= 128, at, at + width))),
                done.eq(~beat.last & ((done & ~first) | write)),
            ]
            with m.If(first):
                m.d.sync += [ihl_bytes.eq(header_len), kept_version.eq(octet[0][4:])]

        # ---- out: a packet's record, then its beats -------------------------------------
        # `ahead`: the record of the packet at the head of `beats` has been taken.
        ahead = Signal()
        head = layout(beats.r_data)
        record_out = self.parsed.valid & self.parsed.ready
        first_out = self.o.valid & self.o.ready & head.first
        m.d.comb += [
            self.parsed.payload.eq(records.r_data),
            self.parsed.valid.eq(records.r_rdy & ~ahead),
            records.r_en.eq(record_out),
            self.o.payload.eq(head),
            self.o.valid.eq(beats.r_rdy & (ahead | ~head.first)),
            beats.r_en.eq(self.o.ready & (ahead | ~head.first)),
        ]
        with m.If(record_out):
            m.d.sync += ahead.eq(1)
        with m.Elif(first_out):
            m.d.sync += ahead.eq(0)
        return m
