# SPDX-License-Identifier: BSD-2-Clause
"""CRC-16/CCITT-FALSE, the check on every host-link frame.

Poly 0x1021, init 0xFFFF, no reflection, no final XOR. Because the CRC is neither
reflected nor inverted, a body that ends with its own CRC (big-endian) leaves the
register at 0: a receiver runs the CRC over the whole body and compares with 0.

:func:`crc16` is the host's implementation; :class:`Crc16Step` is the gateware one.
Both are derived here from the same bitwise definition, so they cannot drift apart.
"""

from amaranth import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CRC_WIDTH", "CRC_POLY", "CRC_INIT", "CRC_CHECK", "crc16", "Crc16Step"]

CRC_WIDTH = 16
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF
#: The catalogue's check value: ``crc16(b"123456789")``.
CRC_CHECK = 0x29B1

_MASK = (1 << CRC_WIDTH) - 1
_TOP = 1 << (CRC_WIDTH - 1)


def _step_bitwise(crc: int, byte: int) -> int:
    """One byte into the CRC register, MSB first: the definition everything else
    is derived from."""
    crc ^= byte << (CRC_WIDTH - 8)
    for _ in range(8):
        crc = ((crc << 1) ^ CRC_POLY) if crc & _TOP else (crc << 1)
        crc &= _MASK
    return crc


# The low byte of the register only shifts up during a byte step (it reaches the top
# bit after the last feedback decision), so a step is (low << 8) ^ TABLE[high ^ byte].
_TABLE = tuple(_step_bitwise(index << 8, 0) for index in range(256))


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass a previous result as ``crc`` to continue
    over more bytes."""
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & _MASK) ^ table[(crc >> 8) ^ byte]
    return crc


# A byte step is linear over GF(2) in (register, byte): each next-state bit is the XOR
# of the input bits whose unit vectors set it. Index 0-15: register bits, 16-23: byte.
_TAPS = tuple(
    tuple(source for source in range(CRC_WIDTH + 8)
          if (_step_bitwise(1 << source, 0) if source < CRC_WIDTH
              else _step_bitwise(0, 1 << (source - CRC_WIDTH))) >> bit & 1)
    for bit in range(CRC_WIDTH))


class Crc16Step(wiring.Component):
    """Combinational CRC-16/CCITT-FALSE byte step: ``next`` is the register after
    ``data`` went in on top of ``crc``.

    The owner keeps the register (reset to :data:`CRC_INIT`) and loads ``next`` for
    each byte, so it takes one byte per cycle. Each output bit is one XOR of at most
    a dozen inputs: a few LUTs deep, no carry chain.
    """

    crc: In(CRC_WIDTH)
    data: In(8)
    next: Out(CRC_WIDTH)

    def elaborate(self, platform):
        m = Module()
        inputs = Cat(self.crc, self.data)
        m.d.comb += self.next.eq(Cat(*(Cat(*(inputs[source] for source in taps)).xor()
                                       for taps in _TAPS)))
        return m
