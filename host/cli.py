# SPDX-License-Identifier: BSD-2-Clause
"""The ``espnic`` command line (DESIGN.md section 7).

Only the command names are fixed so far; each one says plainly that it is not
built yet instead of pretending. What is built can be exercised today: the
AES-GCM core with ``python -m espnic.sim.demo_gcm``, the ESP engine (gateware
against the reference model) with ``python -m espnic.bench.engine``.
"""

import argparse
import sys

# command -> what it needs before it can work
_PLANNED = {
    "run":    "the ESP engine, forwarder and host link",
    "sim":    "the simulated device server and host link",
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
        epilog="Built so far: the AES-GCM core and the ESP engine, not the forwarder, host link "
               "or controller. Try `python -m espnic.sim.demo_gcm` or "
               "`python -m espnic.bench.engine`.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, needs in _PLANNED.items():
        commands.add_parser(name, help=f"not supported yet (needs {needs})")
    # The options of unbuilt commands are not defined yet: accept any.
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    print(f"espnic: not supported: `espnic {args.command}` needs {_PLANNED[args.command]}, "
          f"which is not built yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
