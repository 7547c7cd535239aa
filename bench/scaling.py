# SPDX-License-Identifier: BSD-2-Clause
"""Scaling over engines: the whole device's aggregate throughput for 1, 2, 4 and 8 engines.

    python -m espnic.bench.scaling [--quick] [--profile compact|fast] [--engines N]
        [--size BYTES] [--no-forwarder | --no-throughput] [--json] [--plot FILE]
        [--load FILE]

Throughput: an :class:`EspNic` with one port and N engines, one outbound SA per
engine (slot 0, tunnel mode into IPv4, AES-128, no ESN), a PROTECT rule per SA
(its own inner network, ``10.k.0.0/16``) and a route for the tunnel peer, in
Amaranth's simulator (cycle-accurate). Back-to-back IPv4/UDP packets of one
size (the IP length) on the one ingress port, output always ready, spread over
the SAs ``uniform`` (round robin) or ``zipf`` (SA k's share of the packets
proportional to 1/(k+1), in a seeded random order; ``hot`` is the hottest SA's
share). Every packet and counter is checked against :class:`NicModel`
(``check_nic_run``) before a figure is printed. The *compact* profile runs 1,
2, 4 and 8 engines; *fast* 1 and 2 (two reach the line rate).

``bits_per_cycle`` is cleartext bits offered (IP bytes × 8) per cycle and
``packets_per_cycle`` packets per cycle, in the steady state. Uniform: from the
last output beat of the first round (packet N - 1 in output order) to the last
packet's, whole rounds of one packet per engine. Zipf: the hottest SA's packets
per cycle (measured the same way on its packets alone, after its first) over
its share of the traffic -- in the long run the device delivers the mix it is
offered, so the hottest SA's engine sets the pace. ``speedup`` is over one
engine of the profile at the same size, ``scaling`` is ``speedup / N`` (the
target: at least 0.9 up to the line rate). ``bound`` is what the device could
reach, the lowest of: N times one engine (``engines``), one engine over the
hottest SA's share (``hot SA``, zipf), the ingress line rate (one 16-byte beat
per cycle, ``ingress``) and the egress's (one beat per cycle of the longer ESP
packets, ``egress``); ``limit`` names it. ``run_bits_per_cycle`` (JSON only)
is the whole run, first input beat to last output beat, ramp and drain included.

Forwarder line rate: back-to-back minimum-size packets (46-byte IP packets, as
a 64-byte Ethernet frame carries, 3 beats; and 64-byte ones, 4 beats), outputs
always ready. Through the :class:`Classifier` alone, half ESP (SPI-table hits)
and half plain IPv4/UDP (policy lookups), with its policy table in 2 stages (as
the device is built here) and in 4 (``EspNic``'s default), every decision and
every byte checked against ``sim/model/forwarder.py``; the 46-byte packets also
in minimum Ethernet frames (60 bytes without the FCS, 4 beats) through an
:class:`EthernetStrip` in front, as on an Ethernet port; and through the whole
device (``check_nic_run``): half ESP with unknown SPIs (dropped after the SPI
lookup) and half bypassed, then all bypassed (every packet through the egress
as well). ``cycles_per_packet`` is the steady interval between packets' first
input beats; the line rate is one beat per cycle of what the port carries,
``beats`` cycles a packet (or frame).
"""

import argparse
import ipaddress
import json
import math
import random
import sys
import time

from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from espnic.bench.report import svg_line_chart, table
from espnic.hdl.engine.sa import SaConfig
from espnic.hdl.forwarder.classifier import Classifier
from espnic.hdl.forwarder.ethernet import EthernetStrip
from espnic.hdl.forwarder.policy import PolicyAction
from espnic.hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put, stream_put_all
from espnic.sim.model.forwarder import PolicyTableModel, SpiTableModel, classify, parse, spi_key
from espnic.sim.nic_job import NicSetup, check_nic_run, run_nic

__all__ = ["scaling_setup", "zipf_counts", "scaling_traffic", "packet_count", "measure_scaling",
           "classifier_rate", "device_forwarder_rate", "measure_forwarder", "run_bench", "plot"]

