# SPDX-License-Identifier: BSD-2-Clause
"""``bench/hostlink.py``: its arithmetic against numbers worked out by hand, and one
tiny measurement at 12 Mbaud on the simulated device server's Verilator build
(shared with tests/test_device_server.py), checked for plausibility and for the
bench's skipping of idle cycles changing nothing."""

import pytest

from espnic.bench import hostlink
from espnic.sim.hostlink_job import run_hostlink


@pytest.mark.parametrize("baud, divisor, line, sa_limit", [
    # 48 MHz / 417 cycles a bit / 10 bits a byte; / 157 bytes an SA record
    (115_200, 417, 11_510.79, 73.3171),
    (3_000_000, 16, 300_000.0, 1910.828),
    (12_000_000, 4, 1_200_000.0, 7643.312),
])
def test_wire_limits(baud, divisor, line, sa_limit):
    from espnic.hdl.bridge.uart import divisor_for
    assert divisor_for(48e6, baud) == divisor
    assert hostlink.line_bytes_per_second(48e6, divisor) == pytest.approx(line, abs=0.01)
    assert hostlink.wire_limit(48e6, divisor, 157) == pytest.approx(sa_limit, rel=1e-5)
    assert hostlink.wire_limit(48e6, divisor, 1400) == pytest.approx(line / 1400)


def test_rows_from_a_run():
    # Two records, each a 165-byte SEND and an 8-byte ACK at 40 cycles a byte, back to
    # back: 157 / 173 of the wire. Four 64-byte packets whose PACKET frames arrive one
    # ACK and one PACKET frame (8 + 73 bytes) apart: 64 / 81.
    result = {"runs": [
        {"run": "sa_records", "count": 2, "cycles": 2 * 173 * 40, "to_device": 330,
         "to_host": 16, "arrivals": []},
        {"run": "packets", "bytes": 64, "count": 4, "cycles": 999_999, "to_device": 288,
         "to_host": 324, "arrivals": [1000 + 81 * 40 * n for n in range(4)]},
    ]}
    records, packets = hostlink.rows(result, baud=12_000_000, clock_hz=48e6, divisor=4)
    assert records == {"baud": 12_000_000, "run": "sa_records", "payload_B": 157,
                       "to_device_B": 165.0, "to_host_B": 8.0, "per_s": 6936.4,
                       "limit_per_s": 7643.3, "efficiency": 0.908}
    assert packets == {"baud": 12_000_000, "run": "packets", "payload_B": 64,
                       "to_device_B": 72.0, "to_host_B": 81.0, "per_s": 14814.8,
                       "limit_per_s": 18750.0, "efficiency": 0.79}


def test_a_tiny_measurement_at_12_mbaud():
    """An SA of each kind and two 64-byte packets; the host session itself checks
    that every SA reads back as written, every SPI entry is there, the packets are the
    model's and the link counted no error. The same run with idle cycles skipped
    far more eagerly than the bench does gives the same cycles."""
    every = run_hostlink(divisor=4, sas=1, packets=2, sizes=(64,), skip=False)
    skipping = run_hostlink(divisor=4, sas=1, packets=2, sizes=(64,), quiet=16)
    assert every["skipped_cycles"] == 0 and skipping["skipped_cycles"] > 0
    assert skipping["runs"] == every["runs"]
    assert every["late_cycles"] == 0
    rows = {row["run"]: row for row in hostlink.rows(every, baud=12_000_000, clock_hz=48e6,
                                                      divisor=4)}
    assert list(rows) == ["sa_records", "sa_burst", "add_sa_out", "add_sa_in", "packets"]
    for row in rows.values():
        assert 0 < row["efficiency"] < 1, row
    # A record is a SEND of 4 + 157 + 2 bytes and 2 FLAGs, a few escaped; its ACK 8.
    assert 165 <= rows["sa_records"]["to_device_B"] <= 170
    assert rows["sa_records"]["to_host_B"] == 8
    assert rows["sa_records"]["efficiency"] >= 0.8            # issue 5's target
    # A burst of one record: a SEND_MANY as long as a SEND.
    assert 165 <= rows["sa_burst"]["to_device_B"] <= 170
    # add_sa reads the record back: a short READ (a few bytes) and its 156-byte reply.
    assert rows["add_sa_out"]["to_device_B"] < rows["sa_records"]["to_device_B"] + 20
    assert rows["add_sa_out"]["to_host_B"] > 8 + 156
    assert rows["add_sa_out"]["efficiency"] < rows["sa_records"]["efficiency"] * 0.6
    assert rows["add_sa_in"]["efficiency"] < rows["add_sa_out"]["efficiency"]
    assert 72 <= rows["packets"]["to_device_B"] and 81 <= rows["packets"]["to_host_B"]
