# SPDX-License-Identifier: BSD-2-Clause
"""ReplayWindowUnit (hdl/engine/replay.py) against the reference ReplayWindow (sim/model/replay.py).

Every scenario is planned on the model in program order (check N, authenticate N,
update N, check N+1, ...) and then run on the gateware in Amaranth's simulator:

* in program order, operations back to back with random gaps and result stalls:
  every check result, every commit result and the final storage equal the model's;
* as an engine that checks up to 4 packets ahead of their commits (the hazard
  contract in the module docstring): every packet's outcome equals the model's
  in program order, and re-runs happen only with ESN;
* with reads of whole windows and of head rows between them, back to back with the
  updates before them still in flight: every read gives the model's window at its
  place in program order (all zeros for an empty slot);
* live migration: a slot's rows read from one unit and loaded into a slot of another
  (or of the same unit) carry its window: from then on both answer every check and
  update as the model does, and their storage is the model's;
* the latency, throughput and read priority the docstring states, cycle by cycle.
"""

import random
from collections import deque
from dataclasses import dataclass

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data
from hypothesis import HealthCheck, event as note_event, given, settings, strategies as st

from espnic.hdl.engine.replay import (
    ReplayVerdict, ReplayWindowUnit, clear_requests, load_requests, read_request_layout,
    read_requests, read_result_layout, ring_bits, ring_words, storage_from_window,
    window_from_storage,
)
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_get_n, stream_put, stream_put_all
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
        events.append(draw_packet(draw, window, model, slot, seen[slot]))
    return configs, events


def draw_packet(draw, window, model, slot, seen):
    """A packet for `model`'s slot, numbered around its window; `model` takes it if
    it is new and authentic."""
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
    elif kind == "repeat" and seen:
        seq = draw(st.sampled_from(seen))
    elif kind == "huge":
        seq = draw(st.integers(0, MASK32))
    elif kind == "wrap":
        seq = draw(st.integers(-3, 3)) + 2**32 * draw(st.integers(0, 2))
    else:
        seq = 0
    seq_lo = seq & MASK32
    seen.append(seq_lo)
    full = model.reconstruct(seq_lo)
    forged = draw(st.integers(0, 5)) == 0
    intended = full if full is not None else seq_lo
    if model.esn and draw(st.integers(0, 10)) == 0:   # a sender in another 2^32 block
        intended = (intended + draw(st.sampled_from([2**32, -2**32]))) & MASK64
    if model.check(full) and not forged and full == intended:
        model.update(full)
    return Packet(slot, seq_lo, forged, intended)


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


@dataclass
class WindowRead:
    """Expected: the rows read (head, then ring words 0..N-1) hold the model's window."""
    slot: int
    size: int
    top: int
    bitmap: int


@dataclass
class HeadRead:
    """Expected: a head row with the model's top."""
    top: int


def plan_program_order(models, events, window, *, reads=None):
    """The operations of `events` in program order on `models` (advanced), and the
    expected check and update results. With `reads` (a random.Random), reads of
    whole windows and of head rows are placed among them: the ops and the expected
    reads come as (ops, checks, updates, expected_reads, read_order)."""
    ops, checks, updates, expected_reads = [], [], [], []
    n = ring_words(window)

    def read_window(slot):
        order = read_requests(slot, window=window)
        reads.shuffle(order)         # row order within a window does not matter
        model = models[slot]
        expected_reads.append((WindowRead(slot, model.size, model.top, model.bitmap),
                               [req["index"] if not req["head"] else n for req in order]))
        ops.extend(("read", req) for req in order)

    for event in events:
        model = models[event.slot]
        if isinstance(event, Clear):
            ops += [("load", req) for req in clear_requests(event.slot, window=window)]
            models[event.slot] = ReplayWindow(model.size, 0, 0, esn=model.esn)
            if reads is not None and reads.random() < 0.5:
                read_window(event.slot)
            continue
        common = {"slot": event.slot, "esn": int(model.esn), "size": model.size}
        full = model.reconstruct(event.seq_lo)
        verdict = model_verdict(model, full)
        ops.append(("check", {**common, "seq_lo": event.seq_lo}))
        checks.append((verdict, event.seq_lo if full is None else full))
        if verdict == ReplayVerdict.OK:
            auth = event.auth_ok(full)
            ops.append(("update", {**common, "seq": full, "authenticated": int(auth)}))
            updates.append((verdict, full, int(auth)))
            if auth:
                model.update(full)
        if reads is None:
            continue
        # Right behind the update, whose write is still in flight.
        if reads.random() < 0.3:
            read_window(event.slot)
        if reads.random() < 0.2:
            slot = event.slot if reads.random() < 0.5 else reads.randrange(len(models))
            ops.append(("read", {"slot": slot, "head": 1, "index": reads.randrange(n)}))
            expected_reads.append((HeadRead(models[slot].top), [n]))
    if reads is None:
        return ops, checks, updates
    return ops, checks, updates, expected_reads


