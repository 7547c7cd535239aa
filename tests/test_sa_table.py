# SPDX-License-Identifier: BSD-2-Clause
"""The SA table (Amaranth simulator) against the reference model's SA semantics:
sequence allocation, lifetimes, drops, counters, events, key hygiene, and live
migration (EXPORT from one table, IMPORT into another)."""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from amaranth import Module
from amaranth.lib import data

from espnic.hdl.engine.protocol import PROTO_IPV4
from espnic.hdl.engine.sa import SA_COUNTERS, SaState
from espnic.hdl.engine.sa_table import (Action, HostOp, SaTable, Tally, control_layout,
                                        control_record)
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put, stream_record
from espnic.sim.model import EspModel
from tests.esp_cases import config, esp_trailer, plain_packet, seal_tunnel

SLOTS = 4
_TIMEOUT = 50


def _record_without_bitmap(model, slot):
    """What the table keeps of the model's record (as the host reads it)."""
    return control_record(model.read_record(slot))


def _as_dict(view, layout):
    return {name: getattr(view, name) for name, _field in layout}


def _draw_slots(draw):
    slots = []
    for _ in range(SLOTS):
        kind = draw(st.sampled_from(["empty", "out", "out", "out", "in", "draining"]))
        if kind == "empty":
            slots.append(None)
            continue
        lifetime = {}
        for unit in ("packets", "bytes"):
            hard = draw(st.sampled_from([0, 0, 1, 3, 200, 2000]))
            soft = draw(st.sampled_from([0, 1, 2, 150, 1500]))
            lifetime[f"{unit}_hard"] = hard
            lifetime[f"{unit}_soft"] = min(soft, hard) if hard else soft
        esn = draw(st.booleans())
        near = draw(st.sampled_from([0, 2**32 - 2, 2**64 - 2]))
        seq = near if esn or near < 2**32 else 2**32 - 2
        slots.append((kind, dict(esn=esn, seq=seq, lifetime=lifetime,
                                 key="%032x" % draw(st.integers(0, 2**128 - 1)))))
    return slots


@st.composite
def _scenario(draw):
    slots = _draw_slots(draw)
    ops = draw(st.lists(st.tuples(st.sampled_from(["packet"] * 6 + ["read", "delete"]),
                                  st.integers(0, SLOTS - 1), st.integers(0, 300)),
                        min_size=1, max_size=25))
    return slots, ops


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=_scenario())
def test_sa_table_follows_the_model(scenario):
    _run_against_model(*scenario)


_NO_LIMITS = {"packets_soft": 0, "packets_hard": 0, "bytes_soft": 0, "bytes_hard": 0}


@pytest.mark.parametrize("esn", [False, True])
def test_sequence_exhaustion_and_lifetimes(esn):
    """The last sequence number is used once, then the SA stops (drop, hard event once);
    lifetimes raise soft then hard and refuse the packet after the hard limit."""
    top = 2**64 - 1 if esn else 2**32 - 1
    slots = [
        ("out", dict(esn=esn, seq=top - 2, lifetime=_NO_LIMITS, key="11" * 16)),
        ("out", dict(esn=esn, seq=0, key="22" * 16,
                     lifetime={**_NO_LIMITS, "packets_soft": 2, "packets_hard": 3})),
        ("out", dict(esn=esn, seq=0, key="33" * 16,
                     lifetime={**_NO_LIMITS, "bytes_soft": 100, "bytes_hard": 250})),
        None,
    ]
    ops = [("packet", slot, 60) for _ in range(5) for slot in range(SLOTS)]
    _run_against_model(slots, ops)


def _installed(cfg, kind, layout):
    """The record the host writes, key included (the model's read-back hides it)."""
    bits = cfg.to_record(layout).as_bits()
    if kind == "draining":
        state = layout["state"]
        bits = (bits & ~(((1 << state.width) - 1) << state.offset)
                | SaState.DRAINING.value << state.offset)
    return bits


