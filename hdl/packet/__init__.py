# SPDX-License-Identifier: BSD-2-Clause
"""Packet streams: the beat layout every packet-carrying stream uses, and the
components that reshape such streams."""

from .fifo import PacketFifo
from .ipv4 import Ipv4HeaderCheck
from .layouts import BEAT_WIDTHS, packet_beat, beats_from_bytes, bytes_from_beats
from .merge import PacketMerger
from .register import HandshakeRegister, SkidBuffer, StreamRegister
from .repack import Repacker

__all__ = ["BEAT_WIDTHS", "packet_beat", "beats_from_bytes", "bytes_from_beats",
           "HandshakeRegister", "Ipv4HeaderCheck", "PacketFifo", "PacketMerger", "Repacker",
           "SkidBuffer", "StreamRegister"]