def check_reads(expected_reads, results, window):
    """Each expected read against its rows of `results` (in read order)."""
    n = ring_words(window)
    results = list(results)
    for expected, order in expected_reads:
        rows = dict(zip(order, results[:len(order)]))
        del results[:len(order)]
        for index, row in rows.items():
            if index < n:        # a ring read leaves top and valid zero
                assert (row.top, row.valid) == (0, 0)
        if isinstance(expected, HeadRead):
            assert rows[n].top == expected.top
            continue
        head = {"top": rows[n].top, "word": rows[n].word, "valid": rows[n].valid}
        words = [rows[i].word for i in range(n)]
        assert window_from_storage(head, words, expected.size, window=window) == \
            (expected.top, expected.bitmap)
        if expected.top == 0:    # an empty (cleared or new) slot reads as zeros
            note_event("read of an empty slot")
            assert head == {"top": 0, "word": 0, "valid": 0} and words == [0] * n
    assert not results


def run_program_order(window, configs, events, seed, read_register=False, reads=False):
    """Operations in program order, back to back, with gaps and result stalls
    (and, with `reads`, reads among them)."""
    unit = make_unit(window, len(configs), read_register)
    models = [ReplayWindow(c.size, c.top, c.bitmap, esn=c.esn) for c in configs]
    ops = [("load", req) for req in load_all(configs, window)]
    planned = plan_program_order(models, events, window,
                                 reads=random.Random(seed + 3) if reads else None)
    ops += planned[0]
    checks, updates = planned[1:3]
    expected_reads = planned[3] if reads else []
    read_count = sum(len(order) for _, order in expected_reads)

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
        while not {"checks", "updates", "reads"} <= got.keys():
            await ctx.tick()
        for _ in range(3):      # the last load's write
            await ctx.tick()
        got["storage"] = [await read_storage(ctx, unit, slot, m.size)
                          for slot, m in enumerate(models)]

    def sink(name, stream, count, offset):
        # Another stream's operations (clears, whole-window reads) may all come
        # between two results of this one.
        async def process(ctx):
            got[name] = await stream_get_n(ctx, stream, count, rng=random.Random(seed + offset),
                                           stall_prob=0.3, timeout=TIMEOUT * 10 + 4 * len(ops))
        return process

    run_sim(unit, driver, sink("checks", unit.check_result, len(checks), 1),
            sink("updates", unit.update_result, len(updates), 2),
            sink("reads", unit.read_result, read_count, 4))
    assert [(r.verdict, r.seq) for r in got["checks"]] == checks
    assert [(r.verdict, r.seq, r.written) for r in got["updates"]] == updates
    check_reads(expected_reads, got["reads"], window)
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


class UnitPair(Elaboratable):
    """The source and the target unit of a migration in one simulation."""

    def __init__(self, source, target):
        self.source, self.target = source, target

    def elaborate(self, platform):
        m = Module()
        m.submodules.source = self.source
        if self.target is not self.source:
            m.submodules.target = self.target
        return m


async def unit_op(ctx, unit, name, payload):
    """One operation, alone in the pipeline; its result (none for a load)."""
    await stream_put(ctx, getattr(unit, name), payload, timeout=TIMEOUT)
    if name != "load":
        return await stream_get(ctx, getattr(unit, f"{name}_result"), timeout=TIMEOUT)


