# SPDX-License-Identifier: BSD-2-Clause
"""ReplayWindowUnit (hdl/engine/replay.py) against the reference ReplayWindow (sim/model/replay.py).

Every scenario is planned on the model in program order (check N, authenticate N,
update N, check N+1, ...) and then run on the gateware in Amaranth's simulator:

* in program order, operations back to back with random gaps and result stalls:
  every check result, every commit result and the final storage equal the model's;
* as an engine that checks up to 4 packets ahead of their commits (the hazard
  contract in the module docstring): every packet's outcome equals the model's
  in program order, and re-runs happen only with ESN;
* the latency and throughput the docstring states, cycle by cycle.
"""

import random
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event as note_event, given, settings, strategies as st

from espnic.hdl.engine.replay import (
    ReplayVerdict, ReplayWindowUnit, clear_requests, load_requests, ring_bits, ring_words,
    storage_from_window, window_from_storage,
)
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_get_n, stream_put
from espnic.sim.model.replay import ReplayWindow

MASK32, MASK64 = 2**32 - 1, 2**64 - 1
TIMEOUT = 50


@dataclass
class SlotConfig:
    esn: bool
    size: int
    top: int
    bitmap: int


@dataclass
class Packet:
    slot: int
    seq_lo: int
    forged: bool
    intended: int | None     # the number the sender used; the ICV verifies only with it

    def auth_ok(self, full):
        return not self.forged and full == self.intended


@dataclass
class Clear:
    slot: int


def model_verdict(window, full):
    if full is None:
        return ReplayVerdict.NO_FIT
    if full == 0:
        return ReplayVerdict.ZERO
    if full > window.top:
        return ReplayVerdict.OK
    if window.top - full >= window.size:
        return ReplayVerdict.LEFT
    return ReplayVerdict.DUPLICATE if (window.bitmap >> (window.top - full)) & 1 else ReplayVerdict.OK


def interesting_tops(esn, size):
    tops = [0, 1, size - 1, size, size + 1, 5 * size + 7, MASK32 - size, MASK32 - 1, MASK32]
    if esn:
        tops += [2**32, 2**32 + 1, 2**32 + size - 2, 2**32 + size, 2**33 - 3,
                 0x1234_5678_9abc_def0, MASK64 - size, MASK64]
    return tops


