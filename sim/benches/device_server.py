# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench that *is* the simulated device: an ``EspNicDevice`` whose host link
is served on a TCP port (what ``espnic sim`` runs, through
:func:`espnic.sim.device_server.serve`).

The bench listens on ``127.0.0.1:$ESPNIC_SERVER_PORT`` (0: a free port) and takes
one client at a time (the next waits in the listen backlog; when a client
leaves, the next is accepted and the device keeps its state). The socket is
non-blocking and polled. How the client's bytes reach the device depends on the
device's link (``$ESPNIC_PARAMS``):

``link="bytes"`` (:class:`ByteLinkServer`): socket -> ``host_rx`` and ``host_tx``
-> socket, at most one byte per clock cycle each way. While bytes move the
bench steps every cycle; after :data:`IDLE_CYCLES` cycles with nothing moved
and nothing waiting to go in, it drops ``valid``/``ready`` on the link and lets
the device run on in bigger steps (one timer per :data:`IDLE_STEP` cycles, no
Python per cycle) between short ``select()`` calls until it has been quiet for
:data:`SETTLE_CYCLES`, then stops the clock and waits in ``select()`` until the
socket has a byte again; so an idle server uses next to no CPU and a burst is
served at full speed.

``link="uart"`` (:class:`UartLinkServer`): the device's UART pins, 8N1 at
``divisor`` cycles of the simulated ``CLOCK_HZ`` clock per bit. Each byte from
the client becomes a character on ``uart_rx`` (:class:`UartLineDriver`: start
bit, eight data bits LSB first, stop bit), back to back while bytes wait, so
they reach the device no faster than a real line carries them; ``uart_tx`` is
decoded by a receiver of the bench's own (:class:`UartLineMonitor`: it samples
each bit in its middle and checks the stop bit; a character with a low stop
bit is dropped, counted and logged as a framing error). The bench moves time
on a character at a time (timers, no Python per cycle) and idles as above.

