# SPDX-License-Identifier: BSD-2-Clause
"""ULX3S 85F (Radiona): LFE5U-85F-6BG381C, 25 MHz oscillator, FT231X USB-UART
(``/dev/ttyUSB0``). No Ethernet: packets travel on the host link (lookaside
mode).

The part has 83,640 LUT4s and as many flip-flops, 208 DP16KD block RAMs and 156
18×18 multipliers."""

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .board import Board, register

__all__ = ["ULX3S"]

ULX3S = register(Board(
    name="ulx3s",
    title="ULX3S 85F (ECP5 LFE5U-85F)",
    platform=ULX3S_85F_Platform,
    family="ecp5", nextpnr_device="85k", package="CABGA381",
    capacity={"luts": 83640, "ffs": 83640, "brams": 208, "sprams": 0, "dsps": 156},
    osc="clk25", osc_mhz=25, clock_mhz=75,
    # The FT231X's fastest rate is 3 Mbaud (25 cycles a bit at 75 MHz).
    baud=3_000_000,
    # One policy rule a pipeline stage: 4 a stage put a 4-deep priority chain (18.6
    # LUT levels) in one cycle, one a stage leaves 9 (docs/performance.md).
    params=dict(engines=1, ports=1, profile="compact", slots=16, rules=8, stages=8,
                routes=8),
    openfpgaloader="ulx3s",
))
