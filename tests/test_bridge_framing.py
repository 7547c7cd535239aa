# SPDX-License-Identifier: BSD-2-Clause
"""CRC-16, FrameEncoder and FrameDecoder (Amaranth simulator) and the Python codec.

Oracles: a bitwise CRC written here from the catalogue definition, and a receiver
written here the simplest way (split the stream at FLAGs, unescape, check), which
the gateware and :class:`FrameDecoderModel` (incremental, chunked) must both match.
"""

import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from espnic.hdl.bridge.crc import CRC_CHECK, CRC_INIT, Crc16Step, crc16
from espnic.hdl.bridge.framing import (ESCAPE, FLAG, MAX_FRAME, FrameDecoder, FrameDecoderModel,
                                       FrameEncoder, decode_frames, encode_frame)
from espnic.hdl.packet.fifo import PacketFifo
from espnic.sim.amaranth_sim import (run_sim, stream_get_n, stream_get_packets, stream_put_all)

SIM = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PURE = settings(max_examples=300, deadline=None)


def reference_step(crc: int, byte: int) -> int:
    """One byte into a CRC-16/CCITT-FALSE register, bit by bit, MSB first."""
    for bit in range(7, -1, -1):
        feedback = (crc >> 15 & 1) ^ (byte >> bit & 1)
        crc = ((crc << 1) & 0xFFFF) ^ (0x1021 if feedback else 0)
    return crc


