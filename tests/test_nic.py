# SPDX-License-Identifier: BSD-2-Clause
"""The whole device, ``EspNic`` (Amaranth simulator), against ``NicModel``: SAs on
several engines, traffic on several ports (protected, ESP for our SAs, bypass,
discard, unknown SPIs, no policy, no route, malformed, replays, forgeries); each
egress port's packets byte for byte, in order per SA and per bypass flow; the
exception queue; every device counter and every SA's counters."""

import random

import pytest

from espnic.hdl.forwarder.dispatcher import Dispatcher, EngineQueue
from espnic.hdl.forwarder.policy import PolicyAction
from espnic.hdl.forwarder.spi_table import SpiOp, bucket_of
from espnic.hdl.top import EspNic
from espnic.sim.model.forwarder import parse
from espnic.sim.nic_job import Migration, check_nic_run, policy_op, route_op, run_nic, spi_op
from tests.nic_cases import NicScenario, policy_rule, route_write


@pytest.mark.parametrize("engines, ports, miss_to_host, stall", [
    (1, 1, False, 0.0),
    (2, 2, True, 0.3),
    (2, 1, False, 0.3),
])
def test_nic_against_the_model(engines, ports, miss_to_host, stall):
    rng = random.Random(engines * 10 + ports)
    scenario = NicScenario(engines=engines, ports=ports, miss_to_host=miss_to_host)
    traffic = scenario.traffic(40, rng)
    run = run_nic(scenario.setup, traffic, stall=stall, gap=0.2, seed=engines)
    check_nic_run(run, traffic)
    # The mix did reach every path.
    reasons = {outcome.reason for outcome in run.outcomes}
    assert {"ok", "auth_fail", "no_route"} <= reasons
    assert sum(len(packets) for packets in run.outputs.values()) > 10


def test_nic_parameters():
    with pytest.raises(ValueError, match="engines"):
        EspNic(engines=0)
    with pytest.raises(ValueError, match="ports"):
        EspNic(ports=9)
    with pytest.raises(ValueError, match="not supported: data_width"):
        EspNic(data_width=4)
    with pytest.raises(ValueError, match="ethernet"):
        EspNic(ports=2, ethernet=(True,))
    with pytest.raises(ValueError, match="queue_depth 0 is for one engine"):
        EspNic(engines=2, queue_depth=0)
    with pytest.raises(ValueError, match="engines"):
        Dispatcher(engines=17, slots=4)
    with pytest.raises(ValueError, match="depth"):
        EngineQueue(slots=4, depth=2)


def _storm(scenario, rounds, rng):
    """Host operations no packet can tell, `rounds` times over: entries inserted into
    and removed from the bucket of engine 0's inbound SA, that SA's entry and
    engine 0's PROTECT rule and the inner networks' route rewritten with what they
    hold, a rule and a route that match nothing written and cleared."""
    setup = scenario.setup
    port, key, engine, slot = next(entry for entry in setup.spi_entries if entry[2] == 0)
    buckets = 64 // 4
    neighbours = []
    while len(neighbours) < 3:
        candidate = rng.getrandbits(161) | 0x100   # SPIs above the reserved 0..255
        if bucket_of(candidate, buckets) == bucket_of(key, buckets) and candidate != key:
            neighbours.append(candidate)
    protect = next((p, i, r) for p, i, r in setup.policy if r["action"] == PolicyAction.PROTECT.value
                   and r["value"]["engine"] == 0)
    nowhere_rule = policy_rule(15, PolicyAction.PROTECT, dst="100.64.0.0", dst_len=10,
                               engine=1 % setup.engines, slot=0)
    ops = []
    for number in range(rounds):
        neighbour = neighbours[number % len(neighbours)]
        ops += [
            spi_op(port, SpiOp.INSERT, neighbour, 0, 3),
            spi_op(port, SpiOp.REPLACE, key, engine, slot),
            policy_op(protect[0], 7, nowhere_rule),
            policy_op(*protect),
            route_op(route_write(7, "100.64.0.0", 10, 0)),
            spi_op(port, SpiOp.REMOVE, neighbour),
            policy_op(protect[0], 7, {**nowhere_rule, "valid": False}),
            route_op(setup.route_writes[0]),
            route_op({**route_write(7, "100.64.0.0", 10, 0), "valid": False}),
        ]
    return ops


