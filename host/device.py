# SPDX-License-Identifier: BSD-2-Clause
"""The device driver: one API over every link to an espnic device.

The driver knows nothing the device does not tell it: it reads the capability
block, rebuilds the :class:`~espnic.hdl.bridge.regmap.RegisterMap` from it, and
packs and unpacks every register and channel payload with the gateware's own
layouts.
"""

from amaranth.lib import data

from ..hdl.bridge.host import MAX_READ_WORDS
from ..hdl.bridge.regmap import CAPABILITIES, MAX_INJECT, RegisterMap
from .link import FrameLink, LinkError
from .transport import open_port

__all__ = ["Device", "LinkError"]


class Device:
    """An espnic device behind ``link`` (a :class:`FrameLink`)."""

    def __init__(self, link: FrameLink):
        self.link = link
        self.regmap = RegisterMap.from_capabilities(link.read(0, 2 + len(CAPABILITIES)))

    @classmethod
    def open(cls, url: str, *, timeout: float = 1.0, retries: int = 3) -> "Device":
        return cls(FrameLink(open_port(url), timeout=timeout, retries=retries))

    def close(self):
        self.link.close()

    @property
    def params(self) -> dict:
        """The device's construction parameters, from its capability block."""
        return dict(self.regmap.params)

    # -- registers --------------------------------------------------------------------------

    def read(self, name: str) -> int:
        return self.link.read(self.regmap.register(name).address, 1)[0]

    def write(self, name: str, value: int):
        register = self.regmap.register(name)
        if register.access != "rw":
            raise ValueError(f"register {name!r} is read-only")
        self.link.write(register.address, value)

    def counters(self) -> dict:
        """Every read-only register that is not a capability, by name, read in bursts."""
        wanted = [r for r in self.regmap.registers if r.access == "ro" and r.value is None]
        values = {}
        start = 0
        while start < len(wanted):
            first = wanted[start].address
            run = [r for r in wanted[start:] if r.address < first + MAX_READ_WORDS]
            words = self.link.read(first, run[-1].address - first + 1)
            values.update({r.name: words[r.address - first] for r in run})
            start += len(run)
        return values

    # -- channels ---------------------------------------------------------------------------

    def send(self, channel: str, index: int, fields) -> None:
        """Offer ``fields`` (a dict for the channel's layout, or its bits as an int) to
        stream ``index`` of in channel ``channel``."""
        described = self.regmap.channel(channel)
        if described.direction != "in":
            raise ValueError(f"channel {channel!r} goes from the device to the host")
        if not 0 <= index < described.count:
            raise ValueError(f"channel {channel!r} has streams 0..{described.count - 1}, "
                             f"not {index}")
        layout = data.Layout.cast(described.layout)
        bits = fields if isinstance(fields, int) else layout.const(fields).as_bits()
        self.link.send(described.number, index, bits.to_bytes(described.payload_bytes, "little"))

    def inject(self, port: int, packet: bytes) -> None:
        """Put ``packet`` (an IP packet, or a frame on an Ethernet port) into ingress
        ``port`` as if it had arrived there."""
        if not 0 <= port < self.regmap.params["ports"]:
            raise ValueError(f"the device has ports 0..{self.regmap.params['ports'] - 1}, "
                             f"not {port}")
        if not 1 <= len(packet) <= MAX_INJECT:
            raise ValueError(f"a packet to inject must be 1..{MAX_INJECT} bytes, "
                             f"not {len(packet)}")
        self.link.inject(port, bytes(packet))

    def packets(self, *, wait: float = 0.0) -> list:
        """``(PacketSource, port, packet, aborted)`` of every packet the device has sent
        the host (from an egress port, or its exception queue) so far."""
        return self.link.packets(wait=wait)

    def items(self, *, wait: float = 0.0) -> list:
        """``(channel name, index, payload)`` of the device's items so far, payloads
        unpacked with the channel's layout."""
        by_number = {c.number: c for c in self.regmap.channels}
        unpacked = []
        for number, index, payload in self.link.items(wait=wait):
            channel = by_number.get(number)
            if channel is None or channel.direction != "out":
                raise LinkError(f"item for unknown channel {number}")
            bits = int.from_bytes(payload, "little")
            unpacked.append((channel.name, index, data.Layout.cast(channel.layout)
                             .from_bits(bits)))
        return unpacked
