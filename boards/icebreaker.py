# SPDX-License-Identifier: BSD-2-Clause
"""iCEBreaker (1BitSquared): iCE40UP5K-SG48, 12 MHz oscillator, FT2232H USB-UART
(channel B: ``/dev/ttyUSB1`` on Linux). No Ethernet: packets travel on the host
link (lookaside mode).

The part has 5,280 logic cells, 30 block RAMs (4 kbit), 4 SPRAMs (256 kbit) and 8
DSPs. The parameter set below is the smallest ``EspNic`` there is today; it does
not fit yet (see ``docs/boards.md``)."""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board, register

__all__ = ["ICEBREAKER"]

ICEBREAKER = register(Board(
    name="icebreaker",
    title="iCEBreaker (iCE40UP5K)",
    platform=ICEBreakerPlatform,
    family="ice40", nextpnr_device="up5k", package="sg48",
    capacity={"luts": 5280, "ffs": 5280, "brams": 30, "sprams": 4, "dsps": 8},
    osc="clk12", osc_mhz=12, clock_mhz=24,
    # 24 MHz / 8 cycles a bit; the FT2232H takes 3 Mbaud exactly.
    baud=3_000_000,
    params=dict(engines=1, ports=1, profile="compact", slots=16, rules=8, stages=2,
                routes=8, spi_entries=64, queue_depth=0),
    led="led_g",
    openfpgaloader="ice40_generic", iceprog=True, bitstream_ext="bin",
))
