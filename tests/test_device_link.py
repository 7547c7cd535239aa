# SPDX-License-Identifier: BSD-2-Clause
"""Host in the loop: the host driver programs an ``EspNicDevice`` over its link
(frames, CRC, the bridge) and reads its counters back the same way; the traffic's
outputs, the exception queue and every counter must equal ``NicModel``'s."""

import random
import time

import pytest

from espnic.hdl.bridge.framing import FLAG, encode_frame
from espnic.hdl.bridge.regmap import FrameKind, RegisterMap, Status
from espnic.hdl.device import EspNicDevice
from espnic.hdl.engine.sa import SaState, sa_layout
from espnic.hdl.engine.sa_table import HostOp, control_record
from espnic.host.device import Device
from espnic.host.link import FrameLink
from espnic.host.transport.model import ModelPort, model_url
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
    capabilities, an SA written and read back (key zero), the link counters clean
    (the UART's framing errors and overruns, the bridge's dropped frames among them)."""
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
    assert counters["uart_framing_errors"] == counters["uart_overruns"] == 0
    assert counters["frames_dropped"] == 0


def _raw(driver, payload: bytes, *, spoil: bool = False, patience: float = 300.0):
    """``payload`` as a frame straight onto the driver's port, and the answer with
    its tag; with ``spoil`` a bit of its CRC flipped, and None (no answer comes).
    Items that come meanwhile are kept for ``driver.items``."""
    wire = encode_frame(payload)
    if spoil:
        wire = wire[:-2] + bytes([wire[-2] ^ 0x01 if wire[-2] ^ 0x01 not in (FLAG, 0x7D)
                                  else wire[-2] ^ 0x02]) + wire[-1:]
    link = driver.link
    link.port.write(wire)
    if spoil:
        return None
    deadline = time.monotonic() + patience
    while (frame := link.receive_frame(deadline)) is not None:
        if frame[0] == FrameKind.ITEM.value:
            driver._items.extend(driver._unpack([(frame[2], frame[3], frame[4:])]))
        elif frame[1] == payload[1]:
            return frame
    raise AssertionError(f"no answer to the frame with tag {payload[1]}")


def _burst_session(driver, configs, layout):
    """Bursts and short SENDs on an engine of 8 slots: 5 SAs in one burst; a burst
    with a bad CRC (slots 5, 6), one that is a byte over whole records (slot 7) and
    one to an out channel, none written; a burst of two READs resent, executed once;
    every slot read back by a short SEND; slot 0 deleted by one. Returns the
    answers, the items, the records read back and the link's counters."""
    engine_host = driver.regmap.channel("engine_host")
    control = engine_host.layout

    def payload(fields):
        return control.const(fields).as_bits().to_bytes(engine_host.payload_bytes, "little")

    def writes(slots):
        return b"".join(payload({"op": HostOp.WRITE, "slot": slot,
                                 "record": control_record(configs[slot % 5].to_record(layout))})
                        for slot in slots)

    def burst(tag, body, channel=engine_host.number):
        return bytes([FrameKind.SEND_MANY.value, tag, channel, 0]) + body

    driver.write_sas(0, [(slot, configs[slot]) for slot in range(5)])
    answers = [
        _raw(driver, burst(201, writes([5, 6])), spoil=True),
        _raw(driver, burst(202, writes([7]) + b"\1")),
        _raw(driver, burst(203, writes([5]), driver.regmap.channel("engine_reply").number)),
    ]
    reads = burst(204, payload({"op": HostOp.READ, "slot": 1})
                  + payload({"op": HostOp.READ, "slot": 3}))
    answers += [_raw(driver, reads), _raw(driver, reads)]
    items = []
    while len(items) < 2:
        items += first_item(driver)
    records = [driver.read_sa(0, slot).record for slot in range(8)]
    driver.delete_sa(0, 0)
    records.append(driver.read_sa(0, 0).record)
    counters = {name: driver.counters()[name]
                for name in ("bad_crc", "bad_command", "duplicates", "too_short", "too_long")}
    return answers, items, records, counters


