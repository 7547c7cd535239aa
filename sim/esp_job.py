# SPDX-License-Identifier: BSD-2-Clause
"""Run ESP gateware blocks on packets, with the reference model as the oracle.

:func:`run_encap` sends packets through :class:`EspEncap` in Amaranth's
simulator, with the jobs the SA table would hand over (taken from an
:class:`EspModel` holding the same SA), and returns what came out, what the
model says should have, and the cycle at which each packet's last beat left.
Tests assert on it; ``bench/engine.py`` turns the cycle stamps into figures.
"""

import random
from dataclasses import dataclass

from ..hdl.engine.encap import ENCAP_JOB, EspEncap
from ..hdl.engine.sa import SaConfig
from ..hdl.gcm.layouts import BLOCK_BYTES
from ..hdl.packet import beats_from_bytes, bytes_from_beats
from .amaranth_sim import run_sim, stream_get_packets, stream_put, stream_put_all
from .model import EspModel

__all__ = ["EncapRun", "encap_job", "run_encap"]

_TIMEOUT = 20_000   # cycles without progress before a run is declared hung


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
