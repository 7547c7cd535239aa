# SPDX-License-Identifier: BSD-2-Clause
"""HostBridge (Amaranth simulator): frames in, answers and items out.

The frames are built here from the register map's definitions (kinds, statuses,
channel numbers, payload sizes); the oracle for what the bridge must do is the
frame rules written in ``hdl/bridge/regmap.py``'s docstring and
``docs/registers.md``, checked one rule per test.
"""

import random
from pathlib import Path

import pytest
from amaranth.hdl import Value

from espnic.hdl.bridge.host import MAX_READ_WORDS, HostBridge
from espnic.hdl.bridge.regmap import (DOC_PARAMETERS, MAGIC, MAX_BODY, VERSION, FrameKind,
                                      PacketSource, RegisterMap, Status, registers_markdown)
from espnic.hdl.packet import beats_from_bytes
from espnic.sim.amaranth_sim import run_sim, stream_put_all

REGMAP = RegisterMap(engines=2, ports=1)


def frame(kind, tag, b2, b3, body=b""):
    return bytes([kind.value if isinstance(kind, FrameKind) else kind, tag, b2, b3]) + body


def read(tag, address, words):
    return frame(FrameKind.READ, tag, address & 0xff, address >> 8, bytes([words]))


def write(tag, address, word):
    return frame(FrameKind.WRITE, tag, address & 0xff, address >> 8, word.to_bytes(4, "little"))


def send(tag, channel, index, payload):
    return frame(FrameKind.SEND, tag, REGMAP.channel(channel).number, index, payload)


def send_many(tag, channel, index, payloads):
    return frame(FrameKind.SEND_MANY, tag, REGMAP.channel(channel).number, index,
                 b"".join(payloads))


def send_short(tag, channel, index, body):
    return frame(FrameKind.SEND_SHORT, tag, REGMAP.channel(channel).number, index, body)


def ack(tag, status):
    return frame(FrameKind.ACK, tag, Status(status).value, 0)


def payload_of(channel, value):
    return value.to_bytes(REGMAP.channel(channel).payload_bytes, "little")


class BridgeBench:
    """Drives ``rx`` with frames (``abort`` on chosen ones), records ``tx`` frames,
    serves the in channels (ready with probability ``ready_prob``) and records what
    they take."""

    def __init__(self, *, ready_prob=1.0, seed=0):
        self.dut = HostBridge(REGMAP)
        self.ready_prob, self.rng = ready_prob, random.Random(seed)
        self.sent = []        # (channel, index, payload int) taken from in channels
        self.tx = []          # whole tx frames

    def run(self, frames, *, status=None, items=(), settle=200):
        dut = self.dut
        tx_bytes = []

        async def host(ctx):
            for index, value in (status or {}).items():
                ctx.set(dut.status[index], value)
            # Stop-and-wait, as a host is: each frame's answer before the next frame (a
            # bad frame, which has none, a few cycles).
            for octets, abort in frames:
                answered = self.answers()
                for n, byte in enumerate(octets):
                    last = n == len(octets) - 1
                    ctx.set(dut.rx.payload, {"data": byte, "last": last, "abort": abort and last})
                    ctx.set(dut.rx.valid, 1)
                    await ctx.tick().until(dut.rx.ready)
                ctx.set(dut.rx.valid, 0)
                if abort:
                    await ctx.tick().repeat(4)
                while not abort and self.answers() == answered:
                    await ctx.tick()
            for channel, index, value in items:
                stream = getattr(dut, channel)[index]
                ctx.set(Value.cast(stream.payload), value)
                ctx.set(stream.valid, 1)
                await ctx.tick().until(stream.ready)
                ctx.set(stream.valid, 0)
            await ctx.tick().repeat(settle)

        async def tx(ctx):
            ctx.set(dut.tx.ready, 1)
            async for _clk, _rst, valid, payload in ctx.tick().sample(dut.tx.valid,
                                                                      dut.tx.payload):
                if valid:
                    tx_bytes.append(payload.data)
                    if payload.last:
                        self.tx.append(bytes(tx_bytes))
                        tx_bytes.clear()

        def taker(channel, index):
            stream = getattr(dut, channel.name)[index]

            async def process(ctx):
                bits = Value.cast(stream.payload)
                async for _clk, _rst, valid, ready, payload in ctx.tick().sample(
                        stream.valid, stream.ready, bits):
                    if valid and ready:
                        self.sent.append((channel.name, index, payload))
                    ctx.set(stream.ready, self.rng.random() < self.ready_prob)
            return process

        processes = [tx] + [taker(c, k) for c in REGMAP.channels if c.direction == "in"
                            for k in range(c.count)]
        run_sim(dut, host, background=processes)
        return self.tx

    def answers(self) -> int:
        return sum(frame[0] in (FrameKind.ACK.value, FrameKind.DATA.value) for frame in self.tx)


