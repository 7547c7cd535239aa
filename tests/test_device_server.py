# SPDX-License-Identifier: BSD-2-Clause
"""The simulated device server (``espnic sim``): the real host driver talks to an
``EspNicDevice`` in Verilator over ``socket://``, as it would to a board over a
serial port. The first run builds the device (minutes); later runs reuse the build."""

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from espnic.hdl.bridge.framing import FLAG, encode_frame
from espnic.hdl.bridge.regmap import FrameKind, PacketSource, RegisterMap, Status
from espnic.hdl.bridge.uart import UartRx, UartTx
from espnic.hdl.device import EspNicDevice
from espnic.hdl.engine.sa import SaState, sa_layout
from espnic.hdl.engine.sa_table import HostOp, control_record
from espnic.host.cli import main
from espnic.host.device import Device
from espnic.host.link import FrameLink
from espnic.host.transport import open_port
from espnic.host.run import run
from espnic.host.transport.model import ModelPort, model_url
from espnic.sim import device_server
from espnic.sim.cocotb_runner import run_cocotb
from espnic.sim.device_server import running_server
from espnic.sim.link_job import run_host, traffic_over_link
from espnic.sim.model.nic import NicModel
from tests.esp_cases import KEY128, KEY256, plain_packet
from tests.esp_cases import config as esp_config
from tests.link_cases import wire_session
from tests.nic_cases import NicScenario

EXAMPLE, EXAMPLE_PCAP = "examples/espnic.toml", "examples/example.pcap"
# What `espnic sim` serves by default: the test shares its build.
PARAMS = {"engines": 1, "ports": 1, "profile": "compact"}


@pytest.fixture(scope="module")
def server():
    with running_server(**PARAMS) as url:
        yield url


def on_new_server(host, *, timeout: float = 10.0):
    """``host(Device)`` on a server of its own (started for it, stopped after)."""
    with running_server(**PARAMS) as url:
        device = Device.open(url, timeout=timeout)
        try:
            return host(device)
        finally:
            device.close()


def _sa_configs(window):
    return {3: esp_config("out", spi=0x2003, key=KEY256, window=window),
            5: esp_config("in", spi=0x2005, key=KEY128, window=window, mode="transport")}


def _read_slot(device, slot):
    device.send("engine_host", 0, {"op": HostOp.READ, "slot": slot})
    (channel, index, reply), = device.items(wait=10.0)
    assert (channel, index) == ("engine_reply", 0)
    return reply.record


def _bits(value):
    return value.as_bits() if hasattr(value, "as_bits") else value


def _check_read_back(device, configs, layout):
    for slot, config in configs.items():
        record = _read_slot(device, slot)
        expected = control_record(config.to_record(layout))
        assert (record.key, record.salt) == (0, 0), f"slot {slot}: key or salt readable"
        assert record.state == SaState.VALID, f"slot {slot}"
        for name, _field in record.shape():
            if name not in ("key", "salt"):
                assert _bits(getattr(record, name)) == _bits(expected[name]), \
                    f"slot {slot}: {name}"
    assert _read_slot(device, 0).state == SaState.INVALID      # never written


def test_capabilities_are_the_servers_parameters(server):
    device = Device.open(server, timeout=5.0)
    try:
        assert device.params == RegisterMap(**PARAMS).params
    finally:
        device.close()


def test_sas_installed_over_the_socket_outlive_the_client(server):
    device = Device.open(server, timeout=5.0)
    window = device.params["window"]
    layout = sa_layout(window)
    configs = _sa_configs(window)
    try:
        for slot, config in configs.items():
            device.send("engine_host", 0, {"op": HostOp.WRITE, "slot": slot,
                                           "record": control_record(config.to_record(layout))})
        _check_read_back(device, configs, layout)
        counters = device.counters()
        assert counters["bad_command"] == 0
        assert counters["no_sa[0]"] == 0 and counters["sent[0]"] == 0      # no packets
        assert device.link.resends == 0
    finally:
        device.close()
    # A new client (a new connection, a new driver) sees the same device.
    device = Device.open(server, timeout=5.0)
    try:
        _check_read_back(device, configs, layout)
    finally:
        device.close()


def test_a_new_clients_first_frame_is_never_a_duplicate(server):
    """Two clients whose only frame is a WRITE with tag 1: the second is executed
    (the server puts a frame of its own between clients), not acknowledged as a
    resend of the first."""
    pause = RegisterMap(**PARAMS).register("pause").address
    for value in (1, 0):
        link = FrameLink(open_port(server), timeout=5.0)
        try:
            assert link.write(pause, value) == Status.OK
        finally:
            link.close()
    device = Device.open(server, timeout=5.0)
    try:
        assert device.read("pause") == 0
    finally:
        device.close()


