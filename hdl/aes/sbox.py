# SPDX-License-Identifier: BSD-2-Clause
"""The AES S-box (FIPS-197 section 5.1.1) as a table and as registered lookups.

Both mappings have the same latency, so a core's timing never depends on which
one it uses:

* ``"rom"``: a 256x8 :class:`~amaranth.lib.memory.Memory` with synchronous read
  ports, mapped to block RAM (iCE40 SB_RAM40_4K, ECP5 DP16KD);
* ``"logic"``: a LUT lookup followed by a register.

``latency=2`` registers the data once more. On a block RAM that is its output
register (ECP5 DP16KD): without it the RAM's clock-to-output delay, several
nanoseconds, starts every path through the table. Yosys does not pack a fabric
register into the DP16KD (it leaves ``REGMODE="NOREG"``), so when the platform
is an ECP5 one (``platform.family == "ecp5"``) a ``"rom"`` S-box with
``latency`` 2 or more is an explicit DP16KD instance with ``REGMODE="OUTREG"``
and the table in its ``INITVAL`` parameters (:func:`dp16kd_initvals`). Without a
platform (simulation) and on other families it stays a generic
:class:`~amaranth.lib.memory.Memory`.

``latency=3`` adds a register in the fabric after that: the block RAM's data
then has a whole cycle to reach it, wherever the placer puts the logic that
reads it (a pipeline's block RAMs spread over the die).

The ``rom_style`` attribute tells yosys which one is meant: left to itself it
maps a 256x8 ROM to LUTs on ECP5 and to block RAM on iCE40, whichever way the
table is written.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["SBOX", "SBOX_MAPPINGS", "check_sbox", "dp16kd_initvals", "SboxRom", "SboxLogic",
           "SubBytes"]


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


SBOX_LATENCIES = (1, 2, 3)


def _check_latency(latency):
    if type(latency) is not int or latency not in SBOX_LATENCIES:
        raise ValueError(f"latency must be 1, 2 or 3, not {latency!r}")


# DP16KD in its 2048x9 mode: address bits ADx13..ADx3 (ADx2..0 unused), data
# DOx8..0 (an S-box uses DOx7..0). INITVAL_00..3F are 320 bits each: 16 fields of 20 bits, each field
# two 9-bit words (the lower address in the low bits) and two unused bits.
_DP16KD_WIDTH = 9
_DP16KD_WORDS_PER_INITVAL = 32


def dp16kd_initvals(table):
    """``{"INITVAL_00": int, ...}``: `table` (up to 2048 words of 9 bits) as the
    initial contents of a DP16KD in its 2048x9 mode, one 320-bit value per row."""
    if len(table) > 64 * _DP16KD_WORDS_PER_INITVAL:
        raise ValueError(f"table must have at most 2048 words, not {len(table)}")
    initvals = {}
    for row in range(64):
        value = 0
        for n in range(_DP16KD_WORDS_PER_INITVAL):
            address = row * _DP16KD_WORDS_PER_INITVAL + n
            word = table[address] if address < len(table) else 0
            value |= word << (20 * (n // 2) + _DP16KD_WIDTH * (n % 2))
        initvals[f"INITVAL_{row:02X}"] = value
    return initvals


def _is_ecp5(platform):
    return getattr(platform, "family", None) == "ecp5"


def _output_registers(m, data, en, count):
    """`data` through `count` registers, each loaded while `en`."""
    for _ in range(count):
        register = Signal.like(data, reset_less=True)
        with m.If(en):
            m.d.sync += register.eq(data)
        data = register
    return data


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
    ``ports=1`` there; ECP5 DP16KD serves two. On an ECP5 platform with
    ``latency`` 2 or 3 it is a DP16KD instance with the output register packed
    (see the module docstring).
    """

    def elaborate(self, platform):
        if self._latency >= 2 and _is_ecp5(platform):
            return self._elaborate_dp16kd()
        m = Module()
        m.submodules.rom = rom = Memory(shape=8, depth=256, init=SBOX,
                                        attrs={"rom_style": "block"})
        for p in range(self._ports):
            port = rom.read_port(domain="sync", transparent_for=())
            m.d.comb += [
                port.addr.eq(self.addr[p]),
                port.en.eq(self.en),
                self.data[p].eq(_output_registers(m, port.data, self.en, self._latency - 1)),
            ]
        return m

    def _elaborate_dp16kd(self):
        m = Module()
        parameters = {f"p_{name}": Const(value, 320)
                      for name, value in dp16kd_initvals(SBOX).items()}
        ports = {}
        for p, side in zip(range(self._ports), "AB"):
            # The DP16KD's data is two cycles after its address (latch, OUTREG).
            data = Signal(8, name=f"rom_data{p}")
            m.d.comb += self.data[p].eq(_output_registers(m, data, self.en, self._latency - 2))
            parameters.update({
                f"p_DATA_WIDTH_{side}": _DP16KD_WIDTH,
                f"p_REGMODE_{side}": "OUTREG",
                f"p_CSDECODE_{side}": "0b000",
                f"p_WRITEMODE_{side}": "NORMAL",
            })
            # CE clocks the read into the array latch, OCE the output register:
            # both follow `en`, so the data holds while it is low.
            ports.update({
                f"i_CLK{side}": ClockSignal(),
                f"i_CE{side}": self.en,
                f"i_OCE{side}": self.en,
                f"i_RST{side}": C(0),
                f"i_WE{side}": C(0),
                **{f"i_CS{side}{n}": C(0) for n in range(3)},
                **{f"i_AD{side}{n}": C(0) for n in range(3)},
                **{f"i_AD{side}{n + 3}": self.addr[p][n] for n in range(8)},
                **{f"i_AD{side}{n}": C(0) for n in range(11, 14)},
                **{f"o_DO{side}{n}": data[n] for n in range(8)},
            })
        m.submodules.rom = Instance("DP16KD", p_GSR="DISABLED", p_RESETMODE="SYNC",
                                    p_ASYNC_RESET_RELEASE="SYNC", **parameters, **ports)
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
                self.data[p].eq(_output_registers(m, data, self.en, self._latency - 1)),
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
