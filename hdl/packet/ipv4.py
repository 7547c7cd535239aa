# SPDX-License-Identifier: BSD-2-Clause
"""The IPv4 header checksum of each packet, known as soon as its header is in."""

from typing import NamedTuple

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .layouts import check_width, ones_fold, packet_beat, words16

__all__ = ["Ipv4HeaderCheck", "IPV6_HEADER_BYTES", "HeaderWords", "ip_header_bytes",
           "ip_header_length", "header_words"]

#: An IPv6 header's length in bytes (its IP header length, extension headers aside).
IPV6_HEADER_BYTES = 40


def ip_header_bytes(v6, ihl):
    """The IP header's length in bytes: 40 for IPv6 (`v6`), else the IHL field's words."""
    return Mux(v6, IPV6_HEADER_BYTES, Cat(C(0, 2), ihl))


def ip_header_length(beat, kept):
    """The IP header's length in bytes (IPv6: 40): from a first beat's first byte, or
    `kept` (what this gave for the packet's first beat) for any other beat."""
    octet0 = beat.data[:8]
    return Mux(beat.first, ip_header_bytes(octet0[4:] == 6, octet0[:4]), kept)


class HeaderWords(NamedTuple):
    """What :func:`header_words` gives for a beat."""
    pairs: list          # its 16-bit words, those outside the IP header as zero, added
                         # in pairs (the last alone when odd): 17-bit sums
    at: Value            # its byte offset in its packet (saturates at 128)
    header_len: Value    # its packet's IP header length in bytes (IPv6: 40)


