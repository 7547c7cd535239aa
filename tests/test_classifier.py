# SPDX-License-Identifier: BSD-2-Clause
"""Classifier (Amaranth simulator) against sim/model/forwarder.py: classify, packet
for packet: inbound ESP and UDP-ESP by SPI (hits, misses, the same SPI to another
destination), outbound by policy (PROTECT, BYPASS, DISCARD, no rule), malformed
packets, misses dropped or sent to the host; the counters; every packet's bytes
unchanged behind its decision; back-pressure on both outputs."""

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.hdl.forwarder.classifier import Classifier, Decision
from espnic.hdl.forwarder.policy import PolicyAction
from espnic.hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put, stream_put_all
from espnic.sim.model.forwarder import (PolicyTableModel, SpiTableModel, classify, parse,
                                        spi_key)
from tests.test_parser import _packet

ENGINES, SLOTS = 4, 16
DST4 = ipaddress.ip_address("198.51.100.2").packed + bytes(12)


def _rule(priority, action, *, dst_len=0, proto=None, dport=(0, 65535), engine=0, slot=0):
    return {"valid": True, "ipv6": False, "priority": priority, "src": bytes(16), "src_len": 0,
            "dst": DST4, "dst_len": dst_len, "any_proto": proto is None, "proto": proto or 0,
            "sport_lo": 0, "sport_hi": 65535, "dport_lo": dport[0], "dport_hi": dport[1],
            "action": action.value, "value": {"engine": engine, "slot": slot}}


RULES = [
    _rule(1, PolicyAction.PROTECT, dst_len=24, engine=2, slot=5),     # 198.51.100.0/24
    _rule(3, PolicyAction.BYPASS, proto=17, dport=(5353, 5353)),      # mDNS goes around
    _rule(2, PolicyAction.DISCARD, proto=6),                          # no TCP at all
    _rule(0, PolicyAction.PROTECT, dst_len=0, engine=1, slot=9),      # IPv4 default
]


def _fields(item):
    return {name: int.from_bytes(value, "little") if isinstance(value, bytes) else value
            for name, value in item.items()}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(st.sampled_from(["esp", "udp_esp", "udp_esp_d", "ike", "udp",
                                                 "tcp", "icmp"]),
                                st.sampled_from([4, 6]), st.integers(0, 3), st.integers(0, 60),
                                st.sampled_from([0x100, 0x101, 0x102, 0x999]),
                                st.sampled_from(["whole", "whole", "bad"])),
                      min_size=1, max_size=10),
       miss_to_host=st.booleans(), stall=st.sampled_from([0.0, 0.4]),
       seed=st.integers(0, 2**16))
def test_classifier_against_the_model(cases, miss_to_host, stall, seed):
    packets = []
    for kind, version, options, size, spi, damage in cases:
        packet = _packet(kind, version, 4 * options, size, spi)
        if damage == "bad":
            packet = packet[:10] + bytes([packet[10] ^ 0x40]) + packet[11:]
        packets.append(packet)
    spis, policy = SpiTableModel(entries=64, ways=4), PolicyTableModel(rules=8)
    # SPIs 0x100 and 0x101 are known for their destinations, 0x102 only for another one.
    entries = []
    for kind, version in (("esp", 4), ("udp_esp", 4), ("esp", 6), ("udp_esp", 6)):
        for spi, engine in ((0x100, 1), (0x101, 3)):
            entries.append((spi_key(parse(_packet(kind, version, 0, 0, spi))), engine, spi & 15))
    entries.append((spi_key(parse(_packet("esp", 4, 0, 0, 0x102))) ^ 1 << 40, 0, 2))
    dut = Classifier(engines=ENGINES, slots=SLOTS, rules=8, stages=2)
    decisions, beats = [], []
    rng = random.Random(seed)

    async def host_then_traffic(ctx):
        ctx.set(dut.miss_to_host, miss_to_host)
        for key, engine, slot in entries:
            value = {"engine": engine, "slot": slot}
            await stream_put(ctx, dut.spi_host, {"op": SpiOp.INSERT, "key": SPI_KEY.from_bits(key),
                                                 "value": value}, timeout=50)
            reply = await stream_get(ctx, dut.spi_reply, timeout=50)
            assert reply.status == spis.insert(key, value) == SpiStatus.OK
        for index, rule in enumerate(RULES):
            await stream_put(ctx, dut.policy_host, {"index": index, "rule": _fields(rule)},
                             timeout=50)
            assert (await stream_get(ctx, dut.policy_reply, timeout=50)).ok
            policy.write(index, rule)
        stream = [beat for packet in packets for beat in beats_from_bytes(packet, 16)]
        await stream_put_all(ctx, dut.i, stream, rng=rng, gap_prob=stall / 2, timeout=5000)

    async def collect(ctx):
        total = sum(len(beats_from_bytes(packet, 16)) for packet in packets)
        while len(beats) < total:
            d_ready = not (stall and rng.random() < stall)
            o_ready = not (stall and rng.random() < stall)
            ctx.set(dut.decision.ready, d_ready)
            ctx.set(dut.o.ready, o_ready)
            _clk, _rst, d_valid, decision, o_valid, beat = await ctx.tick().sample(
                dut.decision.valid, dut.decision.payload, dut.o.valid, dut.o.payload)
            if d_valid and d_ready:
                decisions.append(decision)
            if o_valid and o_ready:
                assert not beat.first or len(decisions) == len(bytes_from_beats(beats, 16)) + 1
                beats.append(beat)

    counters = {}

    async def read_counters(ctx):
        async for _ in ctx.tick():
            for name in ("malformed", "spi_miss", "policy_miss", "discarded"):
                counters[name] = ctx.get(getattr(dut, name))

    run_sim(dut, host_then_traffic, collect, background=[read_counters])
    assert bytes_from_beats(beats, 16) == packets
    expected_counts = dict.fromkeys(counters, 0)
    for decision, packet in zip(decisions, packets, strict=True):
        want, inbound, target, counter = classify(parse(packet), spis, policy,
                                                  miss_to_host=miss_to_host)
        assert decision.decision == want, packet.hex()
        if want == Decision.ENGINE:
            assert bool(decision.inbound) == inbound
            assert {"engine": decision.target.engine, "slot": decision.target.slot} == target
        if counter:
            expected_counts[counter] += 1
    assert counters == expected_counts


def test_classifier_parameters():
    with pytest.raises(ValueError, match="engines"):
        Classifier(engines=0, slots=16)
    with pytest.raises(ValueError, match="slots"):
        Classifier(engines=2, slots=12)
