# SPDX-License-Identifier: BSD-2-Clause
"""Boards: PLL settings (oracle: the icepll and ecppll tools), the link-check design
(Amaranth simulator; oracle: the frame layer's Python model), ``espnic build``
(real YoWASP builds, marked slow), ``espnic flash`` (a stand-in programmer on
PATH) and ``espnic link-check``."""

import dataclasses
import os
import random
import re
import stat
import subprocess
import sys

import pytest

from espnic.boards import board as board_module
from espnic.boards.board import BOARDS, board
from espnic.boards.build import BuildError, build, over_capacity, report_table
from espnic.boards.clocks import ecp5_pll, ice40_pll
from espnic.boards.flash import FlashError, flash, flash_command
from espnic.boards.linkcheck import LinkCheck
from espnic.hdl.bridge.framing import FLAG, ESCAPE, decode_frames, encode_frame
from espnic.host.cli import main as cli
from espnic.host.linkcheck import link_check
from espnic.sim.amaranth_sim import run_sim


def _tool(*argv):
    """Run a YoWASP tool (its console script, next to this Python)."""
    path = os.path.join(os.path.dirname(sys.executable), argv[0])
    return subprocess.run([path, *argv[1:]], capture_output=True, text=True, check=True,
                          cwd="/tmp").stdout


# ---- PLLs -------------------------------------------------------------------------

