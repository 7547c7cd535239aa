# SPDX-License-Identifier: BSD-2-Clause
"""ESP tunnel-mode encapsulation (RFC 4303, AES-GCM per RFC 4106): the outbound
data path of an engine, behind the SA lookup.

What it does per packet, byte for byte as ``sim/model/esp.py`` (``_outbound``,
tunnel mode):

* text = the inner packet, then RFC 4303 padding ``1, 2, ...`` to a multiple
  of 4 with the pad length and next header (4 for IPv4, 41 for IPv6);
* AAD = SPI || seq (or SPI || seq_hi || seq_lo with ESN), nonce = salt || IV,
  IV = the 64-bit sequence number (so a (key, IV) pair never repeats);
* out: outer IPv4 (IHL 5, TOS copied, ID = seq low 16 bits, DF copied from an
  inner IPv4 header and set for IPv6, TTL 64, checksum) or IPv6 (traffic class
  copied, hop limit 64) header from the SA's endpoints, optional RFC 3948 UDP
  header (over IPv4, checksum 0), SPI, seq, IV, ciphertext, 16-byte ICV.

Not built here yet (issue 3): transport mode, UDP encapsulation over an IPv6
outer header (its checksum covers the ciphertext, so it needs the store and
forward buffer), checks of the inner packet (its IP length field is trusted:
the SA table in front of this block will validate it), sequence allocation and
lifetimes (the job brings the sequence number to use).

Interface: one :data:`ENCAP_JOB` per packet on ``job``, the inner packet on
``i`` as 16-byte beats (full but the last), the ESP packet on ``o`` (16-byte
beats, full but the last).
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..gcm.core import GcmCore
from ..gcm.layouts import BLOCK_BYTES
from ..packet.layouts import big_endian, packet_beat
from ..packet.repack import Repacker
from .protocol import (ESP_HEADER_BYTES, ICV_BYTES, OUTER_TTL, PROTO_ESP, PROTO_IPV4, PROTO_IPV6,
                       PROTO_UDP)
from .sa import SA_NATT, SA_TUNNEL, Encap, IpVersion

__all__ = ["ENCAP_JOB", "EspTunnelEncap"]

#: What the SA table hands the encapsulator with each packet.
ENCAP_JOB = data.StructLayout({
    "key":     256,
    "key_256": 1,
    "salt":    32,
    "spi":     32,
    "seq":     64,     # the sequence number of this packet (already allocated)
    "esn":     1,
    "tunnel":  SA_TUNNEL,
    "natt":    SA_NATT,
})


def _ipv4_checksum(words):
    """RFC 1071 checksum of 16-bit words (Amaranth values), as a 16-bit value."""
    total = sum(words[1:], words[0])
    folded = total[:16] + total[16:]
    return ~(folded[:16] + folded[16:])[:16]


class EspTunnelEncap(wiring.Component):
    """ESP tunnel-mode encapsulation of one packet at a time (see the module docstring).

    Parameters
    ----------
    profile : the GCM core's datapath profile (``"compact"`` or ``"fast"``).

    Latency and throughput: the outer header leaves 2--5 cycles after the job
    and the first beat are there; the text runs at the GCM core's block rate;
    a packet costs the core's fixed cycles plus about 8 cycles of header and
    trailer. Packets do not overlap yet: the next one starts when the ICV of
    this one has left (measured by ``bench/engine.py``).
    """

    def __init__(self, *, profile="compact"):
        self._gcm = GcmCore(profile)
        super().__init__({
            "job": In(stream.Signature(ENCAP_JOB)),
            "i":   In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o":   Out(stream.Signature(packet_beat(BLOCK_BYTES))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.gcm = gcm = self._gcm
        m.submodules.out = out = Repacker(in_width=BLOCK_BYTES, out_width=BLOCK_BYTES)
        wiring.connect(m, out.o, wiring.flipped(self.o))

        job = Signal(ENCAP_JOB)
        inner_v6 = Signal()
        inner_tos = Signal(8)
        inner_df = Signal()
        inner_len = Signal(16)

        # ---- the inner header, from the first beat ---------------------------
        first = self.i.payload.data
        byte = [first[8 * k:8 * (k + 1)] for k in range(BLOCK_BYTES)]
        is_v6 = byte[0][4:] == 6
        v6_len = Cat(byte[5], byte[4]) + 40
        v4_len = Cat(byte[3], byte[2])

        # ---- lengths ---------------------------------------------------------
        pad_len = (-(inner_len + 2))[:2]
        text_len = inner_len + pad_len + 2
        esp_len = ESP_HEADER_BYTES + text_len + ICV_BYTES
        udp = job.natt.encap == Encap.UDP
        udp_len = esp_len + 8
        outer_v6 = job.tunnel.ip_version == IpVersion.IPV6
        proto = Mux(udp, C(PROTO_UDP, 8), C(PROTO_ESP, 8))
        after_ip = Mux(udp, udp_len, esp_len)

        # ---- the header beats, in wire order ---------------------------------
        def be(value, nbytes):
            return big_endian(value, nbytes)

        v4_total = after_ip + 20
        v4_flags = Mux(inner_df, C(0x40, 8), C(0, 8))
        v4_words = [Const(0x4500, 16) | inner_tos, v4_total[:16], job.seq[:16],
                    Cat(Const(0, 8), v4_flags), Const(OUTER_TTL << 8, 16) | proto,
                    job.tunnel.src[16:32], job.tunnel.src[:16],
                    job.tunnel.dst[16:32], job.tunnel.dst[:16]]
        v4_checksum = Signal(16)
        m.d.comb += v4_checksum.eq(_ipv4_checksum(v4_words))
        v4_header = Cat(Const(0x45, 8), inner_tos, be(v4_total, 2), be(job.seq[:16], 2),
                        v4_flags, Const(0, 8), Const(OUTER_TTL, 8), proto,
                        be(v4_checksum, 2), be(job.tunnel.src[:32], 4), be(job.tunnel.dst[:32], 4))
        # Version 6, traffic class, flow label 0; Cat packs each byte low nibble first.
        v6_header = Cat(inner_tos[4:], Const(6, 4), Const(0, 4), inner_tos[:4], Const(0, 16),
                        be(after_ip, 2), proto, Const(OUTER_TTL, 8),
                        be(job.tunnel.src, 16), be(job.tunnel.dst, 16))
        udp_header = Cat(be(job.natt.sport, 2), be(job.natt.dport, 2), be(udp_len, 2),
                         Const(0, 16))
        esp_header = Cat(be(job.spi, 4), be(job.seq[:32], 4), be(job.seq, 8))

        # Header segments: (beat value, byte count, present), in order.
        segments = [
            (v4_header[:128], 16, ~outer_v6),
            (v4_header[128:], 4, ~outer_v6),
            (v6_header[:128], 16, outer_v6),
            (v6_header[128:256], 16, outer_v6),
            (v6_header[256:], 8, outer_v6),
            (udp_header, 8, udp),
            (esp_header, 16, C(1)),
        ]

        # ---- input side: command, AAD, text, trailer ---------------------------
        out_start = Signal()   # pulse: the header may go out
        out_busy = Signal()    # the output side has not sent the ICV yet
        cmd = gcm.cmd.payload
        m.d.comb += [
            cmd.key.eq(job.key),
            cmd.key_256.eq(job.key_256),
            cmd.nonce.eq(Cat(job.salt, be(job.seq, 8))),
            cmd.aad_len.eq(Mux(job.esn, 12, 8)),
            cmd.text_len.eq(text_len),
            cmd.decrypt.eq(0),
        ]
        beat = self.i.payload
        # The trailer after the last beat's `count` bytes: pad 1..pad_len, pad
        # length, next header; up to 5 bytes, spilling into one more block.
        next_header = Mux(inner_v6, C(PROTO_IPV6, 8), C(PROTO_IPV4, 8))
        trailer = Signal(8 * 5)
        with m.Switch(pad_len):
            for pad in range(4):
                with m.Case(pad):
                    m.d.comb += trailer.eq(Cat(*(Const(k + 1, 8) for k in range(pad)),
                                               Const(pad, 8), next_header))
        extended = Signal(8 * 2 * BLOCK_BYTES)
        m.d.comb += extended.eq(beat.data | (trailer << (8 * beat.count)))
        spill = Signal(8 * BLOCK_BYTES)

        with m.FSM(name="input"):
            with m.State("IDLE"):
                with m.If(self.job.valid & self.i.valid & ~out_busy):
                    m.d.comb += [self.job.ready.eq(1), out_start.eq(1)]
                    m.d.sync += [
                        job.eq(self.job.payload),
                        inner_v6.eq(is_v6),
                        inner_tos.eq(Mux(is_v6, Cat(byte[1][4:], byte[0][:4]), byte[1])),
                        inner_df.eq(Mux(is_v6, 1, byte[6][6])),
                        inner_len.eq(Mux(is_v6, v6_len, v4_len)),
                    ]
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                m.d.comb += gcm.cmd.valid.eq(1)
                with m.If(gcm.cmd.ready):
                    m.next = "AAD"
            with m.State("AAD"):
                m.d.comb += [
                    gcm.data_in.payload.eq(Mux(job.esn,
                                               Cat(be(job.spi, 4), be(job.seq, 8)),
                                               Cat(be(job.spi, 4), be(job.seq[:32], 4)))),
                    gcm.data_in.valid.eq(1),
                ]
                with m.If(gcm.data_in.ready):
                    m.next = "TEXT"
            with m.State("TEXT"):
                # The trailer fits in the last beat unless that holds more than
                # 16 - 2 - pad_len bytes.
                fits = beat.count + pad_len + 2 <= BLOCK_BYTES
                m.d.comb += [
                    gcm.data_in.payload.eq(Mux(beat.last, extended[:8 * BLOCK_BYTES], beat.data)),
                    gcm.data_in.valid.eq(self.i.valid),
                    self.i.ready.eq(gcm.data_in.ready),
                ]
                with m.If(self.i.valid & gcm.data_in.ready & beat.last):
                    m.d.sync += spill.eq(extended[8 * BLOCK_BYTES:])
                    with m.If(fits):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SPILL"
            with m.State("SPILL"):
                m.d.comb += [gcm.data_in.payload.eq(spill), gcm.data_in.valid.eq(1)]
                with m.If(gcm.data_in.ready):
                    m.next = "IDLE"

        # ---- output side: header segments, ciphertext, ICV ----------------------
        segment = Signal(range(len(segments)))
        last_count = Mux(text_len[:4] == 0, BLOCK_BYTES, text_len[:4])
        with m.FSM(name="output"):
            with m.State("IDLE"):
                with m.If(out_start):
                    m.d.sync += [segment.eq(0), out_busy.eq(1)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                present = Array(present for _value, _count, present in segments)[segment]
                m.d.comb += [
                    out.i.payload.data.eq(Array(value for value, _count, _p in segments)[segment]),
                    out.i.payload.count.eq(Array(C(count, 5) for _v, count, _p in segments)[segment]),
                    out.i.valid.eq(present),
                ]
                with m.If(out.i.ready | ~present):
                    m.d.sync += segment.eq(segment + 1)
                    with m.If(segment == len(segments) - 1):
                        m.next = "TEXT"
            with m.State("TEXT"):
                ct = gcm.data_out.payload
                m.d.comb += [
                    out.i.payload.data.eq(ct.data),
                    out.i.payload.count.eq(Mux(ct.last, last_count, BLOCK_BYTES)),
                    out.i.valid.eq(gcm.data_out.valid),
                    gcm.data_out.ready.eq(out.i.ready),
                ]
                with m.If(gcm.data_out.valid & out.i.ready & ct.last):
                    m.next = "ICV"
            with m.State("ICV"):
                m.d.comb += [
                    out.i.payload.data.eq(gcm.result.payload.tag),
                    out.i.payload.count.eq(BLOCK_BYTES),
                    out.i.payload.last.eq(1),
                    out.i.valid.eq(gcm.result.valid),
                    gcm.result.ready.eq(out.i.ready),
                ]
                with m.If(gcm.result.valid & out.i.ready):
                    m.d.sync += out_busy.eq(0)
                    m.next = "IDLE"
        return m
