# SPDX-License-Identifier: BSD-2-Clause
"""Demo: random AES-GCM messages through both core profiles in Verilator.

    python -m espnic.sim.demo_gcm [--simulator icarus]

Builds each profile (cached after the first run), encrypts back-to-back
messages with a new random key each, checks every ciphertext and tag against
`cryptography`, and prints the throughput in bits per clock cycle.
"""

import argparse
import sys

from .gcm_job import measure


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m espnic.sim.demo_gcm", description=__doc__.split("\n")[0])
    parser.add_argument("--simulator", choices=["verilator", "icarus"], default=None)
    parser.add_argument("--profile", choices=["compact", "fast"], action="append")
    args = parser.parse_args(argv)
    print(f"{'profile':8} {'key':>4} {'bytes':>6} {'cycles/msg':>11} {'bits/cycle':>11}")
    for profile in args.profile or ["compact", "fast"]:
        print(f"building and running the {profile} profile ...", file=sys.stderr, flush=True)
        for row in measure(profile, simulator=args.simulator, messages_per_size=4):
            print(f"{row['profile']:8} {row['key_bits']:>4} {row['text_bytes']:>6} "
                  f"{row['cycles_per_message']:>11.1f} {row['bits_per_cycle']:>11.2f}")
    print("every ciphertext and tag matched cryptography's AESGCM")


if __name__ == "__main__":
    main()
