# SPDX-License-Identifier: BSD-2-Clause
"""The whole device's Verilog in Verilator (cocotb) against ``NicModel``, as
``test_nic.py`` does in Amaranth's simulator: 1, 2 and 4 compact engines, 1 to 3
ports, every kind of traffic; each egress port's packets, per flow in order,
the exceptions, every counter. Then the long runs: an SA moved 100 times under
traffic, and a table update storm (both on the 2-engine, 2-port build)."""

import random

import pytest

from espnic.sim.nic_job import check_nic_run, run_nic_cocotb
from tests.nic_cases import NicScenario, check_migration, migration_case, table_storm


@pytest.mark.parametrize("engines, ports, miss_to_host", [
    (1, 1, False),
    (2, 2, True),
    # Two ports, not three: a forwarder more costs CI about two minutes of build.
    pytest.param(4, 2, False, marks=pytest.mark.slow),
])
def test_nic_verilator(engines, ports, miss_to_host):
    rng = random.Random(1000 + engines)
    scenario = NicScenario(engines=engines, ports=ports, miss_to_host=miss_to_host)
    traffic = scenario.traffic(30 * engines, rng, max_payload=300)
    run = run_nic_cocotb(scenario.setup, traffic, stall=0.2, gap=0.2, seed=engines)
    check_nic_run(run, traffic)
    assert sum(len(packets) for packets in run.outputs.values()) > 5 * engines


@pytest.mark.parametrize("direction", ["out", "in"])
def test_nic_verilator_live_migration(direction):
    """Engine 0's outbound or inbound SA moved 100 times between the two engines
    while its traffic and engine 1's (every kind) flow on two ports: zero loss,
    zero reordering, each sequence number once, replays still caught, counters
    where it ends up (all against the model of a device that never moved it)."""
    scenario, traffic, moves = migration_case(direction, 100, random.Random(100),
                                              background=150)
    run = run_nic_cocotb(scenario.setup, traffic, stall=0.2, gap=0.1, seed=3, migrations=moves)
    check_nic_run(run, traffic)
    check_migration(run, scenario, direction, 100)


def test_nic_verilator_table_storm():
    """A table update storm on both ports while every kind of traffic flows: an
    SPI entry inserted, replaced or removed, a rule or a route written, every
    `pace` cycles (50 rounds of 9 operations), nothing any packet can tell."""
    rng = random.Random(4242)
    scenario = NicScenario(engines=2, ports=2, miss_to_host=True)
    traffic = scenario.traffic(400, rng, max_payload=100)
    storm = table_storm(scenario, 50, rng)
    run = run_nic_cocotb(scenario.setup, traffic, stall=0.2, gap=0.2, seed=5, storm=storm,
                         pace=30)
    assert run.stormed, "the storm must happen while the traffic flows"
    check_nic_run(run, traffic)
    assert {"ok", "replay"} <= {outcome.reason for outcome in run.outcomes}
