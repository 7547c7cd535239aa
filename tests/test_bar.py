# SPDX-License-Identifier: BSD-2-Clause
"""The ``pcie://`` transport: the BAR bridge (``hdl/bridge/bar.py``) with the real
host driver on it in Verilator, compared with the same driver on ``model://``;
``MmapBar`` on a file; the URL; ``docs/bar.md`` current."""

import mmap
import os
import random
from pathlib import Path

import pytest

from espnic.hdl.bridge.bar import BarLayout, bar_markdown
from espnic.hdl.bridge.regmap import DOC_PARAMETERS, PacketSource, RegisterMap
from espnic.hdl.device import EspNicDevice
from espnic.host.device import Device
from espnic.host.transport import NotSupported, open_link, open_port
from espnic.host.transport.bar import BarError, BarLink, MmapBar, resource_path
from espnic.host.transport.model import model_url
from espnic.sim.bar_job import DEVICE, host_session, run_bar
from tests.nic_cases import NicScenario

ROOT = Path(__file__).resolve().parents[1]


# -- the device in Verilator ------------------------------------------------------------------


def _by_flow(packets):
    # The device keeps order per SA and per port's bypass traffic, not across them.
    return sorted(packets, key=lambda packet: (packet[0].value, *packet[1:]))


@pytest.mark.slow
def test_the_driver_on_the_bar_sees_what_it_sees_on_the_model():
    """Issue 5's ``pcie://`` part: ``EspNicDevice(link="bar")`` in Verilator with the
    real ``Device`` over ``BarLink`` (bus cycles in the simulation) and the same
    driver over ``model://`` see the same: capabilities, SA records read back (keys
    and salts as zero), SPI-table answers, policy and route, a deleted slot, the
    registers and counters, then every packet of a traffic mix (out through the
    packet mailbox), the counters and the SA counters."""
    regmap = RegisterMap(**DEVICE)
    scenario = NicScenario(engines=1, ports=1, slots=regmap.params["slots"], miss_to_host=True)
    traffic = scenario.traffic(12, random.Random(9))
    over_bar = run_bar(scenario.setup, traffic)
    in_model = host_session(Device.open(model_url(regmap.params)), scenario.setup, traffic,
                            timeout=60.0)

    assert over_bar["keys"] == [(0, 0)] * regmap.params["slots"]
    assert over_bar["records"][3] != 0 and over_bar["records"][5] != 0
    assert over_bar["spi"] == ["OK", "COLLISION", "OK", "OK"]
    for name in ("params", "keys", "records", "spi", "policy", "deleted", "pause", "counters"):
        assert over_bar[name] == in_model[name], name
    (packets, counters, sa_counters), expected = over_bar["traffic"], in_model["traffic"]
    assert _by_flow(packets) == _by_flow(expected[0])
    assert counters == expected[1] and sa_counters == expected[2]
    assert sum(p[0] is PacketSource.EGRESS for p in packets) >= 4
    assert any(p[0] is PacketSource.EXCEPTION for p in packets)

    # The BAR's own: a write to a read-only register and a read of an undefined
    # offset counted once each and doing nothing; the payload window reads as zero.
    bar = over_bar["bar"]
    assert bar["counted"] == (1, 1) and bar["unused_reads"] == 0
    assert bar["bad_command"] == over_bar["counters"]["bad_command"] + 1
    assert bar["payload_reads"] == [0] * len(bar["payload_reads"])
    after = over_bar["counters_after"]
    assert after["idle"] == over_bar["counters"]["idle"]      # not written


def test_bar_device_parameters():
    with pytest.raises(ValueError, match="divisor is needed with link='uart' and only then"):
        EspNicDevice(link="bar", divisor=4)
    device = EspNicDevice(link="bar", packets="link", **DEVICE)
    layout = device.bridge.layout
    assert device.signature.members["bar"].flow.name == "In"
    assert layout.size == 4 << layout.address_width


def test_layout_follows_the_register_map():
    """Registers at 4 x their word address, windows after them without overlap, the
    buffers aligned to their size, all inside a power-of-two BAR."""
    regmap = RegisterMap(**DOC_PARAMETERS)
    layout = BarLayout(regmap)
    spans = [(0, regmap.words), (layout.bad_reads, 2)]
    for window in layout.in_windows:
        assert window.words * 4 >= window.channel.payload_bytes
        spans += [(window.payload, window.words), (window.doorbell, 1)]
    for window in layout.out_windows:
        assert len(window.payload) == window.channel.count
        spans += [(window.status, 1), (window.pop, 1)]
        spans += [(start, window.words) for start in window.payload]
    spans += [(layout.inject_doorbell, 4), (layout.inject_buffer, 512),
              (layout.extract_buffer, 1024)]
    spans.sort()
    for (start, words), (after, _) in zip(spans, spans[1:]):
        assert start + words <= after, f"{start:#x} overlaps {after:#x}"
    assert spans[-1][0] + spans[-1][1] <= layout.size // 4
    assert layout.inject_buffer % 512 == 0 and layout.extract_buffer % 1024 == 0
    assert {w.channel.name for w in layout.in_windows + layout.out_windows} == \
        {c.name for c in regmap.channels}


def test_docs_bar_md_is_current():
    generated = bar_markdown(RegisterMap(**DOC_PARAMETERS))
    assert (ROOT / "docs" / "bar.md").read_text() == generated, \
        "docs/bar.md is stale: python -m espnic.hdl.bridge.bar > docs/bar.md"


