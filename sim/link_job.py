# SPDX-License-Identifier: BSD-2-Clause
"""The whole device behind its host link (``hdl/device.py: EspNicDevice``), driven
by the real host driver (``host/device.py``) in Amaranth's simulator.

The driver runs in a thread and talks to the simulation through a
:class:`SimPort` (pyserial's ``read``/``write``/``timeout``); a testbench moves
the bytes between the port and the device's link, one per cycle each way. Every
host operation a :class:`~.nic_job.NicSetup` needs, the counters and the SA
counters go over the link as frames; the packets go through the device's ports.
:func:`run_nic_over_link` returns a :class:`~.nic_job.NicRun`, so
:func:`~.nic_job.check_nic_run` holds the device to :class:`NicModel` as for a
run over the host streams.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import defaultdict

from ..hdl.bridge.regmap import PacketSource
from ..hdl.device import EspNicDevice
from ..hdl.engine.sa import SA_COUNTERS
from ..hdl.packet import beats_from_bytes
from ..hdl.top import ENGINE_COUNTERS, LOCAL_COUNTERS, PORT_COUNTERS
from ..host.device import Device
from ..host.link import FrameLink
from .amaranth_sim import run_sim, stream_get_packets, stream_put_all
from .nic_job import (SETTLE_CYCLES, NicRun, NicSetup, counter_reads, egress_packets,
                      exception_collector, host_ok)

__all__ = ["SimPort", "run_nic_over_link", "run_host", "uart_pump", "traffic_over_link"]

_TIMEOUT = 50_000


class SimPort:
    """A byte port between a thread and a simulation, pyserial-style."""

    def __init__(self, *, timeout: float = 0.05):
        self.timeout = timeout
        self.to_device: queue.SimpleQueue = queue.SimpleQueue()
        self.from_device: queue.SimpleQueue = queue.SimpleQueue()

    def write(self, octets: bytes) -> int:
        for byte in octets:
            self.to_device.put(byte)
        return len(octets)

    def read(self, size: int = 1) -> bytes:
        got = bytearray()
        try:
            got.append(self.from_device.get(timeout=self.timeout))
            while len(got) < size:
                got.append(self.from_device.get_nowait())
        except queue.Empty:
            pass
        return bytes(got)

    def close(self):
        pass

    def pump(self, link_rx, link_tx):
        """A testbench that moves bytes: port -> ``link_rx``, ``link_tx`` -> port."""
        async def pump(ctx):
            ctx.set(link_tx.ready, 1)
            offered = False
            while True:
                if not offered:
                    try:
                        ctx.set(link_rx.payload, self.to_device.get_nowait())
                        ctx.set(link_rx.valid, 1)
                        offered = True
                    except queue.Empty:
                        pass
                _clk, _rst, taken, valid, byte = await ctx.tick().sample(
                    link_rx.ready, link_tx.valid, link_tx.payload)
                if offered and taken:
                    ctx.set(link_rx.valid, 0)
                    offered = False
                if valid:
                    self.from_device.put(byte)
        return pump


def traffic_over_link(device: Device, setup: NicSetup, traffic, *, timeout: float):
    """What a host sees when it programs `setup` into `device` over the link, injects
    `traffic` and takes every packet out as frames: ``(packets, counters, SA
    counters)``, the packets as :meth:`Device.packets` gives them, the counters as
    :attr:`NicRun.counters` (what they counted from the call on). Waits (up to `timeout` s) for as many packets and the
    counters :class:`NicModel` expects, so a slow simulation is not cut short."""
    model = setup.model()
    outcomes = [model.process(port, packet) for port, packet in traffic]
    expected = model.counters()
    want = sum(outcome.port is not None for outcome in outcomes) + \
        sum(outcome.exception for outcome in outcomes)
    driver = _Host(device, setup, timeout=timeout)
    before = driver.counters()
    driver.program(setup.model())
    for port, packet in traffic:
        device.inject(port, packet)
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += device.packets(wait=0.2)
    # Drops leave nothing to wait for: wait until the counters say every packet
    # is accounted for (or give up and let the comparison say what differs).
    counters = _added(driver.counters(), before)
    while counters != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        counters = _added(driver.counters(), before)
    return got, counters, driver.sa_counters()


def _added(after: dict, before: dict) -> dict:
    """What the counters ``after`` have counted since ``before`` (32-bit, wrapping)."""
    def minus(a, b):
        return [minus(x, y) for x, y in zip(a, b)] if isinstance(a, list) else (a - b) % 2**32
    return {name: minus(value, before[name]) for name, value in after.items()}


def _run_all_over_link(setup: NicSetup, traffic, *, profile: str, timeout: float):
    model = setup.model()
    outcomes = [model.process(port, packet) for port, packet in traffic]

    def host(device: Device):
        return (*traffic_over_link(device, setup, traffic, timeout=timeout), device.params)

    device = EspNicDevice(link="bytes", packets="link", **setup.params(profile))
    got, counters, sa_counters, params = run_host(device, host, timeout=timeout)
    outputs = {port: [] for port in range(setup.ports)}
    exceptions, aborted = [], 0
    for source, port, packet, was_aborted in got:
        if source is PacketSource.EXCEPTION:
            exceptions.append((port, packet))
        elif was_aborted:
            aborted += 1
        else:
            outputs[port].append(packet)
    return NicRun(outputs, exceptions, outcomes, counters, sa_counters, model, aborted), params


def run_host(device: EspNicDevice, host, *, port: SimPort | None = None,
             timeout: float = 30.0):
    """Simulate `device` while ``host(Device)`` runs in a thread on a driver opened
    over `port` (a new :class:`SimPort` by default); returns what `host` returns
    and re-raises what it raises. `timeout`: the driver's answer timeout, seconds."""
    port = port or SimPort()
    outcome = {}

    def thread():
        try:
            outcome["value"] = host(Device(FrameLink(port, timeout=timeout)))
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=thread, daemon=True)

    async def wait(ctx):
        worker.start()
        while worker.is_alive():
            await ctx.tick().repeat(50)

    if device.link == "uart":
        pumps = uart_pump(port, device.uart_rx, device.uart_tx, device.divisor)
    else:
        pumps = [port.pump(device.host_rx, device.host_tx)]
    run_sim(device, wait, background=pumps)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def uart_pump(port: SimPort, rx_pin, tx_pin, divisor: int):
    """Testbenches that are the host's UART (8N1, `divisor` cycles per bit) between
    `port` and a device's pins: bytes from the port go out on `rx_pin`, characters
    on `tx_pin` (sampled mid-bit) come back to the port."""
    async def send(ctx):
        ctx.set(rx_pin, 1)
        while True:
            try:
                byte = port.to_device.get_nowait()
            except queue.Empty:
                await ctx.tick().repeat(divisor)
                continue
            for bit in [0, *(byte >> n & 1 for n in range(8)), 1]:
                ctx.set(rx_pin, bit)
                await ctx.tick().repeat(divisor)

    async def receive(ctx):
        while True:
            await ctx.tick().until(tx_pin == 0)
            await ctx.tick().repeat(divisor // 2)          # the start bit's middle
            byte = 0
            for n in range(8):
                await ctx.tick().repeat(divisor)
                byte |= ctx.get(tx_pin) << n
            await ctx.tick().repeat(divisor)               # the stop bit's middle
            port.from_device.put(byte)

    return [send, receive]


class _Host:
    """What the host does in a run: program a :class:`NicSetup` and read counters
    back, over a :class:`Device`, answering replies from its items."""

    def __init__(self, device: Device, setup: NicSetup, *, timeout: float):
        self.device, self.setup, self.timeout = device, setup, timeout

    def operate(self, op: tuple, what: str, *, check: bool = True):
        """Send `op`; with a reply stream, return the answer (checked as a table's
        "done" when `check`)."""
        name, index, payload, reply = op
        index = index or 0
        if reply is None:
            return self.device.send(name, index, payload)
        answer = self.device.request(name, index, payload, reply=reply, wait=self.timeout)
        if check and not host_ok(answer):
            raise AssertionError(f"{what} {name}[{index}] refused: {payload}")
        return answer

    def program(self, model):
        for op in self.setup.host_ops(model):
            self.operate(op, "setup")
        self.device.write("miss_to_host",
                          sum(flag << p for p, flag in enumerate(self.setup.miss_to_host)))

    def sa_counters(self) -> dict:
        counters = {}
        for sa, op in counter_reads(self.setup, ()):
            answer = self.operate(op, "counters", check=False)
            counters[sa] = {name: getattr(answer.counters, name) for name, _ in SA_COUNTERS}
        return counters

    def counters(self) -> dict:
        return _device_counters(self.device.counters(), self.setup)


class _Driver(threading.Thread):
    """The host's side of a run over the packet ports: programs `setup`, then on
    `quiet` reads counters back."""

    def __init__(self, setup: NicSetup, port: SimPort, model, *, timeout: float):
        super().__init__(daemon=True)
        self.setup, self.port, self.model, self.timeout = setup, port, model, timeout
        self.programmed, self.quiet, self.done = (threading.Event(), threading.Event(),
                                                  threading.Event())
        self.params = self.error = None
        self.counters, self.sa_counters = {}, {}

    def run(self):
        try:
            device = Device(FrameLink(self.port, timeout=self.timeout))
            self.params = device.params
            host = _Host(device, self.setup, timeout=self.timeout)
            host.program(self.model)
            self.programmed.set()
            self.quiet.wait()
            self.sa_counters, self.counters = host.sa_counters(), host.counters()
        except BaseException as error:        # reported by the simulation's side
            self.error = error
            self.programmed.set()
        finally:
            self.done.set()


def _device_counters(read: dict, setup: NicSetup) -> dict:
    """``Device.counters()`` (``name[i]`` per register) as ``NicRun.counters`` has them."""
    forwarders = setup.ports + setup.nested
    counters = {name: [read[f"{name}[{f}]"] for f in range(forwarders)] for name in PORT_COUNTERS}
    counters.update({name: [read[f"{name}[{k}]"] for k in range(setup.engines)]
                     for name in ENGINE_COUNTERS})
    counters["sent"] = [read[f"sent[{p}]"] for p in range(setup.ports + setup.nested)]
    for name in ("no_route", "egress_malformed", "misrouted", "arm_refused", *LOCAL_COUNTERS):
        counters[name] = read.get(name, 0)      # the local ones exist only when nested
    return counters


def run_nic_over_link(setup: NicSetup, traffic, *, profile="compact", stall=0.0, gap=0.0,
                      seed=0, timeout: float = 120.0,
                      packets: str = "ports") -> tuple[NicRun, dict]:
    """`traffic` through an :class:`EspNicDevice` that the host driver programs over
    its link. Returns the run and the device parameters the driver read from the
    capability block. `timeout`: wall-clock seconds the driver waits for an answer.

    `packets`: ``"ports"``: the traffic goes through the device's packet ports
    (with input gaps and output stalls); ``"link"``: the driver injects it and
    takes every packet out as frames, and nothing but the link connects the
    device to the outside."""
    if packets == "link":
        return _run_all_over_link(setup, traffic, profile=profile, timeout=timeout)
    model = setup.model()
    outcomes = [model.process(port, packet) for port, packet in traffic]
    device = EspNicDevice(link="bytes", **setup.params(profile))
    port = SimPort()
    driver = _Driver(setup, port, model, timeout=timeout)
    want = defaultdict(int)
    for outcome in outcomes:
        if outcome.port is not None:
            want[outcome.port] += 1
    received, exceptions, collected = {}, [], []

    async def host(ctx):
        driver.start()
        while not driver.programmed.is_set():
            await ctx.tick().repeat(50)
        assert driver.error is None, f"host driver: {driver.error!r}"
        while len(collected) < setup.ports:
            await ctx.tick()
        await ctx.tick().repeat(SETTLE_CYCLES)
        driver.quiet.set()
        while not driver.done.is_set():
            await ctx.tick().repeat(50)
        assert driver.error is None, f"host driver: {driver.error!r}"

    async def programmed(ctx):
        while not driver.programmed.is_set():
            await ctx.tick().repeat(50)

    def feeder(port_number):
        async def feed(ctx):
            await programmed(ctx)
            beats = [beat for p, packet in traffic if p == port_number
                     for beat in beats_from_bytes(packet, 16)]
            await stream_put_all(ctx, device.i[port_number], beats,
                                 rng=random.Random(seed * 31 + port_number), gap_prob=gap,
                                 timeout=_TIMEOUT)
        return feed

    def collector(port_number):
        async def collect(ctx):
            await programmed(ctx)
            received[port_number] = await stream_get_packets(
                ctx, device.o[port_number], want[port_number],
                rng=random.Random(seed * 17 + port_number), stall_prob=stall, timeout=_TIMEOUT)
            collected.append(port_number)
        return collect

    want_exceptions = sum(outcome.exception for outcome in outcomes)
    run_sim(device, host, *(feeder(p) for p in range(setup.ports)),
            *(collector(p) for p in range(setup.ports)),
            exception_collector(device, want_exceptions, exceptions),
            background=[port.pump(device.host_rx, device.host_tx)])
    outputs, aborted = egress_packets(received, setup.ports)
    run = NicRun(outputs, exceptions, outcomes, driver.counters, driver.sa_counters, model,
                 aborted)
    return run, driver.params
