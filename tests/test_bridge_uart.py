# SPDX-License-Identifier: BSD-2-Clause
"""UartTx and UartRx (Amaranth simulator). Oracles: the 8N1 waveform built bit by
bit in Python (for the transmitter) and a bit-level line driver with its own,
possibly mismatched, baud rate (for the receiver)."""

import random

import pytest
from amaranth import Module

from espnic.hdl.bridge.uart import UartRx, UartTx, divisor_for
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_get_n, stream_put_all


def _character(byte: int, *, stop: int = 1) -> list[int]:
    return [0] + [byte >> bit & 1 for bit in range(8)] + [stop]


def _line(characters, *, period: float, idle_bits=None, rng=None, lead: int = 5):
    """(level, cycles) runs of a line carrying ``characters`` (bit lists) with a bit
    time of ``period`` cycles; edges fall on the nearest cycle, so a non-integer
    period models a sender whose baud rate differs from the receiver's."""
    rng = rng or random.Random(0)
    levels, edges = [1], [0.0]
    time = float(lead)
    for bits in characters:
        for bit in bits:
            levels.append(bit)
            edges.append(time)
            time += period
        gap = idle_bits(rng) if idle_bits else 0
        if gap:
            levels.append(1)
            edges.append(time)
            time += gap * period
    levels.append(1)
    edges.append(time)
    edges.append(time + 3 * period)
    runs = []
    for level, start, end in zip(levels, edges, edges[1:]):
        cycles = round(end) - round(start)
        if cycles:
            runs.append((level, cycles))
    return runs


def _receive(runs, *, divisor, counter_width=16, take=True):
    """Drive a UartRx's line with ``runs``; returns the bytes it delivered and its
    counters. ``take=False``: nothing is taken until the line is done, then one byte."""
    dut = UartRx(divisor=divisor, counter_width=counter_width)
    received, counted = [], {}
    done = []

    async def line(ctx):
        for level, cycles in runs:
            ctx.set(dut.rx, level)
            await ctx.tick().repeat(cycles)
        counted["framing_errors"] = ctx.get(dut.framing_errors)
        counted["overruns"] = ctx.get(dut.overruns)
        done.append(True)

    async def consumer(ctx):
        if take:
            ctx.set(dut.o.ready, 1)
            async for _clk, _rst, valid, payload in ctx.tick().sample(dut.o.valid,
                                                                       dut.o.payload):
                if valid:
                    received.append(payload)
        else:
            while not done:
                await ctx.tick()
            if ctx.get(dut.o.valid):
                received.append(await stream_get(ctx, dut.o, timeout=1))

    if take:
        run_sim(dut, line, background=[consumer])
    else:
        run_sim(dut, line, consumer)
    return bytes(received), counted


def test_divisor_for():
    assert divisor_for(48e6, 12e6) == 4
    assert divisor_for(48_000_000, 115_200) == 417
    assert divisor_for(12e6, 115200) == 104
    assert divisor_for(48e6, 3e6) == 16
    with pytest.raises(ValueError, match="2%"):
        divisor_for(1e6, 115200)                # 9 cycles per bit is 3.5 % off
    with pytest.raises(ValueError, match="at least 4 cycles"):
        divisor_for(48e6, 16e6)
    with pytest.raises(ValueError, match="baud must be positive"):
        divisor_for(48e6, 0)
    with pytest.raises(TypeError, match="clk_hz must be a number"):
        divisor_for("48e6", 115200)


def test_uart_parameters():
    with pytest.raises(ValueError, match="divisor must be at least 4"):
        UartRx(divisor=3)
    with pytest.raises(TypeError, match="divisor must be an int"):
        UartTx(divisor=4.0)
    with pytest.raises(ValueError, match="counter_width must be 1 to 32"):
        UartRx(divisor=4, counter_width=0)


@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_uart_tx_waveform(divisor):
    """Back-to-back characters, each bit exactly ``divisor`` cycles, idle high."""
    payload = bytes(random.Random(divisor).randrange(256) for _ in range(12))
    dut = UartTx(divisor=divisor)
    line = []

    async def producer(ctx):
        await ctx.tick().repeat(3)
        await stream_put_all(ctx, dut.i, payload, timeout=20 * divisor)
        await ctx.tick().repeat(11 * divisor)

    async def watch(ctx):
        async for _clk, _rst, tx in ctx.tick().sample(dut.tx):
            line.append(tx)

    run_sim(dut, producer, background=[watch])
    start = line.index(0)
    assert set(line[:start]) == {1}
    expected = [level for byte in payload for level in _character(byte) for _ in range(divisor)]
    assert line[start:start + len(expected)] == expected
    assert set(line[start + len(expected):]) == {1}