def reference_crc(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no xorout."""
    crc = 0xFFFF
    for byte in data:
        crc = reference_step(crc, byte)
    return crc


def reference_receive(stream: bytes, max_frame: int):
    """What a receiver makes of ``stream``: a list of (kind, payload bytes put out)
    per FLAG-delimited chunk, kind one of good / bad_crc / too_short / too_long.
    Bytes before the first FLAG and after the last are not a frame (yet)."""
    frames = []
    for chunk in stream.split(bytes([0x7E]))[1:-1]:
        if not chunk:
            continue
        body, escaped = bytearray(), False
        for byte in chunk:
            if escaped:
                body.append(byte ^ 0x20)
                escaped = False
            elif byte == 0x7D:
                escaped = True
            else:
                body.append(byte)
        if len(body) > max_frame + 2:
            frames.append(("too_long", bytes(body[:max_frame])))
        elif len(body) < 3:
            frames.append(("too_short", b""))
        elif escaped or reference_crc(body) != 0:
            frames.append(("bad_crc", bytes(body[:-2])))
        else:
            frames.append(("good", bytes(body[:-2])))
    return frames


def counts(frames):
    return {kind: sum(k == kind for k, _ in frames) for kind in ("bad_crc", "too_short", "too_long")}


def _sprinkle(data: bytes, level: int) -> bytes:
    """``data`` with the byte values below ``32 * level`` turned into FLAGs and
    ESCAPEs (none for level 0, about 3 in 8 bytes for level 3)."""
    table = bytes((FLAG if value % 2 else ESCAPE) if value < 32 * level else value
                  for value in range(256))
    return data.translate(table)


# Payloads rich in the bytes that need escaping (built from whole binaries: drawing
# 300 bytes one by one costs hypothesis more time than simulating them). Hypothesis
# favours short binaries; the second branch makes sure long frames come up.
payloads = st.builds(_sprinkle, st.one_of(st.binary(min_size=1, max_size=300),
                                          st.binary(min_size=250, max_size=300)),
                     st.integers(0, 3))
short_payloads = st.builds(_sprinkle, st.binary(min_size=1, max_size=60), st.integers(0, 3))


# --- CRC ---------------------------------------------------------------------------

def test_crc_check_value():
    assert crc16(b"123456789") == CRC_CHECK == 0x29B1 == reference_crc(b"123456789")
    assert crc16(b"") == CRC_INIT


@PURE
@given(data=st.binary(max_size=300), split=st.integers(0, 300))
def test_crc_matches_bitwise_reference(data, split):
    assert crc16(data) == reference_crc(data)
    assert crc16(data[split:], crc16(data[:split])) == crc16(data)
    # The property the receiver relies on: a body ending in its CRC leaves 0.
    assert crc16(data + crc16(data).to_bytes(2, "big")) == 0


@settings(max_examples=10, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255)), max_size=64))
def test_crc_step_gateware(pairs):
    pairs = pairs + [(CRC_INIT, byte) for byte in range(256)] + \
        [(1 << bit, 0) for bit in range(16)] + [(0, 1 << bit) for bit in range(8)]
    dut = Crc16Step()

    async def check(ctx):
        for crc, byte in pairs:
            ctx.set(dut.crc, crc)
            ctx.set(dut.data, byte)
            assert ctx.get(dut.next) == reference_step(crc, byte), (hex(crc), byte)

    run_sim(dut, check)
    for crc, byte in pairs:
        assert crc16(bytes([byte]), crc) == reference_step(crc, byte)


# --- Python codec ------------------------------------------------------------------

def test_encode_frame_by_hand():
    payload = b"\x7e\x01\x7d"
    crc = reference_crc(payload).to_bytes(2, "big")
    stuffed_crc = b"".join(bytes([0x7D, b ^ 0x20]) if b in (0x7D, 0x7E) else bytes([b])
                           for b in crc)
    assert encode_frame(payload) == b"\x7e\x7d\x5e\x01\x7d\x5d" + stuffed_crc + b"\x7e"
    assert encode_frame(bytearray(b"A")) == b"\x7eA" + reference_crc(b"A").to_bytes(2, "big") + \
        b"\x7e"


def test_codec_arguments():
    with pytest.raises(ValueError, match="payload must not be empty"):
        encode_frame(b"")
    with pytest.raises(TypeError, match="payload must be bytes"):
        encode_frame("text")
    with pytest.raises(ValueError, match="max_frame must be at least 1"):
        FrameDecoderModel(max_frame=0)
    with pytest.raises(TypeError, match="max_frame must be an int"):
        FrameDecoder(max_frame=10.0)
    with pytest.raises(ValueError, match="counter_width must be 1 to 32"):
        FrameDecoder(counter_width=33)


@PURE
@given(frames=st.lists(payloads, max_size=6), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_python_round_trip(frames, cuts):
    stream = b"".join(encode_frame(p) for p in frames)
    assert list(decode_frames(stream)) == frames
    # Fed in arbitrary pieces, the incremental decoder gives the same.
    model, got = FrameDecoderModel(), []
    for start, end in zip([0] + sorted(cuts), sorted(cuts) + [len(stream)]):
        got += model.feed(stream[start:end])
    assert got == frames
    assert (model.bad_crc, model.too_short, model.too_long) == (0, 0, 0)


corruption = st.tuples(st.sampled_from(["flip", "cut", "garbage", "flag", "escape"]),
                       st.integers(0, 10**6), st.integers(0, 7),
                       st.binary(min_size=1, max_size=6))


def corrupt(stream: bytes, edits) -> bytes:
    stream = bytearray(stream)
    for kind, where, bit, garbage in edits:
        at = where % (len(stream) + 1)
        if kind == "flip" and at < len(stream):
            stream[at] ^= 1 << bit
        elif kind == "cut":
            del stream[at:at + bit + 1]
        elif kind == "garbage":
            stream[at:at] = garbage
        elif kind == "flag":
            stream[at:at] = bytes([FLAG])
        elif kind == "escape":
            stream[at:at] = bytes([ESCAPE])
    return bytes(stream)


@PURE
@given(frames=st.lists(short_payloads, min_size=1, max_size=6),
       edits=st.lists(corruption, min_size=1, max_size=4),
       lead=st.binary(max_size=8), max_frame=st.sampled_from([8, 40, MAX_FRAME]))
def test_python_decoder_on_corrupted_streams(frames, edits, lead, max_frame):
    # The closing FLAG makes the last chunk a frame to judge (an overlong one would be
    # counted anyway, the moment it overflows).
    stream = lead + corrupt(b"".join(encode_frame(p) for p in frames), edits) + bytes([FLAG])
    expected = reference_receive(stream, max_frame)
    model = FrameDecoderModel(max_frame=max_frame)
    assert model.feed(stream) == [p for kind, p in expected if kind == "good"]
    assert counts(expected) == {"bad_crc": model.bad_crc, "too_short": model.too_short,
                                "too_long": model.too_long}


def test_every_single_bit_flip_is_caught():
    """Whatever a flipped bit turns into (a FLAG that cuts the frame, an ESCAPE, a
    wrong byte), nothing but the intact frames is delivered."""
    frames = [b"\x01\x7e\x02\x7d\x03", b"payload", b"\x00" * 7]
    stream = b"".join(encode_frame(p) for p in frames)
    for at in range(len(stream)):
        for bit in range(8):
            flipped = corrupt(stream, [("flip", at, bit, b"")])
            good = list(decode_frames(flipped))
            assert all(p in frames for p in good), (at, bit)
            assert len(good) >= len(frames) - 2


# --- gateware ----------------------------------------------------------------------

def _payload_beats(frames):
    return [{"data": byte, "last": int(i == len(p) - 1)} for p in frames for i, byte in enumerate(p)]


def _frames_of(beats):
    """Output beats grouped into (payload, abort) per frame."""
    frames, current = [], bytearray()
    for beat in beats:
        current.append(beat.data)
        if beat.last:
            frames.append((bytes(current), beat.abort))
            current = bytearray()
    assert not current, "output ends inside a frame"
    return frames


def decode_on_gateware(stream, *, max_frame=MAX_FRAME, counter_width=16, gap=0.0, stall=0.0,
                       seed=0):
    """Wire bytes through a FrameDecoder; returns its output frames and counters."""
    dut = FrameDecoder(max_frame=max_frame, counter_width=counter_width)
    beats, counted = [], {}

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, stream, rng=random.Random(seed), gap_prob=gap,
                             timeout=100)
        # Input is held while the output register is full, so at most one beat is left.
        while ctx.get(dut.o.valid):
            await ctx.tick()
        await ctx.tick()
        for name in ("bad_crc", "too_short", "too_long"):
            counted[name] = ctx.get(getattr(dut, name))

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        while True:
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _clk, _rst, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                beats.append(payload)

    run_sim(dut, producer, background=[consumer])
    return _frames_of(beats), counted


def expected_output(expected):
    """The frames a FrameDecoder puts out for reference_receive's verdicts."""
    return [(payload, int(kind != "good")) for kind, payload in expected if kind != "too_short"]


@SIM
@given(frames=st.lists(payloads, min_size=1, max_size=4), gap=st.sampled_from([0.0, 0.3]),
       stall=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 1000))
