# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench: the real host driver on ``EspNicDevice(link="bar")``'s BAR.

The job (``ESPNIC_JOB``, written by :func:`espnic.sim.bar_job.run_bar`) names a
pickle of the work (a ``NicSetup`` and traffic, or none) and where the result
goes. A thread of this process runs :func:`espnic.sim.bar_job.host_session` on a
:class:`~espnic.host.device.Device` over a
:class:`~espnic.host.transport.bar.BarLink` whose bar is a :class:`SimulatedBar`:
each ``read32``/``write32`` is one bus cycle on the device's ``bar`` port (a read's
word taken the cycle after its strobe, as ``read_valid`` says).

Simulated time advances only with accesses: while the host computes (or waits
between polls) the simulation waits for its next access, so the device gets one
cycle per access, as if the host answered at once. A host polling for an item
(reading status words) is what lets the device run until it has one.
"""

import json
import os
import pickle
import queue
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from espnic.host.device import Device
from espnic.host.transport.bar import BarLink
from espnic.sim.bar_job import ANSWER_TIMEOUT, host_session
from espnic.sim.benches import start_host
from espnic.sim.cocotb_runner import bench_ports

PERIOD_NS = 10
#: Wall-clock seconds the host may compute without an access before the bench gives up.
HOST_SECONDS = 600.0


class SimulatedBar:
    """A bar (``read32``/``write32``, ``size``) whose accesses a cocotb coroutine
    (:meth:`serve`) does as bus cycles; called from the host's thread."""

    def __init__(self, size: int):
        self.size = size
        self.accesses = 0
        self._requests = queue.SimpleQueue()

    def _access(self, offset: int, value: int | None):
        if offset % 4 or not 0 <= offset < self.size:
            raise ValueError(f"offset {offset:#x} is not an aligned offset of the BAR")
        reply = queue.SimpleQueue()
        self._requests.put((offset, value, reply))
        return reply.get()

    def read32(self, offset: int) -> int:
        return self._access(offset, None)

    def write32(self, offset: int, value: int):
        if not 0 <= value < 1 << 32:
            raise ValueError(f"value must be a 32-bit unsigned integer, not {value!r}")
        self._access(offset, value)

    def finish(self):
        """The host is done: :meth:`serve` returns."""
        self._requests.put(None)

    async def serve(self, dut):
        await FallingEdge(dut.clk)
        while True:
            try:
                request = self._requests.get(timeout=HOST_SECONDS)
            except queue.Empty:
                raise RuntimeError(f"the host made no access for {HOST_SECONDS:g} s") from None
            if request is None:
                return
            offset, value, reply = request
            self.accesses += 1
            dut.bar__address.value = offset // 4
            if value is None:
                dut.bar__read.value = 1
            else:
                dut.bar__write_data.value = value
                dut.bar__write.value = 1
            await FallingEdge(dut.clk)
            dut.bar__read.value = 0
            dut.bar__write.value = 0
            if value is None:
                assert dut.bar__read_valid.value == 1, "no read_valid the cycle after a read"
                reply.put(int(dut.bar__read_data.value))
            else:
                reply.put(None)


@cocotb.test()
async def session(dut):
    job = json.loads(Path(os.environ["ESPNIC_JOB"]).read_text())
    setup, traffic = pickle.loads(Path(job["work"]).read_bytes())
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
    dut.bar__read.value = 0
    dut.bar__write.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0

    bar = SimulatedBar(4 << bench_ports()["bar__address"]["width"])
    worker, outcome = start_host(
        "espnic-bar-host",
        lambda: host_session(Device(BarLink(bar, timeout=ANSWER_TIMEOUT)), setup, traffic),
        bar.finish)
    await bar.serve(dut)
    worker.join()
    assert "error" not in outcome, f"host: {outcome['error']}"
    dut._log.info(f"{bar.accesses} BAR accesses")
    Path(job["seen"]).write_bytes(pickle.dumps(outcome["result"]))
    Path(os.environ["ESPNIC_JOB_RESULT"]).write_text(json.dumps({"accesses": bar.accesses}))