def test_sa_bursts_and_short_sends():
    """``SEND_MANY`` and ``SEND_SHORT`` on the device over its link, against the
    reference model behind ``model://`` doing the same: the same answers, items,
    records and counters; and against what was meant: the burst's SAs whole (every
    field but key and salt, which read as zero), the refused bursts leaving their
    slots empty, the resent one executed once, the deleted slot empty."""
    window = 64
    layout = sa_layout(window)
    params = {"engines": 1, "ports": 1, "slots": 8, "window": window}
    configs = [esp_config("out" if n % 2 else "in", spi=0x5000 + n, key=KEY256, window=window)
               for n in range(5)]
    device = run_host(EspNicDevice(link="bytes", **params),
                      lambda driver: _burst_session(driver, configs, layout), timeout=60.0)
    model = _burst_session(Device(FrameLink(ModelPort(model_url(RegisterMap(**params).params)))),
                           configs, layout)
    assert device == model
    answers, items, records, counters = device
    assert [None if a is None else a[:4] for a in answers] == [
        None,
        bytes([FrameKind.ACK.value, 202, Status.BAD_LENGTH.value, 0]),
        bytes([FrameKind.ACK.value, 203, Status.BAD_CHANNEL.value, 0]),
        bytes([FrameKind.ACK.value, 204, Status.OK.value, 0]),
        bytes([FrameKind.ACK.value, 204, Status.DUPLICATE.value, 0])]
    assert [(channel, item.record.spi) for channel, _, item in items] == \
        [("engine_reply", 0x5001), ("engine_reply", 0x5003)]
    for slot, record in enumerate(records[:8]):
        if slot >= 5:
            assert (record.state, record.spi, record.key) == (SaState.INVALID, 0, 0), slot
            continue
        expected = control_record(configs[slot].to_record(layout))
        assert (record.key, record.salt, record.state) == (0, 0, SaState.VALID), slot
        for name in ("spi", "seq", "direction", "mode", "key_256", "window", "tunnel"):
            assert getattr(record, name) == expected[name], f"slot {slot}: {name}"
    assert records[8].state == SaState.INVALID
    assert counters == {"bad_crc": 1, "bad_command": 2, "duplicates": 1, "too_short": 0,
                        "too_long": 0}


def test_write_sas_splits_into_frames_and_checks_first():
    """On ``model://``: 30 SAs go as three bursts (13, 13, 4 records), each slot then
    holds its SA; the link refuses bursts it cannot send, and a bad slot is refused
    before anything is sent."""
    window = 64
    driver = Device(FrameLink(ModelPort("model://?slots=32&window=64")))
    frames = []
    write = driver.link.port.write
    driver.link.port.write = lambda wire: (frames.append(wire[1]), write(wire))[1]
    configs = [esp_config("out", spi=0x6000 + n, key=KEY256, window=window) for n in range(30)]
    driver.write_sas(0, list(enumerate(configs)))
    assert frames == [FrameKind.SEND_MANY.value] * 3
    for slot in (0, 12, 13, 29):
        record = driver.read_sa(0, slot).record
        assert (record.spi, record.key, record.state) == (0x6000 + slot, 0, SaState.VALID)
    frames.clear()
    with pytest.raises(ValueError, match="slot must be 0..31"):
        driver.write_sas(0, [(1, configs[1]), (32, configs[2])])
    engine_host = driver.regmap.channel("engine_host").number
    with pytest.raises(ValueError, match="at least one payload"):
        driver.link.send_many(engine_host, 0, [])
    with pytest.raises(ValueError, match="the same length"):
        driver.link.send_many(engine_host, 0, [bytes(157), bytes(156)])
    with pytest.raises(ValueError, match="do not fit a frame"):
        driver.link.send_many(engine_host, 0, [bytes(157)] * 14)
    with pytest.raises(ValueError, match="at least one byte"):
        driver.link.send_short(engine_host, 0, b"")
    assert frames == []


class _PlainLink:
    """A link with only whole SENDs (as a BAR's ``BarLink``): a model:// FrameLink
    behind it, the kinds of the frames it sent recorded."""

    def __init__(self, url):
        self._link = FrameLink(ModelPort(url))
        self.timeout, self.retries, self.kinds = self._link.timeout, self._link.retries, []
        for name in ("read", "write", "inject", "items", "packets", "close"):
            setattr(self, name, getattr(self._link, name))

    def send(self, channel, index, payload):
        self.kinds.append(FrameKind.SEND)
        return self._link.send(channel, index, payload)


def test_a_link_without_bursts_or_short_sends_gets_whole_sends():
    driver = Device(_PlainLink("model://?slots=4&window=64"))
    configs = [esp_config("in", spi=0x7000 + n, key=KEY256, window=64) for n in range(3)]
    driver.write_sas(0, list(enumerate(configs)))
    assert driver.read_sa(0, 2).record.spi == 0x7002
    driver.delete_sa(0, 2)
    assert driver.link.kinds == [FrameKind.SEND] * 5
