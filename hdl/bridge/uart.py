# SPDX-License-Identifier: BSD-2-Clause
"""UART PHY of the host link: 8N1 bytes at ``divisor`` clock cycles per bit.

8N1: a start bit (low), eight data bits LSB first, a stop bit (high); the line idles
high. A character is 10 bit times.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "MAX_BAUD_ERROR", "divisor_for", "UartRx", "UartTx"]

#: Fewest clock cycles per bit: the receiver sees a start edge up to a cycle late, so
#: with fewer cycles per bit that uncertainty alone would use up the margin a sender a
#: few percent off needs (at 4, e.g. 12 Mbaud at 48 MHz, a 2 % mismatch still fits).
MIN_DIVISOR = 4
#: Largest relative baud error :func:`divisor_for` accepts: the usual 8N1 rule of
#: thumb, which leaves the other end room for its own error.
MAX_BAUD_ERROR = 0.02


def divisor_for(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit for ``baud`` at a clock of ``clk_hz``, rounded to the
    nearest integer; ValueError if that leaves more than 2 % baud error or fewer
    than :data:`MIN_DIVISOR` cycles per bit."""
    for name, value in (("clk_hz", clk_hz), ("baud", baud)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, not {value!r}")
        if not value > 0:
            raise ValueError(f"{name} must be positive, not {value!r}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud {baud!r} needs at least {MIN_DIVISOR} cycles per bit, "
                         f"{clk_hz!r} Hz gives {clk_hz / baud:.2f}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud!r} at {clk_hz!r} Hz: divisor {divisor} gives "
                         f"{clk_hz / divisor:.0f} baud, {error:.1%} off (at most "
                         f"{MAX_BAUD_ERROR:.0%})")
    return divisor


def _check_divisor(divisor):
    if type(divisor) is not int:
        raise TypeError(f"divisor must be an int, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} cycles per bit, "
                         f"not {divisor!r}")


def _check_counter_width(counter_width):
    if type(counter_width) is not int:
        raise TypeError(f"counter_width must be an int, not {counter_width!r}")
    if not 1 <= counter_width <= 32:
        raise ValueError(f"counter_width must be 1 to 32 bits, not {counter_width!r}")


class UartTx(wiring.Component):
    """UART transmitter: each byte taken from ``i`` goes out on ``tx`` as one 8N1
    character.

    Throughput: one byte per 10 bit times, back to back (the next start bit follows
    the stop bit with no idle time) while ``i`` has bytes; ``tx`` idles high. ``i``
    is ready while the line is idle and in the last cycle of a stop bit. Latency:
    the start bit begins the cycle after the byte is taken.
    """

    def __init__(self, *, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "i":  In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        timer = Signal(range(divisor))      # cycles left of the bit on the line, minus one
        bits_left = Signal(range(11))       # bits of the character still to finish
        # The bits after the one on the line; 1s shift in, so the line returns to idle.
        following = Signal(9)

        ready = (bits_left == 0) | ((bits_left == 1) & (timer == 0))
        m.d.comb += self.i.ready.eq(ready)
        with m.If(self.i.valid & ready):
            m.d.sync += [
                self.tx.eq(0),
                following.eq(Cat(self.i.payload, 1)),
                bits_left.eq(10),
                timer.eq(divisor - 1),
            ]
        with m.Elif(bits_left != 0):
            with m.If(timer == 0):
                m.d.sync += [
                    self.tx.eq(following[0]),
                    following.eq(Cat(following[1:], 1)),
                    bits_left.eq(bits_left - 1),
                    timer.eq(divisor - 1),
                ]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UartRx(wiring.Component):
    """UART receiver: each 8N1 character on ``rx`` becomes a byte on ``o``.

    ``rx`` is synchronized (two flip-flops) before use, so it may come straight from
    a pin. A falling edge starts a character; the start bit is checked
    ``divisor // 2`` cycles later, in its middle, and a line found high again there
    was a glitch, not a start. Each following bit is sampled one bit time after the
    previous one, so every sample lands inside its bit for a sender up to about 4 %
    off at large divisors, 2 % at ``divisor`` 4 (where the start edge is seen up to
    a quarter bit late).

    A character whose stop bit is low is dropped and counted in ``framing_errors``;
    after it the receiver waits for the line to go high again, so a held-low line
    (a break) counts once. A character that completes while ``o`` still holds an
    untaken byte is dropped and counted in ``overruns``; the held byte is kept. Both
    counters saturate at their all-ones value.

    Latency: a byte is offered on ``o`` the cycle after the middle of its stop bit
    (plus the two synchronizer cycles). Throughput: one byte per character time;
    ``o`` holds one byte, so the consumer has a character time to take it.

    Parameters
    ----------
    divisor : clock cycles per bit, at least :data:`MIN_DIVISOR` (see :func:`divisor_for`).
    counter_width : bits of ``framing_errors`` and ``overruns``.
    """

    def __init__(self, *, divisor: int, counter_width: int = 16):
        _check_divisor(divisor)
        _check_counter_width(counter_width)
        self._divisor = divisor
        super().__init__({
            "rx":             In(1, init=1),
            "o":              Out(stream.Signature(8)),
            "framing_errors": Out(counter_width),
            "overruns":       Out(counter_width),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        line = Signal(init=1)
        line_before = Signal(init=1)
        m.submodules.synchronizer = FFSynchronizer(self.rx, line, init=1)
        m.d.sync += line_before.eq(line)

        busy = Signal()
        timer = Signal(range(divisor))      # cycles to the next sample, minus one
        bit = Signal(range(10))             # sampled next: 0 start, 1-8 data, 9 stop
        received = Signal(8)                # data bits, shifted in LSB first

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(~busy):
            with m.If(line_before & ~line):
                m.d.sync += [busy.eq(1), bit.eq(0), timer.eq(divisor // 2 - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [timer.eq(divisor - 1), bit.eq(bit + 1)]
            with m.If(bit == 0):
                with m.If(line):
                    m.d.sync += busy.eq(0)
            with m.Elif(bit != 9):
                m.d.sync += received.eq(Cat(received[1:], line))
            with m.Else():
                m.d.sync += busy.eq(0)
                with m.If(~line):
                    with m.If(~self.framing_errors.all()):
                        m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
                with m.Elif(self.o.valid & ~self.o.ready):
                    with m.If(~self.overruns.all()):
                        m.d.sync += self.overruns.eq(self.overruns + 1)
                with m.Else():
                    m.d.sync += [self.o.payload.eq(received), self.o.valid.eq(1)]
        return m