def test_encoder_matches_python_codec(frames, gap, stall, seed):
    wire = b"".join(encode_frame(p) for p in frames)
    dut = FrameEncoder()
    received = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, _payload_beats(frames), rng=random.Random(seed),
                             gap_prob=gap, timeout=100)

    async def consumer(ctx):
        received.extend(await stream_get_n(ctx, dut.o, len(wire), rng=random.Random(seed + 1),
                                           stall_prob=stall, timeout=100))
        await ctx.tick().repeat(5)
        assert not ctx.get(dut.o.valid)

    run_sim(dut, producer, consumer)
    assert bytes(received) == wire


@SIM
@given(frames=st.lists(payloads, min_size=1, max_size=4), gap=st.sampled_from([0.0, 0.3]),
       stall=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 1000))
def test_encoder_to_decoder_round_trip(frames, gap, stall, seed):
    m = Module()
    m.submodules.encoder = encoder = FrameEncoder()
    m.submodules.decoder = decoder = FrameDecoder(max_frame=300)
    wiring.connect(m, encoder.o, decoder.i)
    beats, counted = [], {}

    async def producer(ctx):
        await stream_put_all(ctx, encoder.i, _payload_beats(frames), rng=random.Random(seed),
                             gap_prob=gap, timeout=100)

    async def consumer(ctx):
        # (stream_get_packets recounts its beats on every beat: too slow for long frames.)
        beats.extend(await stream_get_n(ctx, decoder.o, sum(map(len, frames)),
                                        rng=random.Random(seed + 1), stall_prob=stall,
                                        timeout=100))
        for name in ("bad_crc", "too_short", "too_long"):
            counted[name] = ctx.get(getattr(decoder, name))

    run_sim(m, producer, consumer)
    assert _frames_of(beats) == [(p, 0) for p in frames]
    assert counted == {"bad_crc": 0, "too_short": 0, "too_long": 0}


@settings(SIM, max_examples=100)
@given(frames=st.lists(short_payloads, min_size=1, max_size=5),
       edits=st.lists(corruption, max_size=4), lead=st.binary(max_size=6),
       max_frame=st.sampled_from([8, 40]), gap=st.sampled_from([0.0, 0.3]),
       stall=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 1000))
def test_decoder_on_corrupted_streams(frames, edits, lead, max_frame, gap, stall, seed):
    # The closing FLAG makes the decoder judge the last chunk too, so its output ends
    # on a frame boundary.
    stream = lead + corrupt(b"".join(encode_frame(p) for p in frames), edits) + bytes([FLAG])
    expected = reference_receive(stream, max_frame)
    # A corrupted chunk that still passes the CRC (about 1 in 65536) is a good frame to
    # every receiver; leave those out of the "never good" check rather than flake.
    assume(all(p in frames for kind, p in expected if kind == "good"))
    got, counted = decode_on_gateware(stream, max_frame=max_frame, gap=gap, stall=stall,
                                      seed=seed)
    assert got == expected_output(expected)
    assert counted == counts(expected)
    assert [p for p, abort in got if not abort] == list(
        FrameDecoderModel(max_frame=max_frame).feed(stream))


