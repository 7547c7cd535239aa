# SPDX-License-Identifier: BSD-2-Clause
"""The GMII transmitter: a byte stream onto the wire as frames."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .crc32 import CRC32_INIT, crc32_step
from .layouts import IFG, MAC_BYTE, MIN_FRAME, TX_EVENTS

__all__ = ["GmiiTransmitter", "check_ifg"]

_PREAMBLE, _SFD = 0x55, 0xD5
_PREAMBLE_BYTES = 7
_PADDED = MIN_FRAME - 4          # a frame's bytes before the FCS, at least


def check_ifg(ifg) -> int:
    """`ifg` if it is a valid interframe gap, else a ValueError naming it."""
    if type(ifg) is not int or not IFG <= ifg <= 255:
        raise ValueError(f"ifg must be an integer from {IFG} to 255 (byte times), not {ifg!r}")
    return ifg


class GmiiTransmitter(wiring.Component):
    """Frames from a byte stream ``i`` onto a GMII transmit interface (``txd``,
    ``tx_en``, ``tx_er``, one byte per clock): 7 preamble bytes and the SFD, the
    frame's bytes, zero padding to 60 bytes, the FCS, then at least `ifg` idle
    byte times before the next preamble.

    The wire cannot wait, so a frame's bytes must come on ``i`` one per cycle
    once it has started (give it whole frames, as from a :class:`PacketFifo`).
    If the next byte is not there in time (``underrun``) or the last one has
    ``abort`` set (``aborted``), the frame is cut short with a byte sent with
    ``tx_er`` (the receiver drops it), and for an underrun the rest of the
    frame's bytes are taken from ``i`` and thrown away. Each frame gives one pulse
    on one of the :data:`TX_EVENTS` outputs.

    Latency: a frame's first byte is on ``txd`` 10 cycles after ``i`` offers it
    (the start, the preamble and SFD, a registered output), when the gap has passed.
    Throughput: one byte per cycle; a frame of n bytes takes
    ``8 + max(n, 60) + 4 + ifg`` cycles.
    """

    def __init__(self, *, ifg: int = IFG):
        self._ifg = check_ifg(ifg)
        super().__init__({
            "i":     In(stream.Signature(MAC_BYTE)),
            "txd":   Out(8),
            "tx_en": Out(1),
            "tx_er": Out(1),
            **{name: Out(1) for name in TX_EVENTS},
        })

    def elaborate(self, platform):
        m = Module()
        ifg = self._ifg
        # Idle byte times since the last frame; starts as if a gap had passed.
        gap = Signal(range(ifg + 1), init=ifg)
        index = Signal(range(max(_PADDED, _PREAMBLE_BYTES) + 1))  # of the preamble, FCS, or frame
        crc = Signal(32, init=CRC32_INIT)
        fcs = Signal(32)
        byte = self.i.payload

        m.d.sync += [self.tx_en.eq(0), self.tx_er.eq(0), self.txd.eq(0)]
        m.d.sync += [getattr(self, name).eq(0) for name in TX_EVENTS]

        def send(value, error=0):
            m.d.sync += [self.tx_en.eq(1), self.txd.eq(value), self.tx_er.eq(error)]

        def count_gap():
            with m.If(gap != ifg):
                m.d.sync += gap.eq(gap + 1)

        with m.FSM():
            with m.State("IDLE"):
                # This cycle's output is idle too: with it the gap may be complete.
                with m.If(self.i.valid & (gap >= ifg - 1)):
                    m.d.sync += [index.eq(0), crc.eq(CRC32_INIT)]
                    m.next = "PREAMBLE"
                with m.Else():
                    count_gap()

            with m.State("PREAMBLE"):
                with m.If(index == _PREAMBLE_BYTES):
                    send(_SFD)
                    m.d.sync += index.eq(0)
                    m.next = "DATA"
                with m.Else():
                    send(_PREAMBLE)
                    m.d.sync += index.eq(index + 1)

            def then_fcs_if_padded(next_crc):
                # After this byte: the FCS if the frame is long enough, else padding.
                m.d.sync += [crc.eq(next_crc), index.eq(index + 1)]
                with m.If(index + 1 >= _PADDED):
                    m.d.sync += [fcs.eq(~next_crc), index.eq(0)]
                    m.next = "FCS"
                with m.Else():
                    m.next = "PAD"

            with m.State("DATA"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(~self.i.valid):
                    send(0, error=1)
                    m.d.sync += [self.underrun.eq(1), gap.eq(0)]
                    m.next = "FLUSH"
                with m.Elif(byte.last & byte.abort):
                    send(byte.data, error=1)
                    m.d.sync += [self.aborted.eq(1), gap.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    send(byte.data)
                    with m.If(byte.last):
                        then_fcs_if_padded(crc32_step(crc, byte.data))
                    with m.Else():
                        m.d.sync += [crc.eq(crc32_step(crc, byte.data)),
                                     index.eq(Mux(index == _PADDED, index, index + 1))]

            with m.State("PAD"):
                send(0)
                then_fcs_if_padded(crc32_step(crc, C(0, 8)))

            with m.State("FCS"):
                send(fcs[:8])
                m.d.sync += [fcs.eq(fcs >> 8), index.eq(index + 1)]
                with m.If(index == 3):
                    m.d.sync += [self.frames.eq(1), gap.eq(0)]
                    m.next = "IDLE"

            with m.State("FLUSH"):
                # The rest of an underrun frame, taken as it comes and thrown away.
                m.d.comb += self.i.ready.eq(1)
                count_gap()
                with m.If(self.i.valid & byte.last):
                    m.next = "IDLE"
        return m
