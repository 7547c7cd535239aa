# SPDX-License-Identifier: BSD-2-Clause
# amaranth: UnusedElaboratable=no
"""The RGMII MAC (Amaranth simulator): GMII receiver and transmitter, and the whole
``RgmiiPort`` at its pins.

Oracles: frames built with scapy, their FCS from ``zlib.crc32``; what the MAC
sends is parsed back here (preamble, SFD, FCS by zlib, padding, gap). Amaranth's
simulator cannot run :class:`io.DDRBuffer` (it raises for a
:class:`io.SimulationPort`), so the pin-level tests elaborate the port on a
stand-in platform whose DDR buffers are behavioural models of IDDRX1F / ODDRX1F
(:class:`_DdrModel`: rising-edge and falling-edge samples handed over together
at the next rising edge; two registered halves out): the RGMII nibble and
``ctl`` encoding is tested through them, the Lattice primitives themselves are not.
"""

import random
import zlib
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from amaranth import *
from amaranth.hdl import Fragment
from amaranth.lib import io, wiring

from espnic.hdl.forwarder.ethernet import EthernetStrip
from espnic.hdl.mac import GmiiReceiver, GmiiTransmitter, RgmiiPort
from espnic.hdl.mac.counter import CrossedCounter
from espnic.hdl.mac.crc32 import CRC32_INIT, CRC32_RESIDUE, crc32_step_int
from espnic.hdl.mac.layouts import RX_EVENTS, TX_EVENTS
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get_packets, stream_put_all

PREAMBLE = b"\x55" * 7 + b"\xd5"
SRC_MAC, DST_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def fcs(frame: bytes) -> bytes:
    return zlib.crc32(frame).to_bytes(4, "little")


def udp_frame(length: int, seed: int = 0, *, ipv6: bool = False) -> bytes:
    """An Ethernet/IP/UDP frame of `length` bytes (FCS not included)."""
    rng = random.Random(seed)
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2") if ipv6 else IP(src="192.0.2.1",
                                                                  dst="192.0.2.2")
    headers = Ether(dst="02:00:00:00:00:aa", src="02:00:00:00:00:bb") / ip / \
        UDP(sport=rng.randrange(1024, 65536), dport=4789)
    frame = bytes(headers / Raw(rng.randbytes(length - len(headers))))
    assert len(frame) == length
    return frame


def gmii(frame: bytes, *, preamble: bytes = PREAMBLE, error_at: int | None = None) -> list:
    """(rxd, rx_dv, rx_er) per cycle for `frame` (FCS included) behind `preamble`."""
    symbols = [(byte, 1, 0) for byte in preamble + frame]
    if error_at is not None:
        byte, _dv, _er = symbols[len(preamble) + error_at]
        symbols[len(preamble) + error_at] = (byte, 1, 1)
    return symbols


def idle(cycles: int) -> list:
    return [(0, 0, 0)] * cycles


def split_frames(received: list) -> list:
    """(bytes, aborted) per frame from a list of (data, last, abort) bytes."""
    frames, current = [], b""
    for data, last, abort in received:
        current += bytes([data])
        if last:
            frames.append((current, bool(abort)))
            current = b""
    assert current == b"", "a frame did not end"
    return frames


def parse_wire(symbols: list) -> tuple[list, list]:
    """Frames (bytes after the SFD, FCS included; with tx_er, ``None``) and the idle
    gaps between them, from (txd, tx_en, tx_er) per cycle."""
    frames, gaps, current, gap, errored = [], [], None, 0, False
    for data, enable, error in symbols:
        if enable:
            if current is None:
                gaps.append(gap)
                current, errored = b"", False
            current += bytes([data])
            errored |= bool(error)
        elif current is not None:
            frames.append(None if errored else current)
            current, gap = None, 1
        else:
            gap += 1
    assert current is None, "the wire was still busy at the end"
    return frames, gaps[1:]


