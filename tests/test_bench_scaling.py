# SPDX-License-Identifier: BSD-2-Clause
"""Smoke test of ``bench/scaling.py`` on a tiny configuration: the rows it reports,
that every run went through the model check, the Zipf traffic, and the SVG plot.
No timing is asserted: the figures are the bench's to report."""

import xml.etree.ElementTree as ET
from collections import Counter

from espnic.bench import scaling
from espnic.sim.model.forwarder import parse


def test_zipf_traffic_has_the_zipf_shares():
    assert scaling.zipf_counts(4, 25) == [12, 6, 4, 3]
    assert sum(scaling.zipf_counts(8, 33)) == 33
    traffic = scaling.scaling_traffic(4, 64, "zipf", 25, seed=1)
    assert all(len(packet) == 64 for _port, packet in traffic)
    assert Counter(parse(packet).dst[1] for _port, packet in traffic) == \
        {0: 12, 1: 6, 2: 4, 3: 3}
    assert [parse(p).dst[1] for _, p in scaling.scaling_traffic(3, 512, "uniform", 6)] == \
        [0, 1, 2, 0, 1, 2]


def test_scaling_bench_runs_checked(monkeypatch):
    checked = []

    def check(run, traffic):
        scaling_check(run, traffic)
        checked.append(len(traffic))

    scaling_check = scaling.check_nic_run
    monkeypatch.setattr(scaling, "check_nic_run", check)
    result = scaling.run_bench(engines=(1, 2), sizes=(64,), profiles=("compact",),
                               rounds={"compact": {64: 3}}, forwarder=False)
    assert checked == [3, 6, 5]      # one engine; two engines uniform, then zipf (3 + 2)
    rows = result["throughput"]
    assert {(r["distribution"], r["engines"]) for r in rows} == \
        {("uniform", 1), ("uniform", 2), ("zipf", 1), ("zipf", 2)}
    for row in rows:
        assert row["checked"] and row["bytes"] == 64 and row["profile"] == "compact"
        assert row["bits_per_cycle"] > 0 and row["packets_per_cycle"] > 0
        assert row["limit"] in ("engines", "hot SA", "ingress", "egress")
        assert abs(row["scaling"] - row["speedup"] / row["engines"]) < 0.01
    zipf = next(r for r in rows if (r["distribution"], r["engines"]) == ("zipf", 2))
    assert zipf["hot"] == 0.6
    svg = ET.fromstring(scaling.plot(result))
    assert svg.tag.endswith("svg")
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) >= 4


def test_classifier_line_rate_check_runs():
    row = scaling.classifier_rate(46, 12)
    assert row["checked"] and row["beats"] == 3 and row["cycles_per_packet"] > 0
    assert isinstance(row["line_rate"], bool)