@pytest.mark.parametrize("f_out", [24, 30, 36, 48, 60])
def test_ice40_pll_matches_icepll(f_out):
    ours = ice40_pll(12, f_out)
    text = _tool("yowasp-icepll", "-i", "12", "-o", str(f_out))
    theirs = {name: int(value) for name, value in
              re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", text, re.M)}
    achieved = float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", text)[1])
    assert ours.dividers == theirs
    assert ours.f_out == pytest.approx(achieved, abs=1e-3)


@pytest.mark.parametrize("f_in,f_out", [(25, 75), (25, 50), (100, 75), (100, 62.5), (25, 40)])
def test_ecp5_pll_matches_ecppll(f_in, f_out):
    ours = ecp5_pll(f_in, f_out)
    text = _tool("yowasp-ecppll", "-i", str(f_in), "-o", str(f_out), "-f", os.devnull)
    theirs = {key: int(value) for key, value in re.findall(
        r"^(Refclk|Feedback|clkout0) divisor: (\d+)", text, re.M)}
    assert (ours.dividers["CLKI_DIV"], ours.dividers["CLKFB_DIV"], ours.dividers["CLKOP_DIV"]) \
        == (theirs["Refclk"], theirs["Feedback"], theirs["clkout0"])
    assert ours.f_out == pytest.approx(f_out)


def test_ecp5_pll_with_a_second_output_shares_the_vco():
    # The ECPIX-5: sync at 75 MHz and the RGMII transmit clock at 125 MHz from 100 MHz.
    settings = ecp5_pll(100, 75, extra=(125,))
    d = settings.dividers
    vco = 100 / d["CLKI_DIV"] * d["CLKFB_DIV"] * d["CLKOP_DIV"]
    assert 400 <= vco <= 800 and 100 / d["CLKI_DIV"] >= 3.125
    assert vco / d["CLKOP_DIV"] == pytest.approx(75) and vco / d["CLKOS_DIV"] == pytest.approx(125)
    with pytest.raises(ValueError, match="with 77.7 MHz from the same VCO"):
        ecp5_pll(100, 75, extra=(77.7,))


def test_pll_out_of_range_names_the_limits():
    with pytest.raises(ValueError, match="no iCE40 PLL setting gives 300 MHz"):
        ice40_pll(12, 300)
    with pytest.raises(ValueError, match="f_out must be a positive frequency"):
        ecp5_pll(25, 0)


# ---- the link-check design ---------------------------------------------------------

DIVISOR = 4


def _uart_bits(data: bytes) -> list[int]:
    bits = []
    for byte in data:
        bits += [0] + [byte >> n & 1 for n in range(8)] + [1, 1]   # a stop bit and an idle bit
    return bits


def test_link_check_echoes_good_frames_and_drops_bad_ones():
    rng = random.Random(3)
    payloads = [bytes([FLAG, ESCAPE, 0, 0x20]), rng.randbytes(9), rng.randbytes(30)]
    corrupted = bytearray(encode_frame(b"bad frame here"))
    corrupted[3] ^= 0x01                          # a payload bit: the CRC no longer matches
    wire = encode_frame(payloads[0]) + bytes(corrupted) + encode_frame(payloads[1]) \
        + encode_frame(payloads[2])
    dut = LinkCheck(divisor=DIVISOR, max_frame=64)
    sent_back = []
    counters = {}

    async def line(ctx):
        for bit in _uart_bits(wire):
            ctx.set(dut.uart_rx, bit)
            await ctx.tick().repeat(DIVISOR)

    async def listen(ctx):
        # Sample each character in the middle of its bits, like a receiver would.
        expected = sum(len(encode_frame(p)) for p in payloads)
        budget = len(wire) * 11 * DIVISOR * 3 + 5000        # cycles: a hang fails
        while len(sent_back) < expected:
            while ctx.get(dut.uart_tx):
                await ctx.tick()
                budget -= 1
                assert budget > 0, f"only {len(sent_back)} of {expected} bytes came back"
            await ctx.tick().repeat(DIVISOR // 2)
            byte = 0
            for n in range(8):
                await ctx.tick().repeat(DIVISOR)
                byte |= ctx.get(dut.uart_tx) << n
            await ctx.tick().repeat(DIVISOR)
            assert ctx.get(dut.uart_tx) == 1, "stop bit"
            sent_back.append(byte)
        counters.update(frames=ctx.get(dut.frames), bad=ctx.get(dut.bad_frames))

    run_sim(dut, line, listen)
    assert list(decode_frames(bytes(sent_back))) == payloads
    assert counters == {"frames": 3, "bad": 1}


def test_link_check_checks_its_parameters():
    with pytest.raises(ValueError, match="divisor must be an integer"):
        LinkCheck(divisor=1)
    with pytest.raises(ValueError, match="max_frame must be a power of two"):
        LinkCheck(divisor=8, max_frame=100)


# ---- espnic link-check (host side) ----------------------------------------------

def test_host_link_check_over_an_echoing_port():
    result = link_check("loop://", frames=20, max_size=300)
    assert (result.frames, result.echoed, result.wrong, result.lost) == (20, 20, 0, 0)
    assert result.ok and "link-check OK: 20/20" in result.summary()


class _FlakyEcho:
    """An echo that corrupts the second frame and swallows the fourth."""

    def __init__(self):
        self.frames, self._pending, self.timeout = 0, b"", 0.01

    def write(self, data):
        self.frames += 1
        if self.frames == 2:
            data = data[:2] + bytes([data[2] ^ 0x40]) + data[3:]
        if self.frames != 4:
            self._pending += data

    def read(self, n):
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def close(self):
        pass


def test_host_link_check_counts_wrong_and_lost_frames():
    result = link_check("unused", frames=6, timeout=0.05, port=_FlakyEcho())
    # The corrupted frame fails its CRC: the host's decoder drops it, so it is lost.
    assert (result.echoed, result.wrong, result.lost) == (4, 0, 2)
    assert not result.ok and "FAILED" in result.summary()


# ---- espnic build -----------------------------------------------------------------

def test_unknown_board_and_bad_parameters_are_clear(tmp_path):
    with pytest.raises(BuildError, match="unknown board 'nope'; known boards: .*icebreaker"):
        build("nope")
    with pytest.raises(BuildError, match="icebreaker: engines must be"):
        build("icebreaker", params={"engines": 0}, workdir=tmp_path)
    with pytest.raises(BuildError, match="unknown design"):
        build("icebreaker", design="blinky", workdir=tmp_path)
    assert cli(["build", "--board", "nope"]) == 1
    assert set(BOARDS) >= {"icebreaker", "ulx3s", "ecpix5"}


def test_over_capacity_says_what_and_by_how_much():
    over = over_capacity({"luts": 42130, "ffs": 30168, "brams": 244, "sprams": 0, "dsps": 0},
                         board("icebreaker").capacity)
    assert over == ["LUT4 42,130 of 5,280: 36,850 over, 798 %",
                    "FF 30,168 of 5,280: 24,888 over, 571 %",
                    "block RAM 244 of 30: 214 over, 813 %"]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("icebreaker", 104_090), ("ulx3s", None)])
def test_link_check_bitstream_builds_and_meets_timing(name, size, tmp_path):
    report = build(name, design="link-check", workdir=tmp_path, progress=lambda line: None)
    assert report.fits and report.placed and report.met and report.passed, report_table(report)
    assert report.fmax_mhz >= board(name).clock_mhz
    bitstream = tmp_path / f"top.{board(name).bitstream_ext}"
    assert report.bitstream == str(bitstream)
    if size:                                      # an iCE40UP5K image is always this long
        assert bitstream.stat().st_size == size
    else:                                         # ecppack's header names the part
        assert b"LFE5U-85F" in bitstream.read_bytes()[:512]
    assert 0 < report.used["luts"] < 1000 and report.used["brams"] >= 1


@pytest.mark.slow
def test_a_design_that_does_not_fit_says_what_and_by_how_much(tmp_path, monkeypatch):
    # The link-check design on a part a tenth its size (the board's real capacity is a
    # parameter of the board; the numbers are yosys').
    small = dataclasses.replace(board("icebreaker"), name="tiny",
                                capacity={"luts": 40, "ffs": 5280, "brams": 2})
    monkeypatch.setitem(BOARDS, "tiny", small)
    with pytest.raises(BuildError) as error:
        build("tiny", design="link-check", workdir=tmp_path, progress=lambda line: None)
    message = str(error.value)
    assert re.search(r"does not fit iCEBreaker \(iCE40UP5K\): LUT4 \d{3} of 40: \d{3} over, "
                     r"\d+ %; block RAM 5 of 2: 3 over, 250 %", message), message
    assert "ffs" not in message


