# SPDX-License-Identifier: BSD-2-Clause
"""The GMII receiver: frames off the wire, checked, as a byte stream."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .crc32 import CRC32_INIT, CRC32_RESIDUE, crc32_step
from .layouts import MAC_BYTE, MAX_FRAME, MIN_FRAME, RX_EVENTS

__all__ = ["GmiiReceiver", "check_max_size"]

_PREAMBLE, _SFD = 0x55, 0xD5
# Bytes held back: the FCS, and one more so the frame's last byte can be sent with
# `last` (and the verdict) in the cycle after rx_dv falls.
_HELD = 5


def check_max_size(max_size) -> int:
    """`max_size` if it is a valid longest frame, else a ValueError naming it."""
    if type(max_size) is not int or not MIN_FRAME <= max_size <= 16383:
        raise ValueError(f"max_size must be an integer from {MIN_FRAME} to 16383 "
                         f"(bytes with the FCS), not {max_size!r}")
    return max_size


class GmiiReceiver(wiring.Component):
    """Frames from a GMII receive interface (``rxd``, ``rx_dv``, ``rx_er``, one byte
    per clock) to a byte stream ``o``: preamble and SFD found and removed, FCS
    checked and removed.

    ``o`` cannot stall (the wire does not wait), so it has no ``ready``; every
    frame that starts on ``o`` ends there, and its last byte has ``abort`` set when
    the frame is bad: a bad FCS, ``rx_er`` at any byte, a runt (fewer than 64
    bytes with the FCS) or a giant (more than `max_size` bytes with the FCS; cut
    off at the byte past `max_size`, the rest of it ignored). A frame of 4 bytes
    or fewer puts nothing on ``o``. Carrier without an SFD, or a byte other than
    the preamble's before it, is a ``preamble_error``. Each frame gives one pulse
    on one of the :data:`RX_EVENTS` outputs (the first that applies, in that
    order), so a bad frame is never counted twice.

    Any number of preamble bytes (none too) before the SFD is accepted; what the
    receive interface carries between frames (rx_er with rx_dv low: carrier
    extension, false carrier) is ignored.

    Latency: a byte leaves ``o`` 7 cycles after it is on ``rxd`` (an input
    register, five bytes held back, an output register). Throughput: one byte per cycle, any
    interframe gap the sender leaves.
    """

    def __init__(self, *, max_size: int = MAX_FRAME):
        self._max_size = check_max_size(max_size)
        super().__init__({
            "rxd":   In(8),
            "rx_dv": In(1),
            "rx_er": In(1),
            "o":     Out(stream.Signature(MAC_BYTE, always_ready=True)),
            **{name: Out(1) for name in RX_EVENTS},
        })

    def elaborate(self, platform):
        m = Module()
        max_size = self._max_size
        # Registered once: the pins' timing stays within the I/O register.
        rxd, rx_dv, rx_er = Signal(8), Signal(), Signal()
        m.d.sync += [rxd.eq(self.rxd), rx_dv.eq(self.rx_dv), rx_er.eq(self.rx_er)]

        held = [Signal(8, name=f"held{k}") for k in range(_HELD)]   # held[-1] the oldest
        length = Signal(range(max_size + 1))     # bytes of the frame so far, FCS included
        crc = Signal(32, init=CRC32_INIT)
        errored = Signal()                       # rx_er seen in this frame

        m.d.sync += self.o.valid.eq(0)
        m.d.sync += [getattr(self, name).eq(0) for name in RX_EVENTS]

        def emit(last=0, abort=0):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(held[_HELD - 1]),
                         self.o.payload.last.eq(last), self.o.payload.abort.eq(abort)]

        def start_frame():
            m.d.sync += [length.eq(0), crc.eq(CRC32_INIT), errored.eq(0)]
            m.next = "DATA"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(rx_dv):
                    with m.If(rxd == _SFD):
                        start_frame()
                    with m.Elif(rxd == _PREAMBLE):
                        m.next = "PREAMBLE"
                    with m.Else():
                        m.d.sync += self.preamble_error.eq(1)
                        m.next = "DISCARD"

            with m.State("PREAMBLE"):
                with m.If(~rx_dv):
                    m.d.sync += self.preamble_error.eq(1)
                    m.next = "IDLE"
                with m.Elif(rxd == _SFD):
                    start_frame()
                with m.Elif(rxd != _PREAMBLE):
                    m.d.sync += self.preamble_error.eq(1)
                    m.next = "DISCARD"

            with m.State("DATA"):
                with m.If(rx_dv & (length == max_size)):
                    # One byte too many: the frame ends here, aborted.
                    emit(last=1, abort=1)
                    m.d.sync += self.giant.eq(1)
                    m.next = "DISCARD"
                with m.Elif(rx_dv):
                    with m.If(length >= _HELD):
                        emit()
                    m.d.sync += [
                        held[0].eq(rxd),
                        *(held[k].eq(held[k - 1]) for k in range(1, _HELD)),
                        length.eq(length + 1),
                        crc.eq(crc32_step(crc, rxd)),
                        errored.eq(errored | rx_er),
                    ]
                with m.Else():
                    runt = length < MIN_FRAME
                    bad_fcs = crc != CRC32_RESIDUE
                    with m.If(length >= _HELD):
                        emit(last=1, abort=errored | runt | bad_fcs)
                    with m.If(errored):
                        m.d.sync += self.rx_error.eq(1)
                    with m.Elif(runt):
                        m.d.sync += self.runt.eq(1)
                    with m.Elif(bad_fcs):
                        m.d.sync += self.fcs_error.eq(1)
                    with m.Else():
                        m.d.sync += self.frames.eq(1)
                    m.next = "IDLE"

            with m.State("DISCARD"):
                with m.If(~rx_dv):
                    m.next = "IDLE"
        return m
