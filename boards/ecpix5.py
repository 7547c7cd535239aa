# SPDX-License-Identifier: BSD-2-Clause
"""ECPIX-5 85 (LambdaConcept): LFE5UM5G-85F-8BG554I, 100 MHz oscillator, FT2232H
USB-UART (channel B: ``/dev/ttyUSB1``), and an RTL8211E gigabit Ethernet PHY on
RGMII.

The part has 83,640 LUT4s and as many flip-flops, 208 DP16KD block RAMs and 156
18×18 multipliers. In the ``espnic`` design the data plane's port 0 is the
Ethernet PHY (:class:`~espnic.hdl.mac.RgmiiPort`, 1000BASE-T); the host link
still injects and extracts packets (see ``docs/boards.md``)."""

from amaranth_boards.ecpix5 import ECPIX585Platform

from .board import Board, register

__all__ = ["ECPIX5"]

ECPIX5 = register(Board(
    name="ecpix5",
    title="ECPIX-5 85 (ECP5 LFE5UM5G-85F, RTL8211E RGMII)",
    platform=ECPIX585Platform,
    family="ecp5", nextpnr_device="um5g-85k", package="CABGA554",
    capacity={"luts": 83640, "ffs": 83640, "brams": 208, "sprams": 0, "dsps": 156},
    osc="clk100", osc_mhz=100, clock_mhz=75,
    baud=3_000_000,
    # One policy rule a pipeline stage: 4 a stage put a 4-deep priority chain (18.6
    # LUT levels) in one cycle, one a stage leaves 9 (docs/performance.md).
    params=dict(engines=1, ports=1, profile="compact", slots=16, rules=8, stages=8,
                routes=8),
    ethernet="eth_rgmii",
    led="rgb_led.g",
    openfpgaloader="ecpix5",
))