def value_of(payload):
    return int.from_bytes(payload, "little")


def test_reads_the_capability_block():
    bench = BridgeBench()
    words = 2 + 14
    answer, = bench.run([(read(7, 0, words), False)])
    assert answer[:4] == frame(FrameKind.DATA, 7, 0, 0)
    got = [int.from_bytes(answer[4 + 4 * n:8 + 4 * n], "little") for n in range(words)]
    assert got[:5] == [MAGIC, VERSION, 2, 1, REGMAP.params["slots"]]
    assert RegisterMap.from_capabilities(got).params == REGMAP.params


def test_reads_status_and_writes_control():
    bench = BridgeBench()
    pause = REGMAP.register("pause")
    sent0 = REGMAP.register("sent[0]")
    status = {bench.dut.status_registers.index(sent0): 0xdeadbeef}
    answers = bench.run([(write(1, pause.address, 1), False),
                         (read(2, pause.address, 1), False),
                         (read(3, sent0.address, 1), False)], status=status)
    assert answers == [ack(1, Status.OK),
                       frame(FrameKind.DATA, 2, pause.address, 0, (1).to_bytes(4, "little")),
                       frame(FrameKind.DATA, 3, sent0.address, 0,
                             (0xdeadbeef).to_bytes(4, "little"))]


def test_send_offers_the_whole_payload_once_then_acks():
    bench = BridgeBench(ready_prob=0.3, seed=1)
    record = random.Random(2).getrandbits(REGMAP.channel("engine_host").layout.size)
    fence = 0b10101
    answers = bench.run([(send(5, "engine_host", 1, payload_of("engine_host", record)), False),
                         (send(5, "engine_host", 1, payload_of("engine_host", record)), False),
                         (send(6, "fence_host", 0, payload_of("fence_host", fence)), False)])
    assert answers == [ack(5, Status.OK), ack(5, Status.DUPLICATE), ack(6, Status.OK)]
    assert bench.sent == [("engine_host", 1, record), ("fence_host", 0, fence)]


def test_bad_frames_are_refused_and_counted():
    bench = BridgeBench()
    idle = REGMAP.register("idle")
    good = payload_of("fence_host", 3)
    frames = [
        (send(1, "engine_host", 0, payload_of("engine_host", 1)), True),   # aborted: nothing
        (send(2, "engine_host", 2, payload_of("engine_host", 1)), False),  # no engine 2
        (send(3, "engine_reply", 0, good), False),                         # an out channel
        (send(4, "fence_host", 0, good + b"\0"), False),                   # too long
        (write(5, idle.address, 1), False),                                # read-only
        (write(6, REGMAP.words, 1), False),                                # beyond the map
        (read(7, REGMAP.words - 1, 2), False),                             # runs off the end
        (read(8, 0, MAX_READ_WORDS + 1), False),
        (frame(0x44, 9, 0, 0), False),                                     # unknown kind
        (bytes([FrameKind.READ.value, 10]), False),                        # no header
        (send(11, "fence_host", 0, good), False),                          # and still works
    ]
    answers = bench.run(frames)
    assert answers == [ack(2, Status.BAD_CHANNEL), ack(3, Status.BAD_CHANNEL),
                       ack(4, Status.BAD_LENGTH), ack(5, Status.BAD_ADDRESS),
                       ack(6, Status.BAD_ADDRESS), ack(7, Status.BAD_ADDRESS),
                       ack(8, Status.BAD_ADDRESS), ack(9, Status.BAD_KIND),
                       ack(10, Status.BAD_LENGTH), ack(11, Status.OK)]
    assert bench.sent == [("fence_host", 0, 3)]