async def play_in_order(ctx, unit, ops, checks, updates):
    """`ops` one at a time, their results against the expected `checks` and `updates`."""
    checks, updates = iter(checks), iter(updates)
    for name, payload in ops:
        result = await unit_op(ctx, unit, name, payload)
        if name == "check":
            assert (result.verdict, result.seq) == next(checks)
        elif name == "update":
            assert (result.verdict, result.seq, result.written) == next(updates)


def copy_window(model):
    return ReplayWindow(model.size, model.top, model.bitmap, esn=model.esn)


@st.composite
def migrations(draw, window):
    """Histories of a source and a target unit (or one unit for both), the slots,
    and packets for the migrated window."""
    source = draw(scenarios(window, max_events=30))
    same_unit = draw(st.booleans())
    target = source if same_unit else draw(scenarios(window, max_events=30))
    src = draw(st.integers(0, 2))
    dst = draw(st.sampled_from([s for s in range(3) if s != src]) if same_unit
               else st.integers(0, 2))
    _, models = reference_outcomes(*source)
    model, seen = copy_window(models[src]), []
    post = [draw_packet(draw, window, model, 0, seen) for _ in range(draw(st.integers(1, 25)))]
    return source, target, same_unit, src, dst, post


def run_migration(window, source, target, same_unit, src, dst, post, seed, read_registers):
    """Histories on both units, then slot `src` of the source read row by row (reads
    pipelined, results stalled) and loaded into slot `dst` of the target; then the
    same packets on both slots."""
    unit_a = make_unit(window, 3, read_registers[0])
    unit_b = unit_a if same_unit else make_unit(window, 3, read_registers[1])
    histories = []
    for unit, (configs, events) in [(unit_a, source)] + ([] if same_unit else [(unit_b, target)]):
        models = [ReplayWindow(c.size, c.top, c.bitmap, esn=c.esn) for c in configs]
        ops = [("load", req) for req in load_all(configs, window)]
        ops_checks_updates = plan_program_order(models, events, window)
        histories.append((unit, ops + ops_checks_updates[0], *ops_checks_updates[1:], models))
    models_a, models_b = histories[0][-1], histories[-1][-1]
    migrated = copy_window(models_a[src])

    final = copy_window(migrated)
    post_ops, post_checks, post_updates = plan_program_order([final], post, window)
    models_a[src] = models_b[dst] = final
    n = ring_words(window)
    rng = random.Random(seed)
    reads = read_requests(src, window=window)
    rng.shuffle(reads)
    note_event("same unit" if same_unit else "two units")
    got = {}

    async def bench(ctx):
        for unit, ops, checks, updates, _ in histories:
            await play_in_order(ctx, unit, ops, checks, updates)
        got["reading"] = True
        await stream_put_all(ctx, unit_a.read, reads, rng=rng, gap_prob=0.3, timeout=TIMEOUT)
        while "rows" not in got:
            await ctx.tick()
        # Each row is the memory's, a ring word zero when its valid bit is clear.
        head = ctx.get(unit_a.heads[src])
        rows = {}
        for req, row in zip(reads, got["rows"]):
            if req["head"]:
                assert (row.top, row.word, row.valid) == (head.top, head.word, head.valid)
                rows["head"] = {"top": row.top, "word": row.word, "valid": row.valid}
            else:
                word = ctx.get(unit_a.ring[src * n + req["index"]])
                assert (row.top, row.valid) == (0, 0)
                assert row.word == (word if (head.valid >> req["index"]) & 1 else 0)
                rows[req["index"]] = row.word
        assert window_from_storage(rows["head"], [rows[i] for i in range(n)], migrated.size,
                                   window=window) == (migrated.top, migrated.bitmap)
        loads = [{**req, "slot": dst, "top": row.top, "word": row.word, "valid": row.valid}
                 for req, row in zip(reads, got["rows"])]
        rng.shuffle(loads)
        await stream_put_all(ctx, unit_b.load, loads, rng=rng, gap_prob=0.3, timeout=TIMEOUT)
        # The same packets on both slots, alternately: the model's answers on both.
        for name, payload in post_ops:
            got.setdefault("post", []).append(
                [await unit_op(ctx, unit, name, {**payload, "slot": slot})
                 for unit, slot in ((unit_a, src), (unit_b, dst))])
        for _ in range(3):
            await ctx.tick()
        got["storage_a"] = [await read_storage(ctx, unit_a, slot, m.size)
                            for slot, m in enumerate(models_a)]
        got["storage_b"] = [await read_storage(ctx, unit_b, slot, m.size)
                            for slot, m in enumerate(models_b)]

    async def read_sink(ctx):
        while "reading" not in got:
            await ctx.tick()
        got["rows"] = await stream_get_n(ctx, unit_a.read_result, len(reads),
                                         rng=random.Random(seed + 1), stall_prob=0.5,
                                         timeout=TIMEOUT * 10)

    run_sim(UnitPair(unit_a, unit_b), bench, read_sink)
    checks, updates = iter(post_checks), iter(post_updates)
    for (name, _), results in zip(post_ops, got["post"]):
        if name == "check":
            expected = next(checks)
            assert [(r.verdict, r.seq) for r in results] == [expected] * 2
        else:
            expected = next(updates)
            assert [(r.verdict, r.seq, r.written) for r in results] == [expected] * 2
    assert got["storage_a"] == [(m.top, m.bitmap) for m in models_a]
    assert got["storage_b"] == [(m.top, m.bitmap) for m in models_b]


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


