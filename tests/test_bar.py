# SPDX-License-Identifier: BSD-2-Clause
"""The ``pcie://`` transport: the BAR bridge (``hdl/bridge/bar.py``) with the real
host driver on it in Verilator, compared with the same driver on ``model://``;
``MmapBar`` on a file; the URL; ``docs/bar.md`` current."""

import mmap
import os
import random
from pathlib import Path

import pytest
from amaranth import Cat

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
    assert over_bar["deleted"] == 0 and over_bar["pause"] == 1
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


# -- BarBridge alone, in Amaranth's simulator --------------------------------------------------


class BusDriver:
    """Bus cycles on a ``BarBus`` from an Amaranth testbench (one access a cycle)."""

    def __init__(self, ctx, bus):
        self.ctx, self.bus = ctx, bus

    async def write(self, word_address: int, value: int, *watch):
        """The write; the values of `watch` at its clock edge."""
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.address, word_address)
        ctx.set(bus.write_data, value)
        ctx.set(bus.write, 1)
        *_, seen = await ctx.tick().sample(Cat(*watch))
        ctx.set(bus.write, 0)
        return seen

    async def read(self, word_address: int) -> int:
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.address, word_address)
        ctx.set(bus.read, 1)
        await ctx.tick()
        ctx.set(bus.read, 0)
        assert ctx.get(bus.read_valid) == 1
        return ctx.get(bus.read_data)


def _bridge_bench(bench):
    from espnic.hdl.bridge.bar import BarBridge
    from espnic.sim.amaranth_sim import run_sim

    bridge = BarBridge(RegisterMap(engines=2, ports=2))

    async def testbench(ctx):
        await bench(ctx, bridge, BusDriver(ctx, bridge.bus))

    run_sim(bridge, testbench)


def test_an_in_channel_payload_is_offered_whole_at_its_doorbell_only():
    """Payload words reach no stream before the doorbell; the doorbell offers all of
    them to the stream it names, reads busy until taken, and the taken payload's
    words are cleared; the words read as zero throughout; writes while busy, a bad
    index and a ring while busy are refused and counted."""
    def bench_body():
        async def bench(ctx, bridge, bus):
            window = bridge.layout.in_window(0)               # engine_host
            streams = bridge.engine_host
            payload = random.Random(3).getrandbits(window.channel.layout.size)
            words = payload.to_bytes(4 * window.words, "little")
            for n in range(window.words):
                await bus.write(window.payload + n, int.from_bytes(words[4 * n:4 * n + 4],
                                                                   "little"))
                assert not any(ctx.get(s.valid) for s in streams)
                assert await bus.read(window.payload + n) == 0          # write-only
            assert await bus.read(window.doorbell) == 0
            await bus.write(window.doorbell, 2)                          # no stream 2
            assert await bus.read(window.doorbell) == 0b10               # refused
            assert not any(ctx.get(s.valid) for s in streams)
            await bus.write(window.doorbell, 1)
            assert await bus.read(window.doorbell) == 0b01               # busy
            assert (ctx.get(streams[0].valid), ctx.get(streams[1].valid)) == (0, 1)
            assert ctx.get(streams[1].payload).as_value().value == payload
            await bus.write(window.payload, 0)                           # refused: busy
            await bus.write(window.doorbell, 0)                          # refused: busy
            assert await bus.read(window.doorbell) == 0b11
            assert ctx.get(streams[1].payload).as_value().value == payload
            ctx.set(streams[1].ready, 1)
            await ctx.tick()
            ctx.set(streams[1].ready, 0)
            assert await bus.read(window.doorbell) == 0b10               # taken
            await bus.write(window.doorbell, 0)                          # rung again
            assert ctx.get(streams[0].valid) == 1
            assert ctx.get(streams[0].payload).as_value().value == 0     # cleared
            assert await bus.read(bridge.layout.bad_writes) == 3
            assert await bus.read(bridge.layout.bad_reads) == 0
        return bench

    _bridge_bench(bench_body())