def test_items_go_out_as_frames():
    bench = BridgeBench()
    reply = REGMAP.channel("engine_reply")
    value = random.Random(3).getrandbits(reply.layout.size)
    fenced = REGMAP.channel("engine_fenced")
    answers = bench.run([], items=[("engine_reply", 1, value), ("engine_fenced", 0, 9)])
    assert answers == [frame(FrameKind.ITEM, 0, reply.number, 1, payload_of("engine_reply", value)),
                       frame(FrameKind.ITEM, 0, fenced.number, 0, payload_of("engine_fenced", 9))]


def test_registers_doc_is_current():
    path = Path(__file__).parent.parent / "docs" / "registers.md"
    expected = registers_markdown(RegisterMap(**DOC_PARAMETERS)) + "\n"
    assert path.read_text() == expected, \
        "docs/registers.md is stale: python -m espnic.hdl.bridge.regmap > docs/registers.md"


def test_register_map_checks():
    with pytest.raises(TypeError, match="unknown EspNic parameter 'engine'"):
        RegisterMap(engine=2)
    with pytest.raises(ValueError, match="not an espnic device"):
        RegisterMap.from_capabilities([0] * 16)
    with pytest.raises(TypeError, match="regmap must be a RegisterMap"):
        HostBridge({})


def test_packets_go_out_as_frames():
    """Egress beats with gaps, the exception queue, an aborted packet, and tx stalls:
    each packet a PACKET frame with its port, source and abort byte."""
    dut = HostBridge(REGMAP)
    rng = random.Random(4)
    first, second = bytes(range(50)), bytes(rng.getrandbits(8) for _ in range(33))
    tx, frames = [], []

    async def egress(ctx):
        beats = [dict(b, abort=0) for b in beats_from_bytes(first, 16)]
        beats += [dict(b, abort=b["last"]) for b in beats_from_bytes(second, 16)]
        await stream_put_all(ctx, dut.egress[0], beats, rng=rng, gap_prob=0.5)

    async def exception(ctx):
        ctx.set(dut.exception_port, 0)
        await stream_put_all(ctx, dut.exception, beats_from_bytes(second, 16), rng=rng,
                             gap_prob=0.3)
        await ctx.tick().repeat(400)

    async def take(ctx):
        async for _c, _r, valid, ready, payload in ctx.tick().sample(dut.tx.valid, dut.tx.ready,
                                                                     dut.tx.payload):
            if valid and ready:
                tx.append(payload.data)
                if payload.last:
                    frames.append(bytes(tx))
                    tx.clear()
            ctx.set(dut.tx.ready, rng.random() < 0.6)

    run_sim(dut, egress, exception, background=[take])
    egress_frames = [f for f in frames if f[3] == PacketSource.EGRESS.value]
    assert egress_frames == [frame(FrameKind.PACKET, 0, 0, 0, first + b"\0"),
                             frame(FrameKind.PACKET, 0, 0, 0, second + b"\1")]
    assert [f for f in frames if f[3] == PacketSource.EXCEPTION.value] == \
        [frame(FrameKind.PACKET, 0, 0, PacketSource.EXCEPTION.value, second + b"\0")]


def random_payloads(channel, count, seed):
    rng = random.Random(seed)
    size = REGMAP.channel(channel).layout.size
    return [rng.getrandbits(size) for _ in range(count)]


def test_send_many_offers_every_payload_in_order_then_acks_once():
    """Bursts of SA records and of 1-byte fences, the streams stalling: each payload
    offered once, whole, in the frame's order; one ACK per frame."""
    bench = BridgeBench(ready_prob=0.3, seed=5)
    records = random_payloads("engine_host", 3, 6)
    fences = random_payloads("fence_host", 5, 7)
    answers = bench.run([
        (send_many(1, "engine_host", 1, [payload_of("engine_host", r) for r in records]), False),
        (send_many(2, "fence_host", 0, [payload_of("fence_host", f) for f in fences]), False),
        (send_many(3, "engine_host", 0, [payload_of("engine_host", records[0])]), False),
    ])
    assert answers == [ack(1, Status.OK), ack(2, Status.OK), ack(3, Status.OK)]
    assert bench.sent == ([("engine_host", 1, r) for r in records]
                          + [("fence_host", 0, f) for f in fences]
                          + [("engine_host", 0, records[0])])