def _run_against_model(slot_specs, ops):
    model = EspModel(slots=SLOTS)
    dut = SaTable(slots=SLOTS)
    installed = {}
    for slot, spec in enumerate(slot_specs):
        if spec is None:
            continue
        kind, kwargs = spec
        cfg = config("in" if kind == "in" else "out", **kwargs)
        model.install(slot, cfg)
        if kind == "draining":
            model.set_state(slot, SaState.DRAINING)
        installed[slot] = _installed(cfg, kind, model.layout)
    control = control_layout(model.layout["replay_bitmap"].width)
    checks = []

    async def bench(ctx):
        for slot, bits in installed.items():
            value = control_record(data.Const(model.layout, bits))
            await stream_put(ctx, dut.host, {"op": HostOp.WRITE, "slot": slot, "record": value},
                             timeout=_TIMEOUT)
        for op, slot, size in ops:
            if op == "packet":
                direction_in = slot in installed and slot_specs[slot][0] == "in"
                packet = plain_packet(4, size)
                await stream_put(ctx, dut.request, {"slot": slot, "bytes": len(packet)},
                                 timeout=_TIMEOUT)
                reply = await stream_get(ctx, dut.reply, timeout=_TIMEOUT)
                if direction_in and model.read_record(slot).state != SaState.INVALID:
                    assert reply.action == Action.INBOUND
                    # What the inbound path will report once the packet is verified.
                    await stream_put(ctx, dut.account, {"slot": slot, "tally": Tally.PACKET,
                                                        "bytes": len(packet)},
                                     timeout=_TIMEOUT)
                    model.account(slot, len(packet))
                else:
                    seq_before = model.read_record(slot).seq
                    _output, reason = model.process(slot, packet)
                    if reason == "ok":
                        assert reply.action == Action.PROTECT
                        assert reply.job.seq == seq_before + 1 == model.read_record(slot).seq
                    else:
                        assert reply.action == Action.DROP
                        assert reply.reason.name.lower() == reason
            elif op == "read":
                await stream_put(ctx, dut.host, {"op": HostOp.READ, "slot": slot},
                                 timeout=_TIMEOUT)
                answer = await stream_get(ctx, dut.host_reply, timeout=_TIMEOUT)
                assert _as_dict(answer.record, control) == _record_without_bitmap(model, slot)
                assert answer.record.key == 0 and answer.record.salt == 0
            else:
                model.delete(slot)
                await stream_put(ctx, dut.host, {"op": HostOp.DELETE, "slot": slot},
                                 timeout=_TIMEOUT)
            # Counters after every operation.
            await stream_put(ctx, dut.host, {"op": HostOp.READ_COUNTERS, "slot": slot},
                             timeout=_TIMEOUT)
            answer = await stream_get(ctx, dut.host_reply, timeout=_TIMEOUT)
            assert _as_dict(answer.counters, SA_COUNTERS) == model.counters(slot)
            assert ctx.get(dut.no_sa) == model.engine_counters["no_sa"]
        checks.append("done")

    events = []

    run_sim(dut, bench, processes=[stream_record(dut.events, events)])
    assert checks == ["done"]
    assert [(event.slot, event.event.name.lower()) for event in events] == model.events


# -- live migration -------------------------------------------------------------------------

@st.composite
def _migration_scenario(draw):
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("packet"), st.integers(0, SLOTS - 1), st.integers(0, 300),
                  st.booleans()),
        st.tuples(st.just("read"), st.integers(0, SLOTS - 1)),
        st.tuples(st.just("migrate"), st.integers(0, SLOTS - 1), st.integers(0, 2 * SLOTS)),
        st.tuples(st.just("probe"), st.integers(0, 2 * SLOTS), st.integers(0, 300)),
        st.tuples(st.just("export_empty"), st.integers(0, 2 * SLOTS)),
    ), min_size=1, max_size=30))
    return _draw_slots(draw), ops


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=_migration_scenario())
def test_migrated_sa_follows_the_model_that_never_moved_it(scenario):
    _run_migration(*scenario)