def _noise_then_a_spoilt_write(device, noise):
    """``noise`` (no FLAG in it), then a WRITE of pause = 1 whose CRC fails: both are
    counted as bad frames, the device still answers, and the WRITE was not executed."""
    before = device.counters()
    device.link.port.write(noise)
    pause = device.regmap.register("pause").address
    assert pause < 0x7d
    wire = bytearray(encode_frame(bytes([FrameKind.WRITE.value, 9, pause, 0, 0, 0, 0, 0])))
    wire[5] ^= 0x01                   # pause = 0 becomes pause = 1, and the CRC fails
    device.link.port.write(bytes(wire))
    after = device.counters()
    errors = ("bad_crc", "too_short", "too_long")
    assert after["bad_crc"] >= before["bad_crc"] + 1
    assert sum(after[n] for n in errors) >= sum(before[n] for n in errors) + 2
    assert after["bad_command"] == before["bad_command"]
    assert device.read("pause") == 0


def test_garbage_and_bad_frames_on_the_socket_are_counted(server):
    device = Device.open(server, timeout=5.0)
    try:
        # No FLAG in the noise: it lands in one bad frame, ended by the next FLAG
        # (random frames could pass the CRC by chance and execute something).
        rng = random.Random(5)
        _noise_then_a_spoilt_write(device, bytes(b for b in rng.randbytes(300) if b != FLAG))
        assert device.link.resends == 0
    finally:
        device.close()


