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
from espnic.sim.nic_job import check_nic_run, policy_op, route_op, run_nic, spi_op
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
