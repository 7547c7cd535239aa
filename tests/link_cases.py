# SPDX-License-Identifier: BSD-2-Clause
"""A host link's hard day, as raw wire bytes: good frames between bad ones (a
flipped bit, a cut frame, noise, a too-short frame, a too-long one), a resent
frame, every refusal the bridge has, an SA written and read back, packets
injected (one of them in a bad frame). :func:`wire_session` plays it on any
byte port and returns everything the device said, so the model, the Amaranth
simulation and the Verilator server can be held to the same answers."""

import random
import time

from espnic.hdl.bridge.framing import ESCAPE, FLAG, MAX_FRAME, FrameDecoderModel, encode_frame
from espnic.hdl.bridge.host import MAX_READ_WORDS
from espnic.hdl.bridge.regmap import HEADER_BYTES, FrameKind, RegisterMap
from espnic.hdl.engine.sa import sa_layout
from espnic.hdl.engine.sa_table import HostOp, control_record
from tests.esp_cases import KEY256, plain_packet
from tests.esp_cases import config as esp_config


def _frame(kind, tag, b2=0, b3=0, body=b""):
    value = kind.value if isinstance(kind, FrameKind) else kind
    return encode_frame(bytes([value, tag, b2, b3]) + bytes(body))


def _spoilt(wire: bytes) -> bytes:
    """``wire`` with one body bit flipped (and not into a FLAG or ESCAPE)."""
    spoilt = bytearray(wire)
    for position in range(len(wire) - 3, 1, -1):
        if not {spoilt[position], spoilt[position] ^ 0x01} & {FLAG, ESCAPE}:
            spoilt[position] ^= 0x01
            return bytes(spoilt)
    raise AssertionError("nothing to spoil")