# ---- espnic flash ---------------------------------------------------------------

def _fake_tool(directory, name, exit_code=0, output="done"):
    path = directory / name
    path.write_text(f"#!/bin/sh\necho \"$0 $@\" > {directory}/called\necho {output}\n"
                    f"exit {exit_code}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_flash_finds_the_programmer_and_says_what_is_missing(tmp_path, monkeypatch):
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(b"\xff" * 16)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FlashError, match="install openFPGALoader"):
        flash_command("ulx3s", bitstream=bitstream)
    with pytest.raises(FlashError, match="no bitstream at .*espnic build --board ulx3s"):
        flash_command("ulx3s", bitstream=tmp_path / "missing.bit")
    with pytest.raises(FlashError, match="iceprog cannot program the ULX3S"):
        flash_command("ulx3s", bitstream=bitstream, tool="iceprog")

    _fake_tool(tmp_path, "openFPGALoader")
    command = flash("ulx3s", bitstream=bitstream, progress=lambda line: None)
    assert command[1:] == ["-b", "ulx3s", str(bitstream)]
    assert (tmp_path / "called").read_text().split()[1:] == ["-b", "ulx3s", str(bitstream)]
    assert flash_command("ulx3s", bitstream=bitstream, persistent=True)[1:4] == \
        ["-b", "ulx3s", "-f"]

    _fake_tool(tmp_path, "iceprog")
    assert flash_command("icebreaker", bitstream=bitstream, tool="iceprog")[1:] == \
        ["-S", str(bitstream)]

    _fake_tool(tmp_path, "openFPGALoader", exit_code=1, output="unable to open ftdi device")
    with pytest.raises(FlashError, match="openFPGALoader failed \\(exit code 1\\): unable to "
                                         "open ftdi device -- is the board plugged in"):
        flash("ulx3s", bitstream=bitstream, progress=lambda line: None)
    assert cli(["flash", "--board", "ulx3s", "--bitstream", str(bitstream)]) == 1


def test_ecpix5_puts_port_0_on_the_rgmii_phy(tmp_path):
    from espnic.boards.build import _plan_files
    top = board_module.BoardTop(board("ecpix5"))
    assert top.ethernet and top.core.packets == "ports" and top.core.nic.ethernet == (True,)
    _plan_files(top, board("ecpix5"), tmp_path, lambda line: None)
    constraints = (tmp_path / "top.lpf").read_text()
    for clock in ('FREQUENCY PORT "eth_rgmii_0__rx_clk__io" 125000000',
                  '"clocks.sync_clk" 75000000', "rgmii_tx_clk"):
        assert clock in constraints
    rtlil = (tmp_path / "top.il").read_text()
    # The MAC is there, and its pins are the ECP5's DDR primitives (the platform's mapping).
    assert "cell \\top.mac \\mac" in rtlil and "cell \\EHXPLLL \\pll" in rtlil
    assert "IDDRX1F" in rtlil and "ODDRX1F" in rtlil


def test_every_board_elaborates_with_its_own_parameters():
    # What `espnic build` elaborates, without the tools: the PLL, the UART divisor and
    # the EspNic parameter set are all accepted.
    for b in BOARDS.values():
        top = board_module.BoardTop(b, design="espnic")
        assert top.divisor == round(top.clocks.frequency * 1e6 / b.baud)
        assert top.clocks.frequency == pytest.approx(b.clock_mhz)


def test_engines_max_stops_at_the_first_count_that_fails(monkeypatch):
    # The search alone (each real build of the data plane takes most of an hour): a
    # stand-in build that fits up to 3 engines and meets timing up to 2.
    import espnic.boards.build as build_module

    def fake_build(name, *, params, **options):
        if params["engines"] > 3:
            raise BuildError(f"does not fit: {params['engines']} engines")
        return build_module.BoardReport(
            board=name, design="espnic", params=params, clock_mhz=75, baud=3_000_000,
            used={}, capacity={}, placed=True, met=params["engines"] <= 2)

    monkeypatch.setattr(build_module, "build", fake_build)
    best, results = build_module.build_max_engines("ulx3s", progress=lambda line: None)
    assert best == 2 and [r.params["engines"] for r in results] == [1, 2, 3]
    assert not results[-1].passed
    monkeypatch.setattr(build_module, "build", lambda name, **o: (_ for _ in ()).throw(
        BuildError("does not fit: LUT4")))
    best, results = build_module.build_max_engines("ulx3s", progress=lambda line: None)
    assert best == 0 and isinstance(results[0], BuildError)
