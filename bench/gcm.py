# SPDX-License-Identifier: BSD-2-Clause
"""AES-GCM core figures: throughput in simulation, resources and Fmax after place and route.

    python -m espnic.bench.gcm [--profile compact|fast] [--no-synth] [--seed N] [--json]

Throughput: back-to-back encryptions with a new random key each and an 8-byte
AAD (an ESP header without ESN), in Verilator, every output checked against
`cryptography` (see `espnic.sim.gcm_job.measure`). Resources and Fmax: YoWASP
yosys + nextpnr out of context (`espnic.boards.ooc`), net of the I/O harness;
nextpnr's placement seed is `--seed` (1 by default; the routed Fmax of the fast core
moves by more than 15 MHz between seeds, docs/performance.md).
"""

import argparse
import json
import sys

from espnic.bench.report import table

from espnic.sim.gcm_job import measure

#: (profile, family, device, target clock in MHz). The fast profile needs 140
#: block RAMs for its S-boxes, more than an iCE40 has (30), so it is built for ECP5 only.
SYNTH_TARGETS = [
    ("compact", "ice40", "up5k", 24.0),
    ("compact", "ecp5", "85k", 100.0),
    ("fast", "ecp5", "85k", 100.0),
]


def throughput(profiles):
    rows = []
    for profile in profiles:
        print(f"simulating the {profile} profile ...", file=sys.stderr, flush=True)
        rows.extend(measure(profile))
    return rows


def resources(profiles, seed=1):
    from espnic.boards.ooc import synthesize
    from espnic.hdl.gcm.core import GcmCore

    rows = []
    for profile, family, device, clock in SYNTH_TARGETS:
        if profile not in profiles:
            continue
        print(f"synthesizing {profile} for {family} {device} at {clock} MHz ...",
              file=sys.stderr, flush=True)
        report = synthesize(GcmCore, params={"profile": profile}, family=family, device=device,
                            clock_mhz=clock, seed=seed,
                            progress=lambda line: print(line, file=sys.stderr))
        rows.append({"profile": profile, "seed": seed, **report.as_row()})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m espnic.bench.gcm", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=["compact", "fast"], action="append")
    parser.add_argument("--no-synth", action="store_true", help="throughput only")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    profiles = args.profile or ["compact", "fast"]

    figures = {"throughput": throughput(profiles)}
    if not args.no_synth:
        figures["resources"] = resources(profiles, seed=args.seed)
    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(table(figures["throughput"], ["profile", "key_bits", "text_bytes", "cycles_per_message",
                                         "bits_per_cycle", "cycles_per_block", "fixed_cycles"]))
    if figures.get("resources"):
        print()
        columns = list(figures["resources"][0])
        print(table(figures["resources"], columns))


if __name__ == "__main__":
    main()
