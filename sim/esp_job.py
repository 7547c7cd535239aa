# SPDX-License-Identifier: BSD-2-Clause
"""Run ESP gateware blocks on packets, with the reference model as the oracle.

:func:`run_encap` sends packets through :class:`EspEncap` in Amaranth's
simulator, with the jobs the SA table would hand over (taken from an
:class:`EspModel` holding the same SA), and returns what came out, what the
model says should have, and the cycle at which each packet's last beat left.
:func:`run_decap` does the same for :class:`EspDecap`, with the jobs the
SA table and the replay unit would hand over. :func:`run_engine` runs a whole
:class:`EspEngine`: SAs written over its host port, traffic of several SAs in
both directions. Tests assert on what they return; ``bench/engine.py`` turns
the cycle stamps into figures.
"""

import random
import struct
from dataclasses import dataclass

from ..hdl.engine.decap import DECAP_JOB, EspDecap
from ..hdl.engine.encap import ENCAP_JOB, EspEncap
from ..hdl.engine.engine import EspEngine
from ..hdl.engine.protocol import PROTO_UDP
from ..hdl.engine.sa import SA_COUNTERS, Direction, SaConfig
from ..hdl.engine.sa_table import HostOp, control_record
from ..hdl.gcm.layouts import BLOCK_BYTES
from ..hdl.packet import beats_from_bytes, bytes_from_beats
from .amaranth_sim import (run_sim, stream_get, stream_get_packets, stream_put, stream_put_all,
                           stream_record)
from .model import EspModel, ReplayWindow
from .model.engine import engine_outcome, engine_supports

__all__ = ["EncapRun", "encap_job", "run_encap", "DecapRun", "decap_job", "decap_seq_hi",
           "esp_offset", "run_decap", "EngineRun", "engine_supports", "engine_outcome", "model_outcomes",
           "run_engine"]

_TIMEOUT = 50_000   # cycles without progress before a run is declared hung


def encap_job(config: SaConfig, model: EspModel, slot: int = 0):
    """The :data:`ENCAP_JOB` for the model's next outbound packet on `slot`."""
    record = config.to_record(model.layout)   # the host cannot read the key back
    seq = model.read_record(slot).seq + 1
    return ENCAP_JOB.const({
        "mode": record.mode, "key": record.key, "key_256": record.key_256,
        "salt": record.salt, "spi": record.spi, "seq": seq, "esn": record.esn,
        "tunnel": {"ip_version": record.tunnel.ip_version, "src": record.tunnel.src,
                   "dst": record.tunnel.dst},
        "natt": {"encap": record.natt.encap, "sport": record.natt.sport,
                 "dport": record.natt.dport},
    })


@dataclass
class EncapRun:
    outputs: list[bytes]      # what the gateware sent, one ESP packet each
    expected: list[bytes]     # what the model sent
    done_cycles: list[int]    # cycle of each packet's last output beat


def run_encap(config: SaConfig, packets, *, profile="compact", start_seq=0, stall=0.0,
              seed=0) -> EncapRun:
    """Encapsulate `packets` under `config` (an outbound SA) in gateware and in the model."""
    model = EspModel(slots=1)
    model.install(0, config)
    if start_seq:
        record = config.to_record(model.layout).as_bits()
        model.write_record(0, record | start_seq << model.layout["seq"].offset)
    jobs, expected = [], []
    for packet in packets:
        jobs.append(encap_job(config, model))
        output, reason = model.process(0, packet)
        if reason != "ok":
            raise ValueError(f"the model refuses packet {len(jobs) - 1}: {reason}")
        expected.append(output)

    dut = EspEncap(profile=profile)
    received, done_cycles = [], []

    async def feed_jobs(ctx):
        for job in jobs:
            await stream_put(ctx, dut.job, job, timeout=_TIMEOUT)

    async def feed_packets(ctx):
        beats = [beat for packet in packets for beat in beats_from_bytes(packet, BLOCK_BYTES)]
        await stream_put_all(ctx, dut.i, beats, timeout=_TIMEOUT)

    async def collect(ctx):
        received.extend(await stream_get_packets(ctx, dut.o, len(packets), rng=random.Random(seed),
                                                 stall_prob=stall, timeout=_TIMEOUT))

    async def stamp(ctx):
        cycle = 0
        async for _clk, _rst, valid, ready, beat in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload):
            cycle += 1
            if valid and ready and beat.last:
                done_cycles.append(cycle)

    run_sim(dut, feed_jobs, feed_packets, collect, processes=[stamp])
    return EncapRun(bytes_from_beats(received, BLOCK_BYTES), expected, done_cycles)


def esp_offset(packet: bytes) -> int | None:
    """Where the ESP header of an outer packet starts (as its IP header says), or None."""
    if len(packet) < 10:
        return None
    if packet[0] >> 4 == 6:
        return 40 + (8 if packet[6] == PROTO_UDP else 0)
    return (packet[0] & 0xf) * 4 + (8 if packet[9] == PROTO_UDP else 0)