def wire_script(regmap: RegisterMap) -> list[bytes]:
    """Chunks of wire bytes; each ends with one good frame that gets one answer."""
    address = {r.name: r.address for r in regmap.registers}
    rng = random.Random(7)
    noise = bytes(b for b in rng.randbytes(200) if b != FLAG)
    window = regmap.params["window"]
    sa = control_record(esp_config("out", spi=0x3003, key=KEY256, window=window)
                        .to_record(sa_layout(window)))
    engine_host = regmap.channel("engine_host")
    sa_bytes = engine_host.layout.const({"op": HostOp.WRITE, "slot": 1, "record": sa}) \
        .as_bits().to_bytes(engine_host.payload_bytes, "little")
    read_slot = engine_host.layout.const({"op": HostOp.READ, "slot": 1}) \
        .as_bits().to_bytes(engine_host.payload_bytes, "little")
    delete_slot = engine_host.layout.const({"op": HostOp.DELETE, "slot": 1}) \
        .as_bits().to_bytes(engine_host.payload_bytes, "little")
    packet = bytes(plain_packet(4, 60))
    pause, miss = address["pause"], address["miss_to_host"]
    words = regmap.words
    one = (1).to_bytes(4, "little")
    chunks = [
        _frame(FrameKind.READ, 1, 0, 0, [16]),
        noise + _frame(FrameKind.WRITE, 2, pause, 0, one),
        _frame(FrameKind.WRITE, 2, pause, 0, bytes(4)),                 # a resend: DUPLICATE
        _spoilt(_frame(FrameKind.WRITE, 3, pause, 0, bytes(4)))          # bad CRC
        + _frame(FrameKind.READ, 4, pause, 0, [1]),                      # pause is still 1
        _frame(FrameKind.WRITE, 5, pause, 0, bytes(4))[:9]               # cut: the next FLAG ends it
        + _frame(FrameKind.WRITE, 6, pause, 0, bytes(4)),
        bytes([FLAG, 0x42, FLAG]) + _frame(FrameKind.READ, 7, pause, 0, [1]),   # too short
        bytes([FLAG]) + bytes(range(1, 0x7D)) * (MAX_FRAME // 0x7C + 1)  # too long
        + _frame(FrameKind.WRITE, 8, miss, 0, one),
        _frame(0x09, 9),                                                 # BAD_KIND
        _frame(FrameKind.READ, 10, words & 0xff, words >> 8, [1]),       # BAD_ADDRESS
        _frame(FrameKind.READ, 11, 0, 0, [0]),                           # BAD_ADDRESS
        _frame(FrameKind.READ, 12, 0, 0, [MAX_READ_WORDS + 1]),          # BAD_ADDRESS
        _frame(FrameKind.READ, 13, 0, 0, [1, 1]),                        # BAD_LENGTH
        _frame(FrameKind.WRITE, 14, address["idle"], 0, one),            # BAD_ADDRESS
        _frame(FrameKind.WRITE, 15, pause, 0, [1]),                      # BAD_LENGTH
        _frame(FrameKind.SEND, 16, 99, 0, sa_bytes),                     # BAD_CHANNEL
        _frame(FrameKind.SEND, 17, engine_host.number, engine_host.count, sa_bytes),
        _frame(FrameKind.SEND, 18, regmap.channel("engine_reply").number, 0, sa_bytes),
        _frame(FrameKind.SEND, 19, engine_host.number, 0, sa_bytes[:-1]),  # BAD_LENGTH
        _frame(FrameKind.SEND, 20, engine_host.number, 0, sa_bytes),
        _frame(FrameKind.SEND, 20, engine_host.number, 0, delete_slot),  # DUPLICATE
        _frame(FrameKind.SEND, 21, engine_host.number, 0, read_slot),    # the SA, key zero
        _frame(FrameKind.INJECT, 22, regmap.params["ports"], 0, packet),  # BAD_PORT
        _frame(FrameKind.INJECT, 23, 0, 0),                              # BAD_LENGTH
        _spoilt(_frame(FrameKind.INJECT, 24, 0, 0, packet))              # aborted
        + _frame(FrameKind.WRITE, 25, pause, 0, bytes(4)),
        _frame(FrameKind.INJECT, 26, 0, 0, packet),                      # to the host
        _frame(FrameKind.INJECT, 26, 0, 0, packet),                      # DUPLICATE
        _frame(FrameKind.SEND, 27, engine_host.number, 0, delete_slot),
        _frame(FrameKind.SEND, 28, engine_host.number, 0, read_slot),    # empty now
    ]
    # Every register, in bursts.
    for tag, start in enumerate(range(0, words, MAX_READ_WORDS), start=29):
        chunks.append(_frame(FrameKind.READ, tag, start & 0xff, start >> 8,
                             [min(MAX_READ_WORDS, words - start)]))
    return chunks


def wire_session(port, regmap: RegisterMap, *, patience: float = 120.0) -> dict:
    """Play :func:`wire_script` on ``port`` (pyserial-like); returns the answers in
    order and the items and packets the device sent, each frame as bytes."""
    decoder = FrameDecoderModel()
    said = {"answers": [], "items": [], "packets": []}
    for chunk in wire_script(regmap):
        port.write(chunk)
        tag = _last_tag(chunk)
        deadline = time.monotonic() + patience
        while True:
            assert time.monotonic() < deadline, f"no answer to the frame with tag {tag}"
            frames = decoder.feed(port.read(max(1, getattr(port, "in_waiting", 0))))
            answered = False
            for frame in frames:
                if frame[0] == FrameKind.ITEM.value:
                    said["items"].append(frame)
                elif frame[0] == FrameKind.PACKET.value:
                    said["packets"].append(frame)
                elif frame[1] == tag:
                    said["answers"].append(frame)
                    answered = True
            if answered:
                break
    # An INJECT's packet or a SEND's item may come after its ACK: give them time.
    deadline = time.monotonic() + min(patience, 5.0)
    while time.monotonic() < deadline and len(said["packets"]) < 1:
        for frame in decoder.feed(port.read(max(1, getattr(port, "in_waiting", 0)))):
            said["packets" if frame[0] == FrameKind.PACKET.value else "items"].append(frame)
    return said


def _last_tag(chunk: bytes) -> int:
    """The tag of the last frame in ``chunk``."""
    frames = FrameDecoderModel().feed(chunk)
    assert frames and len(frames[-1]) >= HEADER_BYTES
    return frames[-1][1]
