# SPDX-License-Identifier: BSD-2-Clause
"""Host in the loop: the host driver programs an ``EspNicDevice`` over its link
(frames, CRC, the bridge) and reads its counters back the same way; the traffic's
outputs, the exception queue and every counter must equal ``NicModel``'s."""

import random
import time

import pytest

from espnic.hdl.bridge.regmap import RegisterMap
from espnic.hdl.device import EspNicDevice
from espnic.hdl.engine.sa import SaState, sa_layout
from espnic.hdl.engine.sa_table import HostOp, control_record
from espnic.sim.link_job import SimPort, run_host, run_nic_over_link
from espnic.sim.nic_job import check_nic_run
from tests.esp_cases import KEY256
from tests.esp_cases import config as esp_config
from tests.nic_cases import NicScenario


@pytest.mark.parametrize("engines, ports, miss_to_host", [(1, 1, False), (2, 2, True)])
def test_device_programmed_over_its_link(engines, ports, miss_to_host):
    rng = random.Random(engines * 7 + ports)
    scenario = NicScenario(engines=engines, ports=ports, miss_to_host=miss_to_host)
    traffic = scenario.traffic(24, rng)
    run, params = run_nic_over_link(scenario.setup, traffic, stall=0.2, gap=0.2, seed=ports)
    assert params == RegisterMap(**scenario.setup.params("compact")).params
    check_nic_run(run, traffic)
    assert sum(len(packets) for packets in run.outputs.values()) > 5
    assert run.sa_counters, "no SA counters were read back"


@pytest.mark.parametrize("engines, ports", [(1, 1), (2, 2)])
def test_packets_over_the_link_only(engines, ports):
    """A device with no packet ports (a board without Ethernet): the host injects
    the traffic as frames and takes every packet out as frames (the exception
    queue's too); everything equals the model's."""
    rng = random.Random(engines * 5 + ports)
    scenario = NicScenario(engines=engines, ports=ports, miss_to_host=ports > 1)
    traffic = scenario.traffic(20, rng)
    run, _params = run_nic_over_link(scenario.setup, traffic, packets="link")
    check_nic_run(run, traffic)
    assert sum(len(packets) for packets in run.outputs.values()) >= 3
    if ports > 1:
        assert run.exceptions, "no packet reached the exception queue"


def test_device_parameters():
    with pytest.raises(ValueError, match="link must be one of"):
        EspNicDevice(link="pcie")
    with pytest.raises(ValueError, match="divisor is needed with link='uart'"):
        EspNicDevice(link="uart")
    with pytest.raises(ValueError, match="packets must be one of"):
        EspNicDevice(packets="pcap")


def first_item(driver, *, patience: float = 300.0) -> list:
    """The device's items once there is one. Simulation speed depends on the
    machine's load, so this waits long; only a hang takes the whole `patience`."""
    items, deadline = [], time.monotonic() + patience
    while not items and time.monotonic() < deadline:
        items = driver.items(wait=1.0)
    return items


class SpoilingPort(SimPort):
    """A link that spoils some of the frames the host writes: ``spoil(n, wire)``
    gives what reaches the device of the host's n-th write."""

    def __init__(self, spoil):
        super().__init__()
        self.spoil, self.writes = spoil, 0

    def write(self, octets):
        spoiled = self.spoil(self.writes, bytes(octets))
        self.writes += 1
        super().write(spoiled)
        return len(octets)


def _spoil(n, wire):
    if n == 2:                       # a bit flipped: bad CRC
        return wire[:40] + bytes([wire[40] ^ 0x04]) + wire[41:]
    if n == 4:                       # the link drops mid-frame; the next FLAG ends it
        return wire[:len(wire) // 2]
    if n == 6:                       # line noise in front of a good frame
        return bytes(random.Random(6).getrandbits(8) for _ in range(30)) + wire
    if n == 8:                       # lost entirely
        return b""
    return wire


def test_link_errors_are_retried_and_nothing_is_half_written():
    """SA installs over a link that flips bits, cuts frames, adds noise and loses a
    frame: every fault is counted on the device, the driver resends, each SA is
    written once and whole, the slots never written stay empty, and the keys read
    back as zero."""
    window = 64
    configs = {slot: esp_config("out" if slot % 2 else "in", spi=0x1000 + slot, key=KEY256,
                                window=window)
               for slot in range(4)}
    device = EspNicDevice(link="bytes", slots=8, window=window)
    layout = sa_layout(window)

    def host(driver):
        for slot, config in configs.items():
            driver.send("engine_host", 0, {"op": HostOp.WRITE, "slot": slot,
                                           "record": control_record(config.to_record(layout))})
        read_back = {}
        for slot in range(8):
            driver.send("engine_host", 0, {"op": HostOp.READ, "slot": slot})
            (channel, index, reply), = first_item(driver)
            assert (channel, index) == ("engine_reply", 0)
            read_back[slot] = reply.record
        return read_back, driver.counters(), driver.link.resends

    read_back, counters, resends = run_host(device, host, port=SpoilingPort(_spoil), timeout=3.0)
    for slot in range(8):
        record = read_back[slot]
        if slot not in configs:
            assert record.state == SaState.INVALID and record.key == 0, f"slot {slot}"
            continue
        expected = control_record(configs[slot].to_record(layout))
        assert (record.key, record.salt) == (0, 0), f"slot {slot}: key or salt readable"
        assert record.state == SaState.VALID
        for name in ("spi", "seq", "direction", "mode", "key_256", "window"):
            assert getattr(record, name) == expected[name], f"slot {slot}: {name}"
    assert counters["bad_crc"] >= 2          # the flipped bit, the cut frame (and the noise)
    assert resends >= 3                      # bad CRC, cut frame, lost frame: no answer
    assert counters["bad_command"] == 0


def test_uart_link():
    """The same driver over the UART pins (8N1, 4 cycles a bit: 12 Mbaud at 48 MHz):
    capabilities, an SA written and read back (key zero), the link counters clean."""
    device = EspNicDevice(link="uart", divisor=4, slots=4, window=64)
    config = esp_config("out", spi=0x4242, window=64)
    layout = sa_layout(64)

    def host(driver):
        driver.send("engine_host", 0, {"op": HostOp.WRITE, "slot": 3,
                                       "record": control_record(config.to_record(layout))})
        driver.send("engine_host", 0, {"op": HostOp.READ, "slot": 3})
        (channel, _index, reply), = first_item(driver)
        return driver.params, channel, reply.record, driver.counters()

    params, channel, record, counters = run_host(device, host, timeout=60.0)
    assert (params["slots"], params["window"], channel) == (4, 64, "engine_reply")
    assert (record.spi, record.key, record.state) == (0x4242, 0, SaState.VALID)
    assert counters["bad_crc"] == counters["too_short"] == counters["bad_command"] == 0