def header_words(m, beat, taken, width) -> HeaderWords:
    """`beat`'s 16-bit words that lie within its packet's IP header (the IPv4 header
    checksum's words, a beat at a time; bytes past ``count`` must be zero) added in
    pairs, and where the beat and the header are, with the state it keeps in `m`
    advanced when `taken`. Which words of the next beat are header words is decided a
    beat ahead, so the adder tree starts from flip-flops (a first beat's from its first
    byte); its first level is the pairs, which a caller registers before adding them
    up, so the tree never takes one cycle whole."""
    words = words16(beat.data)
    offset = Signal(8)                      # of the beat in its packet (saturates)
    ihl_bytes = Signal(6)
    next_in_header = Signal(len(words))     # of a beat that is not a packet's first
    at = Mux(beat.first, 0, offset)
    header_len = ip_header_length(beat, ihl_bytes)
    following = Mux(beat.last, 0, Mux(at >= 128, at, at + width))
    version, ihl = beat.data[4:8], beat.data[:4]
    in_header = Mux(beat.first, Cat((version == 6) | (ihl > w // 2) for w in range(len(words))),
                    next_in_header)
    with m.If(taken):
        m.d.sync += [offset.eq(following),
                     next_in_header.eq(Cat(following + 2 * w < header_len
                                           for w in range(len(words))))]
        with m.If(beat.first):
            m.d.sync += ihl_bytes.eq(header_len)
    kept = [Mux(in_header[w], word, 0) for w, word in enumerate(words)]
    return HeaderWords([sum(kept[w:w + 2]) for w in range(0, len(kept), 2)], at, header_len)


class Ipv4HeaderCheck(wiring.Component):
    """Passes packets through a short FIFO and says, per packet, whether its IPv4
    header checksum is wrong: one item on ``verdict`` per packet, in order, high
    when it is wrong.

    A packet's verdict comes once its whole IPv4 header (IHL words, up to 60
    bytes) is in, usually while earlier packets are still leaving: whoever
    takes a packet's verdict before its first beat -- an engine's SA lookup,
    before it allocates a sequence number -- knows it in time, and can look the
    next packet up while the current one streams. Beats do not wait for
    verdicts: a consumer that needs one must take it first. Not IPv4 (the
    version nibble is not 4): never wrong. A packet that ends before its header
    does is wrong (it is malformed anyway).

    Parameters
    ----------
    width : beat width in bytes (16: the header takes up to four beats).
    depth : beats of FIFO, and verdicts; enough for the header of the next packet to
        be in while the current one leaves (8 keeps back-to-back packets back to back).

    Latency: a packet's verdict is there 3 cycles after the beat that completes its
    header came in (a beat's header words are added in pairs in the cycle it is
    taken, the pairs in the next, the packet's sum folded and checked in the third);
    a beat is on ``o`` the cycle after it came in. One beat per cycle.
    """

    def __init__(self, *, width: int = 16, depth: int = 8):
        check_width("width", width)
        if width < 4:
            raise ValueError(f"width must be at least 4 bytes, not {width!r}")
        if type(depth) is not int or depth < 60 // width + 2:
            raise ValueError(f"depth must be an integer of at least {60 // width + 2} "
                             f"(beats: a 60-byte header and one more), not {depth!r}")
        self._width, self._depth = width, depth
        super().__init__({
            "i":   In(stream.Signature(packet_beat(width))),
            "o":       Out(stream.Signature(packet_beat(width))),
            "verdict": Out(stream.Signature(1)),     # 1: the header checksum is wrong
        })

    def elaborate(self, platform):
        m = Module()
        width = self._width
        layout = packet_beat(width)
        m.submodules.beats = beats = SyncFIFOBuffered(width=layout.size, depth=self._depth)
        # One verdict per packet, in order. Beats may leave before their verdict is
        # taken; a full `verdicts` stops the input (`i.ready`), so none is lost.
        m.submodules.verdicts = verdicts = SyncFIFO(width=1, depth=self._depth)

        beat = self.i.payload
        decided = Signal()              # this packet's verdict is in `verdicts`
        is_v4 = Signal()
        first_v4 = beat.data[4:8] == 4
        v4 = Mux(beat.first, first_v4, is_v4)
        taken = self.i.valid & self.i.ready
        # (Its header length is 40 for IPv6, whose verdict is never wrong.)
        words = header_words(m, beat, taken, width)

        # Stage 1, as a beat is taken: its words inside the header (bytes past `count`
        # are zero) added in pairs, and whether the header is complete with it; stage
        # 2: the pairs added up; stage 3: the packet's running sum, folded and compared.
        # The adder tree and the fold were one path from the beat FIFO's output, and
        # then the tree alone, after the choice of a first beat's header words.
        flags = {"valid": 1, "first": 1, "last": 1, "v4": 1, "complete": 1, "short": 1}
        pairs = len(words.pairs)
        paired = Signal(data.StructLayout({**flags, "sums": data.ArrayLayout(17, pairs)}))
        m.d.sync += [
            paired.valid.eq(taken),
            paired.first.eq(beat.first),
            paired.last.eq(beat.last),
            paired.v4.eq(v4),
            paired.complete.eq(words.at + Mux(beat.last, beat.count, width) >= words.header_len),
            paired.short.eq(words.header_len < 20),
            *(paired.sums[k].eq(pair) for k, pair in enumerate(words.pairs)),
        ]
        staged = Signal(data.StructLayout({**flags, "sum": 20}))
        m.d.sync += [*(staged[name].eq(paired[name]) for name in flags),
                     staged.sum.eq(sum(paired.sums[k] for k in range(pairs)))]
        with m.If(taken & beat.first):
            m.d.sync += is_v4.eq(first_v4)

        total = Signal(22)              # the header's 16-bit words so far
        summed = Mux(staged.first, 0, total) + staged.sum
        wrong = ~staged.complete | (ones_fold(summed) != 0xffff) | staged.short
        undecided = staged.first | ~decided
        m.d.comb += [
            beats.w_data.eq(beat),
            beats.w_en.eq(taken),
            # Room for the verdicts of the beats in stages 2 and 3 as well.
            self.i.ready.eq(beats.w_rdy & (verdicts.level < self._depth - 2)),
            verdicts.w_data.eq(staged.v4 & wrong),
            verdicts.w_en.eq(staged.valid & undecided
                             & (~staged.v4 | staged.complete | staged.last)),
        ]
        with m.If(staged.valid):
            m.d.sync += [
                total.eq(summed),
                decided.eq(~staged.last & (decided & ~staged.first | verdicts.w_en)),
            ]

        m.d.comb += [
            self.o.payload.eq(beats.r_data),
            self.o.valid.eq(beats.r_rdy),
            beats.r_en.eq(self.o.ready),
            self.verdict.payload.eq(verdicts.r_data),
            self.verdict.valid.eq(verdicts.r_rdy),
            verdicts.r_en.eq(self.verdict.ready),
        ]
        return m