def test_send_many_fills_a_frame():
    """As many SA records as one frame's body holds (the whole body buffer)."""
    records = random_payloads("engine_host", MAX_BODY // REGMAP.channel("engine_host")
                              .payload_bytes, 8)
    assert len(records) == 13
    bench = BridgeBench(ready_prob=0.7, seed=9)
    answers = bench.run([(send_many(4, "engine_host", 0,
                                    [payload_of("engine_host", r) for r in records]), False)],
                        settle=13 * 400)
    assert answers == [ack(4, Status.OK)]
    assert bench.sent == [("engine_host", 0, r) for r in records]


def test_bad_bursts_offer_nothing():
    """A burst whose frame turns out bad, one that is not whole payloads, an empty
    one and one longer than a frame's body: no payload of any is offered; a resent
    burst is DUPLICATE and offered once."""
    bench = BridgeBench(ready_prob=0.5, seed=10)
    records = [payload_of("engine_host", r) for r in random_payloads("engine_host", 2, 11)]
    fence = payload_of("fence_host", 1)
    answers = bench.run([
        (send_many(1, "engine_host", 0, records), True),                    # bad CRC
        (send_many(2, "engine_host", 0, records)[:-1], False),              # a byte short
        (send_many(3, "engine_host", 0, [*records, b"\1"]), False),         # a byte over
        (send_many(4, "engine_host", 0, []), False),                        # empty
        (send_many(5, "fence_host", 0, [fence] * (MAX_BODY + 1)), False),   # over a body
        (send_many(6, "engine_host", 1, records), False),
        (send_many(6, "engine_host", 1, records), False),                   # resent
        (send_many(7, "engine_reply", 0, records), False),                  # an out channel
    ])
    assert answers == [ack(2, Status.BAD_LENGTH), ack(3, Status.BAD_LENGTH),
                       ack(4, Status.BAD_LENGTH), ack(5, Status.BAD_LENGTH),
                       ack(6, Status.OK), ack(6, Status.DUPLICATE), ack(7, Status.BAD_CHANNEL)]
    assert bench.sent == [("engine_host", 1, value_of(r)) for r in records]


def test_send_short_pads_with_zeros():
    """A short body is the payload's first bytes, the rest zero, whatever the frame
    before left in the body buffer; a whole body is the payload; a plain SEND must
    still be whole; too long or empty is refused."""
    bench = BridgeBench(ready_prob=0.5, seed=12)
    record, = random_payloads("engine_host", 1, 13)
    full = payload_of("engine_host", record)
    answers = bench.run([
        (send(1, "engine_host", 0, full), False),
        (send_short(2, "engine_host", 0, b"\x12\x34"), False),
        (send_short(3, "engine_host", 1, full), False),
        (send_short(4, "engine_host", 0, full + b"\0"), False),             # too long
        (send_short(5, "engine_host", 0, b""), False),                      # empty
        (send(6, "engine_host", 0, b"\x12\x34"), False),                   # SEND is exact
        (send_short(7, "fence_host", 0, b"\x01"), False),
        (send_short(7, "fence_host", 0, b"\x01"), False),                   # resent
    ])
    assert answers == [ack(1, Status.OK), ack(2, Status.OK), ack(3, Status.OK),
                       ack(4, Status.BAD_LENGTH), ack(5, Status.BAD_LENGTH),
                       ack(6, Status.BAD_LENGTH), ack(7, Status.OK), ack(7, Status.DUPLICATE)]
    assert bench.sent == [("engine_host", 0, record), ("engine_host", 0, 0x3412),
                          ("engine_host", 1, record), ("fence_host", 0, 1)]


# -- full duplex: the host's bytes come whatever the bridge sends ---------------------------