def test_out_channel_items_are_read_then_popped():
    async def bench(ctx, bridge, bus):
        window = bridge.layout.out_window(bridge.regmap.channel("spi_reply").number)
        streams = bridge.spi_reply
        assert await bus.read(window.status) == 0
        assert await bus.read(window.payload[1]) == 0
        await bus.write(window.pop, 1)                                   # nothing to pop
        item = random.Random(4).getrandbits(window.channel.layout.size)
        ctx.set(streams[1].payload.as_value(), item)
        ctx.set(streams[1].valid, 1)
        assert await bus.read(window.status) == 0b010
        got = 0
        for n in range(window.words):
            got |= await bus.read(window.payload[1] + n) << 32 * n
        assert got == item
        assert await bus.read(window.status) == 0b010                    # reads take nothing
        readies = [s.ready for s in streams]
        assert await bus.write(window.pop, 3, *readies) == 0            # no stream 3
        assert await bus.write(window.pop, 1, *readies) == 0b010        # taken
        ctx.set(streams[1].valid, 0)
        assert await bus.read(window.status) == 0
        assert await bus.read(bridge.layout.bad_writes) == 2

    _bridge_bench(bench)


def test_the_packet_mailbox():
    """An injected packet comes out of ``inject`` whole, byte for byte, to its port;
    a bad length or port is refused; a packet leaving by egress port 1 and one from
    the exception queue are read out of the extract buffer with their status."""
    from espnic.hdl.bridge.bar import EXTRACT_STATUS, INJECT_REQUEST
    from espnic.hdl.packet import beats_from_bytes

    packet = random.Random(5).randbytes(37)

    async def bench(ctx, bridge, bus):
        layout = bridge.layout
        for n in range(0, len(packet), 4):
            await bus.write(layout.inject_buffer + n // 4,
                            int.from_bytes(packet[n:n + 4].ljust(4, b"\0"), "little"))
        assert await bus.read(layout.inject_buffer) == 0                 # write-only
        for length, port in ((0, 0), (3000, 0), (10, 2)):
            await bus.write(layout.inject_doorbell, INJECT_REQUEST.const(
                {"length": length, "port": port}).as_bits())
            assert await bus.read(layout.inject_doorbell) == 0b10
        await bus.write(layout.inject_doorbell, INJECT_REQUEST.const(
            {"length": len(packet), "port": 1}).as_bits())
        ctx.set(bridge.inject.ready, 1)
        got = []
        while not got or not got[-1][2]:
            *_, valid, beat = await ctx.tick().sample(bridge.inject.valid,
                                                       bridge.inject.payload)
            if valid:
                got.append((beat.data, beat.port, beat.last))
            assert len(got) <= len(packet)
        assert got == [(byte, 1, n == len(packet) - 1) for n, byte in enumerate(packet)]
        assert await bus.read(layout.inject_doorbell) == 0

        sent = ((bridge.egress[1], packet, 1, PacketSource.EGRESS),
                (bridge.exception, packet[:20], 0, PacketSource.EXCEPTION))
        ctx.set(bridge.exception_port, 0)
        for source, data, port, kind in sent:
            for beat in beats_from_bytes(data, 16):
                for name, value in beat.items():
                    ctx.set(getattr(source.payload, name), value)
                ctx.set(source.valid, 1)
                await ctx.tick().until(source.ready)
            ctx.set(source.valid, 0)
            status = EXTRACT_STATUS.from_bits(await bus.read(layout.extract_status))
            assert (status.waiting, status.aborted, status.truncated, status.port,
                    status.source) == (1, 0, 0, port, kind.value)
            length = await bus.read(layout.extract_length)
            words = [await bus.read(layout.extract_buffer + n)
                     for n in range((length + 3) // 4)]
            assert b"".join(w.to_bytes(4, "little") for w in words)[:length] == data
            await bus.write(layout.extract_pop, 1)
            assert await bus.read(layout.extract_status) == 0
            assert await bus.read(layout.extract_buffer) == 0      # nothing waits
        await bus.write(layout.extract_pop, 1)                    # nothing to pop
        assert await bus.read(layout.bad_writes) == 4      # 3 refused injects, 1 pop

    _bridge_bench(bench)


def test_the_cli_takes_pcie_urls(capsys, tmp_path):
    from espnic.host.cli import main

    assert main(["sa", "list", "--db", str(tmp_path / "sa.db"),
                 "--device", "pcie://0000:7f:1f.7"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == ("espnic sa list: no such BAR: /sys/bus/pci/devices/0000:7f:1f.7/"
                                 "resource0 does not exist (is the device there, and its address "
                                 "and bar number right? see lspci -D)\n")
