# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench of the device server's two UART line ends, ``UartLineDriver`` and
``UartLineMonitor`` (``sim/benches/device_server.py``), on ``UartLoop``
(``tests/test_device_server.py``): the gateware's ``UartRx`` feeding its ``UartTx``,
or with ``bypass`` the ``uart_rx`` pin wired straight to ``uart_tx``.

Expectations are the bytes the bench chose and the faults it put on the line,
never what the line ends report about themselves.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

from espnic.sim.benches.device_server import UART_PERIOD_PS, UartLineDriver, UartLineMonitor
from espnic.sim.cocotb_runner import bench_params


async def start(dut, *, bypass: int):
    cocotb.start_soon(Clock(dut.clk, UART_PERIOD_PS, unit="ps").start())
    dut.uart_rx.value = 1
    dut.bypass.value = bypass
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    for _ in range(4):                 # past the gateware's input synchronizer
        await FallingEdge(dut.clk)


@cocotb.test()
async def bytes_cross_the_gateware_uart_both_ways(dut):
    """Every byte value and random ones, back to back: driver -> UartRx -> UartTx ->
    monitor, each byte intact, no framing error, glitch or overrun on either side."""
    divisor = bench_params()["divisor"]
    await start(dut, bypass=0)
    sent = bytes(range(256)) + random.Random(divisor).randbytes(64)
    inbound, outbound = bytearray(sent), bytearray()
    driver = UartLineDriver(dut, inbound, divisor)
    monitor = UartLineMonitor(dut, outbound, divisor)
    cocotb.start_soon(driver.run())
    cocotb.start_soon(monitor.run())
    driver.wake.set()
    # Back to back at the line rate, and the echo a character behind.
    await Timer((len(sent) + 3) * 10 * divisor * UART_PERIOD_PS, unit="ps")
    assert bytes(outbound) == sent
    assert (driver.characters, monitor.characters) == (len(sent), len(sent))
    assert (monitor.framing_errors, monitor.glitches) == (0, 0)
    assert (int(dut.framing_errors.value), int(dut.overruns.value)) == (0, 0)


@cocotb.test()
async def the_monitor_counts_framing_errors_and_finds_the_next_character(dut):
    """On the bypassed line: a good character, one with a low stop bit followed by a
    break, a pulse shorter than half a bit, then good characters: the monitor keeps
    the good ones, counts one framing error and one glitch."""
    divisor = bench_params()["divisor"]
    await start(dut, bypass=1)
    outbound = bytearray()
    monitor = UartLineMonitor(dut, outbound, divisor)
    cocotb.start_soon(monitor.run())
    await FallingEdge(dut.clk)
    bit = divisor * UART_PERIOD_PS

    async def level(value, bits):
        dut.uart_rx.value = value
        await Timer(round(bits * bit), unit="ps")

    async def character(byte, *, stop=1):
        await level(0, 1)
        for n in range(8):
            await level((byte >> n) & 1, 1)
        await level(stop, 1)

    await character(0x55)
    await character(0xA3, stop=0)
    await level(0, 3)                  # the line stays low: a break, one error only
    await level(1, 2)
    await level(0, 1 / divisor)        # a cycle low: gone by the middle of a start bit
    await level(1, 2)
    await character(0x5A)
    await character(0x00)
    await character(0xFF)
    await level(1, 2)
    assert bytes(outbound) == bytes([0x55, 0x5A, 0x00, 0xFF])
    assert (monitor.framing_errors, monitor.glitches) == (1, 1)