@sim_settings(30)
@given(scenario=scenarios(window=64), seed=st.integers(0, 2**16), read_register=st.booleans())
def test_reads_among_operations_window_64(scenario, seed, read_register):
    run_program_order(64, *scenario, seed, read_register, reads=True)


@sim_settings(20)
@given(scenario=scenarios(window=96), seed=st.integers(0, 2**16), read_register=st.booleans())
def test_reads_among_operations_window_96(scenario, seed, read_register):
    run_program_order(96, *scenario, seed, read_register, reads=True)


@sim_settings(25)
@given(window=st.sampled_from([64, 128]), data=st.data(), seed=st.integers(0, 2**16),
       read_registers=st.tuples(st.booleans(), st.booleans()))
def test_migration(window, data, seed, read_registers):
    run_migration(window, *data.draw(migrations(window)), seed, read_registers)


@sim_settings(3)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_migration_window_1024(data, seed):
    run_migration(1024, *data.draw(migrations(1024)), seed, (False, False))


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


def test_read_layouts():
    assert read_request_layout(16, 96) == data.StructLayout(
        {"slot": range(16), "head": 1, "index": range(4)})
    assert read_result_layout(96) == data.StructLayout({"top": 64, "word": 32, "valid": 4})
    unit = ReplayWindowUnit(slots=16, window=96)
    assert unit.read.payload.shape() == read_request_layout(16, 96)
    assert unit.read_result.payload.shape() == read_result_layout(96)
    assert read_requests(3, window=96) == [{"slot": 3, "head": 1, "index": 0}] + \
        [{"slot": 3, "head": 0, "index": i} for i in range(4)]


def test_inbound_control_exposes_read():
    from espnic.hdl.engine.inbound import InboundControl
    inbound = InboundControl(slots=4, window=64)
    for name in ("read", "read_result"):
        assert inbound.signature.members[name] == inbound.replay.signature.members[name]


async def offer_together(ctx, offers, cycle):
    """Offer every (stream, payload) from the same cycle on; the cycle each is taken."""
    for stream, payload in offers:
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
    taken = {}
    for _ in range(TIMEOUT):
        readies = (await ctx.tick().sample(*(stream.ready for stream, _ in offers)))[2:]
        for i, ((stream, _), ready) in enumerate(zip(offers, readies)):
            if i not in taken and ready:
                taken[i] = cycle[0]
                ctx.set(stream.valid, 0)
        if len(taken) == len(offers):
            return [taken[i] for i in range(len(offers))]
    raise TimeoutError("not every offer was taken")