@pytest.mark.parametrize("divisor", [4, 5, 7, 13])
def test_uart_loopback(divisor):
    rng = random.Random(divisor)
    payload = bytes(rng.choice([0x00, 0xFF, 0x7E, 0x55, rng.randrange(256)]) for _ in range(40))
    tx, rx = UartTx(divisor=divisor), UartRx(divisor=divisor)
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.rx.eq(tx.tx)
    received = []

    async def producer(ctx):
        await stream_put_all(ctx, tx.i, payload, rng=random.Random(1), gap_prob=0.9,
                             timeout=20 * divisor)

    async def consumer(ctx):
        # Stalls shorter than a character time: nothing may be lost.
        received.extend(await stream_get_n(ctx, rx.o, len(payload), rng=random.Random(2),
                                           stall_prob=0.5, timeout=200 * divisor))
        assert (ctx.get(rx.framing_errors), ctx.get(rx.overruns)) == (0, 0)

    run_sim(m, producer, consumer)
    assert bytes(received) == payload


@pytest.mark.parametrize("divisor", [4, 5, 16, 417])
@pytest.mark.parametrize("mismatch", [-0.02, 0.0, 0.02])
def test_uart_rx_tolerates_baud_mismatch(divisor, mismatch):
    """A sender 2 % fast or slow, with random idle gaps including none at all."""
    rng = random.Random(divisor)
    count = 3 if divisor > 100 else 24
    payload = bytes(rng.randrange(256) for _ in range(count - 2)) + b"\x00\xff"
    runs = _line([_character(byte) for byte in payload], period=divisor * (1 + mismatch),
                 idle_bits=lambda r: r.choice([0, 0, 0.5, 1, 2.3]), rng=rng)
    received, counted = _receive(runs, divisor=divisor)
    assert received == payload
    assert counted == {"framing_errors": 0, "overruns": 0}


@pytest.mark.parametrize("divisor", [4, 5, 16, 17])
def test_uart_rx_rejects_glitches(divisor):
    """A low pulse up to half a bit long is not a start bit; a real character after
    it is received normally."""
    runs = [(1, 10)]
    for width in range(1, divisor // 2 + 1):
        runs += [(0, width), (1, 3 * divisor)]
    runs += _line([_character(0xA5)], period=divisor)
    received, counted = _receive(runs, divisor=divisor)
    assert received == b"\xa5"
    assert counted == {"framing_errors": 0, "overruns": 0}


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_rx_counts_framing_errors(divisor):
    """Characters with a low stop bit are dropped and counted; a break (line held
    low for many characters) counts once; good characters around them get through."""
    characters = [_character(0x11), _character(0x22, stop=0), _character(0x33),
                  _character(0x44, stop=0), _character(0x55, stop=0), _character(0x66)]
    runs = _line(characters, period=divisor, idle_bits=lambda r: 2)
    runs += [(0, 30 * divisor), (1, 3 * divisor)]
    runs += _line([_character(0x77)], period=divisor)
    received, counted = _receive(runs, divisor=divisor)
    assert received == b"\x11\x33\x66\x77"
    assert counted == {"framing_errors": 4, "overruns": 0}


def test_uart_rx_framing_error_counter_saturates():
    runs = _line([_character(0x00, stop=0)] * 5, period=4, idle_bits=lambda r: 1)
    _received, counted = _receive(runs, divisor=4, counter_width=2)
    assert counted["framing_errors"] == 3


@pytest.mark.parametrize("divisor", [4, 9])
def test_uart_rx_overrun_keeps_the_held_byte(divisor):
    """Bytes arriving while one is waiting to be taken are dropped and counted."""
    runs = _line([_character(byte) for byte in b"\x12\x34\x56\x78"], period=divisor)
    received, counted = _receive(runs, divisor=divisor, take=False)
    assert received == b"\x12"
    assert counted == {"framing_errors": 0, "overruns": 3}
