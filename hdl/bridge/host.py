# SPDX-License-Identifier: BSD-2-Clause
"""``HostBridge``: executes host frames on the device's registers and host streams.

Sits between a :class:`~.framing.FrameDecoder` and a :class:`~.framing.FrameEncoder`
(the frame formats are in :mod:`.regmap`)::

    rx (decoded frame bytes) --> receive: header, body ----> execute --+--> control registers
                                  (body buffer: block RAM)              |
                                     `--> staging register, a payload --+--> in channel streams
    tx (frame bytes) <-- transmit: ACK / DATA <------------- response --+
                                   ITEM <------------------ out channel streams

Nothing a frame asks for happens before its last byte has arrived with a good CRC:
a body collects in a block RAM (``MAX_BODY`` bytes), and only once the frame is
known whole and its length right are its payloads read out, one at a time, into
the staging register that the target stream sees. So a ``SEND`` offers its whole
payload at once (an SA record is never half written), a ``SEND_MANY`` all of its
payloads or none, and a frame that turns out bad leaves no trace but a counter.

Receiving never waits for transmitting (full duplex): ``rx`` takes a byte every cycle,
as a UART delivers them whether or not anyone listens. The bridge keeps one frame and
one answer. A frame that has arrived is *held* (header, first word and body buffer
are its own) until it has been executed and, for a ``SEND`` kind, its stream has
taken its payloads; it executes at once unless the answer of the frame before it
still waits, and then as soon as that answer has gone to the encoder. An answer
waits for the transmitter (the ``ITEM`` or ``PACKET`` frame going out) and keeps its
own tag and address, so the next frame can arrive meanwhile. A host is stop-and-wait
(one frame, then its answer), so a frame arriving while another is held is a resend
after the host's timeout (or a frame that followed a device server's session frame
straight away): a frame that *begins* while another is held is thrown away whole,
unanswered, none of it stored or executed, and counted (``frames_dropped``); the host
resends it again. A resend that arrives once its first copy was executed (its answer
sent or waiting) is received, and answered ``DUPLICATE`` after that answer, as the
protocol says. An ``INJECT`` whose packet finds the injected-packet FIFO full (its
port paused, or the device's output backed up behind the link) cannot wait either:
its packet is cut (ended with an ``abort`` byte, so the FIFO drops it and
``inject_aborted`` counts it) and the frame is dropped and counted the same way.

A ``SEND_SHORT``'s missing tail is zeros. The CRC covers the frame that arrived,
not its length: a frame cut short is refused by the CRC except when its last two
bytes happen to be the CRC of the rest (1 in 65,536 cuts). A ``SEND`` or
``SEND_MANY`` so cut is still refused, by its length; only a ``SEND_SHORT``,
which a host uses for payloads whose tail is zero anyway (a ``READ`` or a
``DELETE``, never a record with a key), can lose its tail that way, as any frame
can have bits flipped past the CRC.
"""

from contextlib import contextmanager

from amaranth import Array, C, Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..forwarder.egress import EGRESS_BEAT
from ..packet.layouts import packet_beat
from .framing import DECODED_BYTE, PAYLOAD_BYTE
from .regmap import HEADER_BYTES, MAX_BODY, FrameKind, PacketSource, RegisterMap, Status

__all__ = ["HostBridge", "MAX_READ_WORDS", "inject_byte", "device_side"]

#: The most words one ``READ`` returns.
MAX_READ_WORDS = 64


def inject_byte(ports: int) -> data.StructLayout:
    """A byte of an injected packet, for ingress port ``port``; ``abort`` on the last
    byte of a packet whose frame turned out bad."""
    return data.StructLayout({"data": 8, "last": 1, "abort": 1, "port": range(max(2, ports))})


