# SPDX-License-Identifier: BSD-2-Clause
"""``RgmiiPort``: one 1000BASE-T Ethernet port through an RGMII PHY, between the
PHY's pins and one port of the data plane (``EspNic``'s ``i[p]`` and ``o[p]``).

::

  rx_ctrl, rx_data --DDR--> GmiiReceiver -> OverflowGuard -> BytesToBeats -> PacketFifo --AsyncFIFO--> o
       (rx_domain: the PHY's receive clock)                                                   (sync)
  tx_ctrl, tx_data <--DDR-- GmiiTransmitter <- EthernetHeader <- BeatsToBytes <- PacketFifo <--AsyncFIFO-- i
  tx_clk <--DDR (1, 0)         (tx_domain: 125 MHz)

RGMII (v2.0) carries GMII on 4 wires clocked on both edges: ``rx_data`` has a
byte's low nibble on the rising edge and its high nibble on the falling edge;
``rx_ctrl`` has ``rx_dv`` on the rising edge and ``rx_dv ^ rx_er`` on the
falling one; transmit likewise. The pins go through :class:`amaranth.lib.io.DDRBuffer`,
which the Lattice platform maps to IDDRX1F / ODDRX1F on ECP5.

Clocks. Only 1000 Mb/s is built (125 MHz receive and transmit clocks); 10 and
100 Mb/s (2.5 / 25 MHz, nibbles on one edge) are not supported, nor in-band
link status, MDIO (the board holds the PHY's strapped defaults) or address
filtering (every frame with a good FCS goes to the data plane). The board
creates both domains: `rx_domain` clocked from the PHY's ``rx_clk`` pin (with
its clock constraint), `tx_domain` at 125 MHz from a PLL. ``tx_clk`` is
forwarded by a DDR output driving 1 then 0, so it leaves edge-aligned with the
data; RGMII needs the clock 1.5 to 2 ns (about 90 degrees) later at the PHY.
The RTL8211E adds that delay itself when its TXDLY strap is set, and its RXDLY
strap does the same for the receive clock (LiteX's ECPIX-5 target relies on the
PHY for the receive delay but delays the transmit clock in the FPGA, so which
straps that board has is not settled here). Where the PHY does not add the
transmit delay, give `tx_clock_domain`: a second 125 MHz domain from the same
PLL shifted by 90 degrees, which then clocks the ``tx_clk`` output alone.

Frames. Received frames are checked (FCS, ``rx_er``, runts, giants over
`max_size`), stored whole in the receive :class:`PacketFifo` (a frame found bad
at its end is thrown away there and never reaches ``o``) and handed over with
the Ethernet header and without the FCS: ``EspNic(..., ethernet=True)`` takes
them so. Packets from ``i`` are IP packets (the egress sends no L2 header):
each is stored whole in the transmit :class:`PacketFifo` (one whose last beat
has ``abort`` is thrown away, ``tx_aborted``), so the transmitter never runs
dry mid-frame, then gets a header with the fixed `dst_mac` and `src_mac`
(:class:`EthernetHeader`), padding, the FCS and the interframe gap.

Counters (``sync`` domain, 32 bits, crossed in Gray code, each frame counted
once): ``rx_frames`` good frames received (one the data plane did not take in
time is counted here and in ``rx_overflow``), ``rx_fcs_error``, ``rx_error``
(``rx_er``), ``rx_runt``, ``rx_giant``, ``rx_preamble_error``, ``rx_overflow``
(the receive buffer was full); ``tx_frames`` sent, ``tx_aborted``,
``tx_oversize`` (longer than the transmit buffer, dropped), ``tx_underrun``
(cannot happen with whole frames buffered; counted if it does).

Throughput. The wire carries one byte per 125 MHz cycle, 1 Gb/s; a frame of n
bytes (FCS included) takes n + 20 byte times with preamble and gap, and
becomes ceil((n - 4) / 16) beats, at most 1/16 beat per cycle: 7.8125 million
beats per second, each way. ``o`` and ``i`` move one beat per ``sync``
cycle, so a ``sync`` clock of 7.8125 MHz keeps up at line rate; in practice run
it well above (EspNic's own clock, 50 MHz and up on ECP5). Latency:
store-and-forward both ways. A received frame's first beat is offered on ``o``
about 9 cycles after its last byte was on the pins (measured in simulation with
every clock at 125 MHz and the test's DDR models, one register each way; the
ECP5 primitives may add a cycle or two: the DDR input, the receiver, the gather and the
PacketFifo in the receive domain, the crossing's synchronizer in ``sync``). A
packet to send starts on the wire (its preamble) about 6 transmit cycles after
its last beat went into ``i`` (the crossing, the PacketFifo, the split, the
DDR output), then takes the 8-byte preamble, the 14-byte header and its bytes.
"""

