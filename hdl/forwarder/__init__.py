# SPDX-License-Identifier: BSD-2-Clause
"""The IP forwarder: parser, classifier, dispatcher, egress (DESIGN.md section 3)."""

from .classifier import Classifier, Decision
from .dispatcher import Dispatcher, EngineQueue
from .egress import EGRESS_BEAT, Egress, RouteTable
from .ethernet import EthernetStrip
from .parser import PARSED, IpParser, PacketKind
from .policy import SELECTOR, PolicyAction, PolicyTable
from .spi_table import SPI_KEY, SpiOp, SpiStatus, SpiTable

__all__ = ["Classifier", "Decision", "Dispatcher", "EngineQueue", "EGRESS_BEAT", "Egress",
           "RouteTable", "EthernetStrip", "PARSED", "IpParser", "PacketKind", "SELECTOR",
           "PolicyAction", "PolicyTable", "SPI_KEY", "SpiOp", "SpiStatus", "SpiTable"]
