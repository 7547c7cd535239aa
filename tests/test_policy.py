# SPDX-License-Identifier: BSD-2-Clause
"""PolicyTable (Amaranth simulator) against PolicyTableModel: hypothesis rule sets
(IPv4 and IPv6 prefixes of every length around a few addresses, any or one protocol,
port ranges, priorities with ties, DISCARD / BYPASS / PROTECT) and selectors near
them, lookups back to back with back-pressure, rules rewritten between rounds;
prefix lengths past the address refused; the wire-order prefix mask against
Python's ipaddress."""

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from amaranth.lib import data

from espnic.hdl.forwarder.policy import SELECTOR, PolicyAction, PolicyTable, prefix_mask
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put
from espnic.sim.model.forwarder import PolicyTableModel

VALUE = data.StructLayout({"engine": 4, "slot": 12})
BASES = {False: [ipaddress.ip_address("192.0.2.0").packed, ipaddress.ip_address("10.1.2.3").packed],
         True: [ipaddress.ip_address("2001:db8::").packed, ipaddress.ip_address("fe80::1").packed]}


def _address(ipv6, base, noise):
    raw = bytearray(BASES[ipv6][base])
    raw[-1 - noise % len(raw)] ^= 1 << (noise % 8)    # near the base: some prefixes still cover it
    return bytes(raw) + bytes(16 - len(raw))


def _number(octets):
    return int.from_bytes(octets, "little")


@st.composite
def _rule(draw):
    ipv6 = draw(st.booleans())
    limit = 128 if ipv6 else 32
    low, high = sorted(draw(st.lists(st.integers(0, 70), min_size=2, max_size=2)))
    return {
        "valid": draw(st.sampled_from([True, True, True, False])), "ipv6": ipv6, "priority": draw(st.integers(0, 3)),
        "src": _address(ipv6, draw(st.integers(0, 1)), draw(st.integers(0, 40))),
        "src_len": draw(st.integers(0, limit + 1)),
        "dst": _address(ipv6, draw(st.integers(0, 1)), draw(st.integers(0, 40))),
        "dst_len": draw(st.integers(0, limit)),
        "any_proto": draw(st.booleans()), "proto": draw(st.sampled_from([6, 17, 50])),
        "sport_lo": low, "sport_hi": high, "dport_lo": 0, "dport_hi": draw(st.integers(0, 70)),
        "action": draw(st.sampled_from(list(PolicyAction))).value,
        "value": {"engine": draw(st.integers(0, 15)), "slot": draw(st.integers(0, 4095))},
    }


@st.composite
def _selector(draw):
    ipv6 = draw(st.booleans())
    return {"ipv6": ipv6,
            "src": _address(ipv6, draw(st.integers(0, 1)), draw(st.integers(0, 40))),
            "dst": _address(ipv6, draw(st.integers(0, 1)), draw(st.integers(0, 40))),
            "proto": draw(st.sampled_from([6, 17, 50])), "sport": draw(st.integers(0, 70)),
            "dport": draw(st.integers(0, 70))}


def _fields(item):
    return {name: _number(value) if isinstance(value, bytes) else value
            for name, value in item.items()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 7), _rule()), max_size=6),
                                 st.lists(_selector(), min_size=1, max_size=12)),
                       min_size=1, max_size=3),
       stages=st.sampled_from([1, 2, 4]), stall=st.sampled_from([0.0, 0.4]),
       seed=st.integers(0, 2**16))
