# SPDX-License-Identifier: BSD-2-Clause
"""Host link figures: SAs installed and packets moved per second over a UART, against the wire.

    python -m espnic.bench.hostlink [--baud B ...] [--clock HZ] [--sas N] [--burst N]
                                    [--packets N] [--sizes 64,512,1400] [--runs R,...]
                                    [--every-cycle] [--json]

The simulated device server's device (``EspNicDevice``, one compact engine, one
port, packets over the link; Verilator) with the real host driver and controller
in a thread of the simulator's process, its link paced as a UART at ``baud``
(8N1: 10 bit times a byte; ``divisor = round(clock / baud)`` cycles a bit, the
line's real rate ``clock / divisor`` baud). The host takes no simulated time:
the figures are the link's and the device's (see ``sim/benches/hostlink.py``
for the line model and ``sim/hostlink_job.py`` for what each run does).

Rows: ``sa_records`` (bare ``engine_host`` record writes, a ``SEND`` each),
``sa_burst`` (the same in ``SEND_MANY`` bursts of 13: the bulk SA load),
``add_sa_out`` / ``add_sa_in`` (``Controller.add_sa``: write, read back and
compare, and for an inbound SA its SPI entry) and ``packets`` (injected,
bypassed, back as ``PACKET`` frames; steady state). ``payload_B`` is what the
operation's data needs on the wire: the 157-byte SA record, or the packet.
``to_device_B`` / ``to_host_B`` are the bytes each way per SA or packet, frames,
answers and everything else included. ``limit_per_s`` is the wire limit, the
line's bytes per second over ``payload_B`` (for packets, per direction: each
direction carries the packet once); ``efficiency`` is ``per_s`` over it. Issue
5's target: at least 80 % for bulk SA loads.
"""

import argparse
import json
import sys

from espnic.bench.report import table
from espnic.hdl.bridge.regmap import MAX_BODY
from espnic.sim.hostlink_job import RUNS

#: Bytes of an SA record on the wire: the ``engine_host`` payload (``docs/registers.md``).
SA_RECORD_BYTES = 157
#: SA records in one ``SEND_MANY`` frame: as many as a frame's body holds (13).
BURST = MAX_BODY // SA_RECORD_BYTES
BAUDS = (115_200, 3_000_000, 12_000_000)
CLOCK_HZ = 48_000_000
SIZES = (64, 512, 1400)
COLUMNS = ["baud", "run", "payload_B", "to_device_B", "to_host_B", "per_s", "limit_per_s",
           "efficiency"]


def line_bytes_per_second(clock_hz: float, divisor: int) -> float:
    """Bytes a second one direction of an 8N1 line carries at `divisor` cycles a bit."""
    return clock_hz / divisor / 10


def wire_limit(clock_hz: float, divisor: int, payload_bytes: int) -> float:
    """Operations a second if the line carried nothing but their `payload_bytes`."""
    return line_bytes_per_second(clock_hz, divisor) / payload_bytes


def rate(run: dict, clock_hz: float) -> float:
    """Operations a second of one run of ``sim/hostlink_job.py``: SAs over the run's
    cycles; packets in the steady state, between the first and last to come back."""
    if run["run"] == "packets":
        arrivals = run["arrivals"]
        return (len(arrivals) - 1) * clock_hz / (arrivals[-1] - arrivals[0])
    return run["count"] * clock_hz / run["cycles"]


def rows(result: dict, *, baud: int, clock_hz: float, divisor: int) -> list[dict]:
    """The table's rows for one :func:`~espnic.sim.hostlink_job.run_hostlink` result."""
    out = []
    for run in result["runs"]:
        payload = run["bytes"] if run["run"] == "packets" else SA_RECORD_BYTES
        per_s = rate(run, clock_hz)
        limit = wire_limit(clock_hz, divisor, payload)
        out.append({
            "baud": baud, "run": run["run"], "payload_B": payload,
            "to_device_B": round(run["to_device"] / run["count"], 1),
            "to_host_B": round(run["to_host"] / run["count"], 1),
            "per_s": round(per_s, 1), "limit_per_s": round(limit, 1),
            "efficiency": round(per_s / limit, 3),
        })
    return out


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(size) for size in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of sizes: {text!r}") \
            from None
    if not all(28 <= size <= 1500 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be 28..1500 bytes, not {text!r}")
    return sizes


def _runs(text: str) -> tuple[str, ...]:
    runs = tuple(text.split(","))
    unknown = [run for run in runs if run not in RUNS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown run {unknown[0]!r}; runs: {', '.join(RUNS)}")
    return runs


def main(argv=None):
    from espnic.hdl.bridge.uart import divisor_for
    from espnic.sim.hostlink_job import run_hostlink

    parser = argparse.ArgumentParser(prog="python -m espnic.bench.hostlink",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--baud", type=int, action="append",
                        help=f"line rate (repeat for several; default {', '.join(map(str, BAUDS))})")
    parser.add_argument("--clock", type=float, default=CLOCK_HZ,
                        help=f"the device's clock in Hz (default {CLOCK_HZ})")
    parser.add_argument("--sas", type=int, default=8, help="SAs per SA run (1..16; default 8)")
    parser.add_argument("--burst", type=int, default=2 * BURST,
                        help=f"SAs of the sa_burst run, in frames of {BURST} "
                             f"(default {2 * BURST})")
    parser.add_argument("--runs", type=_runs, default=RUNS,
                        help=f"which runs, comma-separated (default {','.join(RUNS)})")
    parser.add_argument("--packets", type=int, default=4,
                        help="packets per size (>= 2; default 4)")
    parser.add_argument("--sizes", type=_sizes, default=SIZES,
                        help="packet sizes in bytes, comma-separated (default 64,512,1400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every-cycle", action="store_true",
                        help="simulate every cycle, also the idle rest of each character "
                             "(slow at low rates; the figures do not change)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.sas <= 16:
        parser.error("--sas must be 1..16")
    if args.burst < 1:
        parser.error("--burst must be at least 1")
    if args.packets < 2:
        parser.error("--packets must be at least 2")
    bauds = args.baud or list(BAUDS)
    divisors = {}
    for baud in bauds:
        try:
            divisors[baud] = divisor_for(args.clock, baud)
        except (TypeError, ValueError) as error:
            parser.error(f"--baud {baud}: {error}")

    table_rows, runs = [], {}
    for baud in bauds:
        divisor = divisors[baud]
        print(f"{baud} baud: {divisor} cycles a bit at {args.clock / 1e6:g} MHz ...",
              file=sys.stderr, flush=True)
        result = run_hostlink(divisor=divisor, sas=args.sas, packets=args.packets,
                              sizes=args.sizes, seed=args.seed, skip=not args.every_cycle,
                              burst=args.burst, runs=args.runs,
                              progress=lambda line: print(line, file=sys.stderr, flush=True))
        table_rows += rows(result, baud=baud, clock_hz=args.clock, divisor=divisor)
        runs[baud] = {"divisor": divisor, "line_baud": round(args.clock / divisor, 1),
                      **{key: result[key] for key in ("seconds", "link_cycles",
                                                      "skipped_cycles", "late_cycles", "runs")}}
        print(f"{baud} baud: {result['seconds']:g} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"clock_hz": args.clock, "sas": args.sas, "burst": args.burst,
                          "packets": args.packets,
                          "rows": table_rows, "runs": runs}, indent=1))
    else:
        print(table(table_rows, COLUMNS))


if __name__ == "__main__":
    main()
