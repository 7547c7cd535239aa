# SPDX-License-Identifier: BSD-2-Clause
"""The whole device's Verilog in Verilator (cocotb) against ``NicModel``, as
``test_nic.py`` does in Amaranth's simulator: 1, 2 and 4 compact engines, 1 to 3
ports, every kind of traffic; each egress port's packets, per flow in order,
the exceptions, every counter."""

import random

import pytest

from espnic.sim.nic_job import check_nic_run, run_nic_cocotb
from tests.nic_cases import NicScenario


@pytest.mark.parametrize("engines, ports, miss_to_host", [
    (1, 1, False),
    (2, 2, True),
    pytest.param(4, 3, False, marks=pytest.mark.slow),
])
def test_nic_verilator(engines, ports, miss_to_host):
    rng = random.Random(1000 + engines)
    scenario = NicScenario(engines=engines, ports=ports, miss_to_host=miss_to_host)
    traffic = scenario.traffic(30 * engines, rng, max_payload=300)
    run = run_nic_cocotb(scenario.setup, traffic, stall=0.2, gap=0.2, seed=engines)
    check_nic_run(run, traffic)
    assert sum(len(packets) for packets in run.outputs.values()) > 5 * engines