@st.composite
def scenarios(draw, window, slots=3, max_events=60):
    configs = []
    for _ in range(slots):
        esn = draw(st.booleans())
        sizes = sorted(s for s in {window, window - 32, 64, 96, window // 2 + 1, 1} if s <= window)
        size = draw(st.sampled_from(sizes) | st.integers(1, window))
        top = draw(st.sampled_from(interesting_tops(esn, size)) |
                   st.integers(0, MASK64 if esn else MASK32))
        bitmap = draw(st.sampled_from([0, (1 << size) - 1]) | st.integers(0, (1 << size) - 1))
        if top == 0:
            bitmap = 0
        configs.append(SlotConfig(esn, size, top, bitmap))

    models = [ReplayWindow(c.size, c.top, c.bitmap, esn=c.esn) for c in configs]
    seen = [[] for _ in range(slots)]
    events = []
    for _ in range(draw(st.integers(1, max_events))):
        slot = draw(st.integers(0, slots - 1))
        model = models[slot]
        if draw(st.integers(0, 40)) == 0:
            events.append(Clear(slot))
            models[slot] = ReplayWindow(model.size, 0, 0, esn=model.esn)
            continue
        top, size = model.top, model.size
        kind = draw(st.sampled_from(["next", "ahead", "behind", "edge", "jump", "repeat",
                                     "huge", "zero", "wrap"]))
        if kind == "next":
            seq = top + 1
        elif kind == "ahead":
            seq = top + draw(st.integers(1, 3 * size))
        elif kind == "behind":
            seq = top - draw(st.integers(0, size + 40))
        elif kind == "edge":     # window-size and ring-size jumps, both ways
            jump = draw(st.sampled_from([size, ring_bits(window)])) + draw(st.integers(-2, 2))
            seq = top + jump * draw(st.sampled_from([1, -1]))
        elif kind == "jump":
            seq = top + draw(st.integers(1, 2**33))
        elif kind == "repeat" and seen[slot]:
            seq = draw(st.sampled_from(seen[slot]))
        elif kind == "huge":
            seq = draw(st.integers(0, MASK32))
        elif kind == "wrap":
            seq = draw(st.integers(-3, 3)) + 2**32 * draw(st.integers(0, 2))
        else:
            seq = 0
        seq_lo = seq & MASK32
        seen[slot].append(seq_lo)
        full = model.reconstruct(seq_lo)
        forged = draw(st.integers(0, 5)) == 0
        intended = full if full is not None else seq_lo
        if model.esn and draw(st.integers(0, 10)) == 0:   # a sender in another 2^32 block
            intended = (intended + draw(st.sampled_from([2**32, -2**32]))) & MASK64
        events.append(Packet(slot, seq_lo, forged, intended))
        if model.check(full) and not forged and full == intended:
            model.update(full)
    return configs, events


def make_unit(window, slots=3, read_register=False):
    return ReplayWindowUnit(slots=slots, window=window, read_register=read_register)


def load_all(configs, window):
    return [req for slot, c in enumerate(configs)
            for req in load_requests(slot, c.top, c.bitmap, c.size, window=window)]


async def read_storage(ctx, unit, slot, size):
    n = unit.ring_words
    head = ctx.get(unit.heads[slot])
    words = [ctx.get(unit.ring[slot * n + i]) for i in range(n)]
    head = {"top": head.top, "word": head.word, "valid": head.valid}
    return window_from_storage(head, words, size, window=unit.window)


def run_program_order(window, configs, events, seed, read_register=False):
    """Operations in program order, back to back, with gaps and result stalls."""
    unit = make_unit(window, len(configs), read_register)
    models = [ReplayWindow(c.size, c.top, c.bitmap, esn=c.esn) for c in configs]
    ops, checks, updates = [], [], []    # (stream name, payload); expected results
    for req in load_all(configs, window):
        ops.append(("load", req))
    for event in events:
        model = models[event.slot]
        if isinstance(event, Clear):
            ops += [("load", req) for req in clear_requests(event.slot, window=window)]
            models[event.slot] = ReplayWindow(model.size, 0, 0, esn=model.esn)
            continue
        common = {"slot": event.slot, "esn": int(model.esn), "size": model.size}
        full = model.reconstruct(event.seq_lo)
        verdict = model_verdict(model, full)
        ops.append(("check", {**common, "seq_lo": event.seq_lo}))
        checks.append((verdict, event.seq_lo if full is None else full))
        if verdict != ReplayVerdict.OK:
            continue
        auth = event.auth_ok(full)
        ops.append(("update", {**common, "seq": full, "authenticated": int(auth)}))
        updates.append((verdict, full, int(auth)))
        if auth:
            model.update(full)

    for verdict in sorted({v.name for v, _ in checks}):
        note_event(f"check verdict {verdict}")
    note_event(f"checks: {len(checks) // 10 * 10}+")
    if any(c.esn for c in configs):
        note_event("ESN slot")
    rng = random.Random(seed)
    got = {}

    async def driver(ctx):
        for name, payload in ops:
            while rng.random() < 0.2:
                await ctx.tick()
            await stream_put(ctx, getattr(unit, name), payload, timeout=TIMEOUT)
        while "checks" not in got or "updates" not in got:
            await ctx.tick()
        for _ in range(3):      # the last load's write
            await ctx.tick()
        got["storage"] = [await read_storage(ctx, unit, slot, m.size)
                          for slot, m in enumerate(models)]

    async def check_sink(ctx):
        got["checks"] = await stream_get_n(ctx, unit.check_result, len(checks),
                                           rng=random.Random(seed + 1), stall_prob=0.3,
                                           timeout=TIMEOUT * 10)

    async def update_sink(ctx):
        got["updates"] = await stream_get_n(ctx, unit.update_result, len(updates),
                                            rng=random.Random(seed + 2), stall_prob=0.3,
                                            timeout=TIMEOUT * 10)

    run_sim(unit, driver, check_sink, update_sink)
    assert [(r.verdict, r.seq) for r in got["checks"]] == checks
    assert [(r.verdict, r.seq, r.written) for r in got["updates"]] == updates
    assert got["storage"] == [(m.top, m.bitmap) for m in models]


def reference_outcomes(configs, events):
    models = [ReplayWindow(c.size, c.top, c.bitmap, esn=c.esn) for c in configs]
    outcomes = []
    for event in events:
        model = models[event.slot]
        if isinstance(event, Clear):
            models[event.slot] = ReplayWindow(model.size, 0, 0, esn=model.esn)
            continue
        full = model.reconstruct(event.seq_lo)
        if not model.check(full):
            outcomes.append("replay")
        elif event.auth_ok(full):
            model.update(full)
            outcomes.append("accept")
        else:
            outcomes.append("auth_fail")
    return outcomes, models


def run_overlapped(window, configs, events, depth, read_register=False):
    """An engine that checks up to `depth` packets ahead of their commits."""
    unit = make_unit(window, len(configs), read_register)
    expected, models = reference_outcomes(configs, events)
    got = {}

    async def bench(ctx):
        async def op(name, payload):
            await stream_put(ctx, getattr(unit, name), payload, timeout=TIMEOUT)
            if name != "load":
                return await stream_get(ctx, getattr(unit, f"{name}_result"), timeout=TIMEOUT)

        for req in load_all(configs, window):
            await op("load", req)
        sizes_esn = [(c.size, int(c.esn)) for c in configs]

        def common(packet):
            size, esn = sizes_esn[packet.slot]
            return {"slot": packet.slot, "esn": esn, "size": size}

        async def check(packet):
            return await op("check", {**common(packet), "seq_lo": packet.seq_lo})

        outcomes, reruns = [], 0
        in_flight = deque()

        async def commit_oldest():
            nonlocal reruns
            packet, pre = in_flight.popleft()
            while True:
                auth = pre.verdict == ReplayVerdict.OK and packet.auth_ok(pre.seq)
                res = await op("update", {**common(packet), "seq": pre.seq,
                                          "authenticated": int(auth)})
                if res.verdict != ReplayVerdict.OK:
                    assert not res.written
                    outcomes.append("replay")
                    return
                if res.seq == pre.seq and pre.verdict == ReplayVerdict.OK:
                    assert res.written == auth
                    outcomes.append("accept" if auth else "auth_fail")
                    return
                reruns += 1
                pre = await check(packet)

        for event in events:
            if isinstance(event, Clear):
                while in_flight:    # contract 3: no load with packets in flight
                    await commit_oldest()
                for req in clear_requests(event.slot, window=window):
                    await op("load", req)
                continue
            in_flight.append((event, await check(event)))
            if len(in_flight) >= depth:
                await commit_oldest()
        while in_flight:
            await commit_oldest()
        got["outcomes"], got["reruns"] = outcomes, reruns
        for _ in range(3):
            await ctx.tick()
        got["storage"] = [await read_storage(ctx, unit, slot, m.size)
                          for slot, m in enumerate(models)]

    run_sim(unit, bench)
    assert got["outcomes"] == expected
    assert got["storage"] == [(m.top, m.bitmap) for m in models]
    if not any(c.esn for c in configs):
        assert got["reruns"] == 0
    return got["reruns"], expected


def sim_settings(examples):
    # Each example builds a simulator: the counts keep the file under a minute.
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@sim_settings(40)
@given(scenario=scenarios(window=64), seed=st.integers(0, 2**16), read_register=st.booleans())
def test_program_order_window_64(scenario, seed, read_register):
    run_program_order(64, *scenario, seed, read_register)


@sim_settings(25)
@given(scenario=scenarios(window=128), seed=st.integers(0, 2**16), read_register=st.booleans())
def test_program_order_window_128(scenario, seed, read_register):
    run_program_order(128, *scenario, seed, read_register)


@sim_settings(5)
@given(scenario=scenarios(window=1024, max_events=40), seed=st.integers(0, 2**16))
def test_program_order_window_1024(scenario, seed):
    run_program_order(1024, *scenario, seed)


@sim_settings(40)
@given(scenario=scenarios(window=96), depth=st.integers(1, 4), read_register=st.booleans())
def test_overlapped_engine_matches_program_order(scenario, depth, read_register):
    reruns, outcomes = run_overlapped(96, *scenario, depth, read_register)
    note_event(f"re-runs: {min(reruns, 3)}")
    for outcome in sorted(set(outcomes)):
        note_event(f"outcome {outcome}")


def test_overlapped_rerun_on_esn_reinterpretation():
    # Packet 2 is checked while packet 1 (a jump past the 2^32 boundary) is being
    # authenticated: checked against top 100 it is 2^31 + 5 in block 0; after
    # packet 1, program order reads it in block 1 (2^32 + 2^31 + 5). The commit says
    # so, the engine re-runs it, and the outcome is the model's.
    configs = [SlotConfig(esn=True, size=64, top=100, bitmap=1)]
    p1 = Packet(0, 2**31 + 2**30, False, 2**31 + 2**30)
    p2 = Packet(0, 2**31 + 5, False, 2**32 + 2**31 + 5)
    p3 = Packet(0, 2**31 + 6, False, 2**32 + 2**31 + 6)
    # p1 at 2^31 + 2^30 puts the window's bottom above 2^31 + 5: block 1 for p2.
    reruns, outcomes = run_overlapped(64, configs, [p1, p2, p3], depth=3)
    assert (reruns, outcomes) == (2, ["accept"] * 3)


@settings(max_examples=200, deadline=None)
@given(window=st.sampled_from([64, 96, 128, 1024]), data=st.data())
def test_storage_conversion_round_trip(window, data):
    size = data.draw(st.integers(1, window))
    top = data.draw(st.sampled_from([0, 1, size, 2**32 - 1, 2**32, MASK64]) |
                    st.integers(0, MASK64))
    bitmap = data.draw(st.integers(0, 2**window - 1))
    head, words = storage_from_window(top, bitmap, size, window=window)
    assert len(words) == ring_words(window)
    assert window_from_storage(head, words, size, window=window) == (top, bitmap & ((1 << size) - 1))
    # The storage answers like the model: the bit of every number in the window.
    model = ReplayWindow(size, top, bitmap)
    for offset in {0, size - 1, data.draw(st.integers(0, size - 1))}:
        seq = top - offset
        if seq <= 0:
            continue
        block = seq >> 5
        word = head["word"] if block == top >> 5 else \
            words[block % len(words)] * ((head["valid"] >> (block % len(words))) & 1)
        assert bool((word >> (seq & 31)) & 1) == (not model.check(seq))


def test_load_requests_zeroize():
    requests = clear_requests(5, window=128)
    assert len(requests) == ring_words(128) + 1
    assert all(r["slot"] == 5 and r["word"] == 0 and r["valid"] == 0 and r["top"] == 0
               for r in requests)


@pytest.mark.parametrize("kwargs, name", [
    ({"slots": 0}, "slots"), ({"slots": -1}, "slots"), ({"slots": 2.0}, "slots"),
    ({"window": 32}, "window"), ({"window": 48}, "window"), ({"window": 100}, "window"),
    ({"window": 1024.0}, "window"), ({"window": 2**16}, "window"),
    ({"read_register": 1}, "read_register"),
])
def test_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        ReplayWindowUnit(**kwargs)


def test_geometry():
    assert [(w, ring_bits(w), ring_words(w)) for w in (64, 96, 1024, 65504)] == \
        [(64, 64, 2), (96, 128, 4), (1024, 1024, 32), (65504, 65536, 2048)]
    with pytest.raises(ValueError, match="size"):
        storage_from_window(0, 0, 65, window=64)


@pytest.mark.parametrize("read_register", [False, True])
def test_latency_and_throughput(read_register):
    # One operation per cycle across slots; a result 3 (4) cycles after its request;
    # on one slot, an operation after an update waits for its write (a check and an
    # update every 4 (5) cycles).
    unit = ReplayWindowUnit(slots=8, window=64, read_register=read_register)
    extra = int(read_register)
    cycle = [0]
    accepted, offered_results = [], []

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def driver(ctx):
        common = {"esn": 0, "size": 64}
        ops = [("check", {**common, "slot": s, "seq_lo": 5}) for s in range(8)]
        for _ in range(3):
            ops += [("check", {**common, "slot": 0, "seq_lo": 9}),
                    ("update", {**common, "slot": 0, "seq": 9, "authenticated": 0})]
        for name, payload in ops:
            await stream_put(ctx, getattr(unit, name), payload, timeout=TIMEOUT)
            accepted.append(cycle[0])

    async def sink(ctx):
        ctx.set(unit.check_result.ready, 1)
        ctx.set(unit.update_result.ready, 1)
        for _ in range(40):
            _, _, check_valid, update_valid = await ctx.tick().sample(
                unit.check_result.valid, unit.update_result.valid)
            if check_valid or update_valid:
                offered_results.append(cycle[0])

    run_sim(unit, driver, sink, processes=[clock])
    steps = [b - a for a, b in zip(accepted, accepted[1:])]
    assert steps[:7] == [1] * 7                  # eight slots, eight cycles
    wait = 3 + extra
    assert steps[8:] == [1, wait, 1, wait, 1]    # check, update, (2 or 3 waits) check, ...
    assert offered_results[0] - accepted[0] == unit.latency == 3 + extra
