# SPDX-License-Identifier: BSD-2-Clause
"""The MAC's byte stream and the names of its events."""

from amaranth.lib import data

__all__ = ["MAC_BYTE", "RX_EVENTS", "TX_EVENTS", "MIN_FRAME", "MAX_FRAME", "IFG"]

#: One byte of a frame: ``last`` on a frame's last byte, and with it ``abort``
#: (the frame is bad or cut short: whoever buffers it must throw it away).
MAC_BYTE = data.StructLayout({"data": 8, "last": 1, "abort": 1})

#: The receiver's events, one pulse per frame, in the order a frame is judged
#: (a frame counts once, under the first that applies; ``frames`` is good ones).
RX_EVENTS = ("giant", "rx_error", "runt", "fcs_error", "preamble_error", "frames")
#: The transmitter's events: frames sent whole, frames cut short (``underrun``:
#: the next byte was not there in time; ``aborted``: its last byte had ``abort``).
TX_EVENTS = ("frames", "underrun", "aborted")

#: The shortest frame, FCS included (IEEE 802.3 clause 4.4.2).
MIN_FRAME = 64
#: The longest frame by default, FCS included: 1,518 plus an 802.1Q tag.
MAX_FRAME = 1522
#: The shortest interframe gap, in byte times (96 bit times).
IFG = 12