def check_sent(raw: bytes, packet: bytes) -> None:
    """`raw` (what followed the SFD) is `packet` padded to 60 bytes, then its FCS."""
    assert raw[:8] == PREAMBLE
    body, sent_fcs = raw[8:-4], raw[-4:]
    assert body == packet + bytes(max(0, 60 - len(packet)))
    assert sent_fcs == fcs(body)


# ---- CRC-32 -----------------------------------------------------------------------------

def test_crc_network_matches_zlib_and_leaves_the_residue():
    rng = random.Random(1)
    for length in (0, 1, 7, 64, 333):
        data = rng.randbytes(length)
        crc = CRC32_INIT
        for byte in data:
            crc = crc32_step_int(crc, byte)
        assert crc ^ 0xFFFF_FFFF == zlib.crc32(data)
        for byte in fcs(data):
            crc = crc32_step_int(crc, byte)
        assert crc == CRC32_RESIDUE


# ---- GMII receiver ----------------------------------------------------------------------

def run_receiver(symbols: list, *, max_size: int = 1522) -> tuple[list, Counter]:
    dut = GmiiReceiver(max_size=max_size)
    received, events = [], Counter()

    async def drive(ctx):
        for data, dv, er in symbols + idle(12):
            ctx.set(dut.rxd, data)
            ctx.set(dut.rx_dv, dv)
            ctx.set(dut.rx_er, er)
            await ctx.tick()

    async def watch(ctx):
        signals = [dut.o.valid, dut.o.payload, *(getattr(dut, name) for name in RX_EVENTS)]
        async for _clk, _rst, valid, byte, *pulses in ctx.tick().sample(*signals):
            if valid:
                received.append((byte.data, byte.last, byte.abort))
            events.update(name for name, pulse in zip(RX_EVENTS, pulses) if pulse)

    run_sim(dut, drive, processes=[watch])
    return split_frames(received), events


def test_receiver_keeps_good_frames_and_drops_bad_ones():
    good = [udp_frame(n, seed=n) for n in (64 - 4, 100, 128 - 4, 70)]
    bad_fcs = udp_frame(90, seed=5)
    symbols = (
        gmii(good[0] + fcs(good[0])) + idle(12)                       # shortest frame
        + gmii(bad_fcs + bytes(b ^ 1 for b in fcs(bad_fcs))) + idle(12)
        + gmii(good[1] + fcs(good[1]), error_at=40) + idle(12)        # rx_er
        + gmii(good[1] + fcs(good[1])) + idle(12)                     # the same, clean
        + gmii(good[0][:59] + fcs(good[0][:59])) + idle(12)           # 63 bytes: runt
        + gmii(udp_frame(125) + fcs(udp_frame(125))) + idle(12)       # 129 bytes: giant
        + gmii(good[2] + fcs(good[2])) + idle(12)                     # exactly max_size
        + [(0x55, 1, 0)] * 3 + [(0x12, 1, 0)] * 20 + idle(12)         # no SFD
        + [(0x0E, 0, 1)] * 10 + idle(12)                              # false carrier: ignored
        + gmii(good[3] + fcs(good[3]), preamble=b"\xd5") + idle(1)    # SFD only; gap 1
        + gmii(good[0] + fcs(good[0])) + idle(12)
        + gmii(b"\x01\x02\x03")                                       # 3 bytes: nothing out
    )
    frames, events = run_receiver(symbols, max_size=128)
    assert [frame for frame, aborted in frames if not aborted] == \
        [good[0], good[1], good[2], good[3], good[0]]
    # Bad frames end aborted (a PacketFifo behind throws them away).
    assert [aborted for _frame, aborted in frames] == \
        [False, True, True, False, True, True, False, False, False]
    assert events == Counter(frames=5, fcs_error=1, rx_error=1, runt=2, giant=1,
                             preamble_error=1)


