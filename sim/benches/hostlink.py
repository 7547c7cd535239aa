# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench of the host link's throughput: ``EspNicDevice(link="bytes")`` with
the real host driver in a thread of this process, its bytes paced like a UART.

The job (``ESPNIC_JOB``, written by :func:`espnic.sim.hostlink_job.run_hostlink`)
gives the divisor; :func:`espnic.sim.hostlink_job.host_session` is what the host
does, through a :class:`PacedPort` (pyserial's ``read``/``write``/``in_waiting``).

**The line.** Each direction is a UART line of ``byte_cycles`` cycles a character
(10 bit times, 8N1): the host's bytes go out back to back, each offered on
``host_rx`` once its character is complete (``byte_cycles`` after it started); the
device's transmitter takes a byte from ``host_tx`` whenever its line is free (as
``UartTx`` does: the next byte right after the previous one's stop bit) and the
host has it ``byte_cycles`` later. A byte that arrives while the device has not
taken the one before waits (a real UART would overrun; ``late_cycles`` is the
longest wait, 0 with a stop-and-wait host). Against a pair of real UARTs
(``link="uart"``), which hand a byte on in the middle of its stop bit, this line
is half a bit slower at each end of a turnaround: about a bit time, a tenth of a
character, per answer.

**The host takes no time.** Simulated time advances only while the host is
blocked in ``read`` waiting for bytes (or has finished): whenever a byte reaches
it, the simulation stops (this coroutine waits, synchronously, so the simulator
waits with it) until the host has done what it does with it and is waiting
again. So the cycles measured are the link's and the device's alone, as if the
host answered at once.

**Idle cycles are skipped.** Verilator runs this device at about 6,000 cycles a
second, and at 115,200 baud a character is 4,170 cycles of a 48 MHz clock. Once
no input of the device has changed and no byte has come from it for
:data:`QUIET_CYCLES`, the device is only waiting for the line, so the rest of the
character time is not simulated: the bench counts *link cycles*, the simulated
ones plus those skipped. ``skip=False`` in the job simulates every one; the
figures are the same (see :data:`QUIET_CYCLES`).

Between events the bench sleeps on timers and on ``host_tx.valid`` rising, so a
character costs a few Python calls, not one per cycle.
"""

import collections
import json
import os
import threading
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer

from espnic.hdl.bridge.framing import FrameDecoderModel
from espnic.host.device import Device
from espnic.host.link import FrameLink, LinkError
from espnic.sim.benches import start_host
from espnic.sim.cocotb_streams import reset_link_device
from espnic.sim.hostlink_job import ANSWER_TIMEOUT, host_session

PERIOD_NS = 10
#: Cycles with the host waiting and nothing at all on the link before the bench
#: gives up (the device owes an answer that does not come), beyond 100 characters.
HANG_CYCLES = 200_000
#: Cycles with no input of the device changing and no byte from it after which the
#: rest of a character time passes without simulating it (``skip``): the device is
#: only waiting for the line by then. Checked against simulating every cycle: the
#: same link cycles, to the cycle, for every run of a job of 2 SAs of each kind and
#: 64- and 1,400-byte packets, at 160 cycles a character (3 Mbaud) with 32 and 64,
#: at 420 with 64; tests/test_bench_hostlink.py checks it at 16 (12 Mbaud).
QUIET_CYCLES = 64
#: Wall-clock seconds the host may compute without waiting for the device.
HOST_SECONDS = 600.0


class PacedPort:
    """The host's serial port on the simulated line (see the module docstring).

    Host side: ``write``, ``read``, ``in_waiting``, ``close`` (pyserial's), and
    ``cycle`` (the simulated cycle now: frozen while the host runs),
    ``byte_cycles`` (cycles a character; set by the host between runs),
    ``to_device`` / ``to_host`` (bytes that went out each way) and ``frames``
    (``(cycle, kind)`` of each whole frame the host got, at its last byte).
    """

    timeout = None

    def __init__(self):
        self._condition = threading.Condition()
        self._outbound = collections.deque()    # written by the host, not yet on the line
        self._inbound = bytearray()             # arrived, not yet read by the host
        self._waiting = False                   # the host is in read() with nothing to read
        self._finished = False
        self._error = None
        self._decoder = FrameDecoderModel()
        self.cycle = 0
        self.byte_cycles = 1
        self.to_device = self.to_host = 0
        self.frames = []

    # -- the host's side --------------------------------------------------------------

    def write(self, octets: bytes) -> int:
        with self._condition:
            self._outbound.extend(octets)
        return len(octets)

    @property
    def in_waiting(self) -> int:
        return len(self._inbound)

    def read(self, size: int = 1) -> bytes:
        with self._condition:
            while not self._inbound:
                if self._error is not None:
                    raise LinkError(self._error)
                self._waiting = True
                self._condition.notify_all()
                self._condition.wait()
            taken = bytes(self._inbound[:size])
            del self._inbound[:size]
            return taken

    def close(self):
        pass

    # -- the simulation's side --------------------------------------------------------

    def deliver(self, byte: int, cycle: int):
        """A byte reaches the host at `cycle`; it runs (the simulation waits at the
        next :meth:`gate`)."""
        with self._condition:
            self.cycle = cycle
            self.to_host += 1
            self._inbound.append(byte)
            for frame in self._decoder.feed(bytes([byte])):
                self.frames.append((cycle, frame[0]))
            self._waiting = False
            self._condition.notify_all()

    def gate(self, cycle: int) -> bool:
        """Wait until the host waits for bytes (True) or has finished (False)."""
        with self._condition:
            self.cycle = cycle
            if not self._condition.wait_for(lambda: self._waiting or self._finished,
                                            HOST_SECONDS):
                raise RuntimeError(f"the host computed for {HOST_SECONDS:g} s without waiting "
                                   f"for the device")
            return not self._finished

    def next_byte(self) -> int | None:
        """The host's next byte for the line, if it has one."""
        with self._condition:
            if not self._outbound:
                return None
            self.to_device += 1
            return self._outbound.popleft()

    def finish(self):
        with self._condition:
            self._finished = True
            self._condition.notify_all()

    def fail(self, message: str):
        """The simulation gives up: the host's read raises :class:`LinkError`."""
        with self._condition:
            self._error = message
            self._waiting = False           # until it has seen the error
            self._condition.notify_all()


def _sim_cycle() -> int:
    """The simulated cycle whose falling edge is now (rising edges at whole periods)."""
    return round((get_sim_time("ns") - PERIOD_NS / 2) / PERIOD_NS)


class Line:
    """The two UART lines between a :class:`PacedPort` and the device's byte link
    (see the module docstring), in *link cycles*: the simulated cycles plus those
    skipped (``skip``: the idle rest of a character once the device has been quiet
    for :data:`QUIET_CYCLES`)."""

    def __init__(self, dut, port: PacedPort, *, skip: bool, quiet: int = QUIET_CYCLES):
        self.dut, self.port, self.skip, self.quiet = dut, port, skip, quiet
        self.offset = 0          # link cycle - simulated cycle
        self.skipped = 0
        self.late = 0            # longest a byte waited for the device to take it
        self.quiet_since = 0     # link cycle of the last input change or output byte

    def now(self) -> int:
        return _sim_cycle() + self.offset

    async def _sleep(self, until: int, watch: bool):
        """From a falling edge to that of link cycle `until`, or (`watch`) to the one
        after ``host_tx.valid`` rises, if sooner."""
        delay = Timer((until - self.now()) * PERIOD_NS - PERIOD_NS // 4, unit="ns")
        await (First(RisingEdge(self.dut.host_tx__valid), delay) if watch else delay)
        await FallingEdge(self.dut.clk)

    async def advance(self, until: int, watch: bool):
        """To the falling edge of link cycle `until` (sooner if `watch` sees a byte
        coming); the cycles from :data:`QUIET_CYCLES` after the last activity on are
        skipped when skipping."""
        settled = self.quiet_since + self.quiet
        if not self.skip or until <= settled + 1:
            await self._sleep(until, watch)
            return
        if settled > self.now():
            await self._sleep(settled, watch)
            if self.now() < settled:
                return                        # the device has a byte after all
        jump = until - self.now() - 1
        self.offset += jump
        self.skipped += jump
        await FallingEdge(self.dut.clk)

    async def run(self):
        """Move bytes until the host has finished."""
        dut, port = self.dut, self.port
        rx_valid, rx_payload, rx_ready = dut.host_rx__valid, dut.host_rx__payload, \
            dut.host_rx__ready
        tx_valid, tx_payload, tx_ready = dut.host_tx__valid, dut.host_tx__payload, \
            dut.host_tx__ready
        to_device = None             # (link cycle its character ends, byte) on the host's line
        arrived = collections.deque()   # (link cycle, byte) complete, not taken by the device
        to_host = None               # (link cycle its character ends, byte) on the device's line
        await FallingEdge(dut.clk)
        while True:
            now = self.now()
            active = bool(arrived)
            if to_host is not None and to_host[0] <= now:
                port.deliver(to_host[1], now)
                to_host, active = None, True
            if to_device is not None and to_device[0] <= now:
                arrived.append((now, to_device[1]))
                to_device, active = None, True
            if not port.gate(now):
                return
            if to_device is None:
                byte = port.next_byte()
                if byte is not None:
                    to_device = (now + port.byte_cycles, byte)
            if arrived:
                rx_payload.value = arrived[0][1]
            rx_valid.value = int(bool(arrived))
            tx_ready.value = int(to_host is None)
            await ReadOnly()
            # A byte taken at the next edge: valid or ready drops at the falling edge after.
            handshake = False
            if arrived and rx_ready.value:
                self.late = max(self.late, now - arrived.popleft()[0])
                handshake = True
            if to_host is None and tx_valid.value:
                to_host = (now + port.byte_cycles, int(tx_payload.value))
                handshake = True
            if active or handshake:
                self.quiet_since = now + 1
            due = [event[0] for event in (to_device, to_host) if event is not None]
            if arrived or handshake:
                due.append(now + 1)
            if due:
                # The device's next byte may come at any cycle while its line is free.
                await self.advance(min(due), watch=to_host is None)
                continue
            # Only the device can act: wait for its byte, simulating every cycle.
            limit = now + HANG_CYCLES + 100 * port.byte_cycles
            await self._sleep(limit, watch=True)
            if self.now() >= limit:
                port.fail(f"the device has not answered for {limit - now} cycles")
                if not port.gate(self.now()):
                    return


@cocotb.test()
async def measure(dut):
    job = json.loads(Path(os.environ["ESPNIC_JOB"]).read_text())
    progress = open(job["progress"], "a", buffering=1) if job.get("progress") else None
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
    await reset_link_device(dut)

    port = PacedPort()

    def say(what):
        if progress is not None:
            print(f"  {job['divisor']} cycles/bit: {what}", file=progress)

    worker, outcome = start_host(
        "espnic-hostlink-host",
        lambda: host_session(Device(FrameLink(port, timeout=ANSWER_TIMEOUT, retries=0)),
                             port, job, say),
        port.finish)
    line = Line(dut, port, skip=job.get("skip", True), quiet=job.get("quiet", QUIET_CYCLES))
    await line.run()
    worker.join()
    if progress is not None:
        progress.close()
    assert "error" not in outcome, f"host: {outcome['error']}"
    result = {**outcome["result"], "late_cycles": line.late, "skipped_cycles": line.skipped,
              "link_cycles": line.now()}
    Path(os.environ["ESPNIC_JOB_RESULT"]).write_text(json.dumps(result))
