# SPDX-License-Identifier: BSD-2-Clause
"""An RGMII Ethernet MAC (1000 Mb/s): :class:`RgmiiPort` and its GMII-level parts."""

from .receiver import GmiiReceiver
from .rgmii import PINS, RX_COUNTERS, TX_COUNTERS, RgmiiPort
from .transmitter import GmiiTransmitter

__all__ = ["GmiiReceiver", "GmiiTransmitter", "RgmiiPort", "PINS", "RX_COUNTERS",
           "TX_COUNTERS"]