Once listening it prints ``espnic sim: serving socket://127.0.0.1:PORT`` (to
the simulator's log, where :func:`~espnic.sim.cocotb_runner.run_cocotb` sends
the bench's output) and writes PORT into ``$ESPNIC_SERVER_READY``. It ends
(the test passes) when the file ``$ESPNIC_SERVER_STOP`` exists or when the
process ``$ESPNIC_SERVER_PARENT`` that started it is gone; a signal ends it
like any process. Nothing that crosses the link is ever logged: SA records
carry keys.
"""

import errno
import os
import select
import socket
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge, Timer

from espnic.hdl.bridge.framing import encode_frame
from espnic.hdl.bridge.regmap import FrameKind
from espnic.sim.cocotb_runner import bench_params, bench_ports
from espnic.sim.cocotb_streams import reset_link_device
from espnic.sim.device_server import CLOCK_HZ

#: Cycles with no byte moved (and none waiting to go in) before the bench idles.
IDLE_CYCLES = 500
#: An idle bench first lets the device run on in steps of IDLE_STEP cycles (one
#: timer each, no Python per cycle), a select() of SETTLE_WAIT seconds between two,
#: until it has been quiet for SETTLE_CYCLES: a reply that comes late (after a long
#: engine operation) still goes out. After that the device has nothing left to do
#: (its packet ports are idle), so the clock stops and the bench just waits in
#: select() for IDLE_WAIT seconds at a time, looking at its stop conditions in
#: between.
IDLE_STEP = 64
SETTLE_CYCLES = 2048
SETTLE_WAIT = 0.001
IDLE_WAIT = 0.05
#: Busy cycles between two checks of the stop conditions, and between polls of
#: the listening socket while no client is connected.
CHECK_CYCLES = 4096
POLL_CYCLES = 8
#: Device bytes buffered for a client that does not read before the link stalls.
MAX_OUTBOUND = 1 << 20
#: Client bytes buffered ahead of the device (the rest wait in the kernel).
MAX_INBOUND = 1 << 16
#: The clock of a device with a byte link (its rate means nothing there).
PERIOD_NS = 10
#: The clock of a device with a UART, :data:`~espnic.sim.device_server.CLOCK_HZ`, in
#: the simulator's 1 ps steps, even so both halves are whole: 20.834 ns for 48 MHz
#: (0.002 % slow; the line's rate is set in cycles, so it is the clock's exactly).
UART_PERIOD_PS = 2 * round(1e12 / CLOCK_HZ / 2)

# A new client starts with a frame of the server's own: a READ of the magic word
# with tag 0. The bridge acknowledges a WRITE/SEND whose tag equals that of the
# frame just before it as a DUPLICATE without executing it; without this frame a
# new client whose first frame is a WRITE or SEND with the tag of the previous
# client's last frame would see it acknowledged and not executed. Host tags are
# 1..255 (host/link.py), so no host frame follows with tag 0; the DATA answer
# reaches the new client, whose FrameLink drops it (no tag of its own matches). The
# client's bytes follow at once: the bridge takes bytes while it answers, and keeps the
# client's first frame until the session frame's answer is out.
SESSION_FRAME = encode_frame(bytes([FrameKind.READ.value, 0, 0, 0, 1]))


class LinkServer:
    """One listening socket, at most one client, the bytes between it and the device
    (a subclass moves them over the device's link)."""

    def __init__(self, dut, listener: socket.socket):
        self.dut, self.listener = dut, listener
        self.client: socket.socket | None = None
        self.inbound = bytearray()         # from the client, not yet taken by the device
        self.outbound = bytearray()        # from the device, not yet sent to the client
        self.clients = 0
        stop = os.environ.get("ESPNIC_SERVER_STOP")
        self.stop_path = Path(stop) if stop else None
        self.parent = int(os.environ.get("ESPNIC_SERVER_PARENT") or 0)
        self.ppid = os.getppid()           # the parent or a SIM_CMD_PREFIX wrapper

    # -- sockets --------------------------------------------------------------------------

    def accept(self) -> bool:
        """Take the next waiting client, if any."""
        try:
            client, _address = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = client
        self.clients += 1
        self.inbound += SESSION_FRAME
        self.dut._log.info(f"client {self.clients} connected")
        return True

    def drop_client(self, why: str):
        self.client.close()
        self.client = None
        # What the device still says was meant for the client that left. What that
        # client sent still goes in, as on a serial line; a cut frame is ended by the
        # next client's first FLAG (and counted by the device).
        self.outbound.clear()
        self.dut._log.info(f"client {self.clients} {why}")

    def receive(self) -> bool:
        """Read what the client sent; whether anything came."""
        if self.client is None or len(self.inbound) >= MAX_INBOUND:
            return False
        try:
            chunk = self.client.recv(MAX_INBOUND)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as error:
            self.drop_client(f"lost ({errno.errorcode.get(error.errno, error.errno)})")
            return False
        if not chunk:
            self.drop_client("disconnected")
            return False
        self.inbound += chunk
        return True

    def flush(self):
        if self.client is None:
            self.outbound.clear()
            return
        try:
            # MSG_NOSIGNAL: a client gone mid-send must not SIGPIPE the simulator.
            sent = self.client.send(self.outbound, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.drop_client(f"lost ({errno.errorcode.get(error.errno, error.errno)})")
            return
        del self.outbound[:sent]

    def should_stop(self) -> bool:
        if self.stop_path is not None and self.stop_path.exists():
            self.dut._log.info("stop file found")
            return True
        # An orphan would serve the port forever: stop when the process that started
        # the server is gone (reparented at once; gone from the table once reaped).
        gone = os.getppid() != self.ppid
        if self.parent and not gone:
            try:
                os.kill(self.parent, 0)
            except ProcessLookupError:
                gone = True
            except PermissionError:
                pass
        if gone:
            self.dut._log.info("the process that started the server is gone")
        return gone

    def wait_for_client(self, timeout: float) -> bool:
        """Block (the simulation with it) until the client sends something or a client
        connects, at most ``timeout`` seconds, sending what waits for the client
        meanwhile; whether something came."""
        if self.outbound:
            self.flush()
        readable = [self.listener if self.client is None else self.client]
        writable = [self.client] if self.client is not None and self.outbound else []
        ready, _, _ = select.select(readable, writable, [], timeout)
        if self.client is None:
            return bool(ready) and self.accept()
        return bool(ready) and self.receive()


class ByteLinkServer(LinkServer):
    """The server of a device with a byte link (``host_rx``, ``host_tx``)."""

    def __init__(self, dut, listener: socket.socket):
        super().__init__(dut, listener)
        self.rx_valid, self.rx_ready = dut.host_rx__valid, dut.host_rx__ready
        self.rx_payload = dut.host_rx__payload
        self.tx_valid, self.tx_ready = dut.host_tx__valid, dut.host_tx__ready
        self.tx_payload = dut.host_tx__payload

    async def reset(self):
        await reset_link_device(self.dut)

    # -- the link -------------------------------------------------------------------------

    async def run(self):
        """Serve until a stop condition holds."""
        offered = False             # a byte is on host_rx, waiting for ready
        quiet = 0                   # cycles since a byte moved
        cycle = 0
        while True:
            await FallingEdge(self.dut.clk)
            if not offered and self.inbound:
                self.rx_payload.value = self.inbound[0]
                offered = True
            self.rx_valid.value = int(offered)
            taking = len(self.outbound) < MAX_OUTBOUND     # else the device waits
            self.tx_ready.value = int(taking)
            await ReadOnly()
            moved = False
            if offered and self.rx_ready.value:
                del self.inbound[0]
                offered, moved = False, True
            if taking and self.tx_valid.value:
                self.outbound.append(int(self.tx_payload.value))
                moved = True
            cycle += 1
            quiet = 0 if moved else quiet + 1
            # The device's bytes go out when it pauses, or in chunks in a long burst.
            if self.outbound and (not moved or len(self.outbound) >= 4096):
                self.flush()
            if cycle % POLL_CYCLES == 0:
                if self.client is None:
                    self.accept()
                elif len(self.inbound) < 1024:
                    self.receive()
            if cycle % CHECK_CYCLES == 0 and self.should_stop():
                return
            if quiet >= IDLE_CYCLES and not self.inbound and not offered:
                if await self.idle(quiet):
                    return
                quiet = 0

    async def idle(self, quiet: int) -> bool:
        """Wait, mostly in select(), until there is work; True: stop. ``quiet``: the
        cycles the device has been quiet already."""
        await FallingEdge(self.dut.clk)
        self.rx_valid.value = 0
        self.tx_ready.value = 0        # the device keeps what it has until we look
        while True:
            if self.should_stop():
                return True
            settling = quiet < SETTLE_CYCLES
            if self.wait_for_client(SETTLE_WAIT if settling else IDLE_WAIT):
                return False
            if settling:
                await Timer(IDLE_STEP * PERIOD_NS, unit="ns")
                quiet += IDLE_STEP
                await ReadOnly()
                if self.tx_valid.value:
                    return False
                await FallingEdge(self.dut.clk)


class UartLineDriver:
    """The host's transmitter on the device's ``uart_rx`` pin: each byte of
    ``inbound`` as an 8N1 character (start bit low, eight data bits LSB first,
    stop bit high; ``divisor`` cycles a bit), the next one right after the stop bit
    while bytes wait. Level changes fall on falling clock edges, away from the
    edge the device samples on. ``busy``: a character is on the line."""

    def __init__(self, dut, inbound: bytearray, divisor: int):
        self.dut, self.pin, self.inbound = dut, dut.uart_rx, inbound
        self.bit_ps = divisor * UART_PERIOD_PS
        self.busy = False
        self.wake = Event()
        self.characters = 0

    async def run(self):
        while True:
            if not self.inbound:
                self.busy = False
                self.wake.clear()
                await self.wake.wait()
                continue
            if not self.busy:
                await FallingEdge(self.dut.clk)
                self.busy = True
            byte = self.inbound[0]
            del self.inbound[0]
            bits = [0, *((byte >> n) & 1 for n in range(8)), 1]
            # One timer per run of equal bits: what the line does, fewer Python calls.
            start = 0
            for end in range(1, len(bits) + 1):
                if end == len(bits) or bits[end] != bits[start]:
                    self.pin.value = bits[start]
                    await Timer((end - start) * self.bit_ps, unit="ps")
                    start = end
            self.characters += 1


class UartLineMonitor:
    """The host's receiver on the device's ``uart_tx`` pin, written independently of
    the gateware's ``UartRx``: a falling edge on an idle line starts a character;
    the start bit is sampled in its middle (high there: a glitch, ignored), then
    each data bit and the stop bit a bit time after the previous sample. A
    character whose stop bit is low is a framing error: dropped, counted, logged,
    and the receiver waits for the line to go high before looking for the next
    start bit. Good characters' bytes go to ``outbound``. ``busy``: inside a
    character."""

    def __init__(self, dut, outbound: bytearray, divisor: int):
        self.dut, self.pin, self.outbound = dut, dut.uart_tx, outbound
        self.bit_ps = divisor * UART_PERIOD_PS
        self.busy = False
        self.characters = self.framing_errors = self.glitches = 0

    async def run(self):
        while True:
            if not self.pin.value:
                await RisingEdge(self.pin)         # back to idle before a start bit
            await FallingEdge(self.pin)
            self.busy = True
            await Timer(self.bit_ps // 2, unit="ps")
            if self.pin.value:
                self.glitches += 1
                self.busy = False
                continue
            byte = 0
            for n in range(8):
                await Timer(self.bit_ps, unit="ps")
                byte |= int(self.pin.value) << n
            await Timer(self.bit_ps, unit="ps")
            if self.pin.value:
                self.outbound.append(byte)
                self.characters += 1
            else:
                self.framing_errors += 1
                # The count and never the byte: link traffic carries keys.
                self.dut._log.warning(f"uart_tx: framing error (stop bit low), "
                                      f"{self.framing_errors} so far")
            self.busy = False


class UartLinkServer(LinkServer):
    """The server of a device with a UART (``uart_rx``, ``uart_tx`` pins)."""

    def __init__(self, dut, listener: socket.socket, divisor: int):
        super().__init__(dut, listener)
        self.divisor = divisor
        self.driver = UartLineDriver(dut, self.inbound, divisor)
        self.monitor = UartLineMonitor(dut, self.outbound, divisor)
        self.character_ps = 10 * divisor * UART_PERIOD_PS
        self.last_busy = 0            # simulated ps when the line was last busy

    async def reset(self):
        self.dut.uart_rx.value = 1                 # an idle line
        self.dut.rst.value = 1
        for _ in range(2):
            await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    def busy(self) -> bool:
        """Whether a character is on either line or bytes wait to go in; notes when."""
        busy = self.driver.busy or self.monitor.busy or bool(self.inbound)
        if busy:
            self.last_busy = get_sim_time("ps")
        return busy

    def quiet_cycles(self) -> int:
        return (get_sim_time("ps") - self.last_busy) // UART_PERIOD_PS

    async def run(self):
        """Serve until a stop condition holds, a character time at a time."""
        driver = cocotb.start_soon(self.driver.run())
        monitor = cocotb.start_soon(self.monitor.run())
        steps = 0
        try:
            while True:
                await Timer(self.character_ps, unit="ps")
                steps += 1
                if self.client is None:
                    self.accept()
                elif len(self.inbound) < 1024:
                    self.receive()
                if self.inbound:
                    self.driver.wake.set()
                if self.outbound:
                    self.flush()
                if steps * 10 * self.divisor >= CHECK_CYCLES:
                    steps = 0
                    if self.should_stop():
                        return
                if not self.busy() and self.quiet_cycles() >= IDLE_CYCLES:
                    if await self.idle():
                        return
        finally:
            driver.cancel()
            monitor.cancel()
            self.dut._log.info(f"uart: {self.driver.characters} characters to the device, "
                               f"{self.monitor.characters} from it, "
                               f"{self.monitor.framing_errors} framing errors, "
                               f"{self.monitor.glitches} glitches")

    async def idle(self) -> bool:
        """Wait, mostly in select(), until there is work; True: stop."""
        while True:
            if self.should_stop():
                return True
            settling = self.quiet_cycles() < SETTLE_CYCLES
            if self.wait_for_client(SETTLE_WAIT if settling else IDLE_WAIT):
                self.driver.wake.set()
                return False
            if settling:
                # The device may still answer late (after a long engine operation).
                await Timer(IDLE_STEP * UART_PERIOD_PS, unit="ps")
                if self.busy() or self.outbound:
                    return False


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as error:
        listener.close()
        raise OSError(error.errno, f"cannot listen on 127.0.0.1:{port}: {error.strerror}") \
            from None
    listener.listen(1)
    listener.setblocking(False)
    return listener


@cocotb.test()
async def serve(dut):
    port = int(os.environ["ESPNIC_SERVER_PORT"])
    ready_path = os.environ.get("ESPNIC_SERVER_READY")
    params = bench_params()
    if params.get("link", "bytes") == "uart":
        cocotb.start_soon(Clock(dut.clk, UART_PERIOD_PS, unit="ps").start())
    else:
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    # The packet ports (a device built with packets="ports") stay idle: nothing goes
    # in on i[p], whatever comes out of o[p] and the exception queue is taken and
    # dropped. Packets between the host and the device over the link (INJECT and
    # PACKET frames) need a device built with packets="link", which has no packet
    # ports; this loop then finds nothing to drive.
    for name, port_info in bench_ports().items():
        if port_info["direction"] != "input" or name.startswith("host_"):
            continue
        if name.endswith("__valid"):
            getattr(dut, name).value = 0
        elif name.endswith("__ready"):
            getattr(dut, name).value = 1

    listener = _listen(port)
    server = None
    try:
        if params.get("link", "bytes") == "uart":
            server = UartLinkServer(dut, listener, params["divisor"])
        else:
            server = ByteLinkServer(dut, listener)
        await server.reset()
        port = listener.getsockname()[1]
        print(f"espnic sim: serving socket://127.0.0.1:{port}", flush=True)
        if ready_path:
            partial = Path(ready_path + ".tmp")
            partial.write_text(f"{port}\n")
            partial.replace(ready_path)          # whoever sees the file sees the port
        started = time.monotonic()
        await server.run()
        dut._log.info(f"served {server.clients} clients in {time.monotonic() - started:.0f} s")
    finally:
        if server is not None and server.client is not None:
            server.client.close()
        listener.close()