def test_migration_carries_lifetime_events():
    """An outbound SA (packets) and an inbound SA (bytes) cross their soft lifetime on
    table 0, move to table 1, and cross the hard one there: each event is raised once,
    the soft one not again on import, the hard one on table 1."""
    specs = [
        ("out", dict(seq=0, key="11" * 16,
                     lifetime={**_NO_LIMITS, "packets_soft": 2, "packets_hard": 4})),
        ("in", dict(seq=100, key="22" * 16,
                    lifetime={**_NO_LIMITS, "bytes_soft": 150, "bytes_hard": 400})),
        None,
        None,
    ]
    ops = ([("packet", sa, 60, False) for _ in range(3) for sa in (0, 1)]
           # Free slots in order, table 0 first: SA 0 to (1, 0), SA 1 to (1, 2).
           + [("migrate", 0, 2), ("migrate", 1, 4), ("read", 0), ("read", 1)]
           + [("packet", sa, 60, False) for _ in range(3) for sa in (0, 1)]
           + [("packet", 1, 60, True), ("read", 0), ("read", 1)])
    events = _run_migration(specs, ops)
    assert events == [(0, 0, 0, "soft_expired"), (0, 1, 1, "soft_expired"),
                      (1, 0, 0, "hard_expired"), (1, 2, 1, "hard_expired")]


def test_export_of_empty_slots_probes_and_replay_after_a_move():
    """EXPORT of every free slot replies with the empty record and leaves it empty;
    a vacated slot is `no_sa`; an inbound SA's window moves with it (the models' move:
    a number received before the move is a replay after it, one never received is not)."""
    specs = [None, ("out", dict(seq=5, key="33" * 16, lifetime=_NO_LIMITS)),
             ("in", dict(seq=10, key="44" * 16, lifetime=_NO_LIMITS)), None]
    ops = [("export_empty", k) for k in range(2 * SLOTS - 2)] + [
        ("probe", 0, 40), ("migrate", 1, 4), ("probe", 1, 40), ("export_empty", 1),
        ("packet", 1, 40, False), ("migrate", 1, 0), ("packet", 1, 40, False), ("read", 1),
        # Inbound: sequence numbers 12 and 15 arrive, then the SA moves.
        ("packet", 2, 40, False), ("packet", 2, 41, False), ("migrate", 2, 5),
        ("packet", 2, 1, True), ("packet", 2, 0, True), ("packet", 2, 0, True),
        ("packet", 2, 40, False), ("read", 2)]
    _run_migration(specs, ops)


def _zero(value):
    return value.as_bits() == 0


async def _get_after_stalls(ctx, stream, stalls):
    """Take one payload from ``stream`` after holding ``ready`` low for ``stalls + 1``
    cycles once it is valid; it must stay valid and unchanged meanwhile."""
    offered = []
    for _ in range(_TIMEOUT):
        _clk, _rst, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid:
            offered.append(payload.as_bits())
        else:
            assert not offered, "valid dropped before the payload was taken"
        if len(offered) > stalls:
            break
    else:
        raise TimeoutError(f"stream had no valid payload for {_TIMEOUT} cycles")
    payload = await stream_get(ctx, stream, timeout=1)
    assert all(bits == payload.as_bits() for bits in offered)
    return payload


