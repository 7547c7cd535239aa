# SPDX-License-Identifier: BSD-2-Clause
"""Out-of-context builds (`espnic.boards.ooc`): the harness, the reports, the checks.

The builds run yosys and nextpnr (YoWASP) on small components: seconds each,
marked slow. Parameter checks and the harness's port flattening need no tools.
"""

import json

import pytest
from amaranth import *
from amaranth.back import rtlil
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from espnic.boards import ooc


class Accumulator(wiring.Component):
    """Adds each 32-bit input, XORed with a 256-bit key folded to 32 bits, to a sum."""

    def __init__(self, width=32):
        self._width = width
        super().__init__({
            "i":   In(stream.Signature(width)),
            "key": In(256),
            "o":   Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._width
        key_fold = Cat(*(self.key[bit::width].xor() for bit in range(width)))
        total = Signal(width)
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | self.o.ready),
            self.o.payload.eq(total),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [total.eq(total + (self.i.payload ^ key_fold)), self.o.valid.eq(1)]
        return m


class Parity(wiring.Component):
    """Registered XOR of all 256 input bits: every bit matters, nothing else to it."""

    def __init__(self):
        super().__init__({"i": In(256), "o": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.o.eq(self.i.xor())
        return m


class Nested(wiring.Component):
    """Ports of every kind the harness must flatten (never built, only counted)."""

    def __init__(self):
        super().__init__({
            "fast":  In(stream.Signature(data.StructLayout({"a": 8, "b": 4}), always_ready=True)),
            "slow":  Out(stream.Signature(16)),
            "lanes": In(3).array(2),
            "bus":   Out(wiring.Signature({"req": Out(5), "ack": In(1)})),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.slow.payload.eq(Cat(self.fast.payload, self.lanes[0], self.lanes[1]))
        return m


def not_a_component():
    return "a string"


# ---- no tools ---------------------------------------------------------------

def test_unknown_family_names_the_parameter_and_choices():
    with pytest.raises(ValueError, match=r"family must be one of \['ecp5', 'ice40'\], not 'xc7'"):
        ooc.synthesize(Accumulator, family="xc7", clock_mhz=50)


@pytest.mark.parametrize("clock", [0, -10, float("nan"), float("inf"), "fast", None, True, 5000])
def test_bad_clock_is_refused(clock):
    with pytest.raises(ValueError, match="clock_mhz must be"):
        ooc.synthesize(Accumulator, family="ice40", clock_mhz=clock)


def test_bad_device_seed_and_factory_are_refused():
    with pytest.raises(ValueError, match=r"device must be one of .*'up5k'.* for ice40, not '85k'"):
        ooc.synthesize(Accumulator, family="ice40", device="85k", clock_mhz=50)
    with pytest.raises(ValueError, match="seed must be"):
        ooc.synthesize(Accumulator, family="ecp5", clock_mhz=50, seed=-1)
    with pytest.raises(ValueError, match="MODULE:NAME"):
        ooc.synthesize("tests.test_ooc.Accumulator", family="ecp5", clock_mhz=50)
    with pytest.raises(TypeError, match="wiring.Component"):
        ooc.synthesize(not_a_component, family="ecp5", clock_mhz=50)


def test_harness_flattens_every_port_kind_and_skips_constants():
    harness = ooc._Harness(Nested())
    # In: fast.payload, fast.valid, lanes[0..1], slow.ready, bus.ack (fast.ready is a constant).
    assert harness.input_bits == 12 + 1 + 2 * 3 + 1 + 1
    # Out: slow.payload, slow.valid, bus.req.
    assert harness.output_bits == 16 + 1 + 5
    assert list(harness.signature.members) == ["sin", "sout"]
    text = rtlil.convert(harness, name="top")
    for port in ("clk", "rst", "sin", "sout"):
        assert f"\\{port}" in text


def test_harness_estimate():
    harness = ooc._Harness(Parity())
    luts, ffs = harness.estimate()
    # 256 chain flip-flops, one output bit: its register and sout.
    assert (harness.input_bits, harness.output_bits) == (256, 1)
    assert (luts, ffs) == (1, 256 + 1 + 1)
    rtlil.convert(harness, name="top")   # elaborated: no UnusedElaboratable warning
    assert ooc._xor_tree_cost(34) == (9 + 3 + 1, 9 + 3 + 1)


def test_report_round_trips_through_json():
    harness = ooc.HarnessReport(input_bits=4, output_bits=2, luts=1, ffs=6,
                                luts_estimate=1, ffs_estimate=6)
    report = ooc.SynthReport(
        family="ice40", device="up5k", package="sg48", component="x:Y", params={"n": 1},
        luts=10, ffs=20, brams=1, sprams=0, dsps=0, io=4, fmax_mhz=50.0, target_mhz=24.0,
        met=True, seed=1, harness=harness,
        utilisation={"ICESTORM_LC": {"used": 25, "available": 5280}})
    assert ooc.SynthReport.from_json(report.to_json()) == report
    assert json.loads(report.to_json())["net"] == {"luts": 9, "ffs": 14}
    assert report.as_row()["ICESTORM_LC"] == "25/5280"


def test_log_utilisation_reads_the_first_table():
    log = ("Info: Device utilisation:\n"
           "Info: \t         ICESTORM_LC:    8568/   5280   162%\n"
           "Info: \t        ICESTORM_RAM:      20/     30    66%\n"
           "\n"
           "Info: \t         ICESTORM_LC:       1/   5280     0%\n")
    assert ooc._log_utilisation(log) == {
        "ICESTORM_LC": {"used": 8568, "available": 5280},
        "ICESTORM_RAM": {"used": 20, "available": 30},
    }


def test_cli_parses_params_and_reports_bad_arguments(capsys):
    assert ooc._param_value("32") == 32
    assert ooc._param_value("compact") == "compact"
    assert ooc._param_value("(1, 2)") == (1, 2)
    with pytest.raises(SystemExit):
        ooc.main(["tests.test_ooc:Accumulator", "--family", "ice40", "--clock", "24",
                  "--param", "width"])
    assert "--param must be NAME=VALUE" in capsys.readouterr().err
    assert ooc.main(["tests.test_ooc:Accumulator", "--family", "ice40", "--clock", "0"]) == 1
    assert "clock_mhz must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ooc.main(["tests.test_ooc:Accumulator", "--family", "gowin", "--clock", "24"])
    assert "invalid choice: 'gowin'" in capsys.readouterr().err


# ---- builds -----------------------------------------------------------------

def _quiet(line):
    pass


@pytest.mark.slow
def test_accumulator_on_ice40(tmp_path):
    lines = []
    report = ooc.synthesize(Accumulator, params={"width": 32}, family="ice40", clock_mhz=24,
                            workdir=tmp_path, progress=lines.append)
    assert (report.device, report.package) == ("up5k", "sg48")
    assert report.fits and report.placed
    # Measured harness: a flip-flop per input bit (32 + 1 + 256 + 1), a few XOR LUTs.
    assert report.harness.measured
    assert report.harness.input_bits == 290 and report.harness.output_bits == 34
    assert report.harness.ffs == report.harness.ffs_estimate
    assert abs(report.harness.luts - report.harness.luts_estimate) <= 2
    # Each iCE40 flip-flop takes a logic cell, so the harness takes one per flip-flop at least.
    assert report.harness.cells_used >= report.harness.ffs
    assert 0 < report.net()["cells"] < report.utilisation["ICESTORM_LC"]["used"]
    # The adder (32 LUTs with carries) and the key fold (8 bits into each of 32) at least.
    assert report.luts > report.harness.luts + 32 + 32 * 2
    assert report.net()["ffs"] >= 33
    assert report.io == 4 and report.brams == 0
    assert 0 < report.fmax_mhz < 1000
    assert report.met == (report.fmax_mhz >= 24)
    assert report.utilisation["ICESTORM_LC"]["available"] == 5280
    # Progress came through, logs are kept.
    assert any("nextpnr" in line for line in lines)
    assert any("Max frequency" in line for line in lines)
    assert (tmp_path / "design" / "nextpnr.log").stat().st_size > 0
    assert (tmp_path / "design" / "yosys.log").stat().st_size > 0
    assert ooc.SynthReport.from_json((tmp_path / "report.json").read_text()) == report


@pytest.mark.slow
def test_accumulator_on_ecp5_through_the_cli(tmp_path, capsys):
    code = ooc.main(["tests.test_ooc:Accumulator", "--family", "ecp5", "--clock", "100",
                     "--param", "width=32", "--json", "--quiet", "--no-harness-run",
                     "--workdir", str(tmp_path)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    report = ooc.SynthReport.from_json(json.dumps(result))
    assert (report.device, report.package) == ("85k", "CABGA381")
    assert report.params == {"width": 32}
    assert not report.harness.measured
    assert report.luts > report.harness.luts + 32
    assert report.cells.get("CCU2C", 0) > 0         # the adder is on the carry chain
    assert report.fmax_mhz > 0
    assert report.utilisation["TRELLIS_COMB"]["available"] == 83640
    assert result["net"]["luts"] == report.luts - report.harness.luts


@pytest.mark.slow
def test_harness_keeps_logic_that_depends_on_every_input(tmp_path):
    report = ooc.synthesize(Parity, family="ice40", clock_mhz=24, workdir=tmp_path,
                            progress=_quiet)
    # A 256-input XOR needs at least ceil(255 / 3) = 85 LUT4s; none of them may be pruned.
    assert report.net()["luts"] >= 85
    assert report.harness.ffs >= 256
    assert report.ffs >= 256 + 1
    assert report.fmax_mhz > 0


@pytest.mark.slow
def test_a_design_too_large_for_the_part_is_reported_not_raised(tmp_path):
    # About 440 logic cells (290 of them the harness's input chain) in an iCE40 LP384.
    report = ooc.synthesize(Accumulator, family="ice40", device="lp384", package="qn32",
                            clock_mhz=24, workdir=tmp_path, progress=_quiet,
                            measure_harness=False)
    assert not report.fits and report.fmax_mhz == 0 and not report.met
    assert "ICESTORM_LC" in report.error
    used = report.utilisation["ICESTORM_LC"]
    assert used["used"] > used["available"] == 384
