# SPDX-License-Identifier: BSD-2-Clause
"""``LinkCheck``: the board bring-up design. It sends every good host-link frame
back as it came, so ``espnic link-check --device /dev/ttyUSB1`` can prove a board's
clock, pins, UART and frame layer before a data plane is loaded.

::

    uart_rx -> UartRx -> FrameDecoder -> PacketFifo -> FrameEncoder -> UartTx -> uart_tx
                         (CRC, escapes)  (whole good frames only)

It is built from the same blocks as :class:`~espnic.hdl.device.EspNicDevice`'s link
(the UART, :class:`FrameDecoder`, :class:`FrameEncoder`), so what it proves
carries over. A frame with a bad CRC, cut short or too long is dropped whole (the
:class:`PacketFifo` only passes a frame whose last byte came without ``abort``) and
``bad_frames`` blinks.

Throughput: the UART's, both ways (a frame is sent back once its closing FLAG is
in). Latency: a frame starts going back about 6 cycles after its closing FLAG, plus the UART's character time.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..hdl.bridge.framing import DECODED_BYTE, MAX_FRAME, FrameDecoder, FrameEncoder
from ..hdl.bridge.uart import MIN_DIVISOR, UartRx, UartTx
from ..hdl.packet.fifo import PacketFifo

__all__ = ["LinkCheck"]


class LinkCheck(wiring.Component):
    """Echoes good host-link frames (see the module docstring).

    Parameters
    ----------
    divisor : clock cycles per UART bit (:func:`~espnic.hdl.bridge.uart.divisor_for`).
    max_frame : longest payload echoed, bytes (a power of two).
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    frames: Out(16)          # good frames echoed (wraps)
    bad_frames: Out(16)      # frames dropped: bad CRC, cut short, too long (saturates)

    def __init__(self, *, divisor: int, max_frame: int = MAX_FRAME):
        if type(max_frame) is not int or max_frame < 4 or max_frame & (max_frame - 1):
            raise ValueError(f"max_frame must be a power of two of at least 4, not {max_frame!r}")
        self._divisor, self._max_frame = divisor, max_frame
        if type(divisor) is not int or divisor < MIN_DIVISOR:
            raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} "
                             f"cycles per bit, not {divisor!r}")
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UartRx(divisor=self._divisor)
        m.submodules.tx = tx = UartTx(divisor=self._divisor)
        m.submodules.decoder = decoder = FrameDecoder(max_frame=self._max_frame)
        m.submodules.frames = frames = PacketFifo(layout=DECODED_BYTE, depth=self._max_frame)
        m.submodules.encoder = encoder = FrameEncoder()

        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]
        wiring.connect(m, rx.o, decoder.i)
        wiring.connect(m, decoder.o, frames.i)
        # A register between the FIFO's block RAM and the encoder: the RAM's
        # unregistered output through the escape logic and back to the FIFO's read
        # pointer was the slowest path (66 MHz on an ECP5-6).
        m.d.comb += frames.o.ready.eq(~encoder.i.valid | encoder.i.ready)
        with m.If(frames.o.ready):
            m.d.sync += [
                encoder.i.payload.data.eq(frames.o.payload.data),
                encoder.i.payload.last.eq(frames.o.payload.last),
                encoder.i.valid.eq(frames.o.valid),
            ]
        wiring.connect(m, encoder.o, tx.i)

        with m.If(frames.o.valid & frames.o.ready & frames.o.payload.last):
            m.d.sync += self.frames.eq(self.frames + 1)
        bad = decoder.bad_crc + decoder.too_short + decoder.too_long + frames.oversize
        m.d.comb += self.bad_frames.eq(Mux(bad > 0xFFFF, 0xFFFF, bad))
        return m