def test_a_link_dropped_mid_frame_writes_nothing(server):
    """The client goes away in the middle of an SA's frame; the next client finds
    the slot as it was (empty), the cut frame counted, and installs the SA whole."""
    device = Device.open(server, timeout=5.0)
    window = device.params["window"]
    config = esp_config("out", spi=0x2007, key=KEY256, window=window)
    record = control_record(config.to_record(sa_layout(window)))
    channel = device.regmap.channel("engine_host")
    payload = channel.layout.const({"op": HostOp.WRITE, "slot": 7, "record": record}) \
        .as_bits().to_bytes(channel.payload_bytes, "little")
    wire = encode_frame(bytes([FrameKind.SEND.value, 77, channel.number, 0]) + payload)
    try:
        before = device.counters()
        device.link.port.write(wire[:len(wire) // 2])
    finally:
        device.close()
    device = Device.open(server, timeout=5.0)
    try:
        assert device.read_sa(0, 7).record.as_bits() == 0
        after = device.counters()
        assert after["bad_crc"] == before["bad_crc"] + 1
        assert after["bad_command"] == before["bad_command"]
        device.write_sa(0, 7, config)
        written = device.read_sa(0, 7).record
        assert (written.spi, written.state, written.key) == (0x2007, SaState.VALID, 0)
        device.delete_sa(0, 7)
        assert device.read_sa(0, 7).record.as_bits() == 0
    finally:
        device.close()


def _program_and_read_back(device):
    """Install the SAs, read every slot back and every counter: what a host sees."""
    window = device.params["window"]
    layout = sa_layout(window)
    for slot, config in _sa_configs(window).items():
        device.send("engine_host", 0, {"op": HostOp.WRITE, "slot": slot,
                                       "record": control_record(config.to_record(layout))})
    records = {slot: _read_slot(device, slot).as_bits() for slot in range(device.params["slots"])}
    return records, device.counters()


def test_the_server_answers_as_the_amaranth_simulation_does():
    """The same host code against the server (Verilator, over a socket) and against
    the same device in Amaranth's simulator (over an in-process port): the same SA
    records read back, the same counters."""
    over_socket = on_new_server(_program_and_read_back)
    in_amaranth = run_host(EspNicDevice(link="bytes", packets="link", **PARAMS),
                           _program_and_read_back,
                           timeout=10.0)
    records, _counters = over_socket
    assert records[3] != records[0] and records[5] != records[0]    # installed, not empty
    assert over_socket == in_amaranth


def test_packets_travel_over_the_socket_on_a_device_without_packet_ports():
    """The server's device has no packet ports (``packets="link"``, the default): a
    packet injected over the socket misses the empty policy table and comes back
    from the exception queue over the socket, as the model says."""
    packet = bytes(plain_packet(4, 100))
    model = NicModel(engines=1, ports=1)
    model.miss_to_host[0] = True
    outcome = model.process(0, packet)
    assert outcome.exception
    def host(device):
        device.write("miss_to_host", 1)
        device.inject(0, packet)
        return device.packets(wait=20.0), device.counters()

    got, counters = on_new_server(host)
    assert got == [(PacketSource.EXCEPTION, 0, outcome.packet, False)]
    assert counters["to_host[0]"] == model.port_counters[0]["to_host"] == 1


def test_the_server_answers_as_the_model_does():
    """Issue 5's host-in-the-loop acceptance: the driver over ``socket://`` to the
    server and over ``model://`` gets the same from both: every answer, item,
    packet and register on a link full of faults (:func:`wire_session`), then with
    SAs installed, filters and routes programmed and the whole traffic mix
    injected, the same packets out, counters and SA counters."""
    regmap = RegisterMap(**PARAMS)
    scenario = NicScenario(engines=1, ports=1, slots=regmap.params["slots"], miss_to_host=True)
    traffic = scenario.traffic(16, random.Random(9))

    def session(device):
        said = wire_session(device.link.port, regmap)
        return said, traffic_over_link(device, scenario.setup, traffic, timeout=120.0)

    over_socket = on_new_server(session)
    in_model = session(Device.open(model_url(regmap.params)))
    assert over_socket[0] == in_model[0]
    (packets, counters, sa_counters), expected = over_socket[1], in_model[1]
    assert counters == expected[1] and sa_counters == expected[2]
    # The device keeps order per SA and per port's bypass traffic, not across them
    # (test_device_link.py checks each flow's order against NicModel).
    def key(packet):
        return packet[0].value, *packet[1:]
    assert sorted(packets, key=key) == sorted(expected[0], key=key)
    assert sum(p[0] is PacketSource.EGRESS for p in packets) > 4


@pytest.mark.skipif(not device_server.simulator_available("icarus") and not os.environ.get("CI"),
                    reason="Icarus is not installed (CI installs it)")
def test_the_server_in_icarus_answers_as_the_model_does(tmp_path):
    """``espnic sim --simulator icarus``: the same frames as the model on a faulty link,
    and ``espnic run`` through it writes the same file and summary."""
    regmap = RegisterMap(**PARAMS)
    with running_server(simulator="icarus", **PARAMS) as url:
        device = Device.open(url, timeout=30.0)
        try:
            said = wire_session(device.link.port, regmap, patience=300.0)
        finally:
            device.close()
    with running_server(simulator="icarus", **PARAMS) as url:      # a fresh device
        in_icarus = run(EXAMPLE, EXAMPLE_PCAP, tmp_path / "icarus.pcap", device_url=url)
    assert said == wire_session(ModelPort(model_url(regmap.params)), regmap)
    in_model = run(EXAMPLE, EXAMPLE_PCAP, tmp_path / "model.pcap", device_url="model://")
    assert (tmp_path / "icarus.pcap").read_bytes() == (tmp_path / "model.pcap").read_bytes()
    assert in_icarus == in_model and in_model["packets"]["out"] >= 10


# -- the command -------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--engines", "0"], "espnic sim: argument --engines: must be an integer from 1 to 16"),
    (["--ports", "two"], "espnic sim: argument --ports: must be an integer from 1 to 8"),
    (["--profile", "tiny"], "espnic sim: argument --profile: invalid choice: 'tiny'"),
    (["--port", "65536"], "espnic sim: argument --port: must be an integer from 0 to 65535"),
    (["--simulator", "questa"], "espnic sim: argument --simulator: invalid choice"),
    (["--bogus"], "espnic sim: unrecognized arguments: --bogus"),
    (["--link", "serial"], "espnic sim: argument --link: invalid choice: 'serial'"),
    (["--link", "uart", "--baud", "115200"],
     "espnic sim: argument --baud: baud 115200 does not divide the simulated 48 MHz clock "
     "into a whole number of at least 4 cycles per bit (the nearest rates that do: 100000 "
     "and 120000;"),
    (["--link", "uart", "--baud", "24000000"], "espnic sim: argument --baud: baud 24000000 "
     "does not divide the simulated 48 MHz clock into a whole number of at least 4 cycles "
     "per bit (the nearest rates that do: 12000000;"),
    (["--link", "uart", "--baud", "fast"], "espnic sim: argument --baud: must be an integer"),
    (["--baud", "3000000"], "espnic sim: argument --baud: only with --link uart"),
])
def test_sim_refuses_bad_options(argv, message, capsys):
    assert main(["sim", *argv]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(message) and err.count("\n") == 1 and out == ""


def test_sim_without_icarus_says_so(monkeypatch, capsys):
    monkeypatch.setattr(device_server.shutil, "which", lambda name: None)
    assert main(["sim", "--simulator", "icarus"]) == 2
    assert capsys.readouterr().err == "espnic: not supported: icarus is not installed\n"


def test_espnic_sim_serves_until_interrupted():
    """The command as a user runs it: it prints the URL, serves, and Ctrl-C ends it
    and the simulator with it."""
    with espnic_sim() as (line, process):       # the build is cached by the tests above
        found = re.fullmatch(r"espnic sim: serving (socket://127\.0\.0\.1:(\d+)) "
                             r"\(byte link: a byte a cycle each way\)\n", line)
        assert found, f"first line {line!r}"
        device = Device.open(found[1], timeout=5.0)
        assert device.params == RegisterMap(**PARAMS).params
        device.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert "espnic sim: stopped" in process.stderr.read()
        # Nothing serves the port any more (the simulator went with the command).
        deadline = time.monotonic() + 10
        while True:
            try:
                Device.open(found[1], timeout=0.5, retries=0).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "the simulator outlived `espnic sim`"
            time.sleep(0.2)


def test_a_server_that_cannot_start_says_why():
    with pytest.raises(device_server.ServerError,
                       match="failed to start: unknown EspNic parameter 'lanes'"):
        with running_server(lanes=4):
            pass


def test_server_reports_a_port_in_use():
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(device_server.ServerError, match="cannot listen on 127.0.0.1:"):
            device_server.serve(port=taken.getsockname()[1], **PARAMS)
    finally:
        taken.close()


# -- the bit-accurate UART link (espnic sim --link uart) -----------------------------------

# The fastest line the simulated 48 MHz clock runs (4 cycles a bit), so the tests stay
# short; one build, shared by the tests below.
UART_BAUD = 12_000_000
UART_PARAMS = {**PARAMS, "link": "uart", "baud": UART_BAUD}


def test_uart_rates_are_whole_divisors_of_the_clock():
    rates = device_server.uart_rates()
    assert rates[-1] == UART_BAUD and 3_000_000 in rates and 115_200 not in rates
    for rate in rates:
        assert device_server.uart_divisor(rate) * rate == device_server.CLOCK_HZ
    assert device_server.design(**UART_PARAMS)[1]["divisor"] == 4
    assert device_server.design(link="uart", **PARAMS)[1]["divisor"] == 16    # 3 Mbaud
    with pytest.raises(ValueError, match="baud is for link='uart' only"):
        device_server.design(baud=UART_BAUD, **PARAMS)


def test_the_uart_server_answers_as_the_model_does():
    """Issue 5's host-in-the-loop check over the bit-accurate link: through the driver
    over ``socket://`` to a server whose device has its UART on the line (every byte
    an 8N1 waveform each way), SAs installed, filters and routes programmed, a burst
    of packets to protect and sealed ones to open injected back to back (each
    ``INJECT`` goes in while the ``PACKET`` frames of the ones before come out: the
    device takes bytes while it sends), the SAs read back: the same packets,
    counters, SA counters and SA records as over ``model://``, no frame resent, and
    the link's error counters (UART framing errors and overruns, dropped frames) 0."""
    regmap = RegisterMap(**PARAMS)
    scenario = NicScenario(engines=1, ports=1, slots=regmap.params["slots"], miss_to_host=True)
    traffic = scenario.traffic(8, random.Random(5), kinds=("protect", "inbound"),
                               max_payload=400)
    link_errors = ("uart_framing_errors", "uart_overruns", "frames_dropped")

    def session(device):
        seen = traffic_over_link(device, scenario.setup, traffic, timeout=300.0)
        records = [device.read_sa(0, slot).record.as_bits() for slot in (0, 1, 2)]
        counters = device.counters()
        return seen, records, {name: counters[name] for name in link_errors}

    with running_server(**UART_PARAMS) as url:
        device = Device.open(url, timeout=60.0)
        try:
            over_uart = session(device)
            assert device.link.resends == 0
        finally:
            device.close()
    in_model = session(Device.open(model_url(regmap.params)))
    (packets, counters, sa_counters), records, errors = over_uart
    assert errors == {name: 0 for name in link_errors}
    assert (counters, sa_counters, records, errors) == in_model[0][1:] + in_model[1:]

    def key(packet):
        return packet[0].value, *packet[1:]
    assert sorted(packets, key=key) == sorted(in_model[0][0], key=key)
    assert [p[0] for p in packets] == [PacketSource.EGRESS] * len(traffic)
    assert counters["sent"] == [len(traffic)]
    assert records[0] != 0 and records[1] != 0 and records[2] == 0


@contextlib.contextmanager
def espnic_sim(*options):
    """``espnic sim --port 0 OPTIONS`` as a user runs it; yields its first stdout line
    (the banner) and the process, and ends it with Ctrl-C after the block (unless the
    block did), checking it exits cleanly."""
    process = subprocess.Popen([sys.executable, "-m", "espnic.host.cli", "sim", "--port", "0",
                                *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line, f"no banner; stderr: {process.stderr.read()}"
        yield line, process
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_espnic_sim_uart_resynchronises_after_garbage():
    """``espnic sim --link uart --baud 12000000``: the banner says the link and its rate;
    300 bytes of noise, then a frame whose CRC fails, cross the UART as characters and
    are counted as bad frames by the device, and the frames after them are understood
    (the device's receiver found every start bit again)."""
    with espnic_sim("--link", "uart", "--baud", str(UART_BAUD)) as (banner, _process):
        found = re.fullmatch(r"espnic sim: serving (socket://127\.0\.0\.1:\d+) "
                             r"\(UART link: 12000000 baud 8N1, 4 cycles a bit at 48 MHz\)\n",
                             banner)
        assert found, banner
        device = Device.open(found[1], timeout=30.0)
        try:
            assert device.params == RegisterMap(**PARAMS).params
            rng = random.Random(7)
            # No FLAG in the noise (see the byte link's test); 0x00 and 0xff characters
            # (all zeros, a start bit alone low) among it.
            _noise_then_a_spoilt_write(device, bytes(b for b in rng.randbytes(300) if b != FLAG)
                                       + b"\x00\xff" * 8)
            device.write("pause", 1)
            assert device.read("pause") == 1
            device.write("pause", 0)
            assert device.read("pause") == 0
            assert device.link.resends == 0
        finally:
            device.close()


@pytest.mark.slow
@pytest.mark.skipif(not device_server.simulator_available("icarus") and not os.environ.get("CI"),
                    reason="Icarus is not installed (CI installs it)")
def test_the_uart_server_in_icarus_answers_as_the_model_does():
    """``espnic sim --link uart --simulator icarus``: the capability block, an SA
    written and read back as over ``model://``, and frames understood after noise."""
    regmap = RegisterMap(**PARAMS)
    config = esp_config("out", spi=0x2009, key=KEY256, window=regmap.params["window"])

    def session(device):
        device.write_sa(0, 4, config)
        return device.params, device.read_sa(0, 4).record.as_bits(), device.counters()

    with running_server(simulator="icarus", **UART_PARAMS) as url:
        device = Device.open(url, timeout=60.0)
        try:
            in_icarus = session(device)
            noise = bytes(byte for byte in random.Random(3).randbytes(100) if byte != FLAG)
            device.link.port.write(noise)
            assert device.read("pause") == 0
            counters = device.counters()
            assert sum(counters[n] for n in ("bad_crc", "too_short", "too_long")) == 1
            assert device.link.resends == 0
        finally:
            device.close()
    assert in_icarus == session(Device.open(model_url(regmap.params)))


class UartLoop(wiring.Component):
    """The gateware's ``UartRx`` feeding its ``UartTx`` (an echo) between the pins
    ``uart_rx`` and ``uart_tx``, or with ``bypass`` the pins wired straight through:
    where ``tests/benches/uart_line.py`` tries the device server's UART line ends."""

    def __init__(self, *, divisor: int):
        self.divisor = divisor
        super().__init__({"uart_rx": In(1, init=1), "bypass": In(1), "uart_tx": Out(1, init=1),
                          "framing_errors": Out(16), "overruns": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UartRx(divisor=self.divisor)
        m.submodules.tx = tx = UartTx(divisor=self.divisor)
        wiring.connect(m, rx.o, tx.i)
        m.d.comb += [rx.rx.eq(self.uart_rx),
                     self.uart_tx.eq(Mux(self.bypass, self.uart_rx, tx.tx)),
                     self.framing_errors.eq(rx.framing_errors), self.overruns.eq(rx.overruns)]
        return m


@pytest.mark.parametrize("divisor", [4, 5])
def test_the_servers_uart_line_ends(divisor):
    """The bench's UART driver and receiver against the gateware's UART (an echo of
    every byte value) and against faults put on the line by hand (a framing error,
    a break, a glitch); 5 cycles a bit samples between clock edges. Icarus when
    installed (a build of seconds), else Verilator."""
    simulator = "icarus" if device_server.simulator_available("icarus") else "verilator"
    run = run_cocotb(UartLoop, name=f"uart_loop_{divisor}", params={"divisor": divisor},
                     test_module="tests.benches.uart_line", simulator=simulator,
                     extra_sources=[__file__], timeout=300)
    assert run.tests == 2