def decap_job(config: SaConfig, model: EspModel):
    """The :data:`DECAP_JOB` the SA table would hand over for a packet of `config`."""
    record = config.to_record(model.layout)
    return DECAP_JOB.const({
        "key": record.key, "key_256": record.key_256, "salt": record.salt, "esn": record.esn,
        "encap": record.natt.encap, "transport": int(config.mode == "transport"),
    })


def decap_seq_hi(config: SaConfig, model: EspModel, packet: bytes, slot: int = 0) -> int:
    """The high half of `packet`'s sequence number as the replay unit would reconstruct
    it now (0 without ESN, or when nothing fits)."""
    state = model.read_record(slot)
    offset = esp_offset(packet)
    if not config.esn or offset is None or len(packet) < offset + 8:
        return 0
    seq_lo = struct.unpack_from("!I", packet, offset + 4)[0]
    full = ReplayWindow(state.window, state.seq, state.replay_bitmap, esn=True).reconstruct(seq_lo)
    return 0 if full is None else full >> 32


@dataclass
class DecapRun:
    expected: list           # the model's (output, reason) per packet
    verdicts: list           # the gateware's verdict per packet
    beats: list              # (output beat, index of the packet it was released for)
    done_cycles: list[int]   # cycle of each verdict


def run_decap(config: SaConfig, packets, *, profile="compact", banks=1, stall=0.0, gap=0.0,
              seed=0) -> DecapRun:
    """Decapsulate `packets` under `config` (an inbound SA) in gateware and in the model.

    Every packet whose header reaches ``admit`` is let in, with the sequence
    number's high half the model reconstructs, and every authentic one is
    accepted at ``settle`` (the SPI and replay checks are the engine's)."""
    model = EspModel(slots=1)
    model.install(0, config)
    jobs, seq_his, expected = [], [], []
    for packet in packets:
        jobs.append(decap_job(config, model))
        seq_his.append(decap_seq_hi(config, model, packet))
        expected.append(model.process(0, packet))

    dut = EspDecap(profile=profile, banks=banks)
    beats, verdicts, done_cycles = [], [], []

    async def feed_jobs(ctx):
        for job in jobs:
            await stream_put(ctx, dut.job, job, timeout=_TIMEOUT)

    async def feed_packets(ctx):
        stream = [beat for packet in packets for beat in beats_from_bytes(packet, BLOCK_BYTES)]
        await stream_put_all(ctx, dut.i, stream, rng=random.Random(seed + 1), gap_prob=gap,
                             timeout=_TIMEOUT)

    async def collect_packets(ctx):
        rng = random.Random(seed)
        idle = cycle = 0
        while len(verdicts) < len(packets):
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.o.ready, ready)
            _clk, _rst, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid and ready:
                # The verdicts given so far say which packet this beat belongs to.
                beats.append((payload, len(verdicts)))
            idle = 0 if valid else idle + 1
            if idle >= _TIMEOUT:
                raise TimeoutError("no output for too long")

    async def collect_verdicts(ctx):
        cycle = 0
        async for _clk, _rst, valid, ready, verdict in ctx.tick().sample(
                dut.verdict.valid, dut.verdict.ready, dut.verdict.payload):
            cycle += 1
            if valid and ready:
                verdicts.append(verdict)
                done_cycles.append(cycle)
                if len(verdicts) == len(packets):
                    return

    async def accept_verdicts(ctx):
        ctx.set(dut.verdict.ready, 1)

    async def admit(ctx):
        # One header per packet, in order.
        for seq_hi in seq_his:
            header = await stream_get(ctx, dut.header)
            if not header.malformed:
                await stream_put(ctx, dut.admit, {"go": 1, "seq_hi": seq_hi}, timeout=_TIMEOUT)

    async def settle(ctx):
        while True:
            asked = await stream_get(ctx, dut.settle)
            await stream_put(ctx, dut.settled, {"accept": asked.authentic}, timeout=_TIMEOUT)

    run_sim(dut, feed_jobs, feed_packets, collect_packets, collect_verdicts, accept_verdicts,
            background=[admit, settle])
    return DecapRun(expected, verdicts, beats, done_cycles)


@dataclass
class EngineRun:
    """What :func:`run_engine` saw, beside what the model says."""
    reasons: list[str]            # the model's outcome per packet ("ok", "replay", ...)
    outputs: dict                 # {inbound: [packet, ...]} as the engine sent them
    expected: dict                # {inbound: [packet, ...]} as the model did
    counters: dict                # slot -> counters read over the host port
    seqs: dict                    # slot -> the record's seq read over the host port
    engine_counters: dict         # no_sa, unknown_spi, unsupported, truncated
    events: list                  # (slot, name) in the engine's order
    done_cycles: list[int]        # cycle of each output packet's last beat
    model: EspModel
    inbound_overlap: int = 0      # most inbound packets in the decapsulator at once
    late_replays: int = 0         # authentic packets admitted, then refused at their commit


