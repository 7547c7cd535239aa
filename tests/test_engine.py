# SPDX-License-Identifier: BSD-2-Clause
"""The ESP engine end to end (Amaranth simulator): host writes SAs, packets with
their slot go in, ESP packets come out; the reference model is the oracle for
every output byte, every drop, every counter and every event."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.hdl.engine.engine import EspEngine
from espnic.hdl.engine.sa import SA_COUNTERS
from espnic.hdl.engine.sa_table import HostOp, control_layout
from espnic.hdl.gcm.layouts import BLOCK_BYTES
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import (run_sim, stream_get, stream_get_packets, stream_put,
                                     stream_put_all, stream_record)
from espnic.sim.model import EspModel
from tests.esp_cases import config, plain_packet

SLOTS = 4
_TIMEOUT = 5_000
_NO_LIMITS = {"packets_soft": 0, "packets_hard": 0, "bytes_soft": 0, "bytes_hard": 0}


def _run(sa_configs, traffic, *, profile="compact", stall=0.0, seed=0):
    """Install `sa_configs` (slot -> SaConfig), send `traffic` ([(slot, packet)]);
    compare everything with the model."""
    model = EspModel(slots=SLOTS)
    dut = EspEngine(profile=profile, slots=SLOTS)
    control = control_layout(model.layout["replay_bitmap"].width)
    expected = []
    for slot, cfg in sa_configs.items():
        model.install(slot, cfg)
    for slot, packet in traffic:
        output, _reason = model.process(slot, packet)
        if output is not None:
            expected.append(output)
    received, events, counters = [], [], {}

    async def host_and_packets(ctx):
        for slot, cfg in sa_configs.items():
            full = cfg.to_record(model.layout)
            await stream_put(ctx, dut.host, {"op": HostOp.WRITE, "slot": slot, "record":
                                             {name: getattr(full, name) for name, _ in control}},
                             timeout=_TIMEOUT)
        # Metadata and packets are two streams, driven independently.
        for slot, _packet in traffic:
            await stream_put(ctx, dut.meta, {"slot": slot}, timeout=_TIMEOUT)

    async def packets(ctx):
        beats = [beat for _slot, packet in traffic for beat in beats_from_bytes(packet, BLOCK_BYTES)]
        await stream_put_all(ctx, dut.i, beats, timeout=_TIMEOUT)

    async def collect(ctx):
        received.extend(await stream_get_packets(ctx, dut.o, len(expected),
                                                 rng=random.Random(seed), stall_prob=stall,
                                                 timeout=_TIMEOUT))
        # Let the last accounting land, then read every slot's counters.
        await ctx.tick().repeat(20)
        for slot in range(SLOTS):
            await stream_put(ctx, dut.host, {"op": HostOp.READ_COUNTERS, "slot": slot},
                             timeout=_TIMEOUT)
            answer = await stream_get(ctx, dut.host_reply, timeout=_TIMEOUT)
            counters[slot] = {name: getattr(answer.counters, name) for name, _ in SA_COUNTERS}
        counters["no_sa"] = ctx.get(dut.no_sa)

    run_sim(dut, host_and_packets, packets, collect, processes=[stream_record(dut.events, events)])
    assert bytes_from_beats(received, BLOCK_BYTES) == expected
    for slot in range(SLOTS):
        assert counters[slot] == model.counters(slot), f"slot {slot}"
    assert counters["no_sa"] == model.engine_counters["no_sa"]
    assert [(event.slot, event.event.name.lower()) for event in events] == model.events


def test_engine_counts_and_drops_like_the_model():
    """Interleaved SAs; one runs out of sequence numbers, one reaches its packet
    lifetime, one slot is empty: outputs, drops, counters and events as the model."""
    sa_configs = {
        0: config("out", version=4, seq=2**32 - 3, lifetime=_NO_LIMITS),
        1: config("out", version=6, mode="transport", esn=True, spi=0x2000,
                  lifetime={**_NO_LIMITS, "packets_soft": 2, "packets_hard": 4}),
        2: config("out", version=4, natt=True, spi=0x3000, lifetime=_NO_LIMITS),
    }
    traffic = [(slot, plain_packet(4 if slot != 1 else 6, size))
               for size in (0, 40, 100) for slot in (0, 1, 2, 3)]
    traffic += [(1, plain_packet(6, 10)), (0, plain_packet(4, 1)), (1, plain_packet(6, 2))]
    _run(sa_configs, traffic, stall=0.3)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.tuples(st.integers(0, SLOTS - 1), st.integers(0, 700)),
                      min_size=1, max_size=10),
       stall=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_engine_random_traffic(sizes, stall, seed):
    sa_configs = {slot: config("out", version=4, spi=0x100 * (slot + 1), esn=bool(slot & 1),
                               mode="transport" if slot == 2 else "tunnel",
                               lifetime={**_NO_LIMITS, "bytes_soft": 300, "bytes_hard": 2000})
                  for slot in range(SLOTS - 1)}
    traffic = [(slot, plain_packet(4, size)) for slot, size in sizes]
    _run(sa_configs, traffic, stall=stall, seed=seed)


def test_engine_fast_profile():
    sa_configs = {0: config("out", version=4, lifetime=_NO_LIMITS)}
    traffic = [(0, plain_packet(4, size)) for size in (0, 64, 1400, 5)] + [(1, plain_packet(4, 3))]
    _run(sa_configs, traffic, profile="fast")
