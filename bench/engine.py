# SPDX-License-Identifier: BSD-2-Clause
"""ESP engine figures: cycles per packet and bits per cycle, per direction and profile.

    python -m espnic.bench.engine [--profile compact|fast] [--packets N] [--warmup W] [--json]

Back-to-back packets of one size through a whole :class:`EspEngine` (SA
table lookup, encapsulation or SPI / replay check, decapsulation and
accounting) in Amaranth's simulator (cycle-accurate; the output always ready),
every output and counter checked against the reference model. A packet's
cycles are the steady-state distance between the last output beats of
consecutive packets: the mean over the packets after the first ``W`` (4),
of 21 by default (short packets go in patterns of a few packets, e.g. three
fast and one slow while the encapsulator's descriptor queue fills, so a
handful of packets would catch part of a pattern). ``bytes`` is the cleartext packet's length.
``block_rate`` is the text blocks per cycle as a fraction of the GCM core's
sustained rate (1 block per cycle *fast*, 1 per 16 *compact*); ``vs_core`` is
the cycles the core itself needs for such a message back to back (its fixed
cycles per message plus the blocks at its sustained rate; decrypting, the
received tag's cycles are part of the fixed ones) over the engine's cycles per
packet. The core's figures are measured first, in Verilator, as
``bench/gcm.py`` measures them (``core_cycles``); ``core_fixed`` shows its fixed
cycles.

Both directions use one SA in tunnel mode, IPv4 in IPv4, no ESN.
"""

import argparse
import json
import sys

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from espnic.hdl.engine.sa import SaConfig
from espnic.bench.report import table
from espnic.sim import gcm_job
from espnic.sim.esp_job import run_engine
from espnic.sim.model import EspModel

SIZES = (64, 512, 1400)


def core_cycles(profile: str) -> dict:
    """The GCM core's own cost for a message of this bench, measured (``bench/gcm.py``'s
    measurement, AES-128 and an 8-byte AAD), per direction: encrypting (``out``) and
    decrypting (``in``, the received tag included), its ``bench/gcm.py`` row with the
    fixed cycles a message pays and the cycles per text block sustained."""
    print(f"  {profile} GCM core alone ...", file=sys.stderr, flush=True)
    figures = {}
    for direction, decrypt in (("out", False), ("in", True)):
        figures[direction], = gcm_job.measure(profile, key_sizes=(16,), text_lens=(64,),
                                              decrypt=decrypt)
    return figures


_SA = dict(spi=0x1000, direction="out", mode="tunnel", key="00" * 16, salt="01020304",
           src="192.0.2.1", dst="192.0.2.2")


def _packet(size: int) -> bytes:
    """An IPv4/UDP packet of exactly `size` bytes."""
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2)
                 / Raw(bytes(size - 28)))


def _sealed(size: int, packets: int) -> list[bytes]:
    """`packets` ESP packets of the outbound SA, each carrying a `size`-byte packet."""
    model = EspModel(slots=1)
    model.install(0, SaConfig(**_SA))
    return [model.process(0, _packet(size))[0] for _ in range(packets)]


def _run(profile, config, traffic):
    run = run_engine({0: config}, [(0, packet) for packet in traffic], profile=profile, slots=2)
    inbound = config.direction == "in"
    if run.outputs[inbound] != run.expected[inbound] or set(run.reasons) != {"ok"} or \
            run.counters[0] != run.model.counters(0):
        raise RuntimeError(f"{profile}: the gateware and the model disagree")
    return run.done_cycles


def _out(profile, size, packets):
    return _run(profile, SaConfig(**_SA), [_packet(size)] * packets)


def _in(profile, size, packets):
    return _run(profile, SaConfig(**{**_SA, "direction": "in"}), _sealed(size, packets))


def measure(profile: str, *, packets: int = 21, warmup: int = 4) -> list[dict]:
    core_alone = core_cycles(profile)
    rows = []
    for direction, run in (("out", _out), ("in", _in)):
        for size in SIZES:
            print(f"  {profile} {direction} {size} B ...", file=sys.stderr, flush=True)
            done = run(profile, size, packets)
            cycles = (done[-1] - done[warmup]) / (packets - 1 - warmup)
            text_blocks = -(-(size + 2 + (-(size + 2) % 4)) // 16)
            core_row = core_alone[direction]
            core_blocks = text_blocks * core_row["cycles_per_block"]
            rows.append({
                "direction": direction, "profile": profile, "bytes": size,
                "cycles_per_packet": round(cycles, 1),
                "bits_per_cycle": round(8 * size / cycles, 2),
                "block_rate": round(core_blocks / cycles, 3),
                "vs_core": round((core_row["fixed_cycles"] + core_blocks) / cycles, 3),
                "core_fixed": core_row["fixed_cycles"],
            })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m espnic.bench.engine",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=["compact", "fast"], action="append")
    parser.add_argument("--packets", type=int, default=21, help="packets per size")
    parser.add_argument("--warmup", type=int, default=4,
                        help="packets before the measured ones (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.packets < args.warmup + 2:
        parser.error("--packets must be at least --warmup + 2, and --warmup at least 0")
    rows = [row for profile in args.profile or ["compact", "fast"]
            for row in measure(profile, packets=args.packets, warmup=args.warmup)]
    if args.json:
        print(json.dumps({"throughput": rows}, indent=1))
    else:
        print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