def test_receiver_takes_back_to_back_frames_at_the_minimum_gap():
    frames = [udp_frame(random.Random(n).randrange(60, 300), seed=n) for n in range(6)]
    symbols = []
    for frame in frames:
        symbols += gmii(frame + fcs(frame)) + idle(12)
    received, events = run_receiver(symbols)
    assert received == [(frame, False) for frame in frames]
    assert events == Counter(frames=6)


# ---- GMII transmitter -------------------------------------------------------------------

def run_transmitter(items: list, *, tail: int = 90, gap_at: int | None = None):
    """`items` (data, last, abort) into a GmiiTransmitter; ``gap_at``: an item index
    before which the producer pauses 3 cycles (an underrun)."""
    dut = GmiiTransmitter()
    wire, events = [], Counter()

    async def produce(ctx):
        for index, (data, last, abort) in enumerate(items):
            if index == gap_at:
                ctx.set(dut.i.valid, 0)
                for _ in range(3):
                    await ctx.tick()
            await stream_put_all(ctx, dut.i, [{"data": data, "last": last, "abort": abort}],
                                 timeout=200)
        for _ in range(tail):
            await ctx.tick()

    async def watch(ctx):
        signals = [dut.txd, dut.tx_en, dut.tx_er, *(getattr(dut, name) for name in TX_EVENTS)]
        async for _clk, _rst, txd, tx_en, tx_er, *pulses in ctx.tick().sample(*signals):
            wire.append((txd, tx_en, tx_er))
            events.update(name for name, pulse in zip(TX_EVENTS, pulses) if pulse)

    run_sim(dut, produce, processes=[watch])
    return parse_wire(wire), events


def byte_items(packet: bytes, *, abort: bool = False) -> list:
    return [(byte, int(k == len(packet) - 1), int(abort and k == len(packet) - 1))
            for k, byte in enumerate(packet)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(st.binary(min_size=1, max_size=160), min_size=1, max_size=4))
def test_transmitter_frames_pads_and_checksums(packets):
    items = [item for packet in packets for item in byte_items(packet)]
    (frames, gaps), events = run_transmitter(items)
    assert len(frames) == len(packets)
    for raw, packet in zip(frames, packets):
        check_sent(raw, packet)
    # The producer is never late: frames go back to back at exactly the minimum gap.
    assert gaps == [12] * (len(packets) - 1)
    assert events == Counter(frames=len(packets))


def test_transmitter_cuts_short_underrun_and_aborted_frames():
    first, second, third = udp_frame(80, 1), udp_frame(70, 2), udp_frame(66, 3)
    items = byte_items(first) + byte_items(second, abort=True) + byte_items(third)
    (frames, gaps), events = run_transmitter(items, gap_at=30)
    # The first frame ran dry at its byte 30 and went out with tx_er; the rest of it
    # was thrown away. The second was aborted; the third is whole.
    assert frames[:2] == [None, None]
    check_sent(frames[2], third)
    assert len(frames) == 3 and all(gap >= 12 for gap in gaps)
    assert events == Counter(underrun=1, aborted=1, frames=1)


# ---- counters across clock domains -----------------------------------------------------

def test_crossed_counter_loses_no_event_to_a_slow_reader():
    """Events on most cycles of a 125 MHz clock, read at 10 MHz: every one counted."""
    dut = CrossedCounter(event_domain="fast")
    rng = random.Random(6)
    pattern = [rng.random() < 0.8 for _ in range(2000)]
    seen = []

    async def events(ctx):
        for event in pattern:
            ctx.set(dut.event, event)
            await ctx.tick("fast")
        ctx.set(dut.event, 0)
        for _ in range(80):
            await ctx.tick("fast")
        seen.append(ctx.get(dut.count))

    run_sim(dut, events, clocks={"sync": 100e-9, "fast": 8e-9})
    assert seen == [sum(pattern)]


# ---- RgmiiPort at its pins --------------------------------------------------------------

