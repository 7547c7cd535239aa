# SPDX-License-Identifier: BSD-2-Clause
"""The IP forwarder: parser, classifier, dispatcher, egress (DESIGN.md section 3)."""

from .parser import PARSED, IpParser, PacketKind

__all__ = ["PARSED", "IpParser", "PacketKind"]
