# SPDX-License-Identifier: BSD-2-Clause
"""The SA table (Amaranth simulator) against the reference model's SA semantics:
sequence allocation, lifetimes, drops, counters, events, key hygiene."""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from amaranth.lib import data

from espnic.hdl.engine.sa import SA_COUNTERS, SaState
from espnic.hdl.engine.sa_table import (Action, HostOp, SaTable, Tally, control_layout,
                                        control_record)
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put, stream_record
from espnic.sim.model import EspModel
from tests.esp_cases import config, plain_packet

SLOTS = 4
_TIMEOUT = 50


def _record_without_bitmap(model, slot):
    """What the table keeps of the model's record (as the host reads it)."""
    return control_record(model.read_record(slot))


def _as_dict(view, layout):
    return {name: getattr(view, name) for name, _field in layout}


@st.composite
def _scenario(draw):
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
        # The host writes the whole record, key included (the model's read-back hides it).
        installed[slot] = cfg.to_record(model.layout).as_bits()
        if kind == "draining":
            state = model.layout["state"]
            installed[slot] = (installed[slot] & ~(((1 << state.width) - 1) << state.offset)
                               | SaState.DRAINING.value << state.offset)
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
