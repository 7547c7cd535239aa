# SPDX-License-Identifier: BSD-2-Clause
"""The AES S-box (FIPS-197 section 5.1.1) as a table and as registered lookups.

Both mappings have the same latency, so a core's timing never depends on which
one it uses:

* ``"rom"``: a 256x8 :class:`~amaranth.lib.memory.Memory` with synchronous read
  ports, mapped to block RAM (iCE40 SB_RAM40_4K, ECP5 DP16KD);
* ``"logic"``: a LUT lookup followed by a register.

``latency=2`` registers the data once more. On a block RAM that is its output
register (ECP5 DP16KD): without it the RAM's clock-to-output delay, several
nanoseconds, starts every path through the table.

The ``rom_style`` attribute tells yosys which one is meant: left to itself it
maps a 256x8 ROM to LUTs on ECP5 and to block RAM on iCE40, whichever way the
table is written.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["SBOX", "SBOX_MAPPINGS", "check_sbox", "SboxRom", "SboxLogic", "SubBytes"]


def _gf_mul(a, b):
    """Product in GF(2^8) modulo the AES polynomial x^8 + x^4 + x^3 + x + 1."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = (a << 1) ^ (0x11b if a & 0x80 else 0)
        b >>= 1
    return product


def _sbox_entry(x):
    # Multiplicative inverse (0 maps to 0): x^254 = x^-1 in GF(2^8)*.
    inverse = 1
    for _ in range(254):
        inverse = _gf_mul(inverse, x)
    # Affine transform: b ^ rotl(b,1) ^ rotl(b,2) ^ rotl(b,3) ^ rotl(b,4) ^ 0x63.
    rotl = lambda b, n: ((b << n) | (b >> (8 - n))) & 0xff
    return (inverse ^ rotl(inverse, 1) ^ rotl(inverse, 2) ^ rotl(inverse, 3)
            ^ rotl(inverse, 4) ^ 0x63)


SBOX = tuple(_sbox_entry(x) for x in range(256))

SBOX_MAPPINGS = ("rom", "logic")


def check_sbox(sbox):
    if sbox not in SBOX_MAPPINGS:
        raise ValueError(f"sbox must be 'rom' or 'logic', not {sbox!r}")


def _check_ports(ports):
    # A block RAM has two ports; more would make yosys duplicate the ROM.
    if type(ports) is not int or ports not in (1, 2):
        raise ValueError(f"ports must be 1 or 2, not {ports!r}")


def _check_latency(latency):
    if type(latency) is not int or latency not in (1, 2):
        raise ValueError(f"latency must be 1 or 2, not {latency!r}")


def _output_register(m, data, en, latency):
    """`data`, registered again while `en` when `latency` is 2."""
    if latency == 1:
        return data
    register = Signal.like(data, reset_less=True)
    with m.If(en):
        m.d.sync += register.eq(data)
    return register


class _Sbox(wiring.Component):
    def __init__(self, *, ports=1, latency=1):
        _check_ports(ports)
        _check_latency(latency)
        self._ports, self._latency = ports, latency
        super().__init__({
            "addr": In(8).array(ports),
            "data": Out(8).array(ports),
            "en":   In(1, init=1),
        })


class SboxRom(_Sbox):
    """S-box in one 256x8 block RAM, `ports` independent lookups.

    ``data[p]`` is ``SBOX[addr[p]]`` `latency` cycles after ``addr[p]``; it holds
    while ``en`` is low. On iCE40 only one read port per SB_RAM40_4K maps, so use
    ``ports=1`` there; ECP5 DP16KD serves two.
    """

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = Memory(shape=8, depth=256, init=SBOX,
                                        attrs={"rom_style": "block"})
        for p in range(self._ports):
            port = rom.read_port(domain="sync", transparent_for=())
            m.d.comb += [
                port.addr.eq(self.addr[p]),
                port.en.eq(self.en),
                self.data[p].eq(_output_register(m, port.data, self.en, self._latency)),
            ]
        return m


class SboxLogic(_Sbox):
    """S-box as a LUT lookup and a register, same ports and timing as :class:`SboxRom`."""

    def elaborate(self, platform):
        m = Module()
        # A Switch or Array over constants would become a ROM as well (yosys proc_rom).
        m.submodules.table = table = Memory(shape=8, depth=256, init=SBOX,
                                            attrs={"rom_style": "logic"})
        for p in range(self._ports):
            lookup = table.read_port(domain="comb")
            data = Signal(8, reset_less=True)  # like the block RAM's output register
            with m.If(self.en):
                m.d.sync += data.eq(lookup.data)
            m.d.comb += [
                lookup.addr.eq(self.addr[p]),
                self.data[p].eq(_output_register(m, data, self.en, self._latency)),
            ]
        return m


class SubBytes(wiring.Component):
    """S-box on every byte of ``addr``: ``data`` `latency` cycles later, held while ``en`` is low.

    ``width`` bytes take ``width / ports`` :class:`SboxRom` (``sbox="rom"``) or
    ``width`` :class:`SboxLogic` (``sbox="logic"``). One lookup per byte per cycle.
    """

    def __init__(self, width, *, sbox="rom", ports=1, latency=1):
        check_sbox(sbox)
        _check_ports(ports)
        _check_latency(latency)
        if type(width) is not int or width <= 0 or width % ports:
            raise ValueError(f"width must be a positive multiple of ports ({ports}), "
                             f"not {width!r}")
        self._width, self._sbox, self._ports, self._latency = width, sbox, ports, latency
        super().__init__({
            "addr": In(8 * width),
            "data": Out(8 * width),
            "en":   In(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        ports = self._ports if self._sbox == "rom" else 1
        for n in range(self._width // ports):
            sbox = (SboxRom(ports=ports, latency=self._latency) if self._sbox == "rom"
                    else SboxLogic(latency=self._latency))
            m.submodules[f"sbox{n}"] = sbox
            m.d.comb += sbox.en.eq(self.en)
            for p in range(ports):
                byte = slice(8 * (n * ports + p), 8 * (n * ports + p + 1))
                m.d.comb += [
                    sbox.addr[p].eq(self.addr[byte]),
                    self.data[byte].eq(sbox.data[p]),
                ]
        return m