class DuplexBench:
    """The bridge with a host that cannot be held back, as over a UART: each byte of
    a frame is on ``rx`` for one cycle only, ``gap`` cycles after the one before,
    and whether ``rx`` was ready then is recorded (a byte it was not is lost).
    Records the ``tx`` frames with the cycle of their last byte, what the in
    channels take, and what ``inject`` takes (``inject_ready`` says when it may)."""

    def __init__(self):
        self.dut = HostBridge(REGMAP)
        self.cycle = 0
        self.tx = []              # (cycle of the last byte, frame)
        self.sent = []            # (channel, index, payload int)
        self.injected = []        # (data, last, abort) taken from inject
        self.offered = self.refused = 0
        self.inject_ready = lambda cycle: True

    async def offer(self, ctx, octets, *, gap, abort=False, before=None):
        """The bytes of one frame, ``gap`` cycles apart, never waiting; ``before(n)``
        is called before byte n goes."""
        dut = self.dut
        for n, byte in enumerate(octets):
            if before is not None:
                before(n)
            last = n == len(octets) - 1
            ctx.set(dut.rx.payload, {"data": byte, "last": last, "abort": abort and last})
            ctx.set(dut.rx.valid, 1)
            _clk, _rst, ready = await ctx.tick().sample(dut.rx.ready)
            self.offered += 1
            self.refused += not ready
            ctx.set(dut.rx.valid, 0)
            if gap > 1:
                await ctx.tick().repeat(gap - 1)

    def frames(self):
        return [frame for _cycle, frame in self.tx]

    def run(self, *testbenches):
        dut = self.dut

        async def transmit(ctx):
            ctx.set(dut.tx.ready, 1)
            octets = []
            async for _clk, _rst, valid, payload in ctx.tick().sample(dut.tx.valid,
                                                                      dut.tx.payload):
                self.cycle += 1
                if valid:
                    octets.append(payload.data)
                    if payload.last:
                        self.tx.append((self.cycle, bytes(octets)))
                        octets.clear()

        async def inject(ctx):
            async for _clk, _rst, valid, ready, payload in ctx.tick().sample(
                    dut.inject.valid, dut.inject.ready, dut.inject.payload):
                if valid and ready:
                    self.injected.append((payload.data, payload.last, payload.abort))
                ctx.set(dut.inject.ready, self.inject_ready(self.cycle + 1))

        def taker(channel, index):
            stream = getattr(dut, channel.name)[index]

            async def process(ctx):
                ctx.set(stream.ready, 1)
                async for _clk, _rst, valid, payload in ctx.tick().sample(
                        stream.valid, Value.cast(stream.payload)):
                    if valid:
                        self.sent.append((channel.name, index, payload))
            return process

        takers = [taker(c, k) for c in REGMAP.channels if c.direction == "in"
                  for k in range(c.count)]
        run_sim(dut, *testbenches, background=[transmit, inject, *takers])


def packet_beats(packet):
    return [dict(beat, abort=0) for beat in beats_from_bytes(packet, 16)]


def test_frames_arrive_while_a_packet_goes_out():
    """A SEND arrives a byte every 2 cycles while a 2,000-byte PACKET frame goes out,
    then its resend, then a third copy, all before the packet is out: every byte is
    taken; the SEND's payload goes to its stream at once, its ACK after the packet;
    the resend (which arrived while only that ACK waited) is answered DUPLICATE
    after it; the third copy, which began while the resend was kept, is dropped
    and counted. A WRITE sent afterwards, stop-and-wait, is executed."""
    bench = DuplexBench()
    dut = bench.dut
    record, = random_payloads("engine_host", 1, 21)
    packet = bytes(random.Random(22).randbytes(2000))
    sa_frame = send(1, "engine_host", 0, payload_of("engine_host", record))
    pause = REGMAP.register("pause")
    control = dut.control_registers.index(pause)
    arrived = []

    async def egress(ctx):
        await stream_put_all(ctx, dut.egress[0], packet_beats(packet))

    async def host(ctx):
        await ctx.tick().until(dut.tx.valid)                  # the PACKET frame began
        for _copy in range(3):
            await bench.offer(ctx, sa_frame, gap=2)
            await ctx.tick().repeat(5)
        arrived.append(bench.cycle)
        while len(bench.tx) < 3:
            await ctx.tick()
        await bench.offer(ctx, write(2, pause.address, 1), gap=2)
        while len(bench.tx) < 4:
            await ctx.tick()
        assert ctx.get(dut.control[control]) == 1
        assert (ctx.get(dut.frames_dropped), ctx.get(dut.duplicates)) == (1, 1)

    bench.run(egress, host)
    packet_out = bench.tx[0][0]
    assert arrived[0] < packet_out, "the frames did not overlap the packet"
    assert bench.offered == 3 * len(sa_frame) + len(write(2, 0, 1))
    assert bench.refused == 0
    assert bench.frames() == [frame(FrameKind.PACKET, 0, 0, PacketSource.EGRESS.value,
                                    packet + b"\0"),
                              ack(1, Status.OK), ack(1, Status.DUPLICATE), ack(2, Status.OK)]
    assert bench.sent == [("engine_host", 0, record)]


