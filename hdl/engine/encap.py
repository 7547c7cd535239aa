# SPDX-License-Identifier: BSD-2-Clause
"""ESP encapsulation (RFC 4303, AES-GCM per RFC 4106): the outbound data path
of an engine, behind the SA lookup.

What it does per packet, byte for byte as ``sim/model/esp.py`` (``_outbound``):

* text = the inner packet (tunnel mode) or its IP payload (transport mode),
  then RFC 4303 padding ``1, 2, ...`` to a multiple of 4, the pad length and
  the next header (tunnel: 4 for IPv4, 41 for IPv6; transport: the packet's
  own protocol);
* AAD = SPI || seq (or SPI || seq_hi || seq_lo with ESN), nonce = salt || IV,
  IV = the 64-bit sequence number (so a (key, IV) pair never repeats);
* out, tunnel mode: an outer IPv4 (IHL 5, TOS copied, ID = seq low 16 bits,
  DF copied from an inner IPv4 header and set for IPv6, TTL 64, checksum) or
  IPv6 (traffic class copied, hop limit 64) header from the SA's endpoints;
  transport mode: the packet's own header (IPv4 options kept) with its length,
  protocol and IPv4 checksum rewritten; then an optional RFC 3948 UDP header
  (checksum 0, over IPv4 only), SPI, seq, IV, ciphertext, 16-byte ICV.

Not built here yet (issue 3): IPv6 extension headers in transport mode, UDP
encapsulation with an IPv6 header (its checksum covers the ciphertext, so it
needs a store-and-forward buffer), checks of the inner packet (its IP length
and checksum are trusted: the SA table in front of this block will validate
them), sequence allocation and lifetimes (the job brings the sequence number).

Interface: one :data:`ENCAP_JOB` per packet on ``job``, the inner packet on
``i`` as 16-byte beats (full but the last), the ESP packet on ``o`` (16-byte
beats, full but the last).
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..gcm.core import GcmCore
from ..gcm.layouts import BLOCK_BYTES, GCM_OUTPUT
from ..packet.ipv4 import ip_header_bytes
from ..packet.layouts import big_endian, ip_length, octets, ones_fold, packet_beat, words16
from ..packet.register import SkidBuffer, cut
from ..packet.repack import Repacker
from .protocol import (ESP_HEADER_BYTES, ICV_BYTES, OUTER_TTL, PROTO_ESP, PROTO_IPV4, PROTO_IPV6,
                       PROTO_UDP)
from .sa import SA_NATT, SA_TUNNEL, Encap, IpVersion, Mode

__all__ = ["ENCAP_JOB", "EspEncap"]

#: What the SA table hands the encapsulator with each packet.
ENCAP_JOB = data.StructLayout({
    "mode":    Mode,
    "key":     256,
    "key_256": 1,
    "salt":    32,
    "spi":     32,
    "seq":     64,     # the sequence number of this packet (already allocated)
    "esn":     1,
    "tunnel":  SA_TUNNEL,
    "natt":    SA_NATT,
})

#: The longest IP header kept in transport mode: IPv4 with 40 bytes of options.
_MAX_HEADER_BEATS = 60 // BLOCK_BYTES + 1

#: Descriptors queued for the output side with overlap (*fast*): the packet being sent
#: and two whose headers are complete. The core's latency (about 50 cycles) is longer
#: than a short packet, so with only the one being sent the input side waited for it.
_OVERLAP_DESCRIPTORS = 3

#: Per packet state: what the output side needs, filled by the input side.
_DESC = data.StructLayout({
    "mode":        Mode,
    "spi":         32,
    "seq":         64,
    "tunnel":      SA_TUNNEL,
    "natt":        SA_NATT,
    "inner_v6":    1,
    "inner_tos":   8,
    "inner_df":    1,
    "inner_ttl":   8,
    "header_len":  range(61),   # the kept header (transport), 0 in tunnel mode
    "payload_len": 16,          # bytes after the kept header: the text before its trailer
    "pad_len":     2,
    "header_sum":  24,          # transport IPv4: header words but length and checksum
    "header":      data.ArrayLayout(128, _MAX_HEADER_BEATS),
    # Worked out by the input side a cycle after it takes the job (see `sized_in`):
    "text_len":    16,          # the text with its trailer
    "after_ip":    16,          # bytes after the (outer or kept) IP header
    "v4_total":    16,          # tunnel mode: the outer IPv4 total length
    "new_total":   16,          # transport mode: the rewritten IPv4 total length
    "v4_sum":      20,          # tunnel mode: the outer IPv4 header's words but its length
})




class _TrailerMerge(wiring.Component):
    """Appends the RFC 4303 trailer to a text stream of 16-byte beats (full but the last).

    The trailer -- pad bytes 1, 2, ..., the pad length, the next header --
    goes after the last beat's ``count`` bytes, in that beat or, if it does not
    fit, partly in one more. ``done`` pulses when the last beat has left.
    Latency 0 (combinational), one beat per cycle; one extra cycle per packet
    when the trailer spills.
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o": Out(stream.Signature(128)),
            "pad_len": In(2),
            "next_header": In(8),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        trailer = Signal(8 * 5)
        with m.Switch(self.pad_len):
            for pad in range(4):
                with m.Case(pad):
                    m.d.comb += trailer.eq(Cat(*(Const(k + 1, 8) for k in range(pad)),
                                               Const(pad, 8), self.next_header))
        extended = Signal(8 * 2 * BLOCK_BYTES)
        m.d.comb += extended.eq(beat.data | (trailer << (8 * beat.count)))
        fits = beat.count + self.pad_len + 2 <= BLOCK_BYTES
        spill = Signal(8 * BLOCK_BYTES)
        spilling = Signal()
        with m.If(spilling):
            m.d.comb += [self.o.payload.eq(spill), self.o.valid.eq(1)]
            with m.If(self.o.ready):
                m.d.comb += self.done.eq(1)
                m.d.sync += spilling.eq(0)
        with m.Else():
            m.d.comb += [
                self.o.payload.eq(Mux(beat.last, extended[:8 * BLOCK_BYTES], beat.data)),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            with m.If(self.i.valid & self.o.ready & beat.last):
                with m.If(fits):
                    m.d.comb += self.done.eq(1)
                with m.Else():
                    m.d.sync += [spill.eq(extended[8 * BLOCK_BYTES:]), spilling.eq(1)]
        return m


class EspEncap(wiring.Component):
    """ESP encapsulation of one packet at a time (see the module docstring).

    Parameters
    ----------
    profile : the GCM core's datapath profile (``"compact"`` or ``"fast"``).

    Data flow: the *splitter* cuts each input beat into header bytes (transport
    mode: kept in a small store for the output) and text bytes, which a
    :class:`Repacker` realigns into blocks and :class:`_TrailerMerge` completes;
    the GCM core encrypts them after the AAD block; the *output* state machine
    sends the header (constructed or rewritten), UDP and ESP headers, the
    ciphertext and the ICV through a second :class:`Repacker` that packs the
    partial beats.

    Latency and throughput: the header leaves 4--7 cycles after the job and
    the first beat are there; the text runs at the GCM core's block rate; a
    packet costs the core's fixed cycles plus about 7 more (taking the job, the
    Repacker's cycle, the trailer, the skid buffers in front of and behind the
    core). On *fast* up to four packets are in flight: the input side splits
    packet N+3 while packets N+1 and N+2 wait in the descriptor queue and the output
    side sends packet N; on *compact* the next job waits for the ICV
    (``bench/engine.py`` measures it).
    """

    def __init__(self, *, profile="compact"):
        self._gcm = GcmCore(profile)
        # Overlap packets where the core is fast enough for it to matter; on the
        # compact profile the core's 16 cycles per block hide the gap, and the
        # second descriptor would cost a thousand flip-flops.
        self._overlap = self._gcm.profile.aes == "pipeline"
        super().__init__({
            "job": In(stream.Signature(ENCAP_JOB)),
            "i":   In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o":   Out(stream.Signature(packet_beat(BLOCK_BYTES))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.gcm = gcm = self._gcm
        m.submodules.text = text = Repacker(in_width=BLOCK_BYTES, out_width=BLOCK_BYTES)
        m.submodules.trailer = trailer = _TrailerMerge()
        m.submodules.out = out = Repacker(in_width=BLOCK_BYTES, out_width=BLOCK_BYTES)
        wiring.connect(m, text.o, trailer.i)
        # Skid buffers on both sides of the core and at the output, so that the
        # consumer's ready does not run through the output Repacker, the core (the
        # compact one holds its AES unit on it) and the text Repacker into the
        # splitter in one cycle: that chain was the engine's deepest path.
        m.submodules.to_gcm = to_gcm = SkidBuffer(128)
        m.submodules.from_gcm = from_gcm = SkidBuffer(GCM_OUTPUT)
        wiring.connect(m, to_gcm.o, gcm.data_in)
        wiring.connect(m, gcm.data_out, from_gcm.i)
        cut(m, "to_out", SkidBuffer, out.o, wiring.flipped(self.o))

        def be(value, nbytes):
            return big_endian(value, nbytes)

        def text_length(d):
            return d.payload_len + d.pad_len + 2

        # The input side works on `cur`; the output side on `desc`: with overlap the
        # head of a queue of descriptors that `cur` joins once its header is complete,
        # without it `cur` itself.
        # What only the input side needs; the rest of the job goes into `cur`.
        cipher = Signal(data.StructLayout({"key": 256, "key_256": 1, "salt": 32, "esn": 1}))
        cur = Signal(_DESC)
        if self._overlap:
            m.submodules.descriptors = descriptors = SyncFIFOBuffered(
                width=_DESC.size, depth=_OVERLAP_DESCRIPTORS)
            desc = _DESC(descriptors.r_data)
            m.d.comb += descriptors.w_data.eq(cur)
        else:
            desc = cur
        pushed = Signal()        # `cur` has been handed to the output side
        sized_in = Signal()      # the lengths and `v4_sum` of `cur` are in
        out_busy = Signal()      # the output side has not sent the ICV of `desc` yet
        header_kept = Signal()   # every header byte of `cur` is in `cur.header`
        position = Signal(16)    # byte offset of the input beat in the packet
        header_left = Signal(range(61))  # header bytes of `cur` from that beat on
        inner_proto = Signal(8)  # transport: the protocol the header announced

        def outer_proto(natt):
            return Mux(natt.encap == Encap.UDP, C(PROTO_UDP, 8), C(PROTO_ESP, 8))

        def outer_flags(d):
            return Mux(d.inner_df, C(0x40, 8), C(0, 8))

        def sizes(d):
            """The lengths and the outer IPv4 header's fixed words' sum of `d`, from the
            fields the input side takes with the job: worked out in its first cycle
            after that, so that the output side only folds the checksums."""
            trailer_and_headers = 2 + ESP_HEADER_BYTES + ICV_BYTES
            after_ip = (d.payload_len + d.pad_len
                        + Mux(d.natt.encap == Encap.UDP, trailer_and_headers + 8,
                              trailer_and_headers))
            src, dst = d.tunnel.src, d.tunnel.dst
            v4_words = [Const(0x4500, 16) | d.inner_tos, d.seq[:16], Cat(Const(0, 8), outer_flags(d)),
                        Const(OUTER_TTL << 8, 16) | outer_proto(d.natt),
                        src[16:32], src[:16], dst[16:32], dst[:16]]
            return {
                "text_len": text_length(d),
                "after_ip": after_ip,
                "v4_total": after_ip + 20,
                "new_total": d.header_len + after_ip,
                "v4_sum": sum(v4_words[1:], v4_words[0]),
            }

        # ---- the inner header, from the first beat ---------------------------
        first = octets(self.i.payload.data)
        is_v6 = first[0][4:] == 6
        first_len = ip_length(self.i.payload.data)
        first_ttl = Mux(is_v6, first[7], first[8])
        first_transport = self.job.payload.mode == Mode.TRANSPORT
        first_header_len = Mux(first_transport, ip_header_bytes(is_v6, first[0][:4]), 0)
        first_payload_len = first_len - first_header_len

        # ---- input side: command, AAD, then the splitter ------------------------
        cmd = gcm.cmd.payload
        m.d.comb += [
            cmd.key.eq(cipher.key),
            cmd.key_256.eq(cipher.key_256),
            cmd.nonce.eq(Cat(cipher.salt, be(cur.seq, 8))),
            cmd.aad_len.eq(Mux(cipher.esn, 12, 8)),
            cmd.text_len.eq(text_length(cur)),
            cmd.decrypt.eq(0),
            trailer.pad_len.eq(cur.pad_len),
            trailer.next_header.eq(Mux(cur.mode == Mode.TRANSPORT, inner_proto,
                                       Mux(cur.inner_v6, C(PROTO_IPV6, 8), C(PROTO_IPV4, 8)))),
        ]

        # The splitter takes the beats from a skid buffer, so that whether it can take
        # one (the text Repacker's room, the header bytes still to skip) does not reach
        # the dispatcher in the same cycle. `i` is ready only while a packet is being
        # split and its last beat is not in yet: the next packet's first beat stays on
        # `i`, where the next job is taken with a look at it.
        m.submodules.beats = beats = SkidBuffer(packet_beat(BLOCK_BYTES))
        last_in = Signal()       # the packet's last beat has gone into `beats`
        m.d.comb += [beats.i.payload.eq(self.i.payload),
                     beats.i.valid.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.valid & self.i.ready & self.i.payload.last):
            m.d.sync += last_in.eq(1)
        splitter = beats.o
        beat = splitter.payload
        # The text bytes of this beat: from max(position, header_len) on.
        skip = Signal(range(BLOCK_BYTES + 1))
        m.d.comb += skip.eq(Mux(header_left >= BLOCK_BYTES, BLOCK_BYTES, header_left))
        text_count = Signal(range(BLOCK_BYTES + 1))
        m.d.comb += text_count.eq(Mux(beat.count > skip, beat.count - skip, 0))
        # Header words of this beat that the checksum keeps (not length, TTL/proto,
        # checksum). Their sum goes into a register (`beat_sum`) and into the header's
        # sum a cycle later: the adder tree and the accumulator were one path.
        beat_sum = Signal(20)
        summing = Signal()             # `beat_sum` is still to be added
        rewritten = position == 0      # words 1, 4 and 5 of the first beat
        word_sum = sum(
            Mux((header_left > 2 * j) & ~(rewritten if j in (1, 4, 5) else C(0)), word, 0)
            for j, word in enumerate(words16(beat.data)))
        m.d.sync += summing.eq(0)
        with m.If(summing):
            m.d.sync += cur.header_sum.eq(cur.header_sum + beat_sum)

        # The command and the AAD block wait beside the splitter, which fills the
        # text Repacker meanwhile: the first text block is there when the AAD is taken.
        cmd_pending = Signal()
        aad_pending = Signal()
        m.d.comb += gcm.cmd.valid.eq(cmd_pending)
        with m.If(gcm.cmd.ready):
            m.d.sync += cmd_pending.eq(0)
        aad = Mux(cipher.esn, Cat(be(cur.spi, 4), be(cur.seq, 8)),
                  Cat(be(cur.spi, 4), be(cur.seq[:32], 4)))

        def feed_gcm():
            with m.If(aad_pending):
                m.d.comb += [to_gcm.i.payload.eq(aad), to_gcm.i.valid.eq(1)]
                with m.If(to_gcm.i.ready):
                    m.d.sync += aad_pending.eq(0)
            with m.Else():
                m.d.comb += [
                    to_gcm.i.payload.eq(trailer.o.payload),
                    to_gcm.i.valid.eq(trailer.o.valid),
                    trailer.o.ready.eq(to_gcm.i.ready),
                ]

        # With one descriptor, the next packet waits until the output side is done.
        free = ~out_busy if not self._overlap else C(1)
        with m.FSM(name="input"):
            with m.State("IDLE"):
                with m.If(self.job.valid & self.i.valid & free):
                    payload = self.job.payload
                    m.d.comb += self.job.ready.eq(1)
                    m.d.sync += [
                        cipher.key.eq(payload.key),
                        cipher.key_256.eq(payload.key_256),
                        cipher.salt.eq(payload.salt),
                        cipher.esn.eq(payload.esn),
                        cur.mode.eq(payload.mode),
                        cur.spi.eq(payload.spi),
                        cur.seq.eq(payload.seq),
                        cur.tunnel.eq(payload.tunnel),
                        cur.natt.eq(payload.natt),
                        cur.inner_v6.eq(is_v6),
                        cur.inner_tos.eq(Mux(is_v6, Cat(first[1][4:], first[0][:4]), first[1])),
                        cur.inner_df.eq(Mux(is_v6, 1, first[6][6])),
                        cur.inner_ttl.eq(first_ttl),
                        cur.header_len.eq(first_header_len),
                        cur.payload_len.eq(first_payload_len),
                        cur.pad_len.eq((-(first_payload_len + 2))[:2]),
                        cur.header_sum.eq(Cat(outer_proto(payload.natt), first_ttl)),
                        inner_proto.eq(Mux(is_v6, first[6], first[9])),
                        header_kept.eq(~first_transport),
                        header_left.eq(first_header_len),
                        pushed.eq(0),
                        sized_in.eq(0),
                        position.eq(0),
                        last_in.eq(0),
                        cmd_pending.eq(1),
                        aad_pending.eq(1),
                    ]
                    m.next = "SPLIT"
            with m.State("SPLIT"):
                feed_gcm()
                m.d.sync += [cur[name].eq(value) for name, value in sizes(cur).items()]
                m.d.sync += sized_in.eq(1)
                # A beat that holds no text and is not the last sends nothing on.
                sends_text = (text_count != 0) | beat.last
                m.d.comb += [
                    self.i.ready.eq(beats.i.ready & ~last_in),
                    text.i.payload.data.eq(beat.data >> (8 * skip)),
                    text.i.payload.count.eq(text_count),
                    text.i.payload.last.eq(beat.last),
                    text.i.valid.eq(splitter.valid & sends_text),
                    splitter.ready.eq(text.i.ready | ~sends_text),
                ]
                with m.If(splitter.valid & splitter.ready):
                    with m.If(header_left != 0):
                        m.d.sync += [
                            cur.header[position[4:6]].eq(beat.data),
                            beat_sum.eq(word_sum),
                            summing.eq(1),
                        ]
                    with m.If(header_left <= BLOCK_BYTES):
                        m.d.sync += header_kept.eq(1)
                    m.d.sync += [
                        position.eq(position + BLOCK_BYTES),
                        header_left.eq(Mux(header_left > BLOCK_BYTES,
                                           header_left - BLOCK_BYTES, 0)),
                    ]
                    with m.If(beat.last):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                feed_gcm()
                with m.If(trailer.done):
                    with m.If(pushed):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "WAIT"
            with m.State("WAIT"):
                # `cur` is free once the output side has it.
                with m.If(pushed):
                    m.next = "IDLE"

        # ---- the header segments of `desc`, in wire order ------------------------
        udp = desc.natt.encap == Encap.UDP
        proto = outer_proto(desc.natt)
        # Tunnel mode: a constructed outer header.
        outer_v6 = desc.tunnel.ip_version == IpVersion.IPV6
        src, dst = desc.tunnel.src, desc.tunnel.dst
        v4_flags = outer_flags(desc)
        text_len, after_ip = desc.text_len, desc.after_ip
        v4_total, new_total = desc.v4_total, desc.new_total
        # Both header checksums are folded while the output side waits in IDLE (`desc`
        # is there by then) and kept in registers: their folds ran into the output
        # Repacker in one path.
        sized = Signal(data.StructLayout({"v4_checksum": 16, "kept_checksum": 16}))
        sized_now = {
            "v4_checksum": ~ones_fold(desc.v4_sum + v4_total),
            "kept_checksum": ~ones_fold(desc.header_sum + new_total),
        }
        v4_checksum, kept_checksum = sized.v4_checksum, sized.kept_checksum
        v4_header = Cat(Const(0x45, 8), desc.inner_tos, be(v4_total, 2), be(desc.seq[:16], 2),
                        v4_flags, Const(0, 8), Const(OUTER_TTL, 8), proto,
                        be(v4_checksum, 2), be(src[:32], 4), be(dst[:32], 4))
        # Version 6, traffic class, flow label 0; Cat packs each byte low nibble first.
        tos = desc.inner_tos
        v6_header = Cat(tos[4:], Const(6, 4), Const(0, 4), tos[:4], Const(0, 16),
                        be(after_ip, 2), proto, Const(OUTER_TTL, 8), be(src, 16), be(dst, 16))
        # Transport mode: the kept header, its first beat rewritten.
        kept = octets(desc.header[0])
        kept_first = Mux(desc.inner_v6,
                         Cat(*kept[:4], be(after_ip, 2), proto, *kept[7:]),
                         Cat(*kept[:2], be(new_total, 2), *kept[4:9], proto,
                             be(kept_checksum, 2), *kept[12:]))

        def kept_count(k):
            remaining = desc.header_len - BLOCK_BYTES * k
            return Mux(remaining >= BLOCK_BYTES, BLOCK_BYTES, remaining)

        udp_header = Cat(be(desc.natt.sport, 2), be(desc.natt.dport, 2), be(after_ip, 2),
                         Const(0, 16))
        esp_header = Cat(be(desc.spi, 4), be(desc.seq[:32], 4), be(desc.seq, 8))

        # (beat value, byte count, present), in order.
        transport = desc.mode == Mode.TRANSPORT
        tunnel = ~transport
        segments = [
            (v4_header[:128], C(16), tunnel & ~outer_v6),
            (v4_header[128:], C(4), tunnel & ~outer_v6),
            (v6_header[:128], C(16), tunnel & outer_v6),
            (v6_header[128:256], C(16), tunnel & outer_v6),
            (v6_header[256:], C(8), tunnel & outer_v6),
            (kept_first, kept_count(0), transport),
            *((desc.header[k], kept_count(k), transport & (desc.header_len > BLOCK_BYTES * k))
              for k in range(1, _MAX_HEADER_BEATS)),
            (udp_header, C(8), udp),
            (esp_header, C(16), C(1)),
        ]

        # ---- output side: header segments, ciphertext, ICV ----------------------
        # One beat per cycle: the lowest present segment not sent yet goes next.
        # Which segments the packet has is settled in IDLE, from the descriptor alone.
        present = Signal(len(segments))
        sent = Signal(len(segments))
        remaining = present & ~sent
        segment = Signal(range(len(segments)))
        for k in reversed(range(len(segments))):
            with m.If(remaining[k]):
                m.d.comb += segment.eq(k)
        last_count = Mux(text_len[:4] == 0, BLOCK_BYTES, text_len[:4])
        # The output state machine's beats reach the output Repacker through a skid
        # buffer: choosing the header segment (from the descriptor) and the Repacker's
        # shift into its buffer were one path.
        m.submodules.to_repack = to_repack = SkidBuffer(out.i.payload.shape())
        wiring.connect(m, to_repack.o, out.i)
        with m.FSM(name="output"):
            with m.State("IDLE"):
                m.d.sync += (sized[name].eq(value) for name, value in sized_now.items())
                m.d.sync += present.eq(Cat(present for _v, _c, present in segments))
                if self._overlap:
                    # The next descriptor in the queue (popped with its ICV).
                    with m.If(descriptors.r_rdy):
                        m.d.sync += [out_busy.eq(1), sent.eq(0)]
                        m.next = "HEADER"
                else:
                    # `cur` goes over once its header is complete.
                    with m.If(header_kept & sized_in & ~summing & ~pushed):
                        m.d.sync += [pushed.eq(1), out_busy.eq(1), sent.eq(0)]
                        m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [
                    to_repack.i.payload.data.eq(
                        Array(value for value, _c, _p in segments)[segment]),
                    to_repack.i.payload.count.eq(
                        Array(count for _v, count, _p in segments)[segment]),
                    to_repack.i.valid.eq(1),
                ]
                with m.If(to_repack.i.ready):
                    m.d.sync += sent.eq(sent | (1 << segment))
                    # The ESP header is always there and always last.
                    with m.If(segment == len(segments) - 1):
                        m.next = "TEXT"
            with m.State("TEXT"):
                ct = from_gcm.o.payload
                m.d.comb += [
                    to_repack.i.payload.data.eq(ct.data),
                    to_repack.i.payload.count.eq(Mux(ct.last, last_count, BLOCK_BYTES)),
                    to_repack.i.valid.eq(from_gcm.o.valid),
                    from_gcm.o.ready.eq(to_repack.i.ready),
                ]
                with m.If(from_gcm.o.valid & to_repack.i.ready & ct.last):
                    m.next = "ICV"
            with m.State("ICV"):
                m.d.comb += [
                    to_repack.i.payload.data.eq(gcm.result.payload.tag),
                    to_repack.i.payload.count.eq(BLOCK_BYTES),
                    to_repack.i.payload.last.eq(1),
                    to_repack.i.valid.eq(gcm.result.valid),
                    gcm.result.ready.eq(to_repack.i.ready),
                ]
                with m.If(gcm.result.valid & to_repack.i.ready):
                    m.d.sync += out_busy.eq(0)
                    if self._overlap:
                        m.d.comb += descriptors.r_en.eq(1)
                    m.next = "IDLE"
        if self._overlap:
            # `cur` joins the queue once its header is complete.
            with m.If(header_kept & sized_in & ~summing & ~pushed & descriptors.w_rdy):
                m.d.comb += descriptors.w_en.eq(1)
                m.d.sync += pushed.eq(1)
        return m