ENGINES = (1, 2, 4, 8)
PROFILES = ("compact", "fast")
FAST_ENGINES = (1, 2)
SIZES = (64, 512, 1400)
DISTRIBUTIONS = ("uniform", "zipf")
ZIPF_S = 1.0
ZIPF_MIN_HOT = 3
#: Packets per engine (uniform) or on the hottest SA (zipf) at each size, by profile,
#: for the full run and for ``--quick``: the first round is the ramp, the rest is
#: measured (round robin is periodic from the second round on). A compact engine
#: takes 146 / 594 / 1474 cycles a packet, a fast one 15 / 38 / 93.
ROUNDS = {"compact": {64: 8, 512: 4, 1400: 3}, "fast": {64: 24, 512: 12, 1400: 8}}
QUICK_ROUNDS = {"compact": {64: 4, 512: 3, 1400: 2}, "fast": {64: 8, 512: 6, 1400: 4}}
#: Rounds (packets per engine) left out at the start of the measurement.
WARMUP = 1
#: One 16-byte beat per cycle on a port, and through the egress.
BEAT_BYTES = 16

OUR, PEER = "192.0.2.1", "192.0.2.200"     # the tunnel's ends
BYPASS_DST = "198.51.100.7"                # the forwarder check's routed destination
KEY = "00112233445566778899aabbccddeeff"
SALT = "a1b2c3d4"


# ---- setup and traffic ------------------------------------------------------------------------

def _address(text: str) -> bytes:
    """An address as the tables take it: 16 bytes, wire order, IPv4 in the first 4."""
    packed = ipaddress.ip_address(text).packed
    return packed + bytes(16 - len(packed))


def _rule(priority, action, *, dst, dst_len, proto=None, dport=(0, 65535), engine=0, slot=0):
    return {"valid": True, "ipv6": False, "priority": priority, "src": bytes(16), "src_len": 0,
            "dst": _address(dst), "dst_len": dst_len, "any_proto": proto is None,
            "proto": proto or 0, "sport_lo": 0, "sport_hi": 65535, "dport_lo": dport[0],
            "dport_hi": dport[1], "action": action.value,
            "value": {"engine": engine, "slot": slot}}


def _route(index, dst, length, port=0):
    return {"index": index, "valid": True, "ipv6": False, "dst": _address(dst),
            "length": length, "port": port}


def _sa(engine: int) -> SaConfig:
    return SaConfig(spi=0x1000 + engine, direction="out", mode="tunnel", key=KEY, salt=SALT,
                    src=OUR, dst=PEER)


def scaling_setup(engines: int) -> NicSetup:
    """One port, `engines` engines, engine k's slot 0 an outbound SA for 10.k.0.0/16;
    the tunnel peer routed to the port."""
    setup = NicSetup(engines=engines, ports=1, slots=2, rules=max(8, engines),
                     route_writes=[_route(0, "192.0.2.0", 24)])
    for engine in range(engines):
        setup.sas.append((engine, 0, _sa(engine)))
        setup.policy.append((0, engine, _rule(5, PolicyAction.PROTECT, dst=f"10.{engine}.0.0",
                                              dst_len=16, engine=engine)))
    return setup


def _plain(size: int, dst: str, number: int, *, sport=1000, dport=2000) -> bytes:
    """An IPv4/UDP packet of exactly `size` bytes, its payload starting with `number`."""
    payload = number.to_bytes(4, "big") + bytes(size - 32)
    return bytes(IP(src="10.200.0.1", dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload))


def zipf_weights(count: int, s: float = ZIPF_S) -> list[float]:
    return [1 / (k + 1) ** s for k in range(count)]


def zipf_counts(engines: int, packets: int, s: float = ZIPF_S) -> list[int]:
    """Packets per SA: each SA's Zipf share of `packets`, rounded (largest remainder)."""
    weights = zipf_weights(engines, s)
    exact = [packets * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in exact]
    for k in sorted(range(engines), key=lambda k: counts[k] - exact[k])[:packets - sum(counts)]:
        counts[k] += 1
    return counts