from amaranth import *
from amaranth.hdl import DomainRenamer
from amaranth.lib import io, stream, wiring
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from ..forwarder.egress import EGRESS_BEAT
from ..packet.fifo import PacketFifo
from ..packet.gather import BytesToBeats
from ..packet.layouts import packet_beat
from .counter import CrossedCounter
from .header import EthernetHeader, check_mac
from .layouts import IFG, MAC_BYTE, MAX_FRAME, RX_EVENTS
from .overflow import OverflowGuard
from .receiver import GmiiReceiver, check_max_size
from .scatter import BeatsToBytes
from .transmitter import GmiiTransmitter, check_ifg

__all__ = ["RgmiiPort", "RX_COUNTERS", "TX_COUNTERS", "PINS"]

_WIDTH = 16
#: The pins an :class:`RgmiiPort` takes (the names of an ``eth_rgmii`` resource).
PINS = ("rx_ctrl", "rx_data", "tx_ctrl", "tx_data", "tx_clk")
#: Counters of the receive side, in the order of :data:`RX_EVENTS` then overflow.
RX_COUNTERS = tuple(name if name.startswith("rx_") else f"rx_{name}" for name in RX_EVENTS) \
    + ("rx_overflow",)
TX_COUNTERS = ("tx_frames", "tx_aborted", "tx_oversize", "tx_underrun")
# Beats of each clock-domain crossing FIFO: enough to cover the synchronizer delay.
_CROSSING_DEPTH = 8


