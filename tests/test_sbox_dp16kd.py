# SPDX-License-Identifier: BSD-2-Clause
"""The ECP5 S-box ROM as an explicit DP16KD: its contents, its output register, and
that simulation and other families keep the generic Memory.

The S-box oracle here is computed another way than :mod:`espnic.hdl.aes.sbox` does
(logarithms to the generator 3, the affine map bit by bit as FIPS-197 eq. 5.1
writes it), and the INITVAL encoding is checked against the one yosys itself
writes when it infers the same ROM (slow: runs yosys).
"""

import json

import pytest
from amaranth.hdl import Fragment, Instance, MemoryInstance

from espnic.boards import ooc
from espnic.hdl.aes.sbox import SBOX, SboxRom, dp16kd_initvals


def fips_sbox():
    """FIPS-197 5.1.1 from logarithm tables: S(x) = affine(x^-1), 0 -> 0x63."""
    exp, log, x = [0] * 255, [0] * 256, 1
    for i in range(255):
        exp[i], log[x] = x, i
        x ^= ((x << 1) ^ (0x11b if x & 0x80 else 0))   # x * 3
    table = []
    for a in range(256):
        b = exp[(255 - log[a]) % 255] if a else 0
        bit = lambda v, i: (v >> (i % 8)) & 1
        table.append(sum((bit(b, i) ^ bit(b, i + 4) ^ bit(b, i + 5) ^ bit(b, i + 6)
                          ^ bit(b, i + 7) ^ bit(0x63, i)) << i for i in range(8)))
    return table


def decode_initvals(parameters):
    """Words 0..2047 of a 2048x9 DP16KD: INITVAL_rr holds words 32rr..32rr+31, two
    per 20-bit field (lower address in bits 0..8, the next in 9..17)."""
    words = []
    for row in range(64):
        value = parameters[f"INITVAL_{row:02X}"]
        value = value.value if hasattr(value, "value") else int(value)   # Const or int
        for n in range(32):
            field = (value >> (20 * (n // 2))) & 0xfffff
            assert field >> 18 == 0, "the two pad bits of a field are set"
            words.append((field >> (9 * (n % 2))) & 0x1ff)
    return words


class Ecp5:
    family = "ecp5"


class Ice40:
    family = "ice40"


def elaborated_rom(platform, *, ports=2, latency=2):
    dut = SboxRom(ports=ports, latency=latency)
    (rom, name, _), = Fragment.get(dut, platform).subfragments
    assert name == "rom"
    return dut, rom


def test_fips_oracle_agrees_with_published_values():
    # FIPS-197 Figure 7: the oracle itself is right before it judges anything.
    oracle = fips_sbox()
    assert [oracle[x] for x in (0x00, 0x01, 0x53, 0x9a, 0xff)] == [0x63, 0x7c, 0xed, 0xb8, 0x16]


def test_initvals_hold_the_sbox_and_nothing_else():
    words = decode_initvals(dp16kd_initvals(SBOX))
    assert words[:256] == fips_sbox()
    assert words[256:] == [0] * (2048 - 256)


def test_initvals_refuse_a_table_larger_than_the_ram():
    with pytest.raises(ValueError, match="^table must have at most 2048 words"):
        dp16kd_initvals([0] * 2049)


@pytest.mark.parametrize("ports", [1, 2])
def test_ecp5_latency_2_is_a_dp16kd_with_its_output_register(ports):
    dut, rom = elaborated_rom(Ecp5(), ports=ports)
    assert isinstance(rom, Instance) and rom.type == "DP16KD"
    assert decode_initvals(rom.parameters)[:256] == fips_sbox()
    for p, side in zip(range(ports), "AB"):
        assert rom.parameters[f"REGMODE_{side}"] == "OUTREG"
        assert rom.parameters[f"DATA_WIDTH_{side}"] == 9
        connected = {name: value for name, (value, _) in rom.ports.items()}
        # 2048x9: the byte address on AD10..AD3, the rest tied low; never written.
        for n in range(14):
            address = connected[f"AD{side}{n}"]
            if 3 <= n < 11:
                assert repr(address) == repr(dut.addr[p][n - 3])
            else:
                assert address.value == 0
        assert connected[f"WE{side}"].value == 0
        # Both the array read and the output register follow `en` (hold when low).
        assert connected[f"CE{side}"] is dut.en and connected[f"OCE{side}"] is dut.en
        # (`rom_data` is `data` itself at latency 2, see the fabric register test)
        assert all(f"rom_data{p}" in repr(connected[f"DO{side}{n}"]) for n in range(8))
    unused = "AB"[ports:]
    assert not any(name[2:3] == side for name in rom.ports for side in unused
                   if name.startswith(("AD", "DO", "CE")))


def test_ecp5_latency_3_adds_a_fabric_register_after_the_dp16kd():
    dut, rom = elaborated_rom(Ecp5(), latency=3)
    assert isinstance(rom, Instance) and rom.parameters["REGMODE_A"] == "OUTREG"
    outputs = [value for name, (value, _) in rom.ports.items() if name.startswith("DOA")]
    assert outputs and all("rom_data0" in repr(value) for value in outputs)


@pytest.mark.parametrize("platform,latency", [(None, 2), (None, 3), (Ice40(), 3), (Ecp5(), 1)])
def test_simulation_and_other_families_keep_the_generic_memory(platform, latency):
    _, rom = elaborated_rom(platform, latency=latency)
    assert isinstance(rom, MemoryInstance)


@pytest.mark.slow
def test_initvals_match_what_yosys_infers_and_ooc_packs_the_output_register(tmp_path):
    def synthesized(latency):
        ooc.synthesize("espnic.hdl.aes.sbox:SboxRom", params={"ports": 2, "latency": latency},
                       family="ecp5", clock_mhz=100, workdir=tmp_path / f"latency{latency}",
                       place_and_route=False, measure_harness=False, progress=lambda line: None)
        netlist = json.loads((tmp_path / f"latency{latency}" / "design" / "top.json").read_text())
        cells = [cell for module in netlist["modules"].values()
                 for cell in module["cells"].values()]
        flip_flops = sum(cell["type"] == "TRELLIS_FF" for cell in cells)
        return [cell["parameters"] for cell in cells if cell["type"] == "DP16KD"], flip_flops

    # Latency 1 is the generic Memory: yosys infers the DP16KD and encodes INITVAL itself.
    (inferred,), _ = synthesized(1)
    (instance,), flip_flops_2 = synthesized(2)
    (_,), flip_flops_3 = synthesized(3)
    assert inferred["REGMODE_A"] == inferred["REGMODE_B"] == "NOREG"
    assert instance["REGMODE_A"] == instance["REGMODE_B"] == "OUTREG"
    for row in range(64):
        name = f"INITVAL_{row:02X}"
        assert int(instance[name], 2) == int(inferred[name], 2) == dp16kd_initvals(SBOX)[name]
    # Latency 3: the same harness, and the two ports' 8-bit fabric registers.
    assert flip_flops_3 - flip_flops_2 == 16