# -- MmapBar ----------------------------------------------------------------------------------


@pytest.fixture
def bar_file(tmp_path):
    path = tmp_path / "resource0"
    path.write_bytes(bytes(range(64)))
    return path


def test_mmap_bar_reads_and_writes_little_endian_words(bar_file):
    bar = MmapBar(bar_file)
    try:
        assert bar.size == 64
        assert bar.read32(0) == 0x03020100 and bar.read32(60) == 0x3f3e3d3c
        bar.write32(8, 0xdeadbeef)
        assert bar.read32(8) == 0xdeadbeef
    finally:
        bar.close()
    data = bar_file.read_bytes()
    assert data[8:12] == bytes([0xef, 0xbe, 0xad, 0xde])       # the file sees the store
    assert data[:8] == bytes(range(8)) and data[12:] == bytes(range(12, 64))


def test_mmap_bar_maps_what_it_is_told(bar_file):
    bar = MmapBar(bar_file, size=16)
    try:
        assert bar.read32(12) == 0x0f0e0d0c
        with pytest.raises(ValueError, match=r"offset 0x10 is outside the BAR \(0..0xc\)"):
            bar.read32(16)
    finally:
        bar.close()
    with pytest.raises(BarError, match="has 64 bytes, fewer than the 128 to map"):
        MmapBar(bar_file, size=128)
    with pytest.raises(BarError, match="size must be a positive multiple of 4"):
        MmapBar(bar_file, size=6)


@pytest.mark.parametrize("offset, message", [
    (2, "offset 0x2 is not a multiple of 4"),
    (-4, "offset -0x4 is outside the BAR"),
    (64, "offset 0x40 is outside the BAR"),
])
def test_mmap_bar_refuses_bad_offsets(bar_file, offset, message):
    bar = MmapBar(bar_file)
    try:
        with pytest.raises(ValueError, match=message):
            bar.read32(offset)
        with pytest.raises(ValueError, match=message):
            bar.write32(offset, 1)
        with pytest.raises(ValueError, match="value must be a 32-bit unsigned integer"):
            bar.write32(0, 1 << 32)
    finally:
        bar.close()


def test_mmap_bar_says_what_is_missing(tmp_path):
    missing = tmp_path / "0000:01:00.0" / "resource0"
    with pytest.raises(BarError, match=f"no such BAR: {missing} does not exist"):
        MmapBar(missing)


def test_mmap_bar_says_when_it_may_not(bar_file, monkeypatch):
    if os.geteuid() == 0:
        # Root opens any file: the refusal a user without root gets, made by hand.
        def refuse(path, flags, mode=0o777):
            raise PermissionError(13, "Permission denied", path)
        monkeypatch.setattr(os, "open", refuse)
    else:
        bar_file.chmod(0o444)
    with pytest.raises(BarError, match=f"no permission to map {bar_file}: mapping a BAR "
                                       f"needs root"):
        MmapBar(bar_file)


def test_a_file_that_is_no_espnic_bar_is_refused(bar_file):
    with pytest.raises(ValueError, match="not an espnic device"):
        BarLink(MmapBar(bar_file))


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, path", [
    ("pcie://0000:01:00.0", "/sys/bus/pci/devices/0000:01:00.0/resource0"),
    ("pcie://01:00.0?bar=2", "/sys/bus/pci/devices/0000:01:00.0/resource2"),
    ("pcie://0001:AB:1f.7", "/sys/bus/pci/devices/0001:ab:1f.7/resource0"),
    ("pcie:///tmp/bar0", "/tmp/bar0"),
])
def test_pcie_urls_name_resource_files(url, path):
    assert resource_path(url) == path


@pytest.mark.parametrize("url, message", [
    ("pcie://01:00", "names a PCI address DOMAIN:BUS:DEV.FN"),
    ("pcie://0000:01:00.0?bar=6", "bar must be 0..5"),
    ("pcie://0000:01:00.0?speed=1", "unknown option 'speed'"),
    ("pcie:///tmp/bar0?bar=1", "bar= goes with a PCI address"),
])
def test_bad_pcie_urls_say_why(url, message):
    with pytest.raises(ValueError, match=message):
        resource_path(url)


def test_device_open_takes_pcie_urls(tmp_path):
    """``Device.open`` (what every ``--device`` goes through) maps a ``pcie://`` BAR:
    a missing one is a one-line error, and a BAR whose capability block is an
    espnic device's is read as one."""
    with pytest.raises(BarError, match="no such BAR: /sys/bus/pci/devices/0000:7f:1f.7"):
        Device.open("pcie://0000:7f:1f.7")
    regmap = RegisterMap(**DEVICE)
    path = tmp_path / "resource0"
    path.write_bytes(bytes(BarLayout(regmap).size))
    with open(path, "r+b") as file, mmap.mmap(file.fileno(), 0) as words:
        for register in regmap.registers:
            if register.value is not None:
                words[4 * register.address:4 * register.address + 4] = \
                    register.value.to_bytes(4, "little")
    device = Device.open(f"pcie://{path}")
    try:
        assert isinstance(device.link, BarLink) and device.params == regmap.params
    finally:
        device.close()
    with pytest.raises(NotSupported, match="not supported: pcie:// as a byte port"):
        open_port("pcie://0000:01:00.0")
    assert open_link("model://").__class__.__name__ == "FrameLink"