def test_a_read_between_items():
    """Items of an out channel back to back; a READ arrives a byte every 4 cycles
    while the first ITEM frame goes out: its DATA goes right after that frame,
    before the next item (answers first)."""
    bench = DuplexBench()
    dut = bench.dut
    values = random_payloads("engine_reply", 3, 23)
    pause = REGMAP.register("pause")

    async def items(ctx):
        reply = dut.engine_reply[0]
        for value in values:
            ctx.set(Value.cast(reply.payload), value)
            ctx.set(reply.valid, 1)
            await ctx.tick().until(reply.ready)
        ctx.set(reply.valid, 0)
        while len(bench.tx) < 4:
            await ctx.tick()

    async def host(ctx):
        await ctx.tick().until(dut.tx.valid)
        await bench.offer(ctx, read(9, pause.address, 1), gap=4)

    bench.run(items, host)
    item = [frame(FrameKind.ITEM, 0, REGMAP.channel("engine_reply").number, 0,
                  payload_of("engine_reply", value)) for value in values]
    assert bench.frames() == [item[0], frame(FrameKind.DATA, 9, pause.address, 0, bytes(4)),
                              item[1], item[2]]
    assert (bench.offered, bench.refused) == (len(read(9, 0, 1)), 0)


def test_an_inject_goes_in_while_a_packet_goes_out_and_one_that_meets_a_full_fifo_is_cut():
    """An INJECT arrives while a PACKET frame goes out: its bytes go on as they come,
    its ACK after the packet. The next INJECT finds the inject FIFO full halfway
    (``inject`` not ready): its packet is cut (the bytes that went on, then, once
    the FIFO takes bytes again, a last byte with abort), the frame is dropped
    unanswered and counted; its resend is injected whole and answered OK (the cut
    frame was not executed, so the resend is no duplicate)."""
    bench = DuplexBench()
    dut = bench.dut
    rng = random.Random(24)
    out, first, second = (bytes(rng.randbytes(n)) for n in (1500, 200, 120))
    ready = [True]
    bench.inject_ready = lambda cycle: ready[0]

    def full_from(position):
        def before(n):
            if n == position:
                ready[0] = False
        return before

    async def egress(ctx):
        await stream_put_all(ctx, dut.egress[0], packet_beats(out))

    async def host(ctx):
        await ctx.tick().until(dut.tx.valid)
        await bench.offer(ctx, frame(FrameKind.INJECT, 1, 0, 0, first), gap=2)
        while len(bench.tx) < 2:
            await ctx.tick()
        await bench.offer(ctx, frame(FrameKind.INJECT, 2, 0, 0, second), gap=1,
                          before=full_from(4 + 50))
        await ctx.tick().repeat(50)
        assert len(bench.tx) == 2, "a cut INJECT was answered"
        assert ctx.get(dut.frames_dropped) == 1
        ready[0] = True
        await ctx.tick().repeat(5)
        await bench.offer(ctx, frame(FrameKind.INJECT, 2, 0, 0, second), gap=1)
        while len(bench.tx) < 3:
            await ctx.tick()
        assert (ctx.get(dut.frames_dropped), ctx.get(dut.duplicates)) == (1, 0)

    bench.run(egress, host)
    assert bench.frames() == [frame(FrameKind.PACKET, 0, 0, PacketSource.EGRESS.value,
                                    out + b"\0"),
                              ack(1, Status.OK), ack(2, Status.OK)]
    assert bench.tx[0][0] < bench.tx[1][0]
    def whole(packet):
        return [(byte, n == len(packet) - 1, 0) for n, byte in enumerate(packet)]
    cut = bench.injected[len(first):len(first) + 51]
    assert bench.injected[:len(first)] == whole(first)
    assert cut[:50] == whole(second)[:50] and cut[50][1:] == (1, 1)
    assert bench.injected[len(first) + 51:] == whole(second)
    assert bench.refused == 0