def test_decoder_frame_length_limits():
    """A payload of exactly max_frame bytes is good; one byte more is too long, ends
    with the abort flag after max_frame bytes, and the decoder resyncs on the next FLAG.
    Bodies of 1 and 2 bytes are too short; doubled FLAGs are idle."""
    max_frame = 6
    longest, too_long = bytes(range(1, 7)), bytes(range(1, 8))
    two_byte_body = b"\x7e" + crc16(b"").to_bytes(2, "big") + b"\x7e"
    stream = (b"\x7e\x7e" + encode_frame(longest) + encode_frame(too_long) + b"\x7e\x7e\x7e" +
              b"\x7eA\x7e" + two_byte_body + b"\x7e\x7d\x7e" + encode_frame(b"ok"))
    got, counted = decode_on_gateware(stream, max_frame=max_frame)
    assert got == [(longest, 0), (too_long[:max_frame], 1), (b"ok", 0)]
    assert counted == {"bad_crc": 0, "too_short": 3, "too_long": 1}
    model = FrameDecoderModel(max_frame=max_frame)
    assert model.feed(stream) == [longest, b"ok"]
    assert (model.bad_crc, model.too_short, model.too_long) == (0, 3, 1)


def test_decoder_abort_and_resync():
    """Garbage before the first FLAG is ignored (hunting); garbage between frames, a
    frame cut by a FLAG and a frame ending in ESCAPE, FLAG are bad and counted."""
    good = [b"first", b"second", b"third"]
    stream = (b"noise\x7d" + encode_frame(good[0]) + b"garbage!" + encode_frame(b"cut short")[:-4] +
              encode_frame(good[1]) + encode_frame(b"escaped end")[:-1] + b"\x7d\x7e" +
              encode_frame(good[2]))
    got, counted = decode_on_gateware(stream)
    assert [p for p, abort in got if not abort] == good
    assert counted == {"bad_crc": 3, "too_short": 0, "too_long": 0}
    assert got == expected_output(reference_receive(stream, MAX_FRAME))


def test_decoder_counters_saturate():
    stream = b"\x7e" + b"\x01\x7e" * 5 + b"\x01\x02\x03\x7e" * 5
    _got, counted = decode_on_gateware(stream, counter_width=2)
    assert counted == {"bad_crc": 3, "too_short": 3, "too_long": 0}


def test_throughput_one_byte_per_cycle():
    """With the far side always ready, the encoder puts out and the decoder takes in
    a wire byte every cycle."""
    frames = [bytes([0x7E] * 20), bytes(range(50)), b"\x7d"]
    wire = b"".join(encode_frame(p) for p in frames)
    m = Module()
    m.submodules.encoder = encoder = FrameEncoder()
    m.submodules.decoder = decoder = FrameDecoder()
    wiring.connect(m, encoder.o, decoder.i)
    wire_cycles, beats = [], []

    async def producer(ctx):
        await stream_put_all(ctx, encoder.i, _payload_beats(frames), timeout=100)

    async def consumer(ctx):
        beats.extend(await stream_get_n(ctx, decoder.o, sum(map(len, frames)), timeout=100))

    async def watch(ctx):
        cycle = 0
        async for _clk, _rst, valid, ready in ctx.tick().sample(decoder.i.valid, decoder.i.ready):
            if valid and ready:
                wire_cycles.append(cycle)
            cycle += 1

    run_sim(m, producer, consumer, background=[watch])
    assert _frames_of(beats) == [(p, 0) for p in frames]
    assert len(wire_cycles) == len(wire)
    assert wire_cycles[-1] - wire_cycles[0] == len(wire) - 1


def test_decoder_feeds_a_packet_fifo():
    """DECODED_BYTE fits PacketFifo, which passes only the good frames."""
    frames = [b"good one", b"bad", b"good two"]
    wire = encode_frame(frames[0]) + encode_frame(frames[1])[:-2] + b"\x00\x7e" + \
        encode_frame(frames[2])
    m = Module()
    m.submodules.decoder = decoder = FrameDecoder(max_frame=32)
    m.submodules.fifo = fifo = PacketFifo(layout=decoder.o.payload.shape(), depth=64)
    wiring.connect(m, decoder.o, fifo.i)
    beats = []

    async def producer(ctx):
        await stream_put_all(ctx, decoder.i, wire, timeout=100)

    async def consumer(ctx):
        beats.extend(await stream_get_packets(ctx, fifo.o, 2, timeout=200))

    run_sim(m, producer, consumer)
    assert _frames_of(beats) == [(frames[0], 0), (frames[2], 0)]