class _DdrModel(Elaboratable):
    """A behavioural IDDRX1F / ODDRX1F for one :class:`io.DDRBuffer` on simulation
    ports: the contract of ``DDRBuffer`` (``i[0]`` sampled on the rising edge,
    ``i[1]`` on the falling edge that follows, both given at the next rising edge;
    ``o[0]`` driven while the clock is high, ``o[1]`` while it is low, one cycle on)."""

    def __init__(self, buffer: io.DDRBuffer):
        self._buffer = buffer

    def elaborate(self, platform):
        m = Module()
        buffer, port = self._buffer, self._buffer.port
        if buffer.direction is io.Direction.Input:
            domain = buffer.i_domain
            m.domains.falling = falling_domain = ClockDomain(clk_edge="neg", local=True)
            m.d.comb += falling_domain.clk.eq(ClockSignal(domain))
            rising, falling = Signal(len(port)), Signal(len(port))
            m.d[domain] += [rising.eq(port.i), buffer.i[0].eq(rising), buffer.i[1].eq(falling)]
            m.d.falling += falling.eq(port.i)
        else:
            domain = buffer.o_domain
            first, second = Signal(len(port)), Signal(len(port))
            m.d[domain] += [first.eq(buffer.o[0]), second.eq(buffer.o[1])]
            m.d.comb += [port.o.eq(Mux(ClockSignal(domain), first, second)), port.oe.eq(1)]
        return m


class _DdrModelPlatform:
    def get_io_buffer(self, buffer):
        if not isinstance(buffer, io.DDRBuffer):
            raise NotImplementedError(f"no model of {buffer!r}")
        return _DdrModel(buffer)


class _OnModels(Elaboratable):
    """`design` elaborated on :class:`_DdrModelPlatform`."""

    def __init__(self, design):
        self._design = design

    def elaborate(self, platform):
        return Fragment.get(self._design, _DdrModelPlatform())


def make_pins() -> SimpleNamespace:
    return SimpleNamespace(
        rx_ctrl=io.SimulationPort("i", 1, name="rx_ctrl"),
        rx_data=io.SimulationPort("i", 4, name="rx_data"),
        tx_ctrl=io.SimulationPort("o", 1, name="tx_ctrl"),
        tx_data=io.SimulationPort("o", 4, name="tx_data"),
        tx_clk=io.SimulationPort("o", 1, name="tx_clk"))


RX, TX = "rgmii_rx", "rgmii_tx"
CLOCKS = {"sync": 10e-9, RX: 8e-9, TX: 8e-9}


async def drive_rgmii(ctx, pins, symbols):
    """GMII symbols onto the receive pins, a nibble per clock edge: the low nibble and
    rx_dv for the rising edge, the high nibble and rx_dv ^ rx_er for the falling one
    (set well clear of the edges, as the PHY's receive delay has them)."""
    for data, dv, er in symbols:
        ctx.set(pins.rx_data.i, data & 0xF)
        ctx.set(pins.rx_ctrl.i, dv)
        await ctx.tick(RX)
        ctx.set(pins.rx_data.i, data >> 4)
        ctx.set(pins.rx_ctrl.i, dv ^ er)
        await ctx.delay(6e-9)


def watch_rgmii(pins, wire: list, clock: list):
    """A background testbench: (txd, tx_en, tx_er) per transmit cycle from the pins, read in the
    middle of each half of the clock, and the forwarded clock's two halves."""
    async def process(ctx):
        while True:
            await ctx.tick(TX)
            await ctx.delay(2e-9)
            low, enable, clk_high = ctx.get(pins.tx_data.o), ctx.get(pins.tx_ctrl.o), \
                ctx.get(pins.tx_clk.o)
            await ctx.delay(4e-9)
            high, enable_xor_error, clk_low = ctx.get(pins.tx_data.o), ctx.get(pins.tx_ctrl.o), \
                ctx.get(pins.tx_clk.o)
            wire.append((low | high << 4, enable, enable ^ enable_xor_error))
            clock.append((clk_high, clk_low))
    return process