def device_side(regmap: RegisterMap) -> dict:
    """The members every bridge of ``regmap``'s device has towards the device (so the
    device wires a frame bridge and a BAR bridge alike): ``status[i]`` and
    ``control[i]`` (:attr:`RegisterMap.status_registers`, ``control_registers``),
    ``inject``, ``egress[p]``, ``exception`` with ``exception_port``, and a stream
    array per channel, named as the channel."""
    ports = regmap.params["ports"]
    members = {
        "status": In(32).array(len(regmap.status_registers)),
        "control": Out(32).array(len(regmap.control_registers)),
        "inject": Out(stream.Signature(inject_byte(ports))),
        "egress": In(stream.Signature(EGRESS_BEAT)).array(ports),
        "exception": In(stream.Signature(packet_beat(16))),
        "exception_port": In(range(max(2, ports + regmap.params["nested"]))),
    }
    for channel in regmap.channels:
        direction = Out if channel.direction == "in" else In
        members[channel.name] = direction(stream.Signature(channel.layout)).array(channel.count)
    return members


class HostBridge(wiring.Component):
    """Host frames in, answers and device items out, one byte per cycle each way.

    Parameters
    ----------
    regmap : the :class:`RegisterMap` of the device this bridge fronts.

    Interface
    ---------
    rx : decoded frame bytes (``abort`` on a bad frame's last byte); always ready.
    tx : frame payload bytes for the encoder.
    inject : the bytes of ``INJECT`` frames, as they arrive (:func:`inject_byte`):
        the consumer must keep a packet until its last byte and drop it if that
        byte has ``abort`` (a :class:`~espnic.hdl.packet.fifo.PacketFifo`). A byte
        is offered for one cycle only (it cannot wait): if it is not taken the
        packet is cut, and ended later with a byte that has ``last`` and ``abort``.
    egress[p], exception, exception_port : packets the device sends out, each to
        the host as a ``PACKET`` frame.
    status[i] : the value of the i-th read-only register that has a signal
        (:attr:`status_registers`), wired by the device.
    control[i] : the i-th read/write register (:attr:`control_registers`).
    <channel>[k] : one stream per in channel (out of the bridge) and per out
        channel (into it), by the channel's name.
    bad_command, duplicates, frames_dropped : counters (bad frames the decoder
        counts itself).

    Latency: a frame is executed the cycle after its last byte (or after the answer
    before it went out). Its answer starts on ``tx`` a cycle later if the transmitter
    is idle, else once the frame going out has ended (at most an ``ITEM`` or a
    ``PACKET`` frame: a 2,044-byte packet and 5 bytes, about 20,500 bit times on a
    UART). A ``SEND`` kind reads each payload out of the body buffer, a byte per
    cycle: its stream sees a payload of ``P`` bytes ``P + 1`` cycles after the frame
    was executed (or the payload before it was taken), 158 for an SA record, and the
    ``ACK`` goes once the last was taken. Throughput: one byte per cycle on each side,
    independently; answers go first, then items, then packets (egress ports in order,
    then the exception queue), a whole frame at a time. A ``DATA`` answer's words are
    each read whole, the cycle before their first byte goes out.

    The body buffer is one block RAM of ``MAX_BODY`` bytes (2,044: 4 iCE40 EBRs, one
    ECP5 DP16KD), read and written a byte at a time; the staging register is the
    widest in channel's payload (157 bytes), loaded by shifting. Full duplex costs
    no second buffer (a frame that begins while one is held is not stored), only the
    answer's tag and address (24 flip-flops) and the cut packet's state.
    """

    def __init__(self, regmap: RegisterMap):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {regmap!r}")
        self.regmap = regmap
        self.status_registers = regmap.status_registers
        self.control_registers = regmap.control_registers
        super().__init__({
            "rx": In(stream.Signature(DECODED_BYTE)),
            "tx": Out(stream.Signature(PAYLOAD_BYTE)),
            "bad_command": Out(32),
            "duplicates": Out(32),
            "frames_dropped": Out(32),
            **device_side(regmap),
        })

    def elaborate(self, platform):
        m = Module()
        regmap = self.regmap
        channels_in = [c for c in regmap.channels if c.direction == "in"]
        channels_out = [c for c in regmap.channels if c.direction == "out"]
        staging_bytes = max([1] + [c.payload_bytes for c in channels_in])

        # ---- registers -----------------------------------------------------
        words = Array(Signal(32, name=f"word{a}") for a in range(regmap.words))
        status_index = {r.address: i for i, r in enumerate(self.status_registers)}
        control_index = {r.address: i for i, r in enumerate(self.control_registers)}
        for register in regmap.registers:
            word = words[register.address]
            if register.value is not None:
                m.d.comb += word.eq(register.value)
            elif register.address in status_index:
                m.d.comb += word.eq(self.status[status_index[register.address]])
            else:
                m.d.comb += word.eq(self.control[control_index[register.address]])
        writable = Signal(regmap.words)
        m.d.comb += writable.eq(sum(1 << a for a in control_index))

        # ---- receive -------------------------------------------------------
        header = Signal(data.ArrayLayout(8, HEADER_BYTES))
        first_word = Signal(32)           # a READ's or WRITE's body
        # Every body but an INJECT's, for the SEND kinds to read out once it is known good.
        m.submodules.body = body = Memory(shape=8, depth=MAX_BODY, init=[])
        body_write = body.write_port()
        body_read = body.read_port()
        # Bytes of the frame so far.
        position = Signal(range(HEADER_BYTES + MAX_BODY + 2))
        body_offset = Signal(range(MAX_BODY + 2))
        overlong = Signal()
        kind, tag = header[0], header[1]
        address = Cat(header[2], header[3])
        channel_number = header[2]
        body_length = Signal.like(position)
        m.d.comb += body_offset.eq(position - HEADER_BYTES)
        # Body bytes since the last whole payload of the channel the header names: 0 at
        # the end of a body of whole payloads (SEND_MANY's length rule, without a divider).
        numbers = {c.number for c in channels_in}
        sizes = Array(C(regmap.channels[n].payload_bytes if n in numbers else 1,
                        range(staging_bytes + 1)) for n in range(len(regmap.channels)))
        partial = Signal(range(staging_bytes))
        # What executing a frame needs of its header, registered as the header arrives so
        # that the execution's checks start from flip-flops: the payload bytes of the
        # channel that byte 2 names, and whether bytes 2 and 3 name an in stream.
        channel_bytes = Signal(range(staging_bytes + 1))
        known = Signal()

        # ---- response (ACK or DATA) waiting for the transmitter -------------
        response = Signal()               # pending
        response_data = Signal()          # DATA rather than ACK
        response_status = Signal(Status)
        response_words = Signal(range(MAX_READ_WORDS + 1))
        # Its frame's tag and address, kept so the header is free for the next frame.
        response_tag = Signal(8)
        response_address = Signal(16)
        last_tag = Signal(8)
        last_tag_valid = Signal()

        # ---- a SEND kind's payloads, out of the body buffer ------------------
        # Each payload shifts into the top of `staging`, a byte per cycle, so a
        # channel's payload is the top `payload_bytes` of it.
        staging = Signal(8 * staging_bytes)
        loading = Signal()                # a payload is moving into staging
        sending = Signal()                # staging is offered to the target stream
        targets = [(c, k) for c in channels_in for k in range(c.count)]
        send_stream = Signal(range(max(1, len(targets))))
        send_bytes = Signal(range(staging_bytes + 1))    # the target's payload bytes
        fetch = Signal(range(MAX_BODY + staging_bytes + 1))   # body offset of the next read
        to_fetch = Signal(range(staging_bytes + 1))      # reads left for this payload
        arriving = Signal()               # body_read.data is a byte of this payload
        padding = Signal()                # ... beyond the body: a zero instead

        def answer(status):
            m.d.sync += [response.eq(1), response_data.eq(0), response_status.eq(status),
                         response_tag.eq(tag)]

        def count(counter):
            m.d.sync += counter.eq(counter + 1)

        ports = regmap.params["ports"]
        in_body = position >= HEADER_BYTES
        duplicate = last_tag_valid & (tag == last_tag)
        # A frame is held from its last byte until it has been executed and, for a SEND
        # kind, its payloads have been taken: header, first word and body buffer are
        # its own until then. It executes once the answer before it has gone out.
        complete = Signal()
        execute = Signal()
        m.d.comb += execute.eq(complete & ~response)
        held = complete | loading | sending
        # The rest of the frame on rx is thrown away: it began while another was held,
        # or it is an INJECT whose packet found the injected-packet FIFO full.
        discarding = Signal()
        discard = Mux(position == 0, held, discarding)
        # An INJECT's bytes go on as they arrive (a packet does not wait for its CRC),
        # unless its port is unknown or it is a resent copy.
        injecting = Signal()
        m.d.comb += injecting.eq(in_body & (kind == FrameKind.INJECT) & (header[2] < ports)
                                 & ~duplicate & ~discard)
        # A cut packet's bytes are in the FIFO: it is owed a last byte with `abort`.
        owe_abort = Signal()
        cut_port = Signal.like(self.inject.payload.port)
        inject_started = Signal()          # a byte of this frame's packet went on
        passed = Signal()
        m.d.comb += passed.eq(self.inject.valid & self.inject.ready & ~owe_abort)
        cut = injecting & self.rx.valid & ~passed
        with m.If(owe_abort):
            m.d.comb += [
                self.inject.payload.last.eq(1),
                self.inject.payload.abort.eq(1),
                self.inject.payload.port.eq(cut_port),
                self.inject.valid.eq(1),
            ]
            with m.If(self.inject.ready):
                m.d.sync += owe_abort.eq(0)
        with m.Else():
            m.d.comb += [
                self.inject.payload.data.eq(self.rx.payload.data),
                self.inject.payload.last.eq(self.rx.payload.last),
                self.inject.payload.abort.eq(self.rx.payload.abort),
                self.inject.payload.port.eq(header[2]),
                # Offered once: a byte the FIFO cannot take now is not there later.
                self.inject.valid.eq(self.rx.valid & injecting),
            ]
        m.d.comb += [
            # Full duplex: no byte ever waits (a UART could not hold it).
            self.rx.ready.eq(1),
            body_write.addr.eq(body_offset),
            body_write.data.eq(self.rx.payload.data),
        ]
        with m.If(self.rx.valid):
            byte = self.rx.payload.data
            with m.If(position == 0):
                m.d.sync += [discarding.eq(held), inject_started.eq(0)]
            with m.If(discard):
                pass
            with m.Elif(~in_body):
                m.d.sync += [header[position].eq(byte), partial.eq(0)]
                with m.If(position == 2):
                    m.d.sync += channel_bytes.eq(
                        Mux(byte < len(regmap.channels), sizes[byte], 1))
                with m.If(position == 3):
                    m.d.sync += known.eq(0)
                    with m.Switch(Cat(byte, channel_number)):
                        for t, (channel, k) in enumerate(targets):
                            with m.Case(k | channel.number << 8):
                                m.d.sync += [known.eq(1), send_stream.eq(t),
                                             send_bytes.eq(channel.payload_bytes)]
            with m.Elif(kind == FrameKind.INJECT):
                with m.If(passed):
                    m.d.sync += inject_started.eq(1)
                with m.Elif(cut):
                    m.d.sync += discarding.eq(1)
                    with m.If(inject_started):
                        m.d.sync += [owe_abort.eq(1), cut_port.eq(header[2])]
            with m.Elif(body_offset < MAX_BODY):
                m.d.comb += body_write.en.eq(1)
                with m.Switch(body_offset):
                    for n in range(4):
                        with m.Case(n):
                            m.d.sync += first_word[8 * n:8 * (n + 1)].eq(byte)
                m.d.sync += partial.eq(Mux(partial + 1 >= channel_bytes, 0, partial + 1))
            with m.Else():
                m.d.sync += overlong.eq(1)
            m.d.sync += position.eq(position + 1)
            with m.If(self.rx.payload.last):
                m.d.sync += [position.eq(0), overlong.eq(0)]

        # The frame's last byte is in: decide in the next cycle from registers. A good
        # frame thrown away is counted (a bad one the decoder counted already).
        frame_length = Signal.like(position)
        frame_overlong = Signal()
        beyond = in_body & (kind != FrameKind.INJECT) & (body_offset >= MAX_BODY)
        with m.If(execute):
            m.d.sync += complete.eq(0)
        with m.If(self.rx.valid & self.rx.payload.last & ~self.rx.payload.abort):
            with m.If(discard | cut):
                count(self.frames_dropped)
            with m.Else():
                m.d.sync += [complete.eq(1), frame_length.eq(position + 1),
                             body_length.eq(position + 1 - HEADER_BYTES),
                             frame_overlong.eq(overlong | beyond)]
        short = frame_length < HEADER_BYTES

        @contextmanager
        def unless_refused(*refusals):
            # The first (condition, status) that holds answers; none: the body runs.
            for n, (condition, status) in enumerate(refusals):
                with (m.Elif if n else m.If)(condition):
                    answer(status)
                    count(self.duplicates if status is Status.DUPLICATE else self.bad_command)
            with m.Else():
                yield

        def load_payload(start):
            m.d.sync += [loading.eq(1), fetch.eq(start), to_fetch.eq(send_bytes)]

        send_kind = (kind == FrameKind.SEND) | (kind == FrameKind.SEND_MANY) | \
            (kind == FrameKind.SEND_SHORT)
        with m.If(execute):
            # Duplicates are told by the frame just before: a host resends only the
            # frame it waits for, so a resent frame follows its first copy directly.
            m.d.sync += [last_tag.eq(tag), last_tag_valid.eq(1)]
            with m.If(short | frame_overlong):
                answer(Status.BAD_LENGTH)
                count(self.bad_command)
            with m.Elif(kind == FrameKind.READ):
                n = first_word[:8]
                with unless_refused(
                        (body_length != 1, Status.BAD_LENGTH),
                        ((n == 0) | (n > MAX_READ_WORDS) | (address + n > regmap.words),
                         Status.BAD_ADDRESS)):
                    m.d.sync += [response.eq(1), response_data.eq(1), response_words.eq(n),
                                 response_tag.eq(tag), response_address.eq(address)]
            with m.Elif(kind == FrameKind.WRITE):
                with unless_refused(
                        (body_length != 4, Status.BAD_LENGTH),
                        ((address >= regmap.words) | ~writable.bit_select(address, 1),
                         Status.BAD_ADDRESS),
                        (duplicate, Status.DUPLICATE)):
                    with m.Switch(address):
                        for a, i in control_index.items():
                            with m.Case(a):
                                m.d.sync += self.control[i].eq(first_word)
                    answer(Status.OK)
            with m.Elif(send_kind):
                length_ok = Signal()
                whole = body_length == channel_bytes
                with m.Switch(kind):
                    with m.Case(FrameKind.SEND):
                        m.d.comb += length_ok.eq(whole)
                    with m.Case(FrameKind.SEND_MANY):
                        m.d.comb += length_ok.eq((body_length != 0) & (partial == 0))
                    with m.Case(FrameKind.SEND_SHORT):
                        m.d.comb += length_ok.eq((body_length != 0) &
                                                 (body_length <= channel_bytes))
                with unless_refused((~known, Status.BAD_CHANNEL),
                                    (~length_ok, Status.BAD_LENGTH),
                                    (duplicate, Status.DUPLICATE)):
                    m.d.sync += [loading.eq(1), fetch.eq(0), to_fetch.eq(channel_bytes)]
            with m.Elif(kind == FrameKind.INJECT):
                with unless_refused((header[2] >= ports, Status.BAD_PORT),
                                    (body_length == 0, Status.BAD_LENGTH),
                                    (duplicate, Status.DUPLICATE)):
                    answer(Status.OK)
            with m.Else():
                answer(Status.BAD_KIND)
                count(self.bad_command)

        # Body byte `fetch` is read in one cycle and shifted in the next.
        m.d.comb += body_read.addr.eq(fetch)
        m.d.sync += arriving.eq(0)
        with m.If(loading):
            with m.If(to_fetch != 0):
                m.d.sync += [fetch.eq(fetch + 1), to_fetch.eq(to_fetch - 1),
                             arriving.eq(1), padding.eq(fetch >= body_length)]
            with m.If(arriving):
                m.d.sync += staging.eq(Cat(staging[8:], Mux(padding, 0, body_read.data)))
                with m.If(to_fetch == 0):
                    m.d.sync += [loading.eq(0), sending.eq(1)]

        for t, (channel, k) in enumerate(targets):
            target = getattr(self, channel.name)[k]
            top = 8 * (staging_bytes - channel.payload_bytes)
            m.d.comb += [
                target.payload.eq(staging[top:top + channel.layout.size]),
                target.valid.eq(sending & (send_stream == t)),
            ]
            with m.If(target.valid & target.ready):
                m.d.sync += sending.eq(0)
                with m.If(fetch < body_length):          # SEND_MANY: the next payload
                    load_payload(fetch)
                with m.Else():
                    answer(Status.OK)

        # ---- transmit --------------------------------------------------------
        sources = [(c, k) for c in channels_out for k in range(c.count)]
        source = Signal(range(max(1, len(sources))))
        tx_byte = Signal(range(HEADER_BYTES + 4 * MAX_READ_WORDS + 1))
        # Counted beside tx_byte rather than derived from it, for timing: the frame's
        # last byte's index. A DATA's words and an ITEM's payload go out of a
        # register, `answer_word`, each word read whole (from the register map, or
        # the channel's payload) a cycle before its first byte is due (`next_word`,
        # the word at `tx_word`), so neither the register map's read nor the choice
        # of the channel and of a byte of its payload (156 bytes for an SA record)
        # is in the transmitted byte's path.
        tx_last = Signal.like(tx_byte)
        tx_word = Signal.like(response_address)
        next_word = Signal(32)
        answer_word = Signal(32)
        source_bytes = Array(Value.cast(getattr(self, c.name)[k].payload)
                             for c, k in sources)
        item_words = max([1] + [(c.payload_bytes + 3) // 4 for c, _ in sources])
        item_word = tx_word[:max(1, (item_words - 1).bit_length())]
        sending_item = Signal()             # the frame going out is an ITEM
        m.d.sync += next_word.eq(Mux(sending_item, source_bytes[source].word_select(item_word, 32),
                                     words[tx_word]))
        # Packets: each egress port, then the exception queue.
        packet_sources = [*self.egress, self.exception]
        packet_source = Signal(range(len(packet_sources)))
        beat_byte = Signal(range(16))
        # Also counted beside tx_byte and beat_byte, for timing: a packet's header bytes
        # are going out, and the bytes of the beat out once this one is.
        packet_header = Signal()
        beat_bytes_out = Signal(range(17))
        trailer = Signal()                      # the packet is out: its status byte next
        beats = Array(packet_sources)
        beat = beats[packet_source].payload
        beat_valid = beats[packet_source].valid
        aborted = Array([*(e.payload.abort for e in self.egress), C(0)])[packet_source]
        def next_byte():
            # A DATA or an ITEM byte went out; after the header's or a word's last
            # byte the next word is due (HEADER_BYTES is a whole word).
            m.d.sync += tx_byte.eq(tx_byte + 1)
            with m.If(tx_byte[:2] == 3):
                m.d.sync += [answer_word.eq(next_word), tx_word.eq(tx_word + 1)]

        def frame_byte(header, body):
            # The byte at `tx_byte` of a frame: 4 header bytes, then the body.
            with m.Switch(tx_byte):
                for n, value in enumerate(header):
                    with m.Case(n):
                        m.d.comb += self.tx.payload.data.eq(value)
                with m.Default():
                    m.d.comb += self.tx.payload.data.eq(body)

        with m.FSM(name="transmit"):
            with m.State("IDLE"):
                m.d.sync += [tx_byte.eq(0), tx_word.eq(response_address), sending_item.eq(0)]
                with m.If(response):
                    m.d.sync += tx_last.eq(Mux(response_data,
                                               HEADER_BYTES - 1 + 4 * response_words,
                                               HEADER_BYTES - 1))
                    m.next = "ANSWER"
                with m.Else():
                    # The last If that holds wins: packets lose to items, and the
                    # lowest source first: replies before events, engines in order.
                    for q, packets in reversed(list(enumerate(packet_sources))):
                        with m.If(packets.valid):
                            m.d.sync += [packet_source.eq(q), beat_byte.eq(0),
                                         beat_bytes_out.eq(1), packet_header.eq(1)]
                            m.next = "PACKET"
                    for s, (channel, k) in reversed(list(enumerate(sources))):
                        with m.If(getattr(self, channel.name)[k].valid):
                            m.d.sync += [source.eq(s), tx_word.eq(0), sending_item.eq(1),
                                         tx_last.eq(HEADER_BYTES - 1 + channel.payload_bytes)]
                            m.next = "ITEM"
            with m.State("ANSWER"):
                frame_byte((Mux(response_data, FrameKind.DATA, FrameKind.ACK), response_tag,
                            Mux(response_data, response_address[:8], response_status),
                            Mux(response_data, response_address[8:], 0)),
                           answer_word.word_select(tx_byte[:2], 8))
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.last.eq(tx_byte == tx_last)]
                with m.If(self.tx.ready):
                    next_byte()
                    with m.If(self.tx.payload.last):
                        m.d.sync += response.eq(0)
                        m.next = "IDLE"
            with m.State("ITEM"):
                numbers = Array(C(c.number, 8) for c, _ in sources)
                indices = Array(C(k, 8) for _, k in sources)
                frame_byte((FrameKind.ITEM, 0, numbers[source], indices[source]),
                           answer_word.word_select(tx_byte[:2], 8))
                m.d.comb += [self.tx.valid.eq(1),
                             self.tx.payload.last.eq(tx_byte == tx_last)]
                with m.If(self.tx.ready):
                    next_byte()
                    with m.If(self.tx.payload.last):
                        m.next = "IDLE"
                        for s, (channel, k) in enumerate(sources):
                            with m.If(source == s):
                                m.d.comb += getattr(self, channel.name)[k].ready.eq(1)
            with m.State("PACKET"):
                from_exceptions = packet_source == len(self.egress)
                frame_byte((FrameKind.PACKET, 0,
                            Mux(from_exceptions, self.exception_port, packet_source),
                            Mux(from_exceptions, PacketSource.EXCEPTION, PacketSource.EGRESS)),
                           Mux(trailer, aborted, beat.data.word_select(beat_byte, 8)))
                # A packet's beats may come with gaps: a body byte waits for its beat.
                m.d.comb += [
                    self.tx.valid.eq(packet_header | trailer | beat_valid),
                    self.tx.payload.last.eq(trailer),
                ]
                with m.If(self.tx.valid & self.tx.ready):
                    with m.If(packet_header):
                        m.d.sync += [tx_byte.eq(tx_byte + 1),
                                     packet_header.eq(tx_byte != HEADER_BYTES - 1)]
                    with m.Elif(trailer):
                        m.d.sync += trailer.eq(0)
                        m.next = "IDLE"
                    with m.Elif(beat_bytes_out == beat.count):
                        # The beat's last byte: take the beat; after a packet's last
                        # beat comes its status byte (the abort flag seen only now).
                        m.d.sync += [beat_byte.eq(0), beat_bytes_out.eq(1),
                                     trailer.eq(beat.last)]
                        for q, packets in enumerate(packet_sources):
                            with m.If(packet_source == q):
                                m.d.comb += packets.ready.eq(1)
                    with m.Else():
                        m.d.sync += [beat_byte.eq(beat_byte + 1),
                                     beat_bytes_out.eq(beat_bytes_out + 1)]
        return m
