# SPDX-License-Identifier: BSD-2-Clause
"""The board commands of ``espnic``: ``build``, ``flash`` and ``link-check``
(:mod:`espnic.boards.build`, :mod:`espnic.boards.flash`, :mod:`.linkcheck`).

:func:`add_parsers` defines them on the ``espnic`` parser; :data:`COMMANDS` maps
each name to the function that runs it (exit status as its result)."""

import argparse
import sys

__all__ = ["add_parsers", "COMMANDS"]


def _positive(what, high):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"must be {what} (0 to {high:g}), not {text!r}")
        return value
    return parse


def _engines(text):
    if text == "max":
        return text
    if text.isdigit() and 1 <= int(text) <= 16:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be an integer from 1 to 16 or 'max', not {text!r}")


def add_parsers(commands, *, integer):
    from ..boards.board import BOARDS, DESIGNS, board
    board("icebreaker")                   # imports the board files, which register
    names = ", ".join(BOARDS)

    build = commands.add_parser(
        "build", help="build a bitstream for a board and report its resources and Fmax",
        description="Synthesize, place and route a design for a board with the YoWASP tools "
                    "(no system install) and print LUT/FF/block RAM use and each clock's Fmax "
                    "against its target. Exit status 0 only when it fits and meets timing. "
                    f"Boards: {names}.")
    build.add_argument("--board", required=True, metavar="NAME", help=f"one of: {names}")
    build.add_argument("--design", choices=DESIGNS, default="espnic",
                       help="espnic (default): the data plane with its host link on the "
                            "USB-UART; link-check: the bring-up design for `espnic link-check`")
    build.add_argument("--engines", type=_engines, metavar="N|max",
                       help="ESP engines (default: the board's); max: the most that fit and "
                            "meet timing (one full build per count)")
    build.add_argument("--profile", choices=("compact", "fast"),
                       help="gateware profile (default: the board's)")
    build.add_argument("--clock", type=_positive("a frequency in MHz", 1000), metavar="MHZ",
                       help="sync clock target (default: the board's)")
    build.add_argument("--baud", type=integer(9600, 12_000_000), metavar="BAUD",
                       help="host link baud rate (default: the board's)")
    build.add_argument("--seed", type=integer(0, 2**31), default=1, help="nextpnr's seed")
    build.add_argument("--out", metavar="DIR",
                       help="build directory (default build/BOARD-DESIGN)")
    build.add_argument("--synth-only", action="store_true",
                       help="stop after yosys: resources and fit, no placement or Fmax")
    build.add_argument("--json", action="store_true", help="print the report as one JSON object")
    build.add_argument("--quiet", action="store_true", help="no progress lines")

    flash = commands.add_parser(
        "flash", help="program a board with a bitstream (openFPGALoader or iceprog)",
        description="Load the bitstream `espnic build` wrote (or --bitstream) into the "
                    "board's FPGA (volatile) or, with --persistent, its SPI flash.")
    flash.add_argument("--board", required=True, metavar="NAME", help=f"one of: {names}")
    flash.add_argument("--bitstream", metavar="FILE",
                       help="default build/BOARD-espnic/top.bit (.bin on iCE40)")
    flash.add_argument("--tool", choices=("openFPGALoader", "iceprog"),
                       help="default: the first of these installed")
    flash.add_argument("--persistent", action="store_true",
                       help="write the SPI flash (survives power off)")

    check = commands.add_parser(
        "link-check", help="check a board's host link (needs the link-check design)",
        description="Send frames of random bytes to a board running `espnic build --design "
                    "link-check` and check each comes back.")
    check.add_argument("--device", required=True, metavar="URL",
                       help="e.g. /dev/ttyUSB1?baud=3000000")
    check.add_argument("--frames", type=integer(1, 1_000_000), default=64)
    check.add_argument("--max-size", type=integer(4, 2048), default=256, metavar="BYTES")
    check.add_argument("--timeout", type=_positive("a time in seconds", 60), default=1.0, metavar="SECONDS",
                       help="per frame (default 1)")


def _build(args) -> int:
    from ..boards.build import BuildError, build, build_max_engines, report_table

    def progress(line):
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    params = {k: v for k, v in (("profile", args.profile),
                                ("engines", args.engines if args.engines != "max" else None))
              if v is not None}
    options = dict(design=args.design, params=params or None, clock_mhz=args.clock,
                   baud=args.baud, seed=args.seed, progress=progress)
    try:
        if args.engines == "max":
            if args.out or args.synth_only:
                raise BuildError("--engines max makes one build per count: no --out or "
                                 "--synth-only")
            best, results = build_max_engines(args.board, **options)
            for result in results:
                print(str(result) if isinstance(result, Exception) else
                      (result.to_json() if args.json else report_table(result) + "\n"))
            print(f"espnic build: the most engines that fit and meet timing: {best}",
                  file=sys.stderr)
            return 0 if best else 1
        report = build(args.board, workdir=args.out, synth_only=args.synth_only, **options)
    except BuildError as error:
        print(f"espnic build: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("espnic build: interrupted", file=sys.stderr)
        return 130
    print(report.to_json() if args.json else report_table(report))
    return 0 if report.passed or (args.synth_only and report.fits) else 1


def _flash(args) -> int:
    from ..boards.flash import FlashError, flash
    try:
        flash(args.board, bitstream=args.bitstream, tool=args.tool, persistent=args.persistent,
              progress=lambda line: print(line, file=sys.stderr, flush=True))
    except FlashError as error:
        print(f"espnic flash: {error}", file=sys.stderr)
        return 1
    return 0


def _link_check(args) -> int:
    from .linkcheck import link_check
    try:
        result = link_check(args.device, frames=args.frames, max_size=args.max_size,
                            timeout=args.timeout)
    except Exception as error:
        from .cli import _failed
        return _failed("espnic link-check", error)
    print(result.summary())
    return 0 if result.ok else 1


COMMANDS = {"build": _build, "flash": _flash, "link-check": _link_check}