def scaling_traffic(engines: int, size: int, distribution: str, packets: int,
                    seed: int = 0) -> list[tuple[int, bytes]]:
    """`packets` packets ``(port, packet)`` of `size` bytes for the SAs of
    :func:`scaling_setup`: round robin over them (``uniform``), or each SA's Zipf
    share of the packets in a seeded random order (``zipf``; exact shares rather
    than independent draws, which over a few dozen packets would measure the
    draw's luck more than the device)."""
    if distribution == "uniform":
        sas = [number % engines for number in range(packets)]
    elif distribution == "zipf":
        sas = [k for k, count in enumerate(zipf_counts(engines, packets)) for _ in range(count)]
        random.Random(seed * 1000 + engines * 10 + size).shuffle(sas)
    else:
        raise ValueError(f"distribution must be 'uniform' or 'zipf', not {distribution!r}")
    return [(0, _plain(size, f"10.{sa}.1.{number % 250 + 1}", number))
            for number, sa in enumerate(sas)]


def packet_count(engines: int, distribution: str, rounds: int) -> int:
    """Packets for `rounds` packets per engine (uniform), or on the hottest SA (zipf;
    at least 3 of them: its first completion can be late, waiting for the egress)."""
    if distribution == "uniform":
        return rounds * engines
    weights = zipf_weights(engines)
    return math.ceil(max(rounds, ZIPF_MIN_HOT) * sum(weights) / weights[0])


# ---- what the device could reach ---------------------------------------------------------------

