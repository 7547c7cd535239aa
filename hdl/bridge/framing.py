# SPDX-License-Identifier: BSD-2-Clause
"""Frames of the host link: HDLC-style byte stuffing with a CRC-16 trailer.

On the wire a frame is ``FLAG body FLAG``, where the body is the payload followed
by :func:`~.crc.crc16` of the payload, big-endian. A ``FLAG`` or ``ESCAPE`` byte in
the body is sent as ``ESCAPE, byte ^ ESCAPE_XOR``; a receiver undoes ``ESCAPE, x``
as ``x ^ ESCAPE_XOR`` for any ``x``. A FLAG always ends whatever came before it, so
a receiver resynchronizes on the next FLAG after garbage, a lost byte or an
aborted frame.

Receiver rules (:class:`FrameDecoder` and :class:`FrameDecoderModel` alike):

* After reset, and after a frame that grew too long, bytes are ignored up to the
  next FLAG (hunting).
* At a FLAG, what was received since the previous FLAG is judged: nothing at all is
  idle fill (back-to-back frames send two FLAGs) and not counted; a body shorter
  than :data:`MIN_BODY` is counted in ``too_short``; a body that ends in a lone
  ESCAPE or whose CRC is wrong is counted in ``bad_crc``; otherwise the frame is
  good.
* A body longer than ``max_frame + 2`` bytes (payload longer than ``max_frame``)
  is counted in ``too_long`` as soon as it overflows, and the rest is dropped up to
  the next FLAG.

The payload of a frame has at least one byte: a byte stream with ``last`` markers
cannot carry an empty one, so :func:`encode_frame` refuses it and a receiver counts
a 2-byte body (an empty payload and its CRC) as too short.
"""

from collections.abc import Iterator

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .crc import CRC_INIT, CRC_WIDTH, Crc16Step, crc16
from .uart import _check_counter_width

__all__ = ["FLAG", "ESCAPE", "ESCAPE_XOR", "CRC_BYTES", "MIN_BODY", "MAX_FRAME",
           "PAYLOAD_BYTE", "DECODED_BYTE", "encode_frame", "decode_frames",
           "FrameDecoderModel", "FrameEncoder", "FrameDecoder"]

FLAG = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
#: Bytes of CRC at the end of each body.
CRC_BYTES = CRC_WIDTH // 8
#: Shortest body a receiver accepts: one payload byte and the CRC.
MIN_BODY = 1 + CRC_BYTES
#: Default longest payload a receiver accepts: a 1500-byte packet with its link
#: header and a command header fits, and a consumer's frame buffer is a power of two.
MAX_FRAME = 2048

#: A payload byte into :class:`FrameEncoder`; ``last`` marks a frame's final byte
#: (the byte after it starts the next frame).
PAYLOAD_BYTE = data.StructLayout({"data": 8, "last": 1})
#: A payload byte out of :class:`FrameDecoder`. ``abort`` is meaningful on a ``last``
#: byte only: set, the frame is bad and everything received of it must be discarded.
#: (The names match :class:`~espnic.hdl.packet.fifo.PacketFifo`, which does that.)
DECODED_BYTE = data.StructLayout({"data": 8, "last": 1, "abort": 1})

_FLAG_BYTES = bytes([FLAG])
_ESCAPE_BYTES = bytes([ESCAPE])


