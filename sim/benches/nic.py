# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench of the whole device, `EspNic`: host writes, traffic on every port.

The job (JSON, path in ``ESPNIC_JOB``) comes from :func:`espnic.sim.nic_job.run_nic_cocotb`,
which holds the model's expectation and has turned every host write into the
bits of its stream's payload; this bench only drives the ports. The host
writes go out one at a time (each table's reply awaited), then each port's
packets go in with random idle cycles (``gap``) while each egress port is
taken with random back-pressure (``stall``), the exception queue and the
engines' events always ready. Once every input beat has been taken and every
expected packet has come out, the device runs on for ``settle_cycles`` (drops
leave no output to wait for), then the bench reads every SA's counters over
its engine's host port and samples every device counter. Results go to
``ESPNIC_JOB_RESULT``: the packets per egress port with their abort flags, the
exceptions with their ports, the host replies, the counters.
"""

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from espnic.hdl.forwarder.egress import EGRESS_BEAT
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats, packet_beat
from espnic.sim.cocotb_streams import StreamSink, StreamSource, run_cycles

BEAT = packet_beat(16)


def _path(name, index):
    return name if index is None else f"{name}__{index}"


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["ESPNIC_JOB"]).read_text())
    engines, ports = job["engines"], job["ports"]
    rng = random.Random(job.get("seed", 0))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1

    # One source per host stream the job writes to, one sink per reply stream.
    host_sources, reply_sinks = {}, {}
    for op in job["host_ops"] + job["reads"]:
        path = _path(op["stream"], op["index"])
        host_sources.setdefault(path, StreamSource(dut, path, rng=rng))
    for name, count in (("engine_reply", engines), ("spi_reply", ports),
                        ("policy_reply", ports)):
        for index in range(count):
            reply_sinks[f"{name}__{index}"] = StreamSink(dut, f"{name}__{index}", rng=rng)
    reply_sinks["route_reply"] = StreamSink(dut, "route_reply", rng=rng)
    inputs = [StreamSource(dut, f"i__{port}", rng=rng, gap_prob=job["gap"])
              for port in range(ports)]
    outputs = [StreamSink(dut, f"o__{port}", rng=rng, stall_prob=job["stall"])
               for port in range(ports)]
    exceptions = StreamSink(dut, "exception", rng=rng)
    events = [StreamSink(dut, f"engine_events__{k}", rng=rng) for k in range(engines)]
    exception_ports = []
    sample_exception = exceptions.sample

    def sample_with_port(cycle):
        taken = len(exceptions.received)
        sample_exception(cycle)
        if len(exceptions.received) > taken and \
                exceptions.received[-1] >> BEAT["first"].offset & 1:
            exception_ports.append(int(dut.exception_port.value))
    exceptions.sample = sample_with_port

    for port, flag in enumerate(job["miss_to_host"]):
        getattr(dut, f"miss_to_host__{port}").value = int(flag)
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    last = EGRESS_BEAT["last"].offset
    pending = list(job["host_ops"])
    awaiting = None                       # (reply sink, replies it had) of the last write
    phase, waited = "host", 0
    settle = job["settle_cycles"]

    def delivered(sink):
        return sum(value >> last & 1 for value in sink.received)

    def step():
        nonlocal phase, waited, awaiting
        if phase == "host":
            if awaiting is not None:
                sink, before = awaiting
                if len(sink.received) == before:
                    return False
                awaiting = None
            if not all(source.idle for source in host_sources.values()):
                return False
            if pending:
                op = pending.pop(0)
                host_sources[_path(op["stream"], op["index"])].extend([op["bits"]])
                if op["reply"] is not None:
                    sink = reply_sinks[_path(op["reply"], op["index"])]
                    awaiting = (sink, len(sink.received))
                return False
            for port, source in enumerate(inputs):
                source.extend([BEAT.const(beat).as_bits() for packet in job["packets"][port]
                               for beat in beats_from_bytes(bytes.fromhex(packet), 16)])
            phase = "traffic"
        elif phase == "traffic":
            done = all(source.idle for source in inputs) and \
                all(delivered(sink) >= want for sink, want in zip(outputs, job["expected"])) and \
                sum(value >> BEAT["last"].offset & 1 for value in exceptions.received) >= \
                job["expected_exceptions"]
            if done:
                phase, waited = "settle", 0
        elif phase == "settle":
            waited += 1
            if waited >= settle:
                for op in job["reads"]:
                    host_sources[_path(op["stream"], op["index"])].extend([op["bits"]])
                phase = "read"
        elif phase == "read":
            return all(source.idle for source in host_sources.values()) and \
                sum(len(reply_sinks[f"engine_reply__{k}"].received) for k in range(engines)) \
                >= len(job["reads"])
        return False

    beats = sum(len(packet) // 16 + 1 for port in job["packets"] for packet in port)
    slack = 1 / max(0.05, 1 - max(job["stall"], job["gap"]))
    budget = 5000 * (1 + len(job["host_ops"]) + len(job["reads"])) + \
        int(200 * beats * slack) + settle
    sources = [*host_sources.values(), *inputs]
    sinks = [*reply_sinks.values(), *outputs, exceptions, *events]
    cycles = await run_cycles(dut.clk, sources, sinks, until=step, max_cycles=budget)

    result_ports = []
    for sink in outputs:
        beats_out = [EGRESS_BEAT.from_bits(value) for value in sink.received]
        packets = bytes_from_beats(beats_out, 16)
        aborts = [bool(beat.abort) for beat in beats_out if beat.last]
        result_ports.append([{"data": packet.hex(), "aborted": abort}
                             for packet, abort in zip(packets, aborts, strict=True)])
    exception_packets = bytes_from_beats([BEAT.from_bits(v) for v in exceptions.received], 16)

    def value(name):
        return int(getattr(dut, name).value)

    counters = {}
    for name, count in job["counters"].items():
        counters[name] = value(name) if count is None else \
            [value(f"{name}__{index}") for index in range(count)]
    with open(os.environ["ESPNIC_JOB_RESULT"], "w") as file:
        json.dump({
            "outputs": result_ports,
            "exceptions": list(zip(exception_ports, (p.hex() for p in exception_packets),
                                   strict=True)),
            "replies": {path: sink.received for path, sink in reply_sinks.items()},
            "counters": counters, "cycles": cycles,
        }, file)