def _check_buffer(name, depth, max_size):
    need = -(-(max_size - 4) // _WIDTH)
    if type(depth) is not int or depth < need or depth & (depth - 1):
        raise ValueError(f"{name} must be a power of two of at least {need} beats (a frame "
                         f"of max_size={max_size} bytes), not {depth!r}")


class RgmiiPort(wiring.Component):
    """One RGMII Ethernet port (see the module docstring).

    Parameters
    ----------
    pins : the PHY's pins, an object with the I/O ports of :data:`PINS` as
        attributes, as amaranth-boards names them for the ECPIX-5
        (``platform.request("eth_rgmii", dir="-")``): ``rx_data`` and
        ``tx_data`` 4 bits, the others 1. (``rx_clk`` clocks `rx_domain`, which
        the board makes; ``rst``, ``mdio`` and ``mdc`` are the board's too.)
    src_mac, dst_mac : the addresses of the header put on sent packets
        (6 bytes or an int): this port's, and the next hop's.
    max_size : the longest frame received, FCS included (default 1522).
    ifg : the interframe gap sent, in byte times (at least 12).
    rx_domain, tx_domain : clock domains of the PHY's receive clock and of the
        125 MHz transmit clock.
    tx_clock_domain : the domain clocking the ``tx_clk`` output (default
        `tx_domain`; a 90-degree shifted one where the PHY adds no delay).
    rx_buffer, tx_buffer : beats of each direction's :class:`PacketFifo`, a
        power of two that holds a `max_size` frame (default 256: 4 KiB).
    """

    def __init__(self, pins, *, src_mac, dst_mac, max_size: int = MAX_FRAME, ifg: int = IFG,
                 rx_domain: str = "rgmii_rx", tx_domain: str = "rgmii_tx",
                 tx_clock_domain: str | None = None, rx_buffer: int = 256, tx_buffer: int = 256):
        for name in PINS:
            port = getattr(pins, name, None)
            if not isinstance(port, io.PortLike):
                raise TypeError(f"pins.{name} must be an I/O port, not {port!r}")
            want = 4 if name.endswith("_data") else 1
            if len(port) != want:
                raise ValueError(f"pins.{name} must be {want} bits wide, not {len(port)}")
        self._pins = pins
        self._src, self._dst = check_mac("src_mac", src_mac), check_mac("dst_mac", dst_mac)
        self._max_size, self._ifg = check_max_size(max_size), check_ifg(ifg)
        _check_buffer("rx_buffer", rx_buffer, max_size)
        _check_buffer("tx_buffer", tx_buffer, max_size)
        for name, domain in (("rx_domain", rx_domain), ("tx_domain", tx_domain),
                             ("tx_clock_domain", tx_clock_domain or tx_domain)):
            if not isinstance(domain, str) or domain == "sync":
                raise ValueError(f"{name} must be the name of a domain other than sync, "
                                 f"not {domain!r}")
        self._rx, self._tx = rx_domain, tx_domain
        self._tx_clock = tx_clock_domain or tx_domain
        self._rx_buffer, self._tx_buffer = rx_buffer, tx_buffer
        super().__init__({
            "o": Out(stream.Signature(packet_beat(_WIDTH))),
            "i": In(stream.Signature(EGRESS_BEAT)),
            **{name: Out(32) for name in RX_COUNTERS + TX_COUNTERS},
        })

    def _count(self, m, name, event, domain):
        m.submodules[f"count_{name}"] = counter = CrossedCounter(event_domain=domain)
        m.d.comb += [counter.event.eq(event), getattr(self, name).eq(counter.count)]

    def elaborate(self, platform):
        m = Module()
        rx, tx, pins = self._rx, self._tx, self._pins

        # ---- receive: pins -> frames -> whole good frames -> sync ---------------------------
        m.submodules.rx_pins = rx_pins = io.DDRBuffer("i", pins.rx_data + pins.rx_ctrl,
                                                      i_domain=rx)
        receiver = GmiiReceiver(max_size=self._max_size)
        m.submodules.receiver = DomainRenamer(rx)(receiver)
        rising, falling = rx_pins.i[0], rx_pins.i[1]
        m.d.comb += [
            receiver.rxd.eq(Cat(rising[:4], falling[:4])),
            receiver.rx_dv.eq(rising[4]),
            receiver.rx_er.eq(rising[4] ^ falling[4]),
        ]
        m.submodules.rx_guard = DomainRenamer(rx)(guard := OverflowGuard())
        m.submodules.rx_gather = DomainRenamer(rx)(
            gather := BytesToBeats(layout=MAC_BYTE, width=_WIDTH))
        m.submodules.rx_buffer = DomainRenamer(rx)(
            rx_buffer := PacketFifo(layout=EGRESS_BEAT, depth=self._rx_buffer))
        wiring.connect(m, receiver.o, guard.i)
        wiring.connect(m, guard.o, gather.i)
        wiring.connect(m, gather.o, rx_buffer.i)

        beat = packet_beat(_WIDTH)
        m.submodules.rx_crossing = rx_crossing = AsyncFIFO(
            width=beat.size, depth=_CROSSING_DEPTH, w_domain=rx, r_domain="sync")
        whole = Signal(beat)            # the PacketFifo passes no aborted frame: no `abort`
        m.d.comb += [
            whole.data.eq(rx_buffer.o.payload.data),
            whole.count.eq(rx_buffer.o.payload.count),
            whole.first.eq(rx_buffer.o.payload.first),
            whole.last.eq(rx_buffer.o.payload.last),
            rx_crossing.w_data.eq(whole),
            rx_crossing.w_en.eq(rx_buffer.o.valid),
            rx_buffer.o.ready.eq(rx_crossing.w_rdy),
            self.o.payload.eq(rx_crossing.r_data),
            self.o.valid.eq(rx_crossing.r_rdy),
            rx_crossing.r_en.eq(self.o.ready),
        ]
        for event, name in zip(RX_EVENTS, RX_COUNTERS):
            self._count(m, name, getattr(receiver, event), rx)
        self._count(m, "rx_overflow", guard.overflow, rx)

        # ---- transmit: sync -> whole packets -> header, FCS -> pins -------------------------
        m.submodules.tx_crossing = tx_crossing = AsyncFIFO(
            width=EGRESS_BEAT.size, depth=_CROSSING_DEPTH, w_domain="sync", r_domain=tx)
        m.submodules.tx_buffer = DomainRenamer(tx)(
            tx_buffer := PacketFifo(layout=EGRESS_BEAT, depth=self._tx_buffer))
        m.d.comb += [
            tx_crossing.w_data.eq(self.i.payload),
            tx_crossing.w_en.eq(self.i.valid),
            self.i.ready.eq(tx_crossing.w_rdy),
            tx_buffer.i.payload.eq(tx_crossing.r_data),
            tx_buffer.i.valid.eq(tx_crossing.r_rdy),
            tx_crossing.r_en.eq(tx_buffer.i.ready),
        ]
        m.submodules.tx_scatter = DomainRenamer(tx)(
            scatter := BeatsToBytes(layout=EGRESS_BEAT, width=_WIDTH))
        m.submodules.tx_header = DomainRenamer(tx)(
            header := EthernetHeader(dst=self._dst, src=self._src))
        transmitter = GmiiTransmitter(ifg=self._ifg)
        m.submodules.transmitter = DomainRenamer(tx)(transmitter)
        wiring.connect(m, tx_buffer.o, scatter.i)
        wiring.connect(m, scatter.o, header.i)
        wiring.connect(m, header.o, transmitter.i)

        m.submodules.tx_pins = tx_pins = io.DDRBuffer("o", pins.tx_data + pins.tx_ctrl,
                                                      o_domain=tx)
        m.d.comb += [
            tx_pins.o[0].eq(Cat(transmitter.txd[:4], transmitter.tx_en)),
            tx_pins.o[1].eq(Cat(transmitter.txd[4:], transmitter.tx_en ^ transmitter.tx_er)),
        ]
        m.submodules.tx_clock = tx_clock = io.DDRBuffer("o", pins.tx_clk,
                                                        o_domain=self._tx_clock)
        m.d.comb += [tx_clock.o[0].eq(1), tx_clock.o[1].eq(0)]

        # The transmit PacketFifo counts in its own domain: one event per change.
        for name, total in (("tx_aborted", tx_buffer.dropped), ("tx_oversize", tx_buffer.oversize)):
            before = Signal(32, name=f"{name}_before")
            m.d[tx] += before.eq(total)
            event = total != before
            if name == "tx_aborted":
                event = event | transmitter.aborted
            self._count(m, name, event, tx)
        self._count(m, "tx_frames", transmitter.frames, tx)
        self._count(m, "tx_underrun", transmitter.underrun, tx)
        return m