def model_outcomes(model: EspModel, sa_configs: dict, traffic) -> tuple[list, dict]:
    """Process `traffic` in `model` (holding `sa_configs`) as an engine would see it
    (:func:`engine_outcome`): ``(reasons, {inbound: [outputs]})``."""
    expected = {False: [], True: []}
    reasons = []
    for slot, packet in traffic:
        inbound = model.read_record(slot).direction == Direction.IN
        output, reason = engine_outcome(model, sa_configs.get(slot), slot, packet)
        reasons.append(reason)
        if output is not None:
            expected[inbound].append(output)
    return reasons, expected


def run_engine(sa_configs: dict, traffic, *, profile="compact", slots: int = 4, stall=0.0,
               gap=0.0, seed=0) -> EngineRun:
    """Write `sa_configs` (slot -> :class:`SaConfig`) into an :class:`EspEngine` and a
    model, send `traffic` (``[(slot, packet)]``) through both, read every slot's
    counters and record back once the last packet has been accounted. ``stall``: the
    output's back-pressure, ``gap``: idle cycles on the input (probabilities per beat).
    Packets the engine does not support (:func:`engine_supports`) skip the model and have the
    reason ``"unsupported"``."""
    model = EspModel(slots=slots)
    dut = EspEngine(profile=profile, slots=slots)
    for slot, config in sa_configs.items():
        model.install(slot, config)
    reasons, expected = model_outcomes(model, sa_configs, traffic)
    received, sources, events, done_cycles, sent, aborts = [], [], [], [], [], []
    counters, seqs, engine_counters = {}, {}, {}
    configured = []       # set once every SA is written and every packet's metadata given

    async def host_and_meta(ctx):
        for slot, config in sa_configs.items():
            record = control_record(config.to_record(model.layout))
            await stream_put(ctx, dut.host, {"op": HostOp.WRITE, "slot": slot, "record": record},
                             timeout=_TIMEOUT)
        # Metadata and packets are two streams, driven independently.
        for slot, _packet in traffic:
            await stream_put(ctx, dut.meta, {"slot": slot}, timeout=_TIMEOUT)
        configured.append(True)

    async def packets(ctx):
        beats = [beat for _slot, packet in traffic for beat in beats_from_bytes(packet, BLOCK_BYTES)]
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(seed + 1), gap_prob=gap,
                             timeout=_TIMEOUT)
        sent.append(True)

    async def collect(ctx):
        total = len(expected[False]) + len(expected[True]) + reasons.count("aborted")
        received.extend(await stream_get_packets(ctx, dut.o, total, rng=random.Random(seed),
                                                 stall_prob=stall, timeout=_TIMEOUT))
        # Every packet in and the last inbound one accounted: read every slot back. (When
        # nothing is expected out, the host port may still be writing SAs: wait for that
        # too, or the reads race the writes on the same port.)
        quiet = 0
        while quiet < 10:
            await ctx.tick()
            quiet = quiet + 1 if sent and configured and not ctx.get(dut.inbound.busy) else 0
        for slot in range(slots):
            await stream_put(ctx, dut.host, {"op": HostOp.READ_COUNTERS, "slot": slot},
                             timeout=_TIMEOUT)
            answer = await stream_get(ctx, dut.host_reply, timeout=_TIMEOUT)
            counters[slot] = {name: getattr(answer.counters, name) for name, _ in SA_COUNTERS}
            seqs[slot] = answer.record.seq
        engine_counters.update(no_sa=ctx.get(dut.no_sa), unknown_spi=ctx.get(dut.unknown_spi),
                               unsupported=ctx.get(dut.unsupported),
                               truncated=ctx.get(dut.truncated))

    async def watch_output(ctx):
        cycle = 0
        async for _clk, _rst, valid, ready, beat, inbound, abort in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.o_inbound, dut.o_abort):
            cycle += 1
            if valid and ready and beat.first:
                sources.append(bool(inbound))
            if valid and ready and beat.last:
                done_cycles.append(cycle)
                aborts.append(bool(abort))

    overlap = {"now": 0, "most": 0, "late": 0, "authentic": False}

    async def watch_inbound(ctx):
        decap = dut.decap
        async for (_clk, _rst, job, verdict, settle, authentic, settled, accept) in \
                ctx.tick().sample(decap.job.valid & decap.job.ready,
                                  decap.verdict.valid & decap.verdict.ready,
                                  decap.settle.valid & decap.settle.ready,
                                  decap.settle.payload.authentic,
                                  decap.settled.valid & decap.settled.ready,
                                  decap.settled.payload.accept):
            overlap["now"] += job - verdict
            overlap["most"] = max(overlap["most"], overlap["now"])
            if settle:
                overlap["authentic"] = bool(authentic)
            if settled and overlap["authentic"] and not accept:
                overlap["late"] += 1

    run_sim(dut, host_and_meta, packets, collect,
            processes=[stream_record(dut.events, events), watch_output, watch_inbound])
    outputs = {False: [], True: []}
    for packet, inbound, abort in zip(bytes_from_beats(received, BLOCK_BYTES), sources, aborts,
                                      strict=True):
        if not abort:       # the egress discards an aborted packet
            outputs[inbound].append(packet)
    return EngineRun(reasons, outputs, expected, counters, seqs, engine_counters,
                     [(event.slot, event.event.name.lower()) for event in events],
                     done_cycles, model, overlap["most"], overlap["late"])
