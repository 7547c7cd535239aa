# SPDX-License-Identifier: BSD-2-Clause
"""ESP decapsulation, tunnel and transport mode (RFC 4303, AES-GCM per RFC
4106): the inbound data path of an engine, behind the SA lookup.

**No plaintext byte leaves before the ICV has been verified.** The decrypted
text goes into a store-and-forward buffer (block RAM); only after the GCM core
has accepted the tag *and* the trailer, the padding and (tunnel) the inner
header have been checked is the packet read out of it. ``o`` carries nothing
else (its payload is zero while ``o.valid`` is low).

What it does per packet, as ``sim/model/esp.py`` (``EspModel._inbound``), each
failed check giving the model's reason:

* outer IPv4 (IHL >= 5, options allowed, IHL <= total length <= stream length,
  header checksum, not a fragment) or IPv6 (payload length not 0, 40 + payload
  length <= stream length, no extension header); protocol 50 for an SA without
  encapsulation, UDP 17 for an RFC 3948 SA (UDP length = what follows the IP
  header, SPI 0 = the non-ESP marker: ``MALFORMED``); ESP at least
  8 + 8 + 2 + 16 bytes (:data:`ESP_MIN_BYTES`); bytes past the IP length are
  ignored;
* the ESP header (SPI, sequence number) goes out on ``header`` and the packet
  waits for ``admit``: the engine checks the SPI and the replay window there
  and answers ``go`` with the sequence number's reconstructed high half (ESN),
  or has the packet drained unopened (``REFUSED``; ``MALFORMED`` if the stream
  then ends before the IP length, as the model finds that first);
* AAD = SPI || seq_lo, or SPI || seq_hi || seq_lo with ESN, nonce = salt || IV
  from the packet; a wrong ICV gives ``AUTH_FAIL``;
* after a good ICV (``authentic`` from here on): the pad length and next
  header (the last two plaintext bytes), padding exactly ``1, 2, ...,
  pad_len`` (up to 255 bytes, read back from the buffer block by block), next
  header 59 = ``DUMMY`` (consumed, nothing released);
* tunnel mode: next header 4 / 41 matching the inner IP version; inner IPv4:
  IHL >= 5, IHL <= total length <= payload, checksum; inner IPv6: payload
  length not 0, 40 + payload length <= payload; exactly the inner packet's own
  length is released (TFC padding dropped); RFC 6040 normal mode: outer CE
  with inner ECT(0)/ECT(1) sets inner CE, the inner IPv4 checksum updated
  incrementally (RFC 1624 eqn. 3, which gives the recomputed value because the
  received checksum was valid);
* transport mode: the outer IP header (kept in four buffer rows as it passed,
  IPv4 options included, a UDP header dropped) is released in front of the
  payload with the next header, the length and (IPv4) the checksum rewritten
  (RFC 1624 again, over the two words that change).

A packet whose stream ends before its IP length (truncated) never hangs the
block: the GCM message is finished with zero bytes and a zero tag, and the
verdict is ``MALFORMED``. After any drop the next packet is processed normally.

Not built here yet (the model does these; tests keep to the rest):

* outer IPv6 extension headers (the model walks hop-by-hop, routing and
  destination options; here any next header but 50 / 17 is ``MALFORMED``);
* inner IPv6 extension headers are not walked (the model drops an inner packet
  whose chain runs past its length; here it is released);
* packets whose ciphertext is longer than the buffer (``16 * buffer_blocks``
  bytes) are ``MALFORMED`` here; the model takes any length.

Interface: one :data:`DECAP_JOB` per packet on ``job``; the outer packet on
``i`` as 16-byte beats (full but the last); one :data:`DECAP_HEADER` on
``header`` and one :data:`DECAP_ADMIT` on ``admit`` per packet whose outer
header passed; the released packet on ``o`` (16-byte beats, full but the last)
for accepted packets only; one :data:`DECAP_VERDICT` per packet on
``verdict``, after the packet's last output beat and once its last input beat
has been taken.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gcm.core import GcmCore
from ..gcm.layouts import BLOCK_BYTES
from ..packet.layouts import big_endian, packet_beat
from .protocol import (ECN_CE, ESP_HEADER_BYTES, ESP_MIN_BYTES, ICV_BYTES, PROTO_ESP, PROTO_IPV4,
                       PROTO_IPV6, PROTO_NONE, PROTO_UDP, UDP_HEADER_BYTES)
from .sa import Encap

__all__ = ["DecapStatus", "DECAP_JOB", "DECAP_HEADER", "DECAP_ADMIT", "DECAP_VERDICT",
           "EspDecap"]


class DecapStatus(enum.Enum, shape=3):
    OK        = 0   # authentic, the inner packet was released
    AUTH_FAIL = 1   # ICV mismatch: nothing released, the window must not move
    MALFORMED = 2   # outer header, length, truncation, padding or inner header
    DUMMY     = 3   # authentic, next header 59 (RFC 4303 2.6): nothing released
    REFUSED   = 4   # ``admit.go`` was 0 (SPI or replay check): drained, not decrypted


#: What the SA table hands the decapsulator with each packet.
DECAP_JOB = data.StructLayout({
    "key":       256,
    "key_256":   1,
    "salt":      32,
    "esn":       1,
    "encap":     Encap,   # the SA's RFC 3948 UDP encapsulation
    "transport": 1,       # transport mode: the outer header is rebuilt around the payload
})

#: The ESP header of a packet whose outer header passed (offered on ``header``).
DECAP_HEADER = data.StructLayout({
    "spi":    32,
    "seq_lo": 32,       # the 32 bits on the wire
})

#: The answer to a ``header``: go on (``go``, with the reconstructed high half of
#: the sequence number for an ESN SA's AAD) or drain the packet unopened.
DECAP_ADMIT = data.StructLayout({
    "go":     1,
    "seq_hi": 32,
})

#: One per packet. ``spi`` and ``seq`` (the 32 bits on the wire) come from the
#: packet. ``authentic``: the ICV was verified (OK, DUMMY, or MALFORMED found
#: after the ICV): the replay window must take the sequence number.
#: ``length``: bytes released.
DECAP_VERDICT = data.StructLayout({
    "status":    DecapStatus,
    "authentic": 1,
    "spi":       32,
    "seq":       32,
    "length":    16,
})

_IPV4_MIN_HEADER = 20
_IPV6_HEADER = 40
_HEADER_ROWS = 4          # buffer rows for an outer header of up to 60 bytes


def _octets(value, count=BLOCK_BYTES):
    return [value[8 * k:8 * (k + 1)] for k in range(count)]


def _words16(block):
    """The eight big-endian 16-bit words of a 16-byte block, as numbers."""
    octets = _octets(block)
    return [Cat(octets[2 * w + 1], octets[2 * w]) for w in range(BLOCK_BYTES // 2)]


def _fold(total):
    """RFC 1071 end-around-carry fold of a sum of 16-bit words (< 2**21) to 16 bits."""
    once = total[:16] + total[16:]
    return (once[:16] + once[16:])[:16]


class EspDecap(wiring.Component):
    """ESP decapsulation of one packet at a time (see the module docstring).

    Parameters
    ----------
    profile : the GCM core's datapath profile (``"compact"`` or ``"fast"``).
    buffer_blocks : depth of the plaintext buffer in 16-byte blocks (block RAM);
        the default 128 (2 KiB) holds any packet of a 1500-byte MTU.

    Design: an input state machine reads the outer header from the beats that
    hold it (the fields at fixed offsets, the ESP header words at
    ``E = header length (+ 8 with UDP)``, which is always a multiple of 4), and
    feeds the core's ``data_in`` itself, no gearbox: the AAD block, then the
    ciphertext ``[E + 16, length - 16)`` as blocks that each join the upper
    part of one beat to the lower part of the next (a 4-way choice per packet:
    ``(E + 16) mod 16`` is 0, 4, 8 or 12), then the ICV
    ``[length - 16, length)``, merged lane-wise from the last two beats and
    rotated into place; the core's command waits for ``admit``. The core's
    ``data_out`` blocks go into the buffer (the first four also past the
    inner-header checks). On a good tag the trailer and the padding are read
    back from the buffer's end, then the packet is streamed out of it (in
    transport mode the kept header first, the payload joined to it by the same
    4-way choice: one cycle more when the header is not a multiple of 16 bytes).

    Latency and throughput (``sync`` cycles, Amaranth simulator, no stalls,
    AES-128): the input is taken at the GCM core's block rate (one 16-byte beat
    per cycle *fast*, about one per 16 *compact*, its serial GHASH; the header
    beats at one per cycle); the core's verdict comes 21 (*fast*) / 52
    (*compact*) cycles after the last input beat; the first inner beat leaves 7
    cycles after that verdict (one more per further block of padding: 22 for
    255 bytes), the others follow at one beat per cycle, and the packet's
    verdict one cycle after its last beat. Packets do not overlap (one buffer):
    the next job is taken in the cycle after the verdict. Cycles per packet
    inside an engine (with its lookup and checks): ``bench/engine.py``.
    """

    def __init__(self, *, profile="compact", buffer_blocks=128):
        if type(buffer_blocks) is not int or not 4 <= buffer_blocks <= 4096:
            raise ValueError(f"buffer_blocks must be an integer from 4 to 4096 (16-byte blocks), "
                             f"not {buffer_blocks!r}")
        self._buffer_blocks = buffer_blocks
        self._gcm = GcmCore(profile)
        super().__init__({
            "job":     In(stream.Signature(DECAP_JOB)),
            "header":  Out(stream.Signature(DECAP_HEADER)),
            "admit":   In(stream.Signature(DECAP_ADMIT)),
            "i":       In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o":       Out(stream.Signature(packet_beat(BLOCK_BYTES))),
            "verdict": Out(stream.Signature(DECAP_VERDICT)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._buffer_blocks
        m.submodules.gcm = gcm = self._gcm
        # Rows [0, depth): the plaintext; rows depth + 0..3: the outer header (transport).
        m.submodules.buffer = buffer = Memory(shape=unsigned(128), depth=depth + _HEADER_ROWS,
                                              init=[])
        wr = buffer.write_port()
        rd = buffer.read_port()

        job = Signal(DECAP_JOB)
        seq_hi = Signal(32)
        status = Signal(DecapStatus)
        authentic = Signal()
        beat = self.i.payload
        offset = Signal(17)            # byte offset of the current input beat in the packet
        prev = Signal(128)             # the previous beat: text blocks and the ICV straddle two
        in_done = Signal()             # the packet's last input beat has been taken
        consumed = self.i.valid & self.i.ready
        with m.If(consumed):
            m.d.sync += [offset.eq(offset + BLOCK_BYTES), prev.eq(beat.data)]
            with m.If(beat.last):
                m.d.sync += in_done.eq(1)

        # ---- outer header fields ------------------------------------------------
        version = Signal(4)
        ihl = Signal(4)
        ip_total = Signal(16)
        v6_plen = Signal(16)
        proto = Signal(8)
        fragment = Signal()
        outer_ecn = Signal(2)
        outer_ttl = Signal(8)
        outer_checksum = Signal(16)
        header_sum = Signal(21)        # IPv4 header words, summed (30 at most)
        udp_len = Signal(16)
        esp_header = Signal(128)       # SPI, seq, IV as on the wire (byte i at bits 8i)
        spi_wire, seq_wire, iv_wire = esp_header[:32], esp_header[32:64], esp_header[64:]

        is_v6 = version == 6
        header_len = Mux(is_v6, _IPV6_HEADER, Cat(C(0, 2), ihl))
        is_udp = proto == PROTO_UDP
        esp_start = Signal(7)          # E: always a multiple of 4
        text_start = Signal(7)
        total_len = Signal(17)
        m.d.comb += [
            esp_start.eq(header_len + Mux(is_udp, UDP_HEADER_BYTES, 0)),
            text_start.eq(esp_start + ESP_HEADER_BYTES),
            total_len.eq(Mux(is_v6, v6_plen + _IPV6_HEADER, ip_total)),
        ]
        text_len = Signal(16)
        text_end = Signal(17)          # = total_len - ICV_BYTES
        blocks_sent = Signal(range(depth + 1))
        truncated = Signal()
        icv = Signal(128)

        octet = _octets(beat.data)
        word32 = Array(beat.data[32 * k:32 * (k + 1)] for k in range(4))

        def capture(target, at):
            """Take the wire word at packet byte `at` (a multiple of 4) from the beat holding it."""
            with m.If(offset[4:] == at[4:]):
                m.d.sync += target.eq(word32[at[2:4]])

        # ---- GCM command ----------------------------------------------------------
        cmd = gcm.cmd.payload
        m.d.comb += [
            cmd.key.eq(job.key),
            cmd.key_256.eq(job.key_256),
            cmd.nonce.eq(Cat(job.salt, iv_wire)),
            cmd.aad_len.eq(Mux(job.esn, 12, 8)),
            cmd.text_len.eq(text_len),
            cmd.decrypt.eq(1),
        ]

        # ---- the text blocks: packet bytes [S + 16j, S + 16j + 16) ----------------------
        # S = text_start is a multiple of 4, so a block is the upper 16 - s bytes of one
        # beat and the lower s of the next (s = S mod 16): a fixed 4-way choice per
        # packet. The block ending in this beat is sent with it if the text reaches this
        # beat; a last block that ends in the previous beat is flushed on its own.
        shift = text_start[2:4]
        text_block = Array([beat.data] + [Cat(prev[32 * k:], beat.data[:32 * k])
                                      for k in range(1, 4)])[shift]
        flushed = Array([C(0, 128)] + [prev[32 * k:] for k in range(1, 4)])[shift]
        text_here = (offset >= text_start) & (offset < text_end)
        flush_after = ((shift != 0) & (offset + text_start[:4] < text_end)
                       & (text_end <= offset + BLOCK_BYTES))
        text_blocks = (text_len + BLOCK_BYTES - 1)[4:]
        icv_have = Signal()
        # The beat holds the packet's last byte: the ICV is the 16 bytes ending there,
        # lanes u.. of the previous beat and ..u-1 of this one (u = length mod 16; all
        # of this one if u = 0). Merge the two lane-wise, then rotate by u bytes: four
        # stages of 2:1 multiplexers, a third of a 32-byte shifter's LUTs.
        icv_here = offset + BLOCK_BYTES >= total_len
        icv_lane = total_len[:4]
        icv_from_pair = Cat(Mux((icv_lane != 0) & (icv_lane <= k), prev_byte, this_byte)
                            for k, (prev_byte, this_byte) in enumerate(zip(_octets(prev), octet)))
        for bit in range(4):
            step = 8 << bit
            icv_from_pair = Mux(icv_lane[bit], Cat(icv_from_pair[step:], icv_from_pair[:step]),
                                icv_from_pair)
        ends_short = beat.last & (offset + beat.count < total_len)

        # ---- the buffer, and the inner header as the plaintext goes in ------------
        wr_addr = Signal(range(depth + 1))
        in_version = Signal(4)
        in_ihl = Signal(4)
        in_total = Signal(16)
        in_plen = Signal(16)
        in_word0 = Signal(16)
        in_checksum = Signal(16)
        in_sum = Signal(21)
        plain = gcm.data_out.payload.data
        plain_octet = _octets(plain)
        m.d.comb += [
            wr.addr.eq(wr_addr),
            wr.data.eq(plain),
            wr.en.eq(gcm.data_out.valid),
            gcm.data_out.ready.eq(1),
        ]
        with m.If(gcm.data_out.valid):
            m.d.sync += wr_addr.eq(wr_addr + 1)
            with m.If(wr_addr == 0):
                m.d.sync += [
                    in_version.eq(plain_octet[0][4:]),
                    in_ihl.eq(plain_octet[0][:4]),
                    in_total.eq(Cat(plain_octet[3], plain_octet[2])),
                    in_plen.eq(Cat(plain_octet[5], plain_octet[4])),
                    in_word0.eq(Cat(plain_octet[1], plain_octet[0])),
                    in_checksum.eq(Cat(plain_octet[11], plain_octet[10])),
                    in_sum.eq(sum(_words16(plain))),
                ]
            with m.Elif(wr_addr < 4):
                m.d.sync += in_sum.eq(in_sum + sum(
                    Mux(Cat(C(2 * w, 4), wr_addr) < Cat(C(0, 2), in_ihl), word, 0)
                    for w, word in enumerate(_words16(plain))))

        # ---- trailer, padding, inner header checks -----------------------------------
        next_header = Signal(8)
        pad_len = Signal(8)
        pad_blk = Signal(range(depth))
        # Which padding byte (1-based) lane 0 of block `pad_blk` would be: -15..270 in
        # the blocks visited, so each lane needs only a small adder and two compares.
        pad_base = Signal(signed(10))
        pad_bad = Signal()
        payload_len = Signal(signed(18))
        m.d.comb += payload_len.eq(text_len - 2 - pad_len)
        rd_octet = Array(_octets(rd.data))
        m.d.comb += rd.en.eq(1)

        in_ecn = Mux(in_version == 6, in_word0[4:6], in_word0[:2])
        in_ihl_bytes = Cat(C(0, 2), in_ihl)
        inner_v4_ok = ((next_header == PROTO_IPV4) & (in_version == 4)
                       & (in_ihl_bytes >= _IPV4_MIN_HEADER) & (in_ihl_bytes <= in_total)
                       & (in_total <= payload_len) & (_fold(in_sum) == 0xffff))
        inner_v6_ok = ((next_header == PROTO_IPV6) & (in_version == 6)
                       & (in_plen != 0) & (in_plen + _IPV6_HEADER <= payload_len))
        release_len = Signal(17)
        mark_ce = Signal()
        new_word0 = in_word0 | ECN_CE     # IPv4: TOS is the low byte of word 0
        # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
        new_checksum = Signal(16)
        m.d.comb += new_checksum.eq(~_fold(Cat(~in_checksum, C(0, 5)) + Cat(~in_word0, C(0, 5))
                                           + new_word0))

        # ---- release ---------------------------------------------------------------
        # Tunnel: buffer rows 0.. are the inner packet's beats. Transport: the header
        # rows first (H = 16a + 4r bytes), row 0 rewritten; with r != 0 row a only
        # loads `carry` (its r words), then each beat is the r carried words and the
        # first 4 - r words of the next buffer row, whose last r words are carried on
        # (a 4-way choice per packet). Rows past the payload only fill masked lanes.
        transport = job.transport
        hdr_full = header_len[4:]                       # a
        join = Mux(transport, header_len[2:4], 0)       # r, in 4-byte words
        hdr_rows = Mux(transport, hdr_full + (join != 0), 0)
        carry_at = Mux(transport & (join != 0), hdr_full, depth)   # the row that only loads
        rel_blk = Signal(range(depth + _HEADER_ROWS + 2))   # next row to read, in release order
        out_blk = Signal(range(depth + _HEADER_ROWS + 1))   # index of the beat on `o`
        next_blk = Signal.like(out_blk)
        out_valid = Signal()
        loads_carry = Signal()                          # rd.data is the carry-only row
        carry = Signal(96)
        last_blk = (release_len - 1)[4:]
        out_last = out_blk == last_blk
        out_count = Mux(out_last, (release_len - 1)[:4] + 1, BLOCK_BYTES)
        in_header = transport & (out_blk < hdr_full)
        rd_word = [rd.data[32 * k:32 * (k + 1)] for k in range(4)]
        out_joined = Array([rd.data] + [Cat(carry[:32 * k], rd.data[:128 - 32 * k])
                                        for k in range(1, 4)])[join]
        carried = Array([C(0, 96)] + [Cat(*rd_word[4 - k:]) for k in range(1, 4)])[join]
        # Transport: the outer header with the next header, the length and (IPv4) a
        # checksum updated by RFC 1624 eqn. 3 over the two words that change.
        new_v4_checksum = ~_fold(Cat(~outer_checksum, C(0, 5)) + Cat(~ip_total, C(0, 5))
                                 + release_len[:16] + Cat(~Cat(proto, outer_ttl), C(0, 5))
                                 + Cat(next_header, outer_ttl))[:16]
        rebuilt = Mux(is_v6,
                      Cat(rd.data[:32], big_endian(release_len - _IPV6_HEADER, 2), next_header,
                          rd.data[56:]),
                      Cat(rd.data[:16], big_endian(release_len, 2), rd.data[32:72], next_header,
                          big_endian(new_v4_checksum, 2), rd.data[96:]))
        released = Signal(128)
        with m.If(in_header):
            m.d.comb += released.eq(Mux(out_blk == 0, rebuilt, rd.data))
        with m.Elif(mark_ce & (out_blk == 0)):
            with m.If(in_version == 6):
                m.d.comb += released.eq(rd.data | (ECN_CE << 12))
            with m.Else():
                m.d.comb += released.eq(Cat(rd.data[:8], rd.data[8:16] | ECN_CE, rd.data[16:80],
                                            big_endian(new_checksum, 2), rd.data[96:]))
        with m.Else():
            m.d.comb += released.eq(out_joined)
        with m.If(loads_carry):
            m.d.sync += carry.eq(Array([C(0, 96)] + [rd.data[:32 * k] for k in range(1, 4)])[join])
        with m.If(self.o.valid & self.o.ready & ~in_header):
            m.d.sync += carry.eq(carried)
        m.d.comb += [
            self.o.valid.eq(out_valid),
            self.o.payload.data.eq(released & Cat(
                Mux(out_valid & (out_count > k), 0xff, 0) for k in range(BLOCK_BYTES))),
            self.o.payload.count.eq(Mux(out_valid, out_count, 0)),
            self.o.payload.first.eq(out_valid & (out_blk == 0)),
            self.o.payload.last.eq(out_valid & out_last),
        ]

        # ---- verdict -----------------------------------------------------------------
        m.d.comb += [
            self.verdict.payload.status.eq(status),
            self.verdict.payload.authentic.eq(authentic),
            self.verdict.payload.spi.eq(big_endian(spi_wire, 4)),
            self.verdict.payload.seq.eq(big_endian(seq_wire, 4)),
            self.verdict.payload.length.eq(Mux(status == DecapStatus.OK, release_len, 0)),
        ]

        def drain():
            # Bytes past the IP length (and all of a dropped packet) are skipped.
            m.d.comb += self.i.ready.eq(~in_done)

        def finish(how):
            m.d.sync += status.eq(how)
            m.next = "VERDICT"

        with m.FSM(name="decap"):
            with m.State("IDLE"):
                with m.If(self.job.valid & self.i.valid):
                    m.d.comb += self.job.ready.eq(1)
                    m.d.sync += [
                        job.eq(self.job.payload),
                        offset.eq(0), in_done.eq(0), header_sum.eq(0), truncated.eq(0),
                        blocks_sent.eq(0), icv_have.eq(0), wr_addr.eq(0), pad_bad.eq(0),
                        mark_ce.eq(0), authentic.eq(0),
                        release_len.eq(0), esp_header.eq(0), udp_len.eq(0),
                    ]
                    m.next = "HEADER"

            with m.State("HEADER"):
                at_first = offset == 0
                words = _words16(beat.data)
                # Transport mode keeps the IP header: its beats go to the buffer's header
                # rows (the core writes nothing before this packet's text).
                with m.If(consumed & (offset < BLOCK_BYTES * _HEADER_ROWS)):
                    m.d.comb += [wr.addr.eq(depth + offset[4:6]), wr.data.eq(beat.data),
                                 wr.en.eq(1)]
                header_end = ~at_first & (offset + BLOCK_BYTES >= text_start)
                with m.If(self.i.valid):
                    with m.If(at_first):
                        m.d.sync += [
                            version.eq(octet[0][4:]),
                            ihl.eq(octet[0][:4]),
                            ip_total.eq(Cat(octet[3], octet[2])),
                            v6_plen.eq(Cat(octet[5], octet[4])),
                            proto.eq(Mux(octet[0][4:] == 6, octet[6], octet[9])),
                            fragment.eq(Cat(octet[7], octet[6][:6]) != 0),
                            outer_ecn.eq(Mux(octet[0][4:] == 6, octet[1][4:6], octet[1][:2])),
                            outer_ttl.eq(octet[8]),
                            outer_checksum.eq(Cat(octet[11], octet[10])),
                            header_sum.eq(sum(words)),
                        ]
                    with m.Else():
                        m.d.sync += header_sum.eq(header_sum + sum(
                            Mux(offset + 2 * w < Cat(C(0, 2), ihl), word, 0)
                            for w, word in enumerate(words)))
                        # UDP length and checksum: `udp_len` keeps the first half.
                        capture(udp_len, header_len + 4)
                        for w in range(4):
                            capture(esp_header[32 * w:32 * (w + 1)], esp_start + 4 * w)
                    with m.If(header_end):
                        with m.If(beat.last & (offset + beat.count < text_start)):
                            m.d.comb += self.i.ready.eq(1)
                            finish(DecapStatus.MALFORMED)
                        with m.Elif(offset + BLOCK_BYTES == text_start):
                            m.d.comb += self.i.ready.eq(1)
                            m.next = "CHECK"
                        with m.Else():
                            m.next = "CHECK"    # the beat holds text too: TEXT takes it
                    with m.Else():
                        m.d.comb += self.i.ready.eq(1)
                        with m.If(beat.last):
                            finish(DecapStatus.MALFORMED)

            with m.State("CHECK"):
                after_ip = total_len - header_len
                ihl_bytes = Cat(C(0, 2), ihl)
                outer_ok = Mux(is_v6,
                               v6_plen != 0,
                               (version == 4) & (ihl_bytes >= _IPV4_MIN_HEADER)
                               & (ihl_bytes <= ip_total) & (_fold(header_sum) == 0xffff)
                               & ~fragment)
                proto_ok = Mux(job.encap == Encap.UDP, is_udp, proto == PROTO_ESP)
                # RFC 3948 2.2: a zero SPI is the non-ESP (IKE) marker.
                udp_ok = ~is_udp | ((big_endian(udp_len[:16], 2) == after_ip) & (spi_wire != 0))
                length = total_len - esp_start
                long_enough = length >= ESP_MIN_BYTES
                fits = length - ESP_HEADER_BYTES - ICV_BYTES <= BLOCK_BYTES * depth
                with m.If(~(outer_ok & proto_ok & udp_ok & long_enough & fits) | in_done):
                    # in_done: the stream ended with the ESP header, before the IP length.
                    finish(DecapStatus.MALFORMED)
                with m.Else():
                    m.d.sync += [
                        text_len.eq(length - ESP_HEADER_BYTES - ICV_BYTES),
                        text_end.eq(total_len - ICV_BYTES),
                    ]
                    m.next = "HEADER_OUT"

            with m.State("HEADER_OUT"):
                # The SPI and replay checks are the engine's, between here and ADMIT.
                m.d.comb += [
                    self.header.payload.spi.eq(big_endian(spi_wire, 4)),
                    self.header.payload.seq_lo.eq(big_endian(seq_wire, 4)),
                    self.header.valid.eq(1),
                ]
                with m.If(self.header.ready):
                    m.next = "ADMIT"

            with m.State("ADMIT"):
                m.d.comb += self.admit.ready.eq(1)
                with m.If(self.admit.valid):
                    m.d.sync += seq_hi.eq(self.admit.payload.seq_hi)
                    with m.If(self.admit.payload.go):
                        m.next = "COMMAND"
                    with m.Else():
                        m.next = "REFUSE"

            with m.State("REFUSE"):
                # Drained unopened; a stream that ends before the IP length is still
                # MALFORMED, as the model finds that before the SPI and the window.
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & beat.last):
                    with m.If(ends_short):
                        finish(DecapStatus.MALFORMED)
                    with m.Else():
                        finish(DecapStatus.REFUSED)

            with m.State("COMMAND"):
                m.d.comb += gcm.cmd.valid.eq(1)
                with m.If(gcm.cmd.ready):
                    m.next = "AAD"

            with m.State("AAD"):
                # RFC 4106 5: SPI || seq, or SPI || seq_hi || seq_lo with ESN.
                m.d.comb += [
                    gcm.data_in.payload.eq(Mux(job.esn,
                                               Cat(spi_wire, big_endian(seq_hi, 4), seq_wire),
                                               Cat(spi_wire, seq_wire))),
                    gcm.data_in.valid.eq(1),
                ]
                with m.If(gcm.data_in.ready):
                    m.next = "TEXT"

            with m.State("TEXT"):
                with m.If(self.i.valid):
                    with m.If(ends_short):
                        # Truncated: finish the GCM message with zeros, then drop.
                        m.d.comb += self.i.ready.eq(1)
                        m.d.sync += [truncated.eq(1), icv.eq(0)]
                        m.next = "ZERO"
                    with m.Else():
                        # Bytes of the text past its length in the last block are ignored
                        # by the core (the ICV's first bytes, here).
                        m.d.comb += [
                            gcm.data_in.payload.eq(text_block),
                            gcm.data_in.valid.eq(text_here),
                            self.i.ready.eq(~text_here | gcm.data_in.ready),
                        ]
                        with m.If(~text_here | gcm.data_in.ready):
                            with m.If(text_here):
                                m.d.sync += blocks_sent.eq(blocks_sent + 1)
                            with m.If(icv_here):
                                m.d.sync += [icv.eq(icv_from_pair), icv_have.eq(1)]
                            with m.If(flush_after):
                                m.next = "FLUSH"
                            with m.Elif(icv_here):
                                m.next = "ICV"

            with m.State("FLUSH"):
                m.d.comb += [gcm.data_in.payload.eq(flushed), gcm.data_in.valid.eq(1)]
                with m.If(gcm.data_in.ready):
                    m.d.sync += blocks_sent.eq(blocks_sent + 1)
                    with m.If(icv_have):
                        m.next = "ICV"
                    with m.Else():
                        m.next = "TEXT"

            with m.State("ZERO"):
                with m.If(blocks_sent == text_blocks):
                    m.next = "ICV"
                with m.Else():
                    m.d.comb += [gcm.data_in.payload.eq(0), gcm.data_in.valid.eq(1)]
                    with m.If(gcm.data_in.ready):
                        m.d.sync += blocks_sent.eq(blocks_sent + 1)

            with m.State("ICV"):
                drain()
                m.d.comb += [gcm.data_in.payload.eq(icv), gcm.data_in.valid.eq(1)]
                with m.If(gcm.data_in.ready):
                    m.next = "TAG"

            with m.State("TAG"):
                drain()
                m.d.comb += gcm.result.ready.eq(1)
                with m.If(gcm.result.valid):
                    with m.If(truncated):
                        finish(DecapStatus.MALFORMED)
                    with m.Elif(~gcm.result.payload.tag_ok):
                        finish(DecapStatus.AUTH_FAIL)
                    with m.Else():
                        m.d.sync += authentic.eq(1)
                        m.next = "NEXT_HEADER"

            # Authentic from here on: the trailer and the padding are read back.
            with m.State("NEXT_HEADER"):
                drain()
                m.d.comb += rd.addr.eq((text_len - 1)[4:])
                m.next = "PAD_LENGTH"

            with m.State("PAD_LENGTH"):
                drain()
                m.d.sync += next_header.eq(rd_octet[(text_len - 1)[:4]])
                m.d.comb += rd.addr.eq((text_len - 2)[4:])
                m.next = "PAD_START"

            with m.State("PAD_START"):
                drain()
                length_now = rd_octet[(text_len - 2)[:4]]
                first_blk = (text_len - 3)[4:]
                m.d.sync += [
                    pad_len.eq(length_now),
                    pad_blk.eq(first_blk),
                    pad_base.eq(Cat(C(0, 4), first_blk) - (text_len - 2 - length_now) + 1),
                ]
                m.d.comb += rd.addr.eq((text_len - 3)[4:])
                with m.If(length_now > text_len - 2):
                    m.d.sync += pad_bad.eq(1)
                    m.next = "INNER"
                with m.Elif(length_now == 0):
                    m.next = "INNER"
                with m.Else():
                    m.next = "PAD"

            with m.State("PAD"):
                # RFC 4303 2.4: padding bytes 1, 2, 3, ... pad_len.
                drain()
                for k in range(BLOCK_BYTES):
                    index = Signal(signed(11), name=f"pad_index_{k}")
                    m.d.comb += index.eq(pad_base + k)
                    with m.If((index >= 1) & (index <= pad_len) & (rd_octet[k] != index[:8])):
                        m.d.sync += pad_bad.eq(1)
                m.d.comb += rd.addr.eq(pad_blk - 1)
                m.d.sync += [pad_blk.eq(pad_blk - 1), pad_base.eq(pad_base - BLOCK_BYTES)]
                with m.If(pad_base <= 1):     # this block holds the first padding byte
                    m.next = "INNER"

            with m.State("INNER"):
                drain()
                m.d.sync += [
                    release_len.eq(Mux(transport, header_len + payload_len,
                                       Mux(in_version == 6, in_plen + _IPV6_HEADER, in_total))),
                    # RFC 6040 normal mode: CE on the outer header reaches an ECN-capable inner one.
                    mark_ce.eq(~transport & (outer_ecn == ECN_CE) & ((in_ecn == 1) | (in_ecn == 2))),
                    rel_blk.eq(0),
                    next_blk.eq(0),
                    out_valid.eq(0),
                    loads_carry.eq(0),
                ]
                with m.If(pad_bad):
                    finish(DecapStatus.MALFORMED)
                with m.Elif(next_header == PROTO_NONE):
                    finish(DecapStatus.DUMMY)
                with m.Elif(transport | inner_v4_ok | inner_v6_ok):
                    # Transport mode releases whatever the payload is (the model does).
                    m.next = "RELEASE"
                with m.Else():
                    finish(DecapStatus.MALFORMED)

            with m.State("RELEASE"):
                drain()
                advance = ~out_valid | self.o.ready
                m.d.comb += [rd.en.eq(advance),
                             rd.addr.eq(Mux(rel_blk < hdr_rows, depth + rel_blk,
                                            rel_blk - hdr_rows))]
                with m.If(advance):
                    m.d.sync += loads_carry.eq(0)
                    with m.If(next_blk > last_blk):
                        m.d.sync += out_valid.eq(0)
                    with m.Elif(rel_blk == carry_at):
                        m.d.sync += [out_valid.eq(0), loads_carry.eq(1), rel_blk.eq(rel_blk + 1)]
                    with m.Else():
                        m.d.sync += [out_valid.eq(1), out_blk.eq(next_blk),
                                     next_blk.eq(next_blk + 1), rel_blk.eq(rel_blk + 1)]
                with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                    finish(DecapStatus.OK)

            with m.State("VERDICT"):
                drain()
                m.d.comb += self.verdict.valid.eq(in_done)
                with m.If(self.verdict.valid & self.verdict.ready):
                    m.next = "IDLE"
        return m