def _as_bytes(value, name: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, bytearray or memoryview, not {type(value).__name__}")


def _check_max_frame(max_frame):
    if type(max_frame) is not int:
        raise TypeError(f"max_frame must be an int, not {max_frame!r}")
    if max_frame < 1:
        raise ValueError(f"max_frame must be at least 1 byte, not {max_frame!r}")


def encode_frame(payload: bytes) -> bytes:
    """The wire bytes of one frame carrying ``payload`` (at least one byte):
    opening FLAG, escaped payload and CRC, closing FLAG."""
    payload = _as_bytes(payload, "payload")
    if not payload:
        raise ValueError("payload must not be empty: a frame carries at least one byte")
    body = payload + crc16(payload).to_bytes(CRC_BYTES, "big")
    # ESCAPE first: the FLAG substitution inserts ESCAPEs that must stay single.
    body = body.replace(_ESCAPE_BYTES, bytes([ESCAPE, ESCAPE ^ ESCAPE_XOR]))
    body = body.replace(_FLAG_BYTES, bytes([ESCAPE, FLAG ^ ESCAPE_XOR]))
    return _FLAG_BYTES + body + _FLAG_BYTES


class FrameDecoderModel:
    """Incremental receiver in Python, with the gateware's rules and counters (see
    the module docstring): :meth:`feed` takes wire bytes as they arrive and returns
    the payloads of the good frames they completed.

    ``bad_crc``, ``too_short`` and ``too_long`` count like :class:`FrameDecoder`'s
    outputs but never saturate. ``on_abort``, if given, is called with the payload
    bytes :class:`FrameDecoder` passes on of each bad frame before it marks the last
    one ``abort`` (a model of its consumer needs them: a bad ``INJECT`` frame's bytes
    reach the inject FIFO).
    """

    def __init__(self, *, max_frame: int = MAX_FRAME, on_abort=None):
        _check_max_frame(max_frame)
        self.max_frame = max_frame
        self.on_abort = on_abort
        self.bad_crc = self.too_short = self.too_long = 0
        self._body = bytearray()
        self._escaped = False
        self._hunting = True

    def feed(self, data: bytes) -> list[bytes]:
        data = _as_bytes(data, "data")
        good = []
        start = 0
        while True:
            end = data.find(FLAG, start)
            if not self._hunting:
                self._add(data[start:] if end < 0 else data[start:end])
            if end < 0:
                return good
            payload = self._close()
            if payload is not None:
                good.append(payload)
            start = end + 1

    def _add(self, chunk: bytes) -> None:
        body = self._body
        if not self._escaped and ESCAPE not in chunk:
            body += chunk
        else:
            for byte in chunk:
                if self._escaped:
                    body.append(byte ^ ESCAPE_XOR)
                    self._escaped = False
                elif byte == ESCAPE:
                    self._escaped = True
                else:
                    body.append(byte)
        if len(body) > self.max_frame + CRC_BYTES:
            self.too_long += 1
            if self.on_abort is not None:
                self.on_abort(bytes(body[:self.max_frame]))
            self._reset(hunting=True)

    def _close(self) -> bytes | None:
        body, escaped, hunting = self._body, self._escaped, self._hunting
        self._reset(hunting=False)
        if hunting or not (body or escaped):
            return None
        if len(body) < MIN_BODY:
            self.too_short += 1
        elif escaped or crc16(body) != 0:
            self.bad_crc += 1
            if self.on_abort is not None:
                self.on_abort(bytes(body[:-CRC_BYTES]))
        else:
            return bytes(body[:-CRC_BYTES])
        return None

    def _reset(self, *, hunting: bool) -> None:
        self._body = bytearray()
        self._escaped = False
        self._hunting = hunting


def decode_frames(stream: bytes, *, max_frame: int = MAX_FRAME) -> Iterator[bytes]:
    """The payloads of the good frames in ``stream``, in order (a fresh
    :class:`FrameDecoderModel`: bytes before the first FLAG are ignored)."""
    yield from FrameDecoderModel(max_frame=max_frame).feed(stream)


class FrameEncoder(wiring.Component):
    """Payload bytes on ``i`` to framed wire bytes on ``o`` (see :func:`encode_frame`,
    which this matches byte for byte).

    A frame starts with the first byte after reset or after a ``last`` byte, and is
    opened only once that byte is offered, so ``o`` idles between frames.

    Throughput: one wire byte per cycle; ``i`` is held while an ESCAPE, a FLAG or
    the CRC goes out, so a frame of ``n`` payload bytes takes ``n + 4`` cycles plus
    one per escaped byte. Latency: a wire byte is offered the cycle after it is
    decided (``o`` is a register).
    """

    i: In(stream.Signature(PAYLOAD_BYTE))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc_step = crc_step = Crc16Step()
        crc = Signal(CRC_WIDTH, init=CRC_INIT)
        escaping = Signal()         # an ESCAPE went out; the byte it escapes is next

        out_free = ~self.o.valid | self.o.ready
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def emit(value):
            m.d.sync += [self.o.payload.eq(value), self.o.valid.eq(1)]

        # The body byte (payload or CRC) due next, and whether it may go out now.
        body_byte = Signal(8)
        sending = Signal()
        needs_escape = (body_byte == FLAG) | (body_byte == ESCAPE)
        sent = Signal()             # its unescaped or escaped form goes out this cycle
        m.d.comb += [
            crc_step.crc.eq(crc),
            crc_step.data.eq(body_byte),
            sent.eq(sending & ~(needs_escape & ~escaping)),
        ]
        with m.If(sending):
            with m.If(needs_escape & ~escaping):
                emit(ESCAPE)
                m.d.sync += escaping.eq(1)
            with m.Else():
                emit(body_byte ^ Mux(escaping, ESCAPE_XOR, 0))
                m.d.sync += escaping.eq(0)

        with m.FSM(name="encoder"):
            with m.State("IDLE"):
                with m.If(self.i.valid & out_free):
                    emit(FLAG)
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [
                    body_byte.eq(self.i.payload.data),
                    sending.eq(self.i.valid & out_free),
                    self.i.ready.eq(out_free & ~(needs_escape & ~escaping)),
                ]
                with m.If(sent):
                    m.d.sync += crc.eq(crc_step.next)
                    with m.If(self.i.payload.last):
                        m.next = "CRC_HIGH"
            with m.State("CRC_HIGH"):
                m.d.comb += [body_byte.eq(crc[8:]), sending.eq(out_free)]
                with m.If(sent):
                    m.next = "CRC_LOW"
            with m.State("CRC_LOW"):
                m.d.comb += [body_byte.eq(crc[:8]), sending.eq(out_free)]
                with m.If(sent):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                with m.If(out_free):
                    emit(FLAG)
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "IDLE"
        return m


class FrameDecoder(wiring.Component):
    """Wire bytes on ``i`` to payload bytes on ``o``, by the receiver rules in the
    module docstring (the same as :class:`FrameDecoderModel`'s).

    A frame is known good only at its closing FLAG, but its payload bytes are passed
    on as they arrive: the ``last`` byte of each frame carries ``abort``, set when
    the frame turned out bad (wrong CRC, a lone ESCAPE before the FLAG, cut short by
    a FLAG, or longer than ``max_frame``; the latter ends with its ``max_frame``-th
    byte). **A consumer must buffer each frame and act on it only if its last byte
    has ``abort`` clear** (e.g. through a
    :class:`~espnic.hdl.packet.fifo.PacketFifo`). Too-short frames put nothing on
    ``o``. ``bad_crc``, ``too_short`` and ``too_long`` count bad frames and saturate
    at their all-ones value.

    Throughput: one wire byte per cycle while ``o`` is ready (``i.ready`` is low only
    while ``o`` holds a byte that is not taken). Latency: a payload byte is offered
    the cycle after the wire byte that carries the third body byte after it (or the
    closing FLAG) is taken: the last two body bytes are the CRC, and the byte before
    them must wait to be marked ``last``.

    Parameters
    ----------
    max_frame : longest payload accepted, in bytes (default :data:`MAX_FRAME`).
    counter_width : bits of each counter.
    """

    def __init__(self, *, max_frame: int = MAX_FRAME, counter_width: int = 16):
        _check_max_frame(max_frame)
        _check_counter_width(counter_width)
        self._max_frame = max_frame
        super().__init__({
            "i":         In(stream.Signature(8)),
            "o":         Out(stream.Signature(DECODED_BYTE)),
            "bad_crc":   Out(counter_width),
            "too_short": Out(counter_width),
            "too_long":  Out(counter_width),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc_step = crc_step = Crc16Step()
        crc = Signal(CRC_WIDTH, init=CRC_INIT)
        longest = self._max_frame + CRC_BYTES
        length = Signal(range(longest + 2))     # body bytes since the FLAG
        escaped = Signal()                      # the previous byte was an ESCAPE
        hunting = Signal(init=1)                # ignoring bytes up to the next FLAG
        # The last three body bytes, newest in the low byte: the oldest goes out once
        # a newer one shows it is neither CRC nor the frame's last payload byte.
        recent = Signal(3 * 8)
        oldest = recent[16:]

        byte = self.i.payload
        plain = byte ^ Mux(escaped, ESCAPE_XOR, 0)
        m.d.comb += [crc_step.crc.eq(crc), crc_step.data.eq(plain)]

        out_free = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(out_free)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def emit(*, last, abort):
            m.d.sync += [
                self.o.payload.data.eq(oldest),
                self.o.payload.last.eq(last),
                self.o.payload.abort.eq(abort),
                self.o.valid.eq(1),
            ]

        def count(counter):
            with m.If(~counter.all()):
                m.d.sync += counter.eq(counter + 1)

        with m.If(self.i.valid & out_free):
            with m.If(byte == FLAG):
                m.d.sync += [hunting.eq(0), escaped.eq(0), length.eq(0), crc.eq(CRC_INIT)]
                with m.If(~hunting):
                    bad = escaped | (crc != 0)
                    with m.If(length >= MIN_BODY):
                        emit(last=1, abort=bad)
                        with m.If(bad):
                            count(self.bad_crc)
                    with m.Elif((length != 0) | escaped):
                        count(self.too_short)
            with m.Elif(hunting):
                pass
            with m.Elif((byte == ESCAPE) & ~escaped):
                m.d.sync += escaped.eq(1)
            with m.Else():
                m.d.sync += [
                    escaped.eq(0),
                    recent.eq(Cat(plain, recent[:16])),
                    crc.eq(crc_step.next),
                    length.eq(length + 1),
                ]
                with m.If(length == longest):
                    emit(last=1, abort=1)
                    count(self.too_long)
                    m.d.sync += hunting.eq(1)
                with m.Elif(length >= MIN_BODY):
                    emit(last=0, abort=0)
        return m