def _run_migration(slot_specs, ops):
    """SAs installed in table 0 (SA ``i`` in slot ``i``) get packets (outbound requests;
    inbound lookups and the accounting the inbound path would report for a real ESP
    packet), are read, and move with EXPORT/IMPORT to free slots of either table.
    Three views must agree after every operation: the tables, a pair of models the
    SAs move between with ``export``/``import_``, and one model where they never move
    (replies, drops, sequence numbers, keys in the jobs, records, counters, events).
    Also: packets to free slots are ``no_sa``, EXPORT of a free slot is empty.
    Returns the tables' events as ``(table, slot, SA, name)``."""
    reference = EspModel(slots=SLOTS)
    moved = [EspModel(slots=SLOTS), EspModel(slots=SLOTS)]
    layout = reference.layout
    control = control_layout(layout["replay_bitmap"].width)
    m = Module()
    m.submodules.table0 = table0 = SaTable(slots=SLOTS)
    m.submodules.table1 = table1 = SaTable(slots=SLOTS)
    tables = [table0, table1]

    kinds, installed, location = {}, {}, {}
    for sa, spec in enumerate(slot_specs):
        if spec is None:
            continue
        kind, kwargs = spec
        cfg = config("in" if kind == "in" else "out", **kwargs)
        for model in (reference, moved[0]):
            model.install(sa, cfg)
            if kind == "draining":
                model.set_state(sa, SaState.DRAINING)
        kinds[sa] = (kind, kwargs)
        installed[sa] = _installed(cfg, kind, layout)
        location[sa] = (0, sa)
    sas = sorted(kinds)
    events = [[], []]
    seen = {"reference": 0, "moved": [0, 0], "tables": [0, 0]}
    trace = []

    def free_locations():
        taken = set(location.values())
        return [(t, s) for t in range(2) for s in range(SLOTS) if (t, s) not in taken]

    def check_events():
        at = {where: sa for sa, where in location.items()}
        expect = [(sa, name) for sa, name in reference.events[seen["reference"]:]]
        seen["reference"] = len(reference.events)
        got_model, got_table = [], []
        for t in range(2):
            got_model += [(at[t, slot], name) for slot, name in moved[t].events[seen["moved"][t]:]]
            seen["moved"][t] = len(moved[t].events)
            for event in events[t][seen["tables"][t]:]:
                name = event.event.name.lower()
                got_table.append((at[t, event.slot], name))
                trace.append((t, event.slot, at[t, event.slot], name))
            seen["tables"][t] = len(events[t])
        assert got_model == expect
        assert got_table == expect

    async def read_counters(ctx, t, s):
        await stream_put(ctx, tables[t].host, {"op": HostOp.READ_COUNTERS, "slot": s},
                         timeout=_TIMEOUT)
        return (await stream_get(ctx, tables[t].host_reply, timeout=_TIMEOUT)).counters

    async def read(ctx, t, s):
        await stream_put(ctx, tables[t].host, {"op": HostOp.READ, "slot": s}, timeout=_TIMEOUT)
        answer = await stream_get(ctx, tables[t].host_reply, timeout=_TIMEOUT)
        assert answer.record.key == 0 and answer.record.salt == 0
        return answer.record

    async def lookup(ctx, t, s, length):
        await stream_put(ctx, tables[t].request, {"slot": s, "bytes": length}, timeout=_TIMEOUT)
        return await stream_get(ctx, tables[t].reply, timeout=_TIMEOUT)

    def check_job(reply, sa):
        record = data.Const(layout, installed[sa])
        assert (reply.job.key, reply.job.salt, reply.job.spi) == \
            (record.key, record.salt, record.spi)

    async def packet(ctx, sa, size, replay):
        t, s = location[sa]
        kind, kwargs = kinds[sa]
        if kind == "in":
            top = reference.read_record(sa).seq
            sent = range(kwargs["seq"] + 1, top + 1)
            if replay and sent:
                seq = sent[size % len(sent)]
            else:
                seq = min(top + 1 + size % 3, 2**64 - 1 if kwargs.get("esn") else 2**32 - 1)
            esp = seal_tunnel(kwargs, seq, esp_trailer(plain_packet(4, size), PROTO_IPV4))
        else:
            esp = plain_packet(4, size)
        seq_before = reference.read_record(sa).seq
        expect = reference.process(sa, esp)
        assert moved[t].process(s, esp) == expect
        output, reason = expect
        reply = await lookup(ctx, t, s, len(esp))
        check_job(reply, sa)
        if kind == "in":
            assert reply.action == Action.INBOUND
            assert (reply.reason.name.lower() == "hard_expired") == (reason == "hard_expired")
            tally = {"ok": {"tally": Tally.PACKET, "bytes": len(output or b""),
                            "advance": 1, "seq": seq},
                     "replay": {"tally": Tally.REPLAY},
                     "hard_expired": {"tally": Tally.EXPIRED}}[reason]
            await stream_put(ctx, tables[t].account, {"slot": s, **tally}, timeout=_TIMEOUT)
        elif reason == "ok":
            assert reply.action == Action.PROTECT
            assert reply.job.seq == seq_before + 1 == reference.read_record(sa).seq
        else:
            assert reply.action == Action.DROP
            assert reply.reason.name.lower() == reason

    async def migrate(ctx, sa, pick):
        (t, s), free = location[sa], free_locations()
        t2, s2 = free[pick % len(free)]
        await stream_put(ctx, tables[t].host, {"op": HostOp.EXPORT, "slot": s}, timeout=_TIMEOUT)
        # The slot is zeroized as the reply is taken, not while it waits.
        answer = await _get_after_stalls(ctx, tables[t].host_reply, stalls=pick % 3)
        record, counters = moved[t].export(s)
        written = data.Const(layout, installed[sa])
        assert (data.Const(layout, record).key, data.Const(layout, record).salt) == \
            (written.key, written.salt)
        assert _as_dict(data.Const(SA_COUNTERS, counters), SA_COUNTERS) == reference.counters(sa)
        # Unmasked: the key and salt travel with the SA.
        assert _as_dict(answer.record, control) == control_record(data.Const(layout, record))
        assert (answer.record.key, answer.record.salt) == (written.key, written.salt)
        assert answer.record.salt != 0    # (the scenarios' keys may be zero)
        assert _as_dict(answer.counters, SA_COUNTERS) == reference.counters(sa)
        # The fabric hands the reply on as it is.
        await stream_put(ctx, tables[t2].host, {"op": HostOp.IMPORT, "slot": s2,
                                                "record": answer.record,
                                                "counters": answer.counters},
                         timeout=_TIMEOUT)
        moved[t2].import_(s2, record, counters)
        assert moved[t2].read_record(s2) == reference.read_record(sa)
        location[sa] = (t2, s2)
        # The source reads as deleted, and its packets are `no_sa`.
        assert moved[t].read_record(s).as_bits() == 0 and not any(moved[t].counters(s).values())
        assert _zero(await read(ctx, t, s))
        assert _zero(await read_counters(ctx, t, s))
        await probe(ctx, t, s, 40)

    async def probe(ctx, t, s, size):
        assert moved[t].process(s, plain_packet(4, size)) == (None, "no_sa")
        reply = await lookup(ctx, t, s, size + 28)
        assert (reply.action, reply.reason.name) == (Action.DROP, "NO_SA")
        assert _zero(await read_counters(ctx, t, s))

    async def bench(ctx):
        for sa in sas:
            value = control_record(data.Const(layout, installed[sa]))
            await stream_put(ctx, table0.host, {"op": HostOp.WRITE, "slot": sa, "record": value},
                             timeout=_TIMEOUT)
        for op, *args in ops:
            if op in ("packet", "read", "migrate") and not sas:
                continue
            if op == "packet":
                pick, size, replay = args
                sa = sas[pick % len(sas)]
                await packet(ctx, sa, size, replay)
            elif op == "read":
                sa = sas[args[0] % len(sas)]
                t, s = location[sa]
                assert _as_dict(await read(ctx, t, s), control) == \
                    _record_without_bitmap(reference, sa)
                # The whole record, replay window included, moved with the SA.
                assert moved[t].read_record(s) == reference.read_record(sa)
            elif op == "migrate":
                sa = sas[args[0] % len(sas)]
                await migrate(ctx, sa, args[1])
            elif op == "probe":
                free = free_locations()
                t, s = free[args[0] % len(free)]
                await probe(ctx, t, s, args[1])
            else:
                free = free_locations()
                t, s = free[args[0] % len(free)]
                assert moved[t].export(s) == (0, 0)
                await stream_put(ctx, tables[t].host, {"op": HostOp.EXPORT, "slot": s},
                                 timeout=_TIMEOUT)
                answer = await stream_get(ctx, tables[t].host_reply, timeout=_TIMEOUT)
                assert _zero(answer.record) and answer.record.state == SaState.INVALID
                assert _zero(answer.counters)
                assert _zero(await read(ctx, t, s))
            for sa in sas:
                t, s = location[sa]
                counters = _as_dict(await read_counters(ctx, t, s), SA_COUNTERS)
                assert counters == reference.counters(sa) == moved[t].counters(s)
            for t in range(2):
                assert ctx.get(tables[t].no_sa) == moved[t].engine_counters["no_sa"]
            check_events()
        trace.append("done")

    run_sim(m, bench, processes=[stream_record(table0.events, events[0]),
                                 stream_record(table1.events, events[1])])
    assert trace[-1:] == ["done"]
    return trace[:-1]
