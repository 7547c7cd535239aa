# SPDX-License-Identifier: BSD-2-Clause
"""CRC-32 of IEEE 802.3 (the Ethernet FCS), one byte per cycle, as an XOR network.

The CRC is linear over GF(2): each bit of the next register value is the XOR
of some bits of the current register and of the input byte. :func:`crc32_taps`
finds those bits by running the bit-serial, LSB-first algorithm on symbols
instead of bits, so the network needs no table and no hand-derived equations.

Conventions (IEEE 802.3 clause 3.2.9, as ``zlib.crc32``): the register starts
at all ones, bytes go in least significant bit first, and the FCS sent is the
register's complement, least significant byte first. Running the register over
a frame *including* its FCS leaves :data:`CRC32_RESIDUE` when the FCS is right.
"""

from functools import cache, reduce

from amaranth.hdl import Cat

__all__ = ["CRC32_POLY", "CRC32_INIT", "CRC32_RESIDUE", "crc32_taps", "crc32_step",
           "crc32_step_int"]

#: The generator polynomial, bit-reversed (LSB-first form).
CRC32_POLY = 0xEDB88320
CRC32_INIT = 0xFFFF_FFFF
#: The register after a frame and its correct FCS (not complemented).
CRC32_RESIDUE = 0xDEBB20E3


@cache
def crc32_taps() -> tuple:
    """For each of the 32 bits of the next register, the register bits and the
    byte bits XORed into it: a tuple of ``(register_bits, byte_bits)`` pairs."""
    # A register bit is a set of symbols: ("c", i) for register bit i, ("d", j)
    # for byte bit j; XOR of two bits is the symmetric difference of their sets.
    register = [frozenset({("c", i)}) for i in range(32)]
    for j in range(8):
        feedback = register[0] ^ frozenset({("d", j)})
        register = register[1:] + [frozenset()]
        register = [bit ^ feedback if CRC32_POLY >> i & 1 else bit
                    for i, bit in enumerate(register)]
    return tuple((tuple(sorted(i for kind, i in bit if kind == "c")),
                  tuple(sorted(j for kind, j in bit if kind == "d")))
                 for bit in register)


def crc32_step(crc, byte):
    """The register after `byte` (an 8-bit value) has gone into `crc` (a 32-bit
    value), as an Amaranth expression."""
    return Cat(*(reduce(lambda a, b: a ^ b, [crc[i] for i in c_bits] + [byte[j] for j in d_bits])
                 for c_bits, d_bits in crc32_taps()))


def crc32_step_int(crc: int, byte: int) -> int:
    """:func:`crc32_step` on integers, through the same network (for tests)."""
    value = 0
    for k, (c_bits, d_bits) in enumerate(crc32_taps()):
        bit = sum(crc >> i & 1 for i in c_bits) + sum(byte >> j & 1 for j in d_bits)
        value |= (bit & 1) << k
    return value
