# SPDX-License-Identifier: BSD-2-Clause
"""``EspNicDevice``: :class:`~.top.EspNic` with its host link, what a board or the
simulated device server runs.

::

    link bytes (or UART pins) --> FrameDecoder --> HostBridge --> EspNic's host streams,
    link bytes (or UART pins) <-- FrameEncoder <--     |          pause, miss_to_host;
                                                       +--------- its counters, idle

or, with ``link="bar"``, a memory-mapped bus (a PCIe endpoint's BAR) into a
:class:`~.bridge.bar.BarBridge` in place of the frames and the ``HostBridge``.

The register map (:class:`~.bridge.regmap.RegisterMap`) is built from the same
parameters as the ``EspNic``, and every register and channel is wired here by
the name the map gives it, so what the host reads in ``docs/registers.md`` is
what the device has.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bridge.bar import BarBridge, BarBus
from .bridge.framing import MAX_FRAME, FrameDecoder, FrameEncoder
from .bridge.host import HostBridge
from .bridge.regmap import RegisterMap
from .bridge.uart import UartRx, UartTx
from .forwarder.egress import EGRESS_BEAT
from .packet.fifo import PacketFifo
from .packet.gather import BytesToBeats
from .packet.layouts import packet_beat
from .packet.merge import PacketMerger
from .packet.register import HandshakeRegister, SkidBuffer, StreamRegister, cut
from .top import EspNic

__all__ = ["EspNicDevice", "LINKS", "PACKET_PATHS", "INJECT_DEPTH"]

LINKS = ("bytes", "uart", "bar")
PACKET_PATHS = ("ports", "link")
#: Beats of the injected-packet FIFO: one frame's longest packet (2,044 bytes).
INJECT_DEPTH = 128


class EspNicDevice(wiring.Component):
    """The data plane and its host link.

    Parameters
    ----------
    link : ``"bytes"``: the link is a byte stream each way (``host_rx``,
        ``host_tx``; the simulated device server feeds it a byte per cycle);
        ``"uart"``: UART pins ``uart_rx``/``uart_tx``, 8N1, ``divisor`` clock
        cycles per bit (:func:`~.bridge.uart.divisor_for`); ``"bar"``: the
        memory-mapped bus ``bar`` (:class:`~.bridge.bar.BarBus`) that a PCIe
        endpoint core's BAR interface would drive, laid out by
        :class:`~.bridge.bar.BarLayout` (``docs/bar.md``).
    divisor : with ``link="uart"`` only.
    packets : ``"ports"``: the packet ports (``i``, ``o``, ``exception``,
        ``exception_port``) are the ``EspNic``'s, and packets the host injects are
        merged into ``i`` a packet at a time; ``"link"``: there are no packet
        ports (a board without Ethernet): packets come in only as ``INJECT``
        frames and everything the device sends out goes to the host as
        ``PACKET`` frames (with ``link="bar"``: through the BAR's packet mailbox).
    **nic : the :class:`EspNic` parameters.

    Injected packets pass a :class:`PacketFifo` (``INJECT_DEPTH`` beats), so a
    frame that turns out bad, or whose packet the bridge had to cut because the
    FIFO was full, injects nothing (``inject_aborted`` counts it). The link's
    counters include the UART receiver's ``uart_framing_errors`` and
    ``uart_overruns`` (0 with the other links) and the bridge's ``frames_dropped``
    (0 on a BAR, which has no frames).

    For timing, every stream between the bridge and the ``EspNic`` crosses a
    register, so that no ``ready`` or ``valid`` chain runs from the link's
    transmitter through the bridge into the tables and back (:func:`~.packet.register.cut`): each
    channel's stream to the tables a :class:`~.packet.register.HandshakeRegister`
    (the handshake registered, the payload read from the bridge's register, which
    holds it until the table has taken it: a cycle more, an item every 3 cycles),
    each channel's stream back a :class:`~.packet.register.StreamRegister` (a
    cycle more, an item every 2 cycles; both far above a host's rate), and the packet
    streams (injected packets, and with ``packets="link"`` the egress ports and
    the exception queue, its port riding along) and the bridge's frame bytes to
    the encoder a :class:`~.packet.register.SkidBuffer` (a cycle more, one beat a
    cycle). So a ``SEND``'s ``ACK`` means its payload has been taken on the way to
    its table, ahead of anything a later frame can send there.
    """

    def __init__(self, *, link: str = "bytes", divisor: int | None = None,
                 packets: str = "ports", **nic):
        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, not {link!r}")
        if packets not in PACKET_PATHS:
            raise ValueError(f"packets must be one of {PACKET_PATHS}, not {packets!r}")
        if (divisor is None) != (link != "uart"):
            raise ValueError("divisor is needed with link='uart' and only then, "
                             f"not {divisor!r} with link={link!r}")
        self.link, self.divisor, self.packets = link, divisor, packets
        self.nic = EspNic(**nic)
        self.regmap = RegisterMap(**nic)
        self.bridge = BarBridge(self.regmap) if link == "bar" else HostBridge(self.regmap)
        members = {} if packets == "link" else {
            "i": In(stream.Signature(packet_beat(16))).array(self.nic.ports),
            "o": Out(stream.Signature(EGRESS_BEAT)).array(self.nic.ports),
            "exception": Out(stream.Signature(packet_beat(16))),
            "exception_port": Out(self.nic.exception_port.shape()),
        }
        if link == "bytes":
            members.update(host_rx=In(stream.Signature(8)), host_tx=Out(stream.Signature(8)))
        elif link == "uart":
            members.update(uart_rx=In(1, init=1), uart_tx=Out(1, init=1))
        else:
            members.update(bar=In(BarBus(self.bridge.layout.address_width)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.nic = nic = self.nic
        m.submodules.bridge = bridge = self.bridge
        self._packet_paths(m, nic, bridge)
        if self.link == "bar":
            wiring.connect(m, wiring.flipped(self.bar), bridge.bus)
            # No frames on a BAR: their counters stay 0; a refused access counts.
            own = {"bad_crc": 0, "too_short": 0, "too_long": 0,
                   "bad_command": bridge.bad_writes, "duplicates": 0,
                   "inject_aborted": self._inject_aborted, "frames_dropped": 0,
                   "uart_framing_errors": 0, "uart_overruns": 0}
        else:
            own = self._frame_link(m, bridge)
        for n, register in enumerate(bridge.status_registers):
            if register.signal.startswith("bridge."):
                value = own[register.signal.removeprefix("bridge.")]
            else:
                value = getattr(nic, register.signal)
                if register.index is not None:
                    value = value[register.index]
                elif isinstance(value, list | tuple) or not hasattr(value, "shape"):
                    value = Cat(value)           # a bit per forwarder (idle)
            m.d.comb += bridge.status[n].eq(value)
        for n, register in enumerate(bridge.control_registers):
            bits = getattr(nic, register.signal)      # a bit per forwarder
            m.d.comb += [bit.eq(bridge.control[n][f]) for f, bit in enumerate(bits)]
        for channel in self.regmap.channels:
            for k in range(channel.count):
                theirs = getattr(nic, channel.name)
                if nic.signature.members[channel.name].dimensions:
                    theirs = theirs[k]
                ours = getattr(bridge, channel.name)[k]
                name = f"{channel.name}{k}_register"
                if channel.direction == "in":
                    # The bridge holds what it sends in a register until it is taken:
                    # no copy of it (an SA operation is 1,252 bits).
                    cut(m, name, HandshakeRegister, ours, theirs)
                else:
                    cut(m, name, StreamRegister, theirs, ours)
        return m

    def _frame_link(self, m, bridge) -> dict:
        """The frame decoder and encoder between the link and the ``HostBridge``; the
        link's counters by register name."""
        m.submodules.decoder = decoder = FrameDecoder(max_frame=MAX_FRAME, counter_width=32)
        m.submodules.encoder = encoder = FrameEncoder()
        if self.link == "bytes":
            wiring.connect(m, wiring.flipped(self.host_rx), decoder.i)
            wiring.connect(m, encoder.o, wiring.flipped(self.host_tx))
            uart_errors = {"uart_framing_errors": 0, "uart_overruns": 0}
        else:
            m.submodules.uart_rx = uart_rx = UartRx(divisor=self.divisor, counter_width=32)
            m.submodules.uart_tx = uart_tx = UartTx(divisor=self.divisor)
            m.d.comb += [uart_rx.rx.eq(self.uart_rx), self.uart_tx.eq(uart_tx.tx)]
            wiring.connect(m, uart_rx.o, decoder.i)
            wiring.connect(m, encoder.o, uart_tx.i)
            uart_errors = {"uart_framing_errors": uart_rx.framing_errors,
                           "uart_overruns": uart_rx.overruns}
        wiring.connect(m, decoder.o, bridge.rx)
        # The encoder's `ready` depends on the byte (an escape holds it): not into the
        # bridge's choice of what to send in the same cycle.
        cut(m, "tx_register", SkidBuffer, bridge.tx, encoder.i)
        return {"bad_crc": decoder.bad_crc, "too_short": decoder.too_short,
                "too_long": decoder.too_long, "bad_command": bridge.bad_command,
                "duplicates": bridge.duplicates, "inject_aborted": self._inject_aborted,
                "frames_dropped": bridge.frames_dropped, **uart_errors}

    def _packet_paths(self, m, nic, bridge):
        """Injected packets into the ports; the ports' output to the host or out."""
        m.submodules.gather = gather = BytesToBeats(layout=bridge.inject.payload.shape())
        injected = PacketFifo(layout=gather.o.payload.shape(), depth=INJECT_DEPTH)
        m.submodules.injected = injected
        self._inject_aborted = injected.dropped
        wiring.connect(m, bridge.inject, gather.i)
        wiring.connect(m, gather.o, injected.i)
        # The FIFO's read out of its RAM, then the port's choice, not into the parser.
        injected_beats = stream.Signature(injected.o.payload.shape()).create()
        cut(m, "injected_register", SkidBuffer, injected.o, wiring.flipped(injected_beats))
        injected = injected_beats
        port = injected.payload.port
        for p in range(nic.ports):
            if self.packets == "link":
                into = nic.i[p]
            else:
                m.submodules[f"merge{p}"] = merge = PacketMerger(count=2, width=16)
                wiring.connect(m, wiring.flipped(self.i[p]), merge.i[0])
                wiring.connect(m, merge.o, nic.i[p])
                into = merge.i[1]
            m.d.comb += [
                *(getattr(into.payload, name).eq(getattr(injected.payload, name))
                  for name in packet_beat(16).members),
                into.valid.eq(injected.valid & (port == p)),
            ]
            with m.If(port == p):
                m.d.comb += injected.ready.eq(into.ready)
            if self.packets == "link":
                cut(m, f"egress{p}_register", SkidBuffer, nic.o[p], bridge.egress[p])
            else:
                wiring.connect(m, nic.o[p], wiring.flipped(self.o[p]))
        if self.packets == "link":
            # The port names the packet at the head of the queue: it goes with its beats.
            layout = data.StructLayout({"beat": packet_beat(16),
                                        "port": nic.exception_port.shape()})
            m.submodules.exception_register = register = SkidBuffer(layout)
            m.d.comb += [
                register.i.payload.beat.eq(nic.exception.payload),
                register.i.payload.port.eq(nic.exception_port),
                register.i.valid.eq(nic.exception.valid),
                nic.exception.ready.eq(register.i.ready),
                bridge.exception.payload.eq(register.o.payload.beat),
                bridge.exception_port.eq(register.o.payload.port),
                bridge.exception.valid.eq(register.o.valid),
                register.o.ready.eq(bridge.exception.ready),
            ]
        else:
            wiring.connect(m, nic.exception, wiring.flipped(self.exception))
            m.d.comb += self.exception_port.eq(nic.exception_port)
