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
* packets whose ciphertext is longer than a buffer bank (``16 * buffer_blocks``
  bytes) are ``MALFORMED`` here; the model takes any length.

Interface: one :data:`DECAP_JOB` per packet on ``job``; the outer packet on
``i`` as 16-byte beats (full but the last); one :data:`DECAP_HEADER` per packet
on ``header`` (``malformed`` set when the outer header failed: no ``admit``
follows) and one :data:`DECAP_ADMIT` on ``admit`` for each well-formed one;
one :data:`DECAP_SETTLE` on ``settle`` per admitted packet whose ICV has been
computed (not truncated), answered on ``settled``: the engine commits the
sequence number to the replay window there, and only an accepted packet goes on
to its trailer checks and release; the released packet on ``o`` (16-byte
beats, full but the last); one :data:`DECAP_VERDICT` per packet on
``verdict``, after the packet's last output beat and once its last input beat
has been taken. Every stream is in packet order.

Overlap (``banks`` > 1): the input side takes packet N+1 while the output side
waits for packet N's ICV, checks and releases it, each packet in its own
buffer bank. An SA without ESN does not wait for ``admit`` before decrypting
(its AAD is all on the wire): a packet refused there is decrypted into its
bank all the same, and dropped unopened. With ESN the AAD needs the high half
from ``admit``, so the input side waits for it.
"""

from types import SimpleNamespace

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gcm.core import GcmCore
from ..gcm.layouts import BLOCK_BYTES
from ..packet.ipv4 import IPV6_HEADER_BYTES, ip_header_bytes
from ..packet.layouts import big_endian, octets, ones_fold, packet_beat, words16
from ..packet.register import SkidBuffer
from .protocol import (ECN_CE, ESP_HEADER_BYTES, ESP_MIN_BYTES, ICV_BYTES, PROTO_ESP, PROTO_IPV4,
                       PROTO_IPV6, PROTO_NONE, PROTO_UDP, UDP_HEADER_BYTES)
from .sa import Encap

__all__ = ["DecapStatus", "DECAP_JOB", "DECAP_HEADER", "DECAP_ADMIT", "DECAP_SETTLE",
           "DECAP_SETTLED", "DECAP_VERDICT", "EspDecap"]


class DecapStatus(enum.Enum, shape=3):
    OK        = 0   # authentic, the inner packet was released
    AUTH_FAIL = 1   # ICV mismatch: nothing released, the window must not move
    MALFORMED = 2   # outer header, length, truncation, padding or inner header
    DUMMY     = 3   # authentic, next header 59 (RFC 4303 2.6): nothing released
    REFUSED   = 4   # ``admit.go`` or ``settled.accept`` was 0 (SPI or replay check): dropped


#: What the SA table hands the decapsulator with each packet.
DECAP_JOB = data.StructLayout({
    "key":       256,
    "key_256":   1,
    "salt":      32,
    "esn":       1,
    "encap":     Encap,   # the SA's RFC 3948 UDP encapsulation
    "transport": 1,       # transport mode: the outer header is rebuilt around the payload
})

#: The ESP header of a packet (offered on ``header``, one per packet).
DECAP_HEADER = data.StructLayout({
    "spi":       32,
    "seq_lo":    32,    # the 32 bits on the wire
    "malformed": 1,     # the outer header failed: spi/seq_lo mean nothing, no admit
})

#: The answer to a ``header``: go on (``go``, with the reconstructed high half of
#: the sequence number for an ESN SA's AAD) or drain the packet unopened.
DECAP_ADMIT = data.StructLayout({
    "go":     1,
    "seq_hi": 32,
})

#: An admitted packet's ICV result, offered before anything of it is released.
DECAP_SETTLE = data.StructLayout({
    "authentic": 1,     # the ICV verified
})

#: The engine's answer to a ``settle``: ``accept`` = the packet is authentic and
#: still new after every earlier packet's commit (the window took its number).
DECAP_SETTLED = data.StructLayout({
    "accept": 1,
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
_HEADER_ROWS = 4          # buffer rows for an outer header of up to 60 bytes


def _descriptor(banks):
    """What the input side hands the output side about a packet (the input side's
    registers belong to the next packet by the time the output side uses them)."""
    return data.StructLayout({
        "bank":       range(max(banks, 2)),
        "gcm":        1,             # a GCM message was started: its result must be taken
        "status":     DecapStatus,   # without one: MALFORMED or REFUSED
        "go":         1,             # admitted
        "truncated":  1,
        "transport":  1,
        "v6":         1,
        "header_len": 7,             # the outer IP header's
        "text_len":   16,
        "ip_total":   16,            # IPv4 total length
        "checksum":   16,            # IPv4 header checksum
        "proto":      8,
        "ttl":        8,
        "ecn":        2,
        "spi":        32,            # as on the wire (byte i at bits 8i)
        "seq":        32,
    })


#: The inner header's fields, caught as its plaintext goes into a bank.
_INNER = data.StructLayout({
    "version":  4,
    "ihl":      4,
    "total":    16,
    "plen":     16,
    "word0":    16,
    "checksum": 16,
    "sum":      21,          # the IPv4 header's 16-bit words, summed
})


class EspDecap(wiring.Component):
    """ESP decapsulation (see the module docstring).

    Parameters
    ----------
    profile : the GCM core's datapath profile (``"compact"`` or ``"fast"``).
    buffer_blocks : plaintext capacity of a buffer bank in 16-byte blocks; the
        default 124 (1,984 bytes of ciphertext) holds any packet of a 1500-byte
        MTU, and with the four header rows makes a bank 128 rows.
    banks : packets in flight, each in its own bank of the buffer (block RAM,
        ``banks`` x a power of two >= ``buffer_blocks + 4`` rows of 128 bits).

    Design: three parts around the GCM core, in packet order.

    * *Input side*: reads the outer header from the beats that hold it (fixed
      offsets; the ESP header words at ``E = header length (+ 8 with UDP)``,
      always a multiple of 4), offers the ESP header, and feeds the core's
      ``data_in`` itself, no gearbox: the AAD block, the ciphertext ``[E + 16,
      length - 16)`` as blocks that each join the upper part of one beat to the
      lower part of the next (a 4-way choice per packet), then the ICV, merged
      lane-wise from the last two beats and rotated into place. In transport
      mode it keeps the outer header's beats in its bank's four header rows.
      Then it hands a descriptor to the output side and takes the next packet
      as soon as a bank is free.
    * *Writer*: the core's plaintext blocks into their message's bank (the
      header rows have the write port first, the core waits), the inner
      header's fields caught on the way.
    * *Output side*: the core's verdict, the ``settle`` handshake, the trailer
      and padding read back from the bank's end, the inner header checks, then
      the packet streamed out of the bank (in transport mode the kept header
      first, the payload joined to it by the same 4-way choice: one cycle more
      when the header is not a multiple of 16 bytes).

    Latency and throughput (``sync`` cycles, Amaranth simulator, no stalls,
    AES-128): the input is taken at the GCM core's block rate (one 16-byte beat
    per cycle *fast*, about one per 16 *compact*, its serial GHASH), plus about
    four cycles per packet (the header check, the command, the AAD block, the
    ICV block); the core's verdict comes 21 (*fast*) / 52 (*compact*, measured
    before its AES unit's output register, which adds a few) cycles after the last
    input beat; the first inner beat leaves 6 cycles after that verdict, 7 when
    the packet has padding (one more per further block of padding: 22 for 255
    bytes), the others
    follow at one beat per cycle, and the packet's verdict one cycle after its
    last beat. With one bank the next packet is taken in the cycle after the
    verdict; with ``banks`` banks ``banks`` packets are in flight. Cycles per
    packet inside an engine: ``bench/engine.py``.
    """

    def __init__(self, *, profile="compact", buffer_blocks=124, banks=1):
        if type(buffer_blocks) is not int or not 4 <= buffer_blocks <= 4092:
            raise ValueError(f"buffer_blocks must be an integer from 4 to 4092 (16-byte blocks), "
                             f"not {buffer_blocks!r}")
        if type(banks) is not int or not 1 <= banks <= 4:
            raise ValueError(f"banks must be an integer from 1 to 4, not {banks!r}")
        self._buffer_blocks, self._banks = buffer_blocks, banks
        self._gcm = GcmCore(profile)
        super().__init__({
            "job":     In(stream.Signature(DECAP_JOB)),
            "header":  Out(stream.Signature(DECAP_HEADER)),
            "admit":   In(stream.Signature(DECAP_ADMIT)),
            "settle":  Out(stream.Signature(DECAP_SETTLE)),
            "settled": In(stream.Signature(DECAP_SETTLED)),
            "i":       In(stream.Signature(packet_beat(BLOCK_BYTES))),
            "o":       Out(stream.Signature(packet_beat(BLOCK_BYTES))),
            "verdict": Out(stream.Signature(DECAP_VERDICT)),
        })

    @property
    def banks(self) -> int:
        return self._banks

    def elaborate(self, platform):
        m = Module()
        m.submodules.gcm = gcm = self._gcm
        blocks, banks = self._buffer_blocks, self._banks
        row_bits = (blocks + _HEADER_ROWS - 1).bit_length()
        bank_bits = max(1, (banks - 1).bit_length())
        # Bank b, row r at Cat(r, b): rows [0, blocks) the plaintext, blocks + 0..3
        # the outer header (transport).
        m.submodules.buffer = buffer = Memory(shape=unsigned(128), depth=banks << row_bits,
                                              init=[])
        ports = SimpleNamespace(wr=buffer.write_port(), rd=buffer.read_port(),
                                row=lambda bank, index: Cat(index[:row_bits], bank[:bank_bits]))
        layout = _descriptor(banks)
        # Descriptors from the input side, and the bank of each started GCM message.
        m.submodules.descriptors = descriptors = SyncFIFO(width=layout.size, depth=banks)
        m.submodules.messages = messages = SyncFIFO(width=bank_bits, depth=banks)
        inner = [Signal(_INNER, name=f"inner_{bank}") for bank in range(banks)]

        # A bank is taken with a job and given back with the packet's verdict.
        in_flight = Signal(range(banks + 1))
        taken = self.job.valid & self.job.ready
        freed = self.verdict.valid & self.verdict.ready
        m.d.sync += in_flight.eq(in_flight + taken - freed)

        header_write = self._input_side(m, gcm, ports, descriptors, messages, layout,
                                        room=in_flight < banks)
        self._writer(m, gcm, ports, messages, inner, header_write)
        self._output_side(m, gcm, ports, descriptors, messages, layout, inner)
        return m

    def _input_side(self, m, gcm, ports, descriptors, messages, layout, *, room):
        """Header, admission and the core's input of one packet after another;
        returns whether the write port is taken for a header row this cycle."""
        blocks, banks = self._buffer_blocks, self._banks
        job = Signal(DECAP_JOB)
        bank = Signal(range(max(banks, 2)))
        next_bank = Signal.like(bank)
        seq_hi = Signal(32)
        go = Signal()
        awaiting = Signal()            # the header is out, its admit not in yet
        gcm_started = Signal()
        early = Signal(DecapStatus)    # the outcome when no GCM message is started
        beat = self.i.payload
        offset = Signal(17)            # byte offset of the current input beat in the packet
        prev = Signal(128)             # the previous beat: text blocks and the ICV straddle two
        in_done = Signal()             # the packet's last input beat has been taken
        consumed = self.i.valid & self.i.ready
        with m.If(consumed):
            m.d.sync += [offset.eq(offset + BLOCK_BYTES), prev.eq(beat.data)]
            with m.If(beat.last):
                m.d.sync += in_done.eq(1)

        # The admission may come while the text goes in (no ESN): taken when it comes.
        m.d.comb += self.admit.ready.eq(awaiting)
        with m.If(self.admit.valid & awaiting):
            m.d.sync += [awaiting.eq(0), go.eq(self.admit.payload.go),
                         seq_hi.eq(self.admit.payload.seq_hi)]

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
        header_len = ip_header_bytes(is_v6, ihl)
        is_udp = proto == PROTO_UDP
        # The packet's lengths, worked out from its first beat as it is taken and kept in
        # registers: derived from the captured fields instead, their adder chains led into
        # every comparison of the input side and on into the GCM core's command.
        esp_start = Signal(7)          # E: always a multiple of 4
        text_start = Signal(7)
        total_len = Signal(17)
        # Both only meaningful once CHECK has passed the lengths.
        text_len = Signal(16)
        text_end = Signal(17)
        blocks_sent = Signal(range(blocks + 1))
        truncated = Signal()
        icv = Signal(128)

        octet = octets(beat.data)
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
            messages.w_data.eq(bank),
            messages.w_en.eq(gcm.cmd.valid & gcm.cmd.ready),
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
                            for k, (prev_byte, this_byte) in enumerate(zip(octets(prev), octet)))
        for bit in range(4):
            step = 8 << bit
            icv_from_pair = Mux(icv_lane[bit], Cat(icv_from_pair[step:], icv_from_pair[:step]),
                                icv_from_pair)
        ends_short = beat.last & (offset + beat.count < total_len)

        # ---- the descriptor --------------------------------------------------------------
        desc = layout(descriptors.w_data)
        m.d.comb += [
            desc.bank.eq(bank), desc.gcm.eq(gcm_started), desc.status.eq(early),
            desc.go.eq(go), desc.truncated.eq(truncated), desc.transport.eq(job.transport),
            desc.v6.eq(is_v6), desc.header_len.eq(header_len), desc.text_len.eq(text_len),
            desc.ip_total.eq(ip_total), desc.checksum.eq(outer_checksum), desc.proto.eq(proto),
            desc.ttl.eq(outer_ttl), desc.ecn.eq(outer_ecn), desc.spi.eq(spi_wire),
            desc.seq.eq(seq_wire),
        ]
        m.d.comb += [
            self.header.payload.spi.eq(big_endian(spi_wire, 4)),
            self.header.payload.seq_lo.eq(big_endian(seq_wire, 4)),
        ]
        header_write = Signal()

        def keep_header(into, transport, at):
            # Transport mode keeps the IP header (beats 0..3) in the bank's header rows (a
            # beat that also holds text is written too: the same beat at the same offset;
            # not looking at `ready` keeps the core's ready out of this).
            with m.If(self.i.valid & (at < _HEADER_ROWS) & transport):
                m.d.comb += [header_write.eq(1),
                             ports.wr.addr.eq(ports.row(into, blocks + at[:2])),
                             ports.wr.data.eq(beat.data)]

        def drop(how):
            # Dropped before a GCM message: drained, then handed on with its outcome.
            m.d.sync += early.eq(how)
            m.next = "DRAIN"

        with m.FSM(name="decap_in"):
            with m.State("IDLE"):
                # The first beat is taken with the job. `job.ready` does not wait for
                # `job.valid` (only the beat does), so the dispatcher's decision to send
                # the job and the taking of it are not one chain.
                m.d.comb += self.job.ready.eq(self.i.valid & room)
                with m.If(self.job.valid & self.i.valid & room):
                    m.d.comb += self.i.ready.eq(1)
                    m.d.sync += [
                        job.eq(self.job.payload),
                        bank.eq(next_bank),
                        next_bank.eq(Mux(next_bank == banks - 1, 0, next_bank + 1)),
                        offset.eq(BLOCK_BYTES), in_done.eq(beat.last), truncated.eq(0),
                        blocks_sent.eq(0), icv_have.eq(0), gcm_started.eq(0), go.eq(0),
                        esp_header.eq(0), udp_len.eq(0),
                    ]
                    keep_header(next_bank, self.job.payload.transport, C(0, 2))
                    first_version, first_ihl = octet[0][4:], octet[0][:4]
                    first_v6 = first_version == 6
                    first_ip_total = Cat(octet[3], octet[2])
                    first_v6_plen = Cat(octet[5], octet[4])
                    first_proto = Mux(first_v6, octet[6], octet[9])
                    m.d.sync += [
                        version.eq(first_version),
                        ihl.eq(first_ihl),
                        ip_total.eq(first_ip_total),
                        v6_plen.eq(first_v6_plen),
                        proto.eq(first_proto),
                        fragment.eq(Cat(octet[7], octet[6][:6]) != 0),
                        outer_ecn.eq(Mux(first_v6, octet[1][4:6], octet[1][:2])),
                        outer_ttl.eq(octet[8]),
                        outer_checksum.eq(Cat(octet[11], octet[10])),
                        header_sum.eq(sum(words16(beat.data))),
                    ]
                    first_esp_start = (ip_header_bytes(first_v6, first_ihl)
                                       + Mux(first_proto == PROTO_UDP, UDP_HEADER_BYTES, 0))
                    first_total = Mux(first_v6, first_v6_plen + IPV6_HEADER_BYTES, first_ip_total)
                    m.d.sync += [
                        esp_start.eq(first_esp_start),
                        text_start.eq(first_esp_start + ESP_HEADER_BYTES),
                        total_len.eq(first_total),
                        text_len.eq(first_total - first_esp_start - ESP_HEADER_BYTES - ICV_BYTES),
                        text_end.eq(first_total - ICV_BYTES),
                    ]
                    with m.If(beat.last):
                        m.next = "BAD_HEADER"
                    with m.Else():
                        m.next = "HEADER"

            with m.State("HEADER"):
                # The beats after the first up to the one where the text starts.
                keep_header(bank, job.transport, offset[4:])
                with m.If(self.i.valid):
                    m.d.sync += header_sum.eq(header_sum + sum(
                        Mux(offset + 2 * w < Cat(C(0, 2), ihl), word, 0)
                        for w, word in enumerate(words16(beat.data))))
                    # UDP length and checksum: `udp_len` keeps the first half.
                    capture(udp_len, header_len + 4)
                    for w in range(4):
                        capture(esp_header[32 * w:32 * (w + 1)], esp_start + 4 * w)
                    with m.If(offset + BLOCK_BYTES >= text_start):
                        with m.If(beat.last & (offset + beat.count < text_start)):
                            m.d.comb += self.i.ready.eq(1)
                            m.next = "BAD_HEADER"
                        with m.Elif(offset + BLOCK_BYTES == text_start):
                            m.d.comb += self.i.ready.eq(1)
                            m.next = "CHECK"
                        with m.Else():
                            m.next = "CHECK"    # the beat holds text too: TEXT takes it
                    with m.Else():
                        m.d.comb += self.i.ready.eq(1)
                        with m.If(beat.last):
                            m.next = "BAD_HEADER"

            with m.State("CHECK"):
                after_ip = total_len - header_len
                ihl_bytes = Cat(C(0, 2), ihl)
                outer_ok = Mux(is_v6,
                               v6_plen != 0,
                               (version == 4) & (ihl_bytes >= _IPV4_MIN_HEADER)
                               & (ihl_bytes <= ip_total) & (ones_fold(header_sum) == 0xffff)
                               & ~fragment)
                proto_ok = Mux(job.encap == Encap.UDP, is_udp, proto == PROTO_ESP)
                # RFC 3948 2.2: a zero SPI is the non-ESP (IKE) marker.
                udp_ok = ~is_udp | ((big_endian(udp_len[:16], 2) == after_ip) & (spi_wire != 0))
                length = total_len - esp_start
                long_enough = length >= ESP_MIN_BYTES
                fits = length - ESP_HEADER_BYTES - ICV_BYTES <= BLOCK_BYTES * blocks
                # in_done: the stream ended with the ESP header, before the IP length.
                good = outer_ok & proto_ok & udp_ok & long_enough & fits & ~in_done
                m.d.comb += [self.header.payload.malformed.eq(~good), self.header.valid.eq(1),
                             gcm.cmd.valid.eq(good & ~job.esn & self.header.ready)]
                with m.If(self.header.ready):
                    with m.If(~good):
                        drop(DecapStatus.MALFORMED)
                    with m.Else():
                        m.d.sync += awaiting.eq(1)
                        # The AAD of an ESN SA needs the high half from the admission;
                        # without ESN the command goes with the header.
                        with m.If(job.esn):
                            m.next = "ADMIT"
                        with m.Elif(gcm.cmd.ready):
                            m.d.sync += gcm_started.eq(1)
                            m.next = "AAD"
                        with m.Else():
                            m.next = "COMMAND"

            with m.State("BAD_HEADER"):
                m.d.comb += [self.header.payload.malformed.eq(1), self.header.valid.eq(1)]
                with m.If(self.header.ready):
                    drop(DecapStatus.MALFORMED)

            with m.State("ADMIT"):
                with m.If(~awaiting):
                    with m.If(go):
                        m.next = "COMMAND"
                    with m.Else():
                        m.next = "REFUSE"

            with m.State("REFUSE"):
                # Drained unopened; a stream that ends before the IP length is still
                # MALFORMED, as the model finds that before the SPI and the window.
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & beat.last):
                    drop(Mux(ends_short, DecapStatus.MALFORMED, DecapStatus.REFUSED))

            with m.State("COMMAND"):
                m.d.comb += gcm.cmd.valid.eq(1)
                with m.If(gcm.cmd.ready):
                    m.d.sync += gcm_started.eq(1)
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
                m.d.comb += [gcm.data_in.payload.eq(icv), gcm.data_in.valid.eq(1)]
                with m.If(gcm.data_in.ready):
                    # Usually the packet is in and admitted by now: hand it on at once.
                    m.d.comb += descriptors.w_en.eq(in_done & ~awaiting)
                    with m.If(in_done & ~awaiting):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DRAIN"

            with m.State("DRAIN"):
                # Bytes past the IP length (and all of a dropped packet) are skipped; the
                # descriptor goes once the packet is in and its admission (if any) came.
                m.d.comb += [self.i.ready.eq(~in_done),
                             descriptors.w_en.eq(in_done & ~awaiting)]
                with m.If(in_done & ~awaiting):
                    m.next = "IDLE"
        return header_write

    def _writer(self, m, gcm, ports, messages, inner, header_write):
        """The core's plaintext into its message's bank; the inner header's fields."""
        blocks = self._buffer_blocks
        row = Signal(range(blocks + 1))
        bank = messages.r_data
        # The plaintext through a skid buffer: the inner header's sums and the bank's
        # write port were one path with the core's keystream XOR (the compact core's
        # output comes straight from its AES state). The output side waits for the
        # last block to be written (`written` there).
        m.submodules.from_gcm = from_gcm = SkidBuffer(gcm.data_out.payload.shape())
        wiring.connect(m, gcm.data_out, from_gcm.i)
        out = from_gcm.o
        plain = out.payload.data
        octet = octets(plain)
        with m.If(~header_write):
            m.d.comb += [ports.wr.addr.eq(ports.row(bank, row)), ports.wr.data.eq(plain),
                         out.ready.eq(1)]
        m.d.comb += ports.wr.en.eq(header_write | out.valid & out.ready)
        with m.If(out.valid & out.ready):
            m.d.sync += row.eq(row + 1)
            with m.If(out.payload.last):
                m.d.sync += row.eq(0)
                m.d.comb += messages.r_en.eq(1)
            for index, fields in enumerate(inner):
                with m.If(bank == index):
                    with m.If(row == 0):
                        m.d.sync += [
                            fields.version.eq(octet[0][4:]),
                            fields.ihl.eq(octet[0][:4]),
                            fields.total.eq(Cat(octet[3], octet[2])),
                            fields.plen.eq(Cat(octet[5], octet[4])),
                            fields.word0.eq(Cat(octet[1], octet[0])),
                            fields.checksum.eq(Cat(octet[11], octet[10])),
                            fields.sum.eq(sum(words16(plain))),
                        ]
                    with m.Elif(row < 4):
                        m.d.sync += fields.sum.eq(fields.sum + sum(
                            Mux(Cat(C(2 * w, 4), row) < Cat(C(0, 2), fields.ihl), word, 0)
                            for w, word in enumerate(words16(plain))))

    def _output_side(self, m, gcm, ports, descriptors, messages, layout, inner):
        """Verdict, settlement, trailer and inner checks and release, a packet at a time."""
        blocks = self._buffer_blocks
        rd = ports.rd
        desc = Signal(layout)
        found = Signal(_INNER)         # the inner header's fields of this packet's bank
        m.d.comb += found.eq(Array(fields.as_value() for fields in inner)[desc.bank])
        status = Signal(DecapStatus)
        authentic = Signal()
        tag_ok = Signal()
        text_len = desc.text_len
        # The trailer's places (its last, second-to-last and third-to-last byte) worked
        # out while the packet waits for its tag: the padding checks read a byte of the
        # bank at them, and the subtractions in front of those byte choices and of the
        # compares made one path with the block RAM's read.
        trailer_at = Signal(data.StructLayout({"last": 16, "pad_length": 16, "pad_end": 16}))
        header_len = desc.header_len
        transport = desc.transport

        def read(index):
            m.d.comb += rd.addr.eq(ports.row(desc.bank, index))

        # ---- trailer, padding, inner header checks -----------------------------------
        next_header = Signal(8)
        pad_len = Signal(8)
        pad_blk = Signal(range(blocks))
        # Which padding byte (1-based) lane 0 of block `pad_blk` would be: -15..270 in
        # the blocks visited, so each lane needs only a small adder and two compares.
        pad_base = Signal(signed(10))
        # Of the block the padding check reads next: which lanes are padding bytes and
        # what each must be (RFC 4303 2.4: 1, 2, 3, ...), worked out a cycle ahead from
        # `pad_base` and `pad_len`, so the check is a byte compare after the block
        # RAM's read and not the adders and range compares too.
        pad_lanes = Signal(BLOCK_BYTES)
        pad_expect = Signal(data.ArrayLayout(8, BLOCK_BYTES))
        pad_bad = Signal()
        payload_len = Signal(signed(18))
        m.d.comb += payload_len.eq(text_len - 2 - pad_len)
        rd_octet = Array(octets(rd.data))
        m.d.comb += rd.en.eq(1)

        in_ecn = Mux(found.version == 6, found.word0[4:6], found.word0[:2])
        in_ihl_bytes = Cat(C(0, 2), found.ihl)
        inner_v4_ok = ((next_header == PROTO_IPV4) & (found.version == 4)
                       & (in_ihl_bytes >= _IPV4_MIN_HEADER) & (in_ihl_bytes <= found.total)
                       & (found.total <= payload_len) & (ones_fold(found.sum) == 0xffff))
        inner_v6_ok = ((next_header == PROTO_IPV6) & (found.version == 6)
                       & (found.plen != 0) & (found.plen + IPV6_HEADER_BYTES <= payload_len))
        release_len = Signal(17)
        mark_ce = Signal()
        new_word0 = found.word0 | ECN_CE     # IPv4: TOS is the low byte of word 0
        # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
        new_checksum = Signal(16)
        m.d.comb += new_checksum.eq(~ones_fold(Cat(~found.checksum, C(0, 5))
                                           + Cat(~found.word0, C(0, 5)) + new_word0))

        # ---- release ---------------------------------------------------------------
        # Tunnel: rows 0.. are the inner packet's beats. Transport: the header rows
        # first (H = 16a + 4r bytes), row 0 rewritten; with r != 0 row a only loads
        # `carry` (its r words), then each beat is the r carried words and the first
        # 4 - r words of the next row, whose last r words are carried on (a 4-way
        # choice per packet). Rows past the payload only fill masked lanes.
        hdr_full = header_len[4:]                       # a
        join = Mux(transport, header_len[2:4], 0)       # r, in 4-byte words
        hdr_rows = Mux(transport, hdr_full + (join != 0), 0)
        carry_at = Mux(transport & (join != 0), hdr_full, blocks + _HEADER_ROWS)
        rel_blk = Signal(range(blocks + _HEADER_ROWS + 2))   # next row to read, in release order
        out_blk = Signal(range(blocks + _HEADER_ROWS + 1))   # index of the beat on `o`
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
        new_v4_checksum = ~ones_fold(Cat(~desc.checksum, C(0, 5)) + Cat(~desc.ip_total, C(0, 5))
                                 + release_len[:16] + Cat(~Cat(desc.proto, desc.ttl), C(0, 5))
                                 + Cat(next_header, desc.ttl))[:16]
        rebuilt = Mux(desc.v6,
                      Cat(rd.data[:32], big_endian(release_len - IPV6_HEADER_BYTES, 2), next_header,
                          rd.data[56:]),
                      Cat(rd.data[:16], big_endian(release_len, 2), rd.data[32:72], next_header,
                          big_endian(new_v4_checksum, 2), rd.data[96:]))
        released = Signal(128)
        with m.If(in_header):
            m.d.comb += released.eq(Mux(out_blk == 0, rebuilt, rd.data))
        with m.Elif(mark_ce & (out_blk == 0)):
            with m.If(found.version == 6):
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
            self.verdict.payload.spi.eq(big_endian(desc.spi, 4)),
            self.verdict.payload.seq.eq(big_endian(desc.seq, 4)),
            self.verdict.payload.length.eq(Mux(status == DecapStatus.OK, release_len, 0)),
        ]

        def finish(how):
            m.d.sync += status.eq(how)
            m.next = "VERDICT"

        with m.FSM(name="decap_out"):
            with m.State("IDLE"):
                m.d.comb += descriptors.r_en.eq(1)
                with m.If(descriptors.r_rdy):
                    given = layout(descriptors.r_data)
                    m.d.sync += [desc.eq(given), status.eq(given.status), authentic.eq(0),
                                 pad_bad.eq(0), mark_ce.eq(0), release_len.eq(0)]
                    with m.If(given.gcm):
                        m.next = "TAG"
                    with m.Else():
                        m.next = "VERDICT"

            with m.State("TAG"):
                m.d.sync += [trailer_at.last.eq(text_len - 1),
                             trailer_at.pad_length.eq(text_len - 2),
                             trailer_at.pad_end.eq(text_len - 3)]
                # A packet admitted and whole is settled with the engine; the others
                # only need the core's result out of the way.
                # The core's result comes after the message's last plaintext block, which
                # may still be in the writer's skid buffer: the bank is whole once the
                # writer has moved on from it (it writes the messages in order).
                settles = desc.go & ~desc.truncated
                written = ~messages.r_rdy | (messages.r_data != desc.bank)
                m.d.comb += [
                    self.settle.payload.authentic.eq(gcm.result.payload.tag_ok),
                    self.settle.valid.eq(gcm.result.valid & settles & written),
                    gcm.result.ready.eq(written & (~settles | self.settle.ready)),
                ]
                with m.If(gcm.result.valid & gcm.result.ready):
                    m.d.sync += tag_ok.eq(gcm.result.payload.tag_ok)
                    with m.If(desc.truncated):
                        finish(DecapStatus.MALFORMED)
                    with m.Elif(~desc.go):
                        finish(DecapStatus.REFUSED)
                    with m.Else():
                        m.next = "SETTLED"

            with m.State("SETTLED"):
                m.d.comb += self.settled.ready.eq(1)
                with m.If(self.settled.valid):
                    with m.If(~tag_ok):
                        finish(DecapStatus.AUTH_FAIL)
                    with m.Elif(~self.settled.payload.accept):
                        finish(DecapStatus.REFUSED)     # a replay after all
                    with m.Else():
                        m.d.sync += authentic.eq(1)
                        read(trailer_at.last[4:])
                        m.next = "PAD_LENGTH"

            # Authentic from here on: the trailer and the padding are read back.
            with m.State("PAD_LENGTH"):
                m.d.sync += next_header.eq(rd_octet[trailer_at.last[:4]])
                read(trailer_at.pad_length[4:])
                m.next = "PAD_START"

            with m.State("PAD_START"):
                length_now = rd_octet[trailer_at.pad_length[:4]]
                first_blk = trailer_at.pad_end[4:]
                m.d.sync += [
                    pad_len.eq(length_now),
                    pad_blk.eq(first_blk),
                    pad_base.eq(Cat(C(0, 4), first_blk) - (trailer_at.pad_length - length_now) + 1),
                ]
                read(first_blk)
                with m.If(length_now > trailer_at.pad_length):
                    m.d.sync += pad_bad.eq(1)
                    m.next = "INNER"
                with m.Elif(length_now == 0):
                    m.next = "INNER"
                with m.Else():
                    m.next = "PAD_LANES"

            def lanes_of(base):
                # The padding lanes of the block whose lane 0 is padding byte `base`.
                for k in range(BLOCK_BYTES):
                    index = base + k
                    m.d.sync += [pad_lanes[k].eq((index >= 1) & (index <= pad_len)),
                                 pad_expect[k].eq(index[:8])]

            with m.State("PAD_LANES"):
                lanes_of(pad_base)
                read(pad_blk)
                m.next = "PAD"

            with m.State("PAD"):
                # RFC 4303 2.4: padding bytes 1, 2, 3, ... pad_len.
                with m.If(Cat(pad_lanes[k] & (rd_octet[k] != pad_expect[k])
                              for k in range(BLOCK_BYTES)).any()):
                    m.d.sync += pad_bad.eq(1)
                lanes_of(pad_base - BLOCK_BYTES)
                read(pad_blk - 1)
                m.d.sync += [pad_blk.eq(pad_blk - 1), pad_base.eq(pad_base - BLOCK_BYTES)]
                with m.If(pad_base <= 1):     # this block holds the first padding byte
                    m.next = "INNER"

            with m.State("INNER"):
                m.d.sync += [
                    release_len.eq(Mux(transport, header_len + payload_len,
                                       Mux(found.version == 6, found.plen + IPV6_HEADER_BYTES,
                                           found.total))),
                    # RFC 6040 normal mode: CE on the outer header reaches an ECN-capable inner one.
                    mark_ce.eq(~transport & (desc.ecn == ECN_CE) & ((in_ecn == 1) | (in_ecn == 2))),
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
                advance = ~out_valid | self.o.ready
                m.d.comb += rd.en.eq(advance)
                read(Mux(rel_blk < hdr_rows, blocks + rel_blk, rel_blk - hdr_rows))
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
                m.d.comb += self.verdict.valid.eq(1)
                with m.If(self.verdict.ready):
                    m.next = "IDLE"
