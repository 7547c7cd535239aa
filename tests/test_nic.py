# SPDX-License-Identifier: BSD-2-Clause
"""The whole device, ``EspNic`` (Amaranth simulator), against ``NicModel``: SAs on
several engines, traffic on several ports (protected, ESP for our SAs, bypass,
discard, unknown SPIs, no policy, no route, malformed, replays, forgeries); each
egress port's packets byte for byte, in order per SA and per bypass flow; the
exception queue; every device counter and every SA's counters."""

import random

import pytest

from espnic.hdl.forwarder.dispatcher import Dispatcher, EngineQueue
from espnic.hdl.top import EspNic
from espnic.sim.nic_job import check_nic_run, run_nic
from tests.nic_cases import NicScenario, check_migration, migration_case, table_storm


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
    with pytest.raises(TypeError, match="nested must be a bool"):
        EspNic(nested=1)
    nic = EspNic(engines=2, ports=2, nested=True)
    assert len(nic.spi_host) == len(nic.fence_host) == len(nic.sent) == 3
    assert len(nic.policy_host) == len(nic.o) == 2
    with pytest.raises(ValueError, match="engines"):
        Dispatcher(engines=17, slots=4)
    with pytest.raises(ValueError, match="depth"):
        EngineQueue(slots=4, depth=2)


@pytest.mark.parametrize("engines", [1, 2])
def test_nic_table_storm(engines):
    """Table entries added, changed and removed every few packets while the SAs'
    traffic flows: every packet as if nothing had happened (zero loss, order kept,
    the same sequence numbers, replays still caught)."""
    rng = random.Random(77 + engines)
    scenario = NicScenario(engines=engines, ports=1)
    traffic = scenario.traffic(60, rng, max_payload=60)
    storm = table_storm(scenario, 6, rng)
    run = run_nic(scenario.setup, traffic, gap=0.1, storm=storm, pace=8)
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


# The 100-move runs of the acceptance are in test_nic_cocotb.py (Verilator): here a
# move takes about 20 s of Amaranth's simulator.
@pytest.mark.parametrize("direction", ["out", "in"])
def test_nic_live_migration(direction):
    """An SA moved between engines over the fabric while its traffic flows (two
    ports), 4 times: every packet as if it had never moved (zero loss, its order,
    each sequence number once, the replay window carried over: replays still
    caught), and its counters where it ends up."""
    scenario, traffic, moves = migration_case(direction, 4, random.Random(len(direction)),
                                              background=8)
    run = run_nic(scenario.setup, traffic, gap=0.1, migrations=moves)
    check_nic_run(run, traffic)
    check_migration(run, scenario, direction, 4)


@pytest.mark.parametrize("engines", [1, 2])
def test_nic_nested_sas(engines):
    """Nested SAs: engine 0's inbound SA carries ESP packets of an inner SA (on the
    last engine); each decapsulated inner packet is routed to the device itself and
    goes through the local forwarder straight to the inner SA's engine, then out
    as plaintext. Inner forgeries, unknown inner SPIs and plain packets for the
    device are dropped and counted where the model says (the local forwarder's
    counters are the last port's)."""
    rng = random.Random(90 + engines)
    scenario = NicScenario(engines=engines, ports=1, nested=True)
    traffic = scenario.traffic(36, rng, max_payload=60,
                               kinds=NicScenario.KINDS + NicScenario.NESTED_KINDS * 2)
    run = run_nic(scenario.setup, traffic, gap=0.1, stall=0.2)
    check_nic_run(run, traffic)
    inner = ("sa", engines - 1, NicScenario.INNER_SLOT)
    reasons = [o.reason for o in run.outcomes if o.flow == inner]
    assert reasons.count("ok") >= 5 and "auth_fail" in reasons
    local = run.counters
    assert local["spi_miss"][1] and local["policy_miss"][1]