def test_policy_table_against_the_model(rounds, stages, stall, seed):
    dut = PolicyTable(rules=8, stages=stages, value=VALUE)
    model = PolicyTableModel(rules=8)
    rng = random.Random(seed)
    seen, expected = [], []

    async def bench(ctx):
        for writes, selectors in rounds:
            for index, rule in writes:
                await stream_put(ctx, dut.host, {"index": index, "rule": _fields(rule)},
                                 timeout=50)
                reply = await stream_get(ctx, dut.host_reply, timeout=50)
                assert bool(reply.ok) == model.write(index, rule)
            # All the round's lookups back to back, results taken with back-pressure.
            results = []
            sent = 0
            ctx.set(dut.result.ready, 0)
            while len(results) < len(selectors):
                if sent < len(selectors):
                    ctx.set(dut.lookup.payload, SELECTOR.const(_fields(selectors[sent])))
                ctx.set(dut.lookup.valid, sent < len(selectors))
                ready = not (stall and rng.random() < stall)
                ctx.set(dut.result.ready, ready)
                _clk, _rst, l_ready, r_valid, payload = await ctx.tick().sample(
                    dut.lookup.ready, dut.result.valid, dut.result.payload)
                if sent < len(selectors) and l_ready:
                    sent += 1
                if r_valid and ready:
                    results.append(payload)
            ctx.set(dut.lookup.valid, 0)
            ctx.set(dut.result.ready, 0)
            for selector, result in zip(selectors, results):
                seen.append((result.index, PolicyAction(result.action),
                             {"engine": result.value.engine, "slot": result.value.slot})
                            if result.hit else None)
                expected.append(model.lookup(selector))

    run_sim(dut, bench)
    assert seen == expected


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_policy_priorities_and_ties(stages):
    """Rules that all match: the highest priority wins, the lowest index among equals,
    across stages; a rule rewritten to not match drops out; clearing all is a miss."""
    dut = PolicyTable(rules=8, stages=stages, value=VALUE)
    model = PolicyTableModel(rules=8)
    everything = {"valid": True, "ipv6": False, "priority": 1, "src": bytes(16), "src_len": 0,
                  "dst": bytes(16), "dst_len": 0, "any_proto": True, "proto": 0,
                  "sport_lo": 0, "sport_hi": 65535, "dport_lo": 0, "dport_hi": 65535,
                  "action": PolicyAction.BYPASS.value, "value": {"engine": 0, "slot": 0}}
    key = {"ipv6": False, "src": _address(False, 0, 3), "dst": _address(False, 1, 5),
           "proto": 17, "sport": 500, "dport": 4500}
    steps = [(6, {}), (3, {}), (7, {"priority": 2}), (1, {"priority": 2}),
             (1, {"proto": 6, "any_proto": False}), (7, {"valid": False}),
             (3, {"valid": False}), (6, {"valid": False})]
    seen, expected = [], []

    async def bench(ctx):
        for index, change in steps:
            rule = {**everything, **change, "value": {"engine": index, "slot": index}}
            await stream_put(ctx, dut.host, {"index": index, "rule": _fields(rule)}, timeout=50)
            assert (await stream_get(ctx, dut.host_reply, timeout=50)).ok
            model.write(index, rule)
            await stream_put(ctx, dut.lookup, SELECTOR.const(_fields(key)), timeout=50)
            result = await stream_get(ctx, dut.result, timeout=50)
            seen.append(result.index if result.hit else None)
            expected.append(None if model.lookup(key) is None else model.lookup(key)[0])

    run_sim(dut, bench)
    assert seen == expected == [6, 3, 7, 1, 7, 3, 6, None]


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_policy_latency_and_a_rule_rewritten_under_lookups(stages):
    """Lookups back to back, results always taken: one result a cycle, each `latency`
    cycles after its lookup; a rule rewritten every third cycle meanwhile (its priority,
    action and value all change together): each result is the model's with that rule
    either old or new, never a mix of the two (an old match with the new value)."""
    dut = PolicyTable(rules=8, stages=stages, value=VALUE)
    assert dut.latency == stages + 4
    key = {"ipv6": False, "src": _address(False, 0, 3), "dst": _address(False, 1, 5),
           "proto": 17, "sport": 500, "dport": 4500}
    rule = {"valid": True, "ipv6": False, "src": bytes(16), "src_len": 0, "dst": bytes(16),
            "dst_len": 0, "any_proto": True, "proto": 0, "sport_lo": 0, "sport_hi": 65535,
            "dport_lo": 0, "dport_hi": 65535}
    low = {**rule, "priority": 1, "action": PolicyAction.BYPASS.value,
           "value": {"engine": 2, "slot": 2}}
    # Rule 5 flips between matching with a higher priority and not matching at all.
    versions = [{**rule, "priority": 3, "action": PolicyAction.PROTECT.value,
                 "value": {"engine": 5, "slot": 77}},
                {**rule, "valid": False, "priority": 0, "action": PolicyAction.DISCARD.value,
                 "value": {"engine": 9, "slot": 9}}]
    outcomes = []
    for version in versions:
        model = PolicyTableModel(rules=8)
        model.write(2, low)
        model.write(5, version)
        outcomes.append(model.lookup(key))
    taken, offered, results = [], [], []

    async def bench(ctx):
        for index, written in ((2, low), (5, versions[0])):
            await stream_put(ctx, dut.host, {"index": index, "rule": _fields(written)},
                             timeout=50)
            assert (await stream_get(ctx, dut.host_reply, timeout=50)).ok
        ctx.set(dut.result.ready, 1)
        ctx.set(dut.lookup.payload, SELECTOR.const(_fields(key)))
        for cycle in range(40):
            ctx.set(dut.lookup.valid, cycle < 24)
            write = cycle % 3 == 0 and cycle < 24
            ctx.set(dut.host.valid, write)
            ctx.set(dut.host.payload, {"index": 5, "rule": _fields(versions[cycle // 3 % 2])})
            ctx.set(dut.host_reply.ready, 1)
            _clk, _rst, l_ready, r_valid, payload = await ctx.tick().sample(
                dut.lookup.ready, dut.result.valid, dut.result.payload)
            if cycle < 24 and l_ready:
                taken.append(cycle)
            if r_valid:
                offered.append(cycle)
                results.append((payload.index, PolicyAction(payload.action),
                                {"engine": payload.value.engine, "slot": payload.value.slot})
                               if payload.hit else None)

    run_sim(dut, bench)
    assert taken == list(range(24))
    assert offered == [cycle + dut.latency for cycle in taken]
    assert all(result in outcomes for result in results)
    assert all(outcome in results for outcome in outcomes)      # both versions were seen


def test_prefix_mask_is_the_network_mask():
    for length in range(0, 129, 7):
        network = ipaddress.ip_network(f"::/{length}")
        assert prefix_mask(length) == int.from_bytes(network.netmask.packed, "little")


def test_policy_parameters():
    with pytest.raises(ValueError, match="rules"):
        PolicyTable(rules=10, stages=4, value=VALUE)
    with pytest.raises(ValueError, match="stages"):
        PolicyTable(rules=8, stages=0, value=VALUE)
    with pytest.raises(TypeError, match="value"):
        PolicyTable(rules=8, value=3)