@pytest.mark.parametrize("read_register", [False, True])
def test_read_priority_ordering_and_latency(read_register):
    # An update and a read of one slot and a check offered in the same cycle: the
    # update goes first, the read waits for its write and returns the row it wrote,
    # the check comes after the read. A load and a read of one slot: the load first.
    # A read has a check's latency; a slot never loaded reads as zeros.
    unit = ReplayWindowUnit(slots=4, window=64, read_register=read_register)
    wait = 3 + int(read_register)        # update -> next operation on its slot
    cycle = [0]
    results = {"check": [], "update": [], "read": []}
    got = {}

    async def clock(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def driver(ctx):
        for slot, top in ((0, 100), (1, 50)):
            await stream_put_all(ctx, unit.load, load_requests(slot, top, 1, 64, window=64))
        for _ in range(4):
            await ctx.tick()
        common = {"esn": 0, "size": 64}
        got["first"] = await offer_together(ctx, [
            (unit.check, {**common, "slot": 1, "seq_lo": 51}),
            (unit.read, {"slot": 0, "head": 1, "index": 0}),
            (unit.update, {**common, "slot": 0, "seq": 200, "authenticated": 1}),
        ], cycle)
        got["second"] = await offer_together(ctx, [
            (unit.read, {"slot": 2, "head": 1, "index": 0}),
            (unit.load, {"slot": 2, "head": 1, "index": 0, "top": 7, "word": 0x80, "valid": 0}),
        ], cycle)
        got["third"] = []
        for req in read_requests(3, window=64):
            await stream_put(ctx, unit.read, req, timeout=TIMEOUT)
            got["third"].append(cycle[0])

    def sink(name):
        async def process(ctx):
            stream = getattr(unit, f"{name}_result")
            ctx.set(stream.ready, 1)
            for _ in range(80):
                _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
                if valid:
                    results[name].append((cycle[0], payload))
        return process

    run_sim(unit, driver, sink("check"), sink("update"), sink("read"), processes=[clock])
    check_at, read_at, update_at = got["first"]
    assert read_at - update_at == wait and check_at - read_at == 1
    (at, head), (load_read_at, loaded), *empty = results["read"]
    assert at - read_at == unit.latency
    assert (head.top, head.word) == (200, 1 << (200 % 32))       # the update's row
    [(at, checked)] = results["check"]
    assert at - check_at == unit.latency and checked.seq == 51
    read_at, load_at = got["second"]
    assert read_at - load_at == wait and load_read_at - read_at == unit.latency
    assert (loaded.top, loaded.word, loaded.valid) == (7, 0x80, 0)
    assert [(row.top, row.word, row.valid) for _, row in empty] == [(0, 0, 0)] * 3
    assert [at for at, _ in empty] == [at + unit.latency for at in got["third"]]
    assert [a - b for a, b in zip(got["third"][1:], got["third"])] == [1, 1]   # back to back


@pytest.mark.parametrize("read_register", [False, True])
def test_read_result_back_pressure(read_register):
    # With read_result not ready the pipeline fills and stops taking reads; the offered
    # row stays put; then every row comes out once, in order, exactly as loaded.
    window = 128
    unit = ReplayWindowUnit(slots=2, window=window, read_register=read_register)
    windows = [(2**32 + 77, 0xdead_beef_0123_4567 | 1), (33, (1 << 34) - 1)]
    loads = [req for slot, (top, bitmap) in enumerate(windows)
             for req in load_requests(slot, top, bitmap, window, window=window)]
    reads = read_requests(0, window=window) + read_requests(1, window=window)
    expected = []
    for slot, (top, bitmap) in enumerate(windows):
        head, words = storage_from_window(top, bitmap, window, window=window)
        expected += [(head["top"], head["word"], head["valid"])] + [(0, w, 0) for w in words]
    got = {}

    async def driver(ctx):
        await stream_put_all(ctx, unit.load, loads)
        got["loaded"] = True
        await stream_put_all(ctx, unit.read, reads, timeout=TIMEOUT)

    async def sink(ctx):
        while "loaded" not in got:
            await ctx.tick()
        offered, readies = set(), []
        for _ in range(20):
            _, _, valid, payload, ready = await ctx.tick().sample(
                unit.read_result.valid, unit.read_result.payload, unit.read.ready)
            readies.append(ready)
            if valid:
                offered.add((payload.top, payload.word, payload.valid))
        assert len(offered) == 1 and not any(readies[-10:])
        got["offered"] = offered.pop()
        got["rows"] = await stream_get_n(ctx, unit.read_result, len(reads),
                                         rng=random.Random(1), stall_prob=0.5, timeout=TIMEOUT)

    run_sim(unit, driver, sink)
    assert got["offered"] == expected[0]
    assert [(r.top, r.word, r.valid) for r in got["rows"]] == expected