def port_counters(ctx, port) -> dict:
    names = [name for name, _member in port.signature.members.items()
             if name.startswith(("rx_", "tx_"))]
    return {name: ctx.get(getattr(port, name)) for name in names
            if ctx.get(getattr(port, name))}


def test_port_receives_at_the_pins():
    pins = make_pins()
    port = RgmiiPort(pins, src_mac=SRC_MAC, dst_mac=DST_MAC)
    good = [udp_frame(n, seed=n) for n in (60, 61, 200, 77)]
    bad = udp_frame(150, seed=9)
    symbols = (gmii(good[0] + fcs(good[0])) + idle(12)
               + gmii(bad + fcs(bad)[::-1]) + idle(12)                   # bad FCS
               + gmii(good[1] + fcs(good[1])) + idle(12)
               + gmii(good[2] + fcs(good[2]), error_at=100) + idle(12)   # rx_er
               + gmii(good[2] + fcs(good[2])) + idle(12)
               + gmii(good[3][:40] + fcs(good[3][:40])) + idle(12)       # runt
               + gmii(good[3] + fcs(good[3])) + idle(40))
    received, counters = [], {}

    async def bench(ctx):
        await drive_rgmii(ctx, pins, symbols)

    async def take(ctx):
        beats = await stream_get_packets(ctx, port.o, 4, rng=random.Random(3), stall_prob=0.3,
                                         timeout=3000)
        received.extend(bytes_from_beats(beats, 16))
        for _ in range(20):
            await ctx.tick()
        counters.update(port_counters(ctx, port))

    run_sim(_OnModels(port), bench, take, clocks=CLOCKS)
    assert received == good
    assert counters == {"rx_frames": 4, "rx_fcs_error": 1, "rx_error": 1, "rx_runt": 1}


def test_port_drops_and_counts_frames_its_full_buffer_cannot_take():
    """With ``o`` not taken, the receive buffer (16 beats) and the crossing (8) fill
    up: the frame that meets them full and every one while they stay full are
    dropped whole, and later frames pass again."""
    pins = make_pins()
    port = RgmiiPort(pins, src_mac=SRC_MAC, dst_mac=DST_MAC, max_size=256, rx_buffer=16)
    frames = [udp_frame(200, seed=n) for n in range(7)]
    symbols = []
    for frame in frames[:5]:
        symbols += gmii(frame + fcs(frame)) + idle(12)
    symbols += idle(400)
    for frame in frames[5:]:
        symbols += gmii(frame + fcs(frame)) + idle(12)
    received, counters = [], {}

    async def bench(ctx):
        await drive_rgmii(ctx, pins, symbols + idle(40))

    async def take(ctx):
        for _ in range(1200):           # about when the fifth frame has gone in
            await ctx.tick()
        beats = await stream_get_packets(ctx, port.o, 3, timeout=5000)
        received.extend(bytes_from_beats(beats, 16))
        for _ in range(20):
            await ctx.tick()
        counters.update(port_counters(ctx, port))

    run_sim(_OnModels(port), bench, take, clocks=CLOCKS)
    assert received == [frames[0], frames[5], frames[6]]
    assert counters == {"rx_frames": 7, "rx_overflow": 4}