def _beats(length: int) -> int:
    return -(-length // BEAT_BYTES)


def esp_length(size: int) -> int:
    """An outbound tunnel-mode ESP packet's length for a `size`-byte packet: outer IPv4
    header, ESP header, IV, the text padded to 4 bytes with its 2-byte trailer, ICV."""
    return 20 + 8 + 8 + (size + 2 + (-(size + 2) % 4)) + 16


def line_bounds(size: int) -> dict:
    """Bits per cycle of `size`-byte packets at the ingress's and the egress's line rate."""
    return {"ingress": 8 * size / _beats(size), "egress": 8 * size / _beats(esp_length(size))}


# ---- throughput ----------------------------------------------------------------------------------

def _engine_of(esp_packet: bytes) -> int:
    """The engine an outbound ESP packet of :func:`scaling_setup` came from, by its SPI."""
    return int.from_bytes(esp_packet[20:24], "big") - 0x1000


def measure_scaling(engines: int, size: int, distribution: str, *, packets: int,
                    profile: str = "compact", warmup: int = WARMUP, seed: int = 0) -> dict:
    """One figure: `packets` packets through the device, checked, and its steady state.

    uniform: the packets completed from the last output beat of the warm-up rounds
    (``engines × warmup`` packets) to that of the last packet, over those cycles:
    whole rounds of one packet per engine. zipf: the hottest SA's packets per cycle,
    measured the same way on its packets alone (after `warmup` of them), over its
    share of the traffic -- in the long run the device delivers the mix it is offered,
    so the hottest SA's engine sets the pace of all of them.
    """
    setup = scaling_setup(engines)
    traffic = scaling_traffic(engines, size, distribution, packets, seed)
    started = time.monotonic()
    run = run_nic(setup, traffic, profile=profile, seed=seed)
    seconds = time.monotonic() - started
    check_nic_run(run, traffic)
    delivered = run.outputs[0]
    if len(delivered) != packets or {o.reason for o in run.outcomes} != {"ok"}:
        raise RuntimeError(f"{engines} engines, {size} B: {len(delivered)} of {packets} "
                           f"delivered")
    done = run.out_cycles
    per_engine = [[] for _ in range(engines)]
    for packet, cycle in zip(delivered, done, strict=True):
        per_engine[_engine_of(packet)].append(cycle)
    hot = max(range(engines), key=lambda k: len(per_engine[k]))
    share = len(per_engine[hot]) / packets
    if distribution == "uniform":
        # From the last packet of the warm-up rounds: whole rounds of N packets.
        first = min(max(engines * warmup - 1, 0), packets - 2)
        measured, cycles = packets - 1 - first, done[-1] - done[first]
        rate = measured / cycles
    else:
        mine = per_engine[hot]
        if len(mine) < 2:
            raise RuntimeError(f"zipf, {engines} engines: too few packets ({packets})")
        first = min(max(warmup - 1, 0), len(mine) - 2)
        measured, cycles = len(mine) - 1 - first, mine[-1] - mine[first]
        rate = measured / cycles / share
    return {
        "profile": profile, "distribution": distribution, "engines": engines, "bytes": size,
        "packets": packets, "measured": measured, "cycles": cycles, "hot": round(share, 3),
        "bits_per_cycle": round(8 * size * rate, 2),
        "packets_per_cycle": round(rate, 5),
        # The whole run, first input beat to last output beat (ramp and drain included).
        "run_bits_per_cycle": round(8 * size * packets / (done[-1] - run.in_cycles[0]), 2),
        "checked": True, "sim_seconds": round(seconds, 1),
    }


def _finish(rows: list[dict]) -> list[dict]:
    """Add speedup, scaling, bound and limit to each row, from the one-engine rows."""
    single = {(r["profile"], r["bytes"]): r["bits_per_cycle"] for r in rows if r["engines"] == 1
              and r["distribution"] == "uniform"}
    for row in rows:
        one = single.get((row["profile"], row["bytes"]))
        lines = line_bounds(row["bytes"])
        limits = {"ingress": lines["ingress"], "egress": lines["egress"]}
        if one is not None:
            limits["engines"] = row["engines"] * one
            if row["distribution"] == "zipf":
                limits["hot SA"] = one / row["hot"]
        limit = min(limits, key=limits.get)
        speedup = row["bits_per_cycle"] / one if one else None
        row.update({
            "speedup": round(speedup, 2) if speedup else None,
            "scaling": round(speedup / row["engines"], 3) if speedup else None,
            "bound": round(limits[limit], 1), "limit": limit,
            "vs_bound": round(row["bits_per_cycle"] / limits[limit], 3),
        })
    return rows


# ---- forwarder line rate ---------------------------------------------------------------------

_FORWARDER_SPIS = (0x100, 0x101, 0x102, 0x103)
#: A 64-byte Ethernet frame carries a 46-byte IP packet (3 beats); 64 bytes is 4 beats.
FORWARDER_SIZES = (46, 64)
FORWARDER_PACKETS = 64


def _esp(size: int, spi: int, number: int) -> bytes:
    """An ESP packet of `size` bytes (IPv4, protocol 50) to the device."""
    body = spi.to_bytes(4, "big") + (number + 1).to_bytes(4, "big") + bytes(size - 28)
    return bytes(IP(src=PEER, dst=OUR, proto=50) / Raw(body))


def _forwarder_mix(size: int, packets: int, *, known_spis: bool) -> list[bytes]:
    """Alternately an ESP packet (SPI lookup) and a plain UDP one (policy lookup)."""
    out = []
    for number in range(packets):
        if number % 2:
            out.append(_plain(size, BYPASS_DST, number, sport=5353, dport=5353))
        else:
            spi = _FORWARDER_SPIS[number // 2 % 4] if known_spis else 0x7000 + number
            out.append(_esp(size, spi, number))
    return out


def _classifier_rules():
    return [_rule(3, PolicyAction.BYPASS, dst=BYPASS_DST, dst_len=32, proto=17,
                  dport=(5353, 5353)),
            _rule(1, PolicyAction.PROTECT, dst="10.0.0.0", dst_len=8, engine=1, slot=1)]


def _numbers(item: dict) -> dict:
    return {name: int.from_bytes(value, "little") if isinstance(value, bytes) else value
            for name, value in item.items()}


class _EthernetFront(Elaboratable):
    """An Ethernet port's forwarder front as ``EspNic`` builds it: an
    :class:`EthernetStrip` feeding the :class:`Classifier`."""

    def __init__(self, classifier: Classifier):
        self.strip, self.classifier = EthernetStrip(), classifier

    def elaborate(self, platform):
        m = Module()
        m.submodules.strip, m.submodules.classifier = self.strip, self.classifier
        wiring.connect(m, self.strip.o, self.classifier.i)
        return m


def _frame(packet: bytes) -> bytes:
    """`packet` in an Ethernet II frame without FCS (the MAC checks and strips it)."""
    return bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + (0x0800).to_bytes(2, "big") + packet


def classifier_rate(size: int, packets: int, *, stages: int = 2, ethernet: bool = False) -> dict:
    """Back-to-back `size`-byte packets through a :class:`Classifier` (its policy
    table in `stages` stages; behind an :class:`EthernetStrip`, each packet in a
    frame, with `ethernet`), both outputs always ready; every decision and every
    byte checked against the model."""
    traffic = _forwarder_mix(size, packets, known_spis=True)
    spis, policy = SpiTableModel(entries=64, ways=4), PolicyTableModel(rules=8)
    entries = [(spi_key(parse(_esp(size, spi, 0))), 1, index)
               for index, spi in enumerate(_FORWARDER_SPIS)]
    classifier = Classifier(engines=2, slots=4, rules=8, stages=stages)
    front = _EthernetFront(classifier) if ethernet else classifier
    port = front.strip.i if ethernet else classifier.i
    wire = [_frame(packet) if ethernet else packet for packet in traffic]
    beats = [beat for packet in wire for beat in beats_from_bytes(packet, BEAT_BYTES)]
    decisions, starts, passed = [], [], []

    async def host_then_traffic(ctx):
        for key, engine, slot in entries:
            value = {"engine": engine, "slot": slot}
            await stream_put(ctx, classifier.spi_host, {
                "op": SpiOp.INSERT, "key": SPI_KEY.from_bits(key), "value": value}, timeout=100)
            reply = await stream_get(ctx, classifier.spi_reply, timeout=100)
            assert reply.status == SpiStatus.OK
            assert spis.insert(key, value) == SpiStatus.OK
        for index, rule in enumerate(_classifier_rules()):
            await stream_put(ctx, classifier.policy_host, {"index": index,
                                                           "rule": _numbers(rule)}, timeout=100)
            assert (await stream_get(ctx, classifier.policy_reply, timeout=100)).ok
            assert policy.write(index, rule)
        await stream_put_all(ctx, port, beats, timeout=1000)

    async def collect(ctx):
        ctx.set(classifier.decision.ready, 1)
        ctx.set(classifier.o.ready, 1)
        cycle, out_beats = 0, sum(len(beats_from_bytes(p, BEAT_BYTES)) for p in traffic)
        while len(passed) < out_beats:
            cycle += 1
            _clk, _rst, d_valid, decision, o_valid, beat, i_valid, i_ready, i_beat = \
                await ctx.tick().sample(classifier.decision.valid, classifier.decision.payload,
                                        classifier.o.valid, classifier.o.payload,
                                        port.valid, port.ready, port.payload)
            if d_valid:
                decisions.append(decision)
            if i_valid and i_ready and i_beat.first:
                starts.append(cycle)
            if o_valid:
                passed.append(beat)

    run_sim(front, host_then_traffic, collect)
    assert bytes_from_beats(passed, BEAT_BYTES) == traffic
    for decision, packet in zip(decisions, traffic, strict=True):
        want, inbound, target, _counter = classify(parse(packet), spis, policy)
        assert (decision.decision, bool(decision.inbound)) == (want, inbound), packet.hex()
        if target is not None:
            assert {"engine": decision.target.engine, "slot": decision.target.slot} == target
    unit = f"{'EthernetStrip + ' if ethernet else ''}Classifier, stages={stages}"
    return _rate_row(unit, size, packets, starts, wire_bytes=len(wire[0]))


def forwarder_setup() -> NicSetup:
    """One engine (idle: no SA is used), a bypass rule for UDP 5353 to
    :data:`BYPASS_DST`, a route for it; ESP packets to the device miss the SPI table."""
    return NicSetup(engines=1, ports=1, slots=2, rules=8, policy=[
        (0, 0, _rule(3, PolicyAction.BYPASS, dst=BYPASS_DST, dst_len=32, proto=17,
                     dport=(5353, 5353)))], route_writes=[_route(0, BYPASS_DST, 32)])


def device_forwarder_rate(size: int, packets: int, *, esp: bool = True,
                          profile: str = "compact") -> dict:
    """Back-to-back `size`-byte packets through the whole device, output always
    ready, checked against the model: half ESP dropped after an SPI miss and half
    bypassed (`esp`), or all bypassed (every packet through the egress too)."""
    if esp:
        packets_in = _forwarder_mix(size, packets, known_spis=False)
    else:
        packets_in = [_plain(size, BYPASS_DST, number, sport=5353, dport=5353)
                      for number in range(packets)]
    traffic = [(0, packet) for packet in packets_in]
    run = run_nic(forwarder_setup(), traffic, profile=profile)
    check_nic_run(run, traffic)
    assert len(run.outputs[0]) == (packets // 2 if esp else packets)
    unit = "EspNic: ESP (SPI miss) + bypass" if esp else "EspNic: all bypass"
    return _rate_row(unit, size, packets, run.in_cycles)


def _rate_row(unit: str, size: int, packets: int, starts: list, *,
              wire_bytes: int | None = None) -> dict:
    """Cycles per packet between first input beats, after the first quarter (the
    FIFOs behind the input fill at the line rate before back-pressure reaches it);
    the line rate is one beat per cycle of what the port carries (`wire_bytes`:
    an Ethernet frame)."""
    first = packets // 4
    cycles = (starts[-1] - starts[first]) / (len(starts) - 1 - first)
    beats = _beats(wire_bytes or size)
    return {"unit": unit, "bytes": size, "port_bytes": wire_bytes or size, "beats": beats,
            "packets": packets, "cycles_per_packet": round(cycles, 2),
            "line_rate": cycles <= beats, "checked": True}


def measure_forwarder(*, packets: int = FORWARDER_PACKETS, sizes=FORWARDER_SIZES,
                      stages=(2, 4), device: bool = True) -> list[dict]:
    """The forwarder's line-rate rows: the classifier alone at each policy-table depth
    in `stages` (and behind an Ethernet port for the smallest packets), then the whole
    device (`device`)."""
    rows = []
    for size in sizes:
        # A 64-byte Ethernet frame (60 bytes without its FCS) for the smallest packets.
        for ethernet in (False, True) if size + 14 <= 60 else (False,):
            for stage_count in stages:
                print(f"  forwarder: {'EthernetStrip + ' if ethernet else ''}Classifier "
                      f"(stages={stage_count}), {size} B ...", file=sys.stderr, flush=True)
                rows.append(classifier_rate(size, packets, stages=stage_count,
                                            ethernet=ethernet))
        if device:
            for esp in (True, False):
                print(f"  forwarder: EspNic ({'ESP and ' if esp else ''}bypass), {size} B ...",
                      file=sys.stderr, flush=True)
                rows.append(device_forwarder_rate(size, packets, esp=esp))
    return rows


# ---- the whole bench -------------------------------------------------------------------------

def run_bench(*, engines=ENGINES, sizes=SIZES, distributions=DISTRIBUTIONS,
              profiles=PROFILES, rounds=None, throughput=True, forwarder=True,
              fast_engines=FAST_ENGINES,
              forwarder_packets: int = FORWARDER_PACKETS, seed: int = 0) -> dict:
    """Every figure: ``{"throughput": [rows], "forwarder": [rows], "seconds": ...}``;
    `rounds` as :data:`ROUNDS`. The fast profile runs only `fast_engines` engines
    (two of them already reach the ingress line rate at 1400 bytes)."""
    rounds = rounds or ROUNDS
    started = time.monotonic()
    rows = []
    for profile in profiles if throughput else ():
        for size in sizes:
            for count in engines:
                if profile == "fast" and count not in fast_engines:
                    continue
                for distribution in distributions:
                    if distribution == "zipf" and count == 1:
                        continue    # one SA: the same traffic as uniform
                    packets = packet_count(count, distribution, rounds[profile][size])
                    print(f"  {profile} {count} engine(s) {distribution} {size} B, {packets} "
                          f"packets ...", file=sys.stderr, flush=True)
                    rows.append(measure_scaling(count, size, distribution, packets=packets,
                                                profile=profile, seed=seed))
    # One engine: zipf is uniform (a single SA); the row is shared so both curves start there.
    for row in [r for r in rows if r["engines"] == 1]:
        if "zipf" in distributions:
            rows.append({**row, "distribution": "zipf"})
    rows.sort(key=lambda r: (r["profile"], r["bytes"], r["distribution"], r["engines"]))
    rows = _finish(rows)
    forwarder_rows = measure_forwarder(packets=forwarder_packets) if forwarder else []
    return {"throughput": rows, "forwarder": forwarder_rows,
            "zipf_s": ZIPF_S, "seconds": round(time.monotonic() - started, 1)}


def plot(result: dict) -> str:
    """Aggregate bits/cycle against engines, a panel per packet size (SVG)."""
    panels = []
    rows = result["throughput"]
    for size in sorted({r["bytes"] for r in rows}):
        series = []
        for profile in [p for p in PROFILES if any(r["profile"] == p for r in rows)]:
            mine = [r for r in rows if (r["bytes"], r["profile"]) == (size, profile)]
            for distribution in DISTRIBUTIONS:
                points = sorted((r["engines"], r["bits_per_cycle"]) for r in mine
                                if r["distribution"] == distribution)
                if points:
                    series.append({"label": f"{profile}, {distribution}", "points": points,
                                   "style": "solid" if distribution == "uniform" else "dashed",
                                   "marker": True})
            one = [r["bits_per_cycle"] for r in mine if r["engines"] == 1]
            counts = sorted({r["engines"] for r in mine})
            if one and len(counts) > 1:
                series.append({"label": f"{profile}, N × one engine (ideal)",
                               "points": [(n, n * one[0]) for n in counts], "style": "dotted"})
        bounds = line_bounds(size)
        series.append({"label": "ingress line rate (128 bits/cycle at most)",
                       "points": [(ENGINES[0], bounds["ingress"]),
                                  (ENGINES[-1], bounds["ingress"])],
                       "style": "line", "color": "#555555"})
        series.append({"label": "egress line rate (ESP packets, 1 beat/cycle)",
                       "points": [(ENGINES[0], bounds["egress"]), (ENGINES[-1], bounds["egress"])],
                       "style": "dotted", "color": "#999999"})
        panels.append({"title": f"{size}-byte packets", "series": series})
    return svg_line_chart(panels, x_label="engines (N)", y_label="aggregate bits/cycle",
                          x_ticks=list(ENGINES), log_x=True, log_y=True,
                          y_ticks=[2, 4, 8, 16, 32, 64, 128, 256])


def print_tables(result: dict) -> None:
    columns = ["profile", "distribution", "engines", "bytes", "packets", "hot",
               "bits_per_cycle", "packets_per_cycle", "speedup", "scaling", "bound", "limit",
               "vs_bound"]
    if result["throughput"]:
        print(table(result["throughput"], columns))
    if result["throughput"] and result["forwarder"]:
        print()
    if result["forwarder"]:
        print(table(result["forwarder"], list(result["forwarder"][0])))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m espnic.bench.scaling",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=PROFILES, action="append",
                        help="engines' GCM profile (default: both; fast only for 1 and 2 "
                             "engines)")
    parser.add_argument("--engines", type=int, choices=ENGINES, action="append")
    parser.add_argument("--size", type=int, choices=SIZES, action="append")
    parser.add_argument("--quick", action="store_true", help="fewer packets per engine")
    parser.add_argument("--no-forwarder", action="store_true", help="skip the line-rate check")
    parser.add_argument("--no-throughput", action="store_true",
                        help="only the forwarder's line-rate check")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE", help="write the SVG plot to FILE")
    parser.add_argument("--load", metavar="FILE",
                        help="print (and plot) a result saved with --json; no simulation")
    args = parser.parse_args(argv)
    if args.load:
        with open(args.load) as file:
            result = json.load(file)
    else:
        result = run_bench(engines=args.engines or ENGINES, sizes=args.size or SIZES,
                           profiles=args.profile or PROFILES,
                           rounds=QUICK_ROUNDS if args.quick else ROUNDS,
                           throughput=not args.no_throughput, forwarder=not args.no_forwarder)
    if args.plot:
        with open(args.plot, "w") as file:
            file.write(plot(result))
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
    if not args.load:
        print(f"{result['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