@pytest.mark.parametrize("engines", [1, 2])
def test_nic_table_storm(engines):
    """Table entries added, changed and removed every few packets while the SAs'
    traffic flows: every packet as if nothing had happened (zero loss, order kept,
    the same sequence numbers, replays still caught)."""
    rng = random.Random(77 + engines)
    scenario = NicScenario(engines=engines, ports=1)
    traffic = scenario.traffic(60, rng, max_payload=60)
    storm = _storm(scenario, 6, rng)
    run = run_nic(scenario.setup, traffic, gap=0.1, storm=storm, pace=15)
    assert run.stormed, "the storm must happen while the traffic flows"
    check_nic_run(run, traffic)
    assert {"ok", "replay"} <= {outcome.reason for outcome in run.outcomes}


@pytest.mark.parametrize("engines", [1, 2])
def test_nic_fences(engines):
    """A fence through a port's forwarder passes an engine exactly when every packet
    classified before it has been through that engine: the engine's output count
    then is the model's count for the packets before the fence, no fewer (passed too
    early) and no more (held packets after it back); the traffic is undisturbed."""
    rng = random.Random(5 + engines)
    scenario = NicScenario(engines=engines, ports=1)
    traffic = scenario.traffic(50, rng, max_payload=100)
    fences = [(after, 0, number % engines, number % 2)
              for number, after in enumerate((3, 10, 11, 20, 30, 41))]
    run = run_nic(scenario.setup, traffic, gap=0.1, stall=0.2, fences=fences)
    check_nic_run(run, traffic)
    assert len(run.fences) == len(fences)
    for seen, want in run.fences:
        assert seen == want
    assert any(want for _seen, want in run.fences)


def _migrations(scenario, count, slot, spacing):
    """`count` moves of engine 0's SA in `slot` between engine 0 and the last engine
    (its slot `slot + 2`), back and forth, one every `spacing` packets."""
    setup = scenario.setup
    engine, port = setup.engines - 1, scenario.sa_ports[0, slot]
    places = [(0, slot), (engine, slot + 2)]
    config = next(c for e, s, c in setup.sas if (e, s) == (0, slot))
    moves = []
    for number in range(count):
        source, dest = places[number % 2], places[(number + 1) % 2]
        if config.direction == "out":
            _port, index, rule = next(p for p in setup.policy if p[2]["value"] == {
                "engine": 0, "slot": slot} and p[2]["action"] == PolicyAction.PROTECT.value)
            repoint = [policy_op(port, index, {**rule, "value": {"engine": dest[0],
                                                                 "slot": dest[1]}})]
        else:
            key = next(k for p, k, e, s in setup.spi_entries if (e, s) == (0, slot))
            repoint = [spi_op(port, SpiOp.REPLACE, key, *dest)]
        moves.append(Migration(after=3 + spacing * number, source=source, dest=dest,
                               repoint=repoint))
    return moves


def _esp_sequence_numbers(packets, spi):
    numbers = []
    for packet in packets:
        parsed = parse(packet)
        if parsed.spi == spi:
            offset = 20 if packet[0] >> 4 == 4 else 40
            numbers.append(int.from_bytes(packet[offset + 4:offset + 8], "big"))
    return numbers


# Inbound moves are checked once with one port: with two ports and moves back and
# forth an inbound run has been seen not to go quiet (under investigation; see
# docs/architecture.md), so they are not claimed yet. The 100-move runs of the
# acceptance take about 30 minutes each in Amaranth's simulator: not in the suite yet.
@pytest.mark.parametrize("direction, count, engines, ports", [
    ("out", 6, 2, 2), ("in", 1, 2, 1),
])
def test_nic_live_migration(direction, count, engines, ports):
    """An SA moved between engines over the fabric while its traffic flows, `count`
    times: every packet as if it had never moved (zero loss, its order, each
    sequence number once, the replay window carried over: replays still caught),
    and its counters where it ends up."""
    rng = random.Random(count + engines)
    scenario = NicScenario(engines=engines, ports=ports)
    slot = 0 if direction == "out" else 1
    kinds = ("protect",) * 4 if direction == "out" else ("inbound", "inbound", "inbound", "replay")
    traffic = scenario.traffic(4 * count + 12, rng, max_payload=24, kinds=kinds, engines=[0])
    moves = _migrations(scenario, count, slot, spacing=4)
    run = run_nic(scenario.setup, traffic, gap=0.1, migrations=moves)
    check_nic_run(run, traffic)
    reasons = [outcome.reason for outcome in run.outcomes]
    assert reasons.count("ok") >= 2 * count
    if direction == "out":
        spi = next(c.spi for e, s, c in scenario.setup.sas if (e, s) == (0, slot))
        numbers = _esp_sequence_numbers([p for ps in run.outputs.values() for p in ps], spi)
        assert sorted(numbers) == list(range(1, len(numbers) + 1))   # each once, none skipped
    else:
        assert "replay" in reasons
