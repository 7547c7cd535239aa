# SPDX-License-Identifier: BSD-2-Clause
"""The Ethernet header put in front of each IP packet a port sends."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import MAC_BYTE

__all__ = ["EthernetHeader", "check_mac"]

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6 = 0x0800, 0x86DD
_HEADER = 14


def check_mac(name: str, address) -> bytes:
    """`address` (6 bytes, or an int below 2**48 read as big-endian) as 6 bytes,
    else a ValueError naming `name`."""
    if type(address) is int and 0 <= address < 1 << 48:
        return address.to_bytes(6, "big")
    if isinstance(address, (bytes, bytearray)) and len(address) == 6:
        return bytes(address)
    raise ValueError(f"{name} must be 6 bytes or an integer below 2**48, not {address!r}")


class EthernetHeader(wiring.Component):
    """IP packets in (a byte stream, ``i``), Ethernet frames out (``o``, FCS not
    yet added): each packet gets a 14-byte header with the fixed destination
    `dst` and source `src` addresses and the EtherType of its IP version (0x86DD
    for version 6, 0x0800 for anything else: the egress sends IP packets only).

    Fixed addresses are the simplest honest choice for a point-to-point link to
    one next hop; ARP and neighbour discovery are not supported, so `dst` is the
    next hop's address as configured. The header is sent only once the packet's
    first byte is on ``i`` (its version nibble picks the EtherType).

    Latency: combinational. Throughput: one byte per cycle; a packet of n bytes
    takes n + 14 cycles.
    """

    def __init__(self, *, dst, src):
        self._dst, self._src = check_mac("dst", dst), check_mac("src", src)
        super().__init__({
            "i": In(stream.Signature(MAC_BYTE)),
            "o": Out(stream.Signature(MAC_BYTE)),
        })

    def elaborate(self, platform):
        m = Module()
        index = Signal(range(_HEADER))
        version = self.i.payload.data[4:8]
        ethertype = Mux(version == 6, _ETHERTYPE_IPV6, _ETHERTYPE_IPV4)
        header = Array([*(Const(byte, 8) for byte in self._dst + self._src),
                        ethertype[8:16], ethertype[:8]])
        with m.FSM():
            with m.State("HEADER"):
                m.d.comb += [
                    self.o.valid.eq(self.i.valid),
                    self.o.payload.data.eq(header[index]),
                ]
                with m.If(self.o.valid & self.o.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == _HEADER - 1):
                        m.d.sync += index.eq(0)
                        m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload),
                             self.i.ready.eq(self.o.ready)]
                with m.If(self.i.valid & self.i.ready & self.i.payload.last):
                    m.next = "HEADER"
        return m