def test_port_sends_at_the_pins():
    pins = make_pins()
    # A transmit buffer of 32 beats: the 600-byte packet cannot be held whole.
    port = RgmiiPort(pins, src_mac=SRC_MAC, dst_mac=DST_MAC, max_size=256, tx_buffer=32)
    packets = [bytes(IP(src="192.0.2.1", dst="192.0.2.9") / UDP() / Raw(b"x" * n))
               for n in (0, 50, 300)]
    packets.insert(1, bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP() / Raw(b"y")))
    aborted = bytes(IP() / Raw(b"z" * 40))
    oversize = bytes(IP() / Raw(b"o" * 580))
    beats = []
    for packet in packets[:2] + [aborted, oversize] + packets[2:]:
        chunk = [{**beat, "abort": 0} for beat in beats_from_bytes(packet, 16)]
        if packet is aborted:
            chunk[-1]["abort"] = 1
        beats += chunk
    wire, clock, counters = [], [], {}

    async def feed(ctx):
        await stream_put_all(ctx, port.i, beats, rng=random.Random(4), gap_prob=0.3,
                             timeout=500)
        for _ in range(700):
            await ctx.tick()
        counters.update(port_counters(ctx, port))

    run_sim(_OnModels(port), feed, background=[watch_rgmii(pins, wire, clock)], clocks=CLOCKS)
    frames, gaps = parse_wire(wire)
    assert len(frames) == len(packets)
    for raw, packet in zip(frames, packets):
        ethertype = b"\x86\xdd" if packet[0] >> 4 == 6 else b"\x08\x00"
        check_sent(raw, DST_MAC + SRC_MAC + ethertype + packet)
    assert all(gap >= 12 for gap in gaps)
    assert set(clock) == {(1, 0)}          # tx_clk: high, then low, every cycle
    assert counters == {"tx_frames": 4, "tx_aborted": 1, "tx_oversize": 1}


def test_port_loops_received_frames_back_out():
    """Frames in at the receive pins, through EthernetStrip (as EspNic takes them) and
    back into the port as IP packets, out at the transmit pins with the port's header."""
    pins = make_pins()
    port = RgmiiPort(pins, src_mac=SRC_MAC, dst_mac=DST_MAC)
    frames = [udp_frame(n, seed=n) for n in (64, 90, 180)]
    frames.append(udp_frame(100, seed=7, ipv6=True))

    class Loopback(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.port = _OnModels(port)
            m.submodules.strip = strip = EthernetStrip()
            wiring.connect(m, port.o, strip.i)
            back = port.i
            m.d.comb += [back.payload.data.eq(strip.o.payload.data),
                         back.payload.count.eq(strip.o.payload.count),
                         back.payload.first.eq(strip.o.payload.first),
                         back.payload.last.eq(strip.o.payload.last),
                         back.valid.eq(strip.o.valid), strip.o.ready.eq(back.ready)]
            return m

    symbols = []
    for frame in frames:
        symbols += gmii(frame + fcs(frame)) + idle(12)
    wire, clock = [], []

    async def bench(ctx):
        await drive_rgmii(ctx, pins, symbols + idle(300))

    run_sim(Loopback(), bench, background=[watch_rgmii(pins, wire, clock)], clocks=CLOCKS)
    sent, _gaps = parse_wire(wire)
    assert len(sent) == len(frames)
    for raw, frame in zip(sent, frames):
        # The IP packet and what followed it in the frame, behind this port's header.
        check_sent(raw, DST_MAC + SRC_MAC + frame[12:])
        assert Ether(raw[8:-4])[Ether].payload == Ether(frame).payload


def test_port_rejects_bad_parameters():
    with pytest.raises(ValueError, match="rx_buffer must be a power of two of at least 95"):
        RgmiiPort(make_pins(), src_mac=1, dst_mac=2, rx_buffer=64)
    with pytest.raises(ValueError, match="dst_mac must be 6 bytes"):
        RgmiiPort(make_pins(), src_mac=1, dst_mac=b"\x01")
    with pytest.raises(ValueError, match="max_size must be"):
        GmiiReceiver(max_size=20)
    pins = make_pins()
    pins.tx_data = io.SimulationPort("o", 8)
    with pytest.raises(ValueError, match="pins.tx_data must be 4 bits"):
        RgmiiPort(pins, src_mac=1, dst_mac=2)
