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

import bisect
import json
import os
import random
from itertools import accumulate
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


class _Levels:
    """Signals the bench sets, written with the drivers at the falling edge (the
    bench's steps run in the read-only phase, where nothing may be written)."""

    queue = ()            # (read by run_cycles' report when a bench times out)
    idle = True

    def __init__(self):
        self.values = {}

    def drive(self):
        for signal, value in self.values.items():
            signal.value = value

    def sample(self, cycle):
        pass


class _Ends:
    """The packets a sink has taken, its last beats counted as they come (summing
    every beat received, every cycle, grew with the run)."""

    def __init__(self, sink, last_offset):
        self._sink, self._offset = sink, last_offset
        self._seen = self._count = 0

    def __call__(self) -> int:
        received = self._sink.received
        self._count += sum(value >> self._offset & 1 for value in received[self._seen:])
        self._seen = len(received)
        return self._count


class _HostWriter:
    """Writes host operations one at a time, each table's reply awaited before the
    next operation goes out; ``pause`` sets a forwarder's pause signal, ``idle``
    waits for its idle signal to have the value given."""

    def __init__(self, dut, sources, sinks, levels):
        self._dut, self._sources, self._sinks, self._levels = dut, sources, sinks, levels
        self._pending = []
        self._awaiting = None             # (reply sink, replies it had) of the last write

    def push(self, ops):
        self._pending.extend(ops)

    def at(self) -> str:
        """What the writer waits for (for the bench's progress lines)."""
        if self._awaiting is not None:
            return "a reply"
        return _path(self._pending[0]["stream"], self._pending[0]["index"]) \
            if self._pending else "nothing"

    def step(self) -> bool:
        """Go on; whether anything is still to write or to be answered."""
        if self._awaiting is not None:
            sink, before = self._awaiting
            if len(sink.received) == before:
                return True
            self._awaiting = None
        if not all(source.idle for source in self._sources.values()):
            return True
        if not self._pending:
            return False
        op = self._pending[0]
        signal = getattr(self._dut, _path(op["stream"], op["index"]), None)
        if op["stream"] == "idle":            # wait until the signal has this value
            if int(signal.value) != op["bits"]:
                return True
        elif op["stream"] == "pause":         # set the signal
            self._levels.values[signal] = op["bits"]
        else:
            self._sources[_path(op["stream"], op["index"])].extend([op["bits"]])
        self._pending.pop(0)
        if op["reply"] is not None:
            sink = self._sinks[_path(op["reply"], op["index"])]
            self._awaiting = (sink, len(sink.received))
        return True


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["ESPNIC_JOB"]).read_text())
    engines, ports = job["engines"], job["ports"]
    rng = random.Random(job["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1

    # One source per host stream the job writes to, one sink per reply stream.
    moves, storm = job["moves"], list(job["storm"])
    host_sources, reply_sinks = {}, {}
    for op in job["host_ops"] + job["reads"] + storm + [o for m in moves for o in m["ops"]]:
        if op["stream"] in ("pause", "idle"):
            continue
        path = _path(op["stream"], op["index"])
        host_sources.setdefault(path, StreamSource(dut, path, rng=rng))
    for name, count in (("engine_reply", engines), ("spi_reply", job["forwarders"]),
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
    migrated = [StreamSink(dut, f"engine_migrated__{k}", rng=rng) for k in range(engines)]
    # An engine waits until its fence report is taken: the host always takes them.
    fenced = [StreamSink(dut, f"engine_fenced__{k}", rng=rng) for k in range(engines)]
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
    levels = _Levels()
    writer = _HostWriter(dut, host_sources, reply_sinks, levels)
    writer.push(job["host_ops"])
    phase, waited = "host", 0
    settle = job["settle_cycles"]
    packet_beats = [[beats_from_bytes(bytes.fromhex(packet), 16) for packet in port]
                    for port in job["packets"]]
    # Where each port's packets start (beat numbers): packets taken = starts passed.
    starts = [list(accumulate((len(beats) for beats in port), initial=0))[:-1]
              for port in packet_beats]
    next_move, storm_at, cycle, stormed = 0, 0, 0, None
    delivered = [_Ends(sink, last) for sink in outputs]
    exception_ends = _Ends(exceptions, BEAT["last"].offset)

    def taken():
        return sum(bisect.bisect_left(s, len(source.cycles)) for s, source in zip(starts, inputs))

    def moved():
        return sum(len(sink.received) for sink in migrated)

    def step():
        nonlocal phase, waited, next_move, storm_at, cycle, stormed
        cycle += 1
        busy = writer.step()
        if cycle % 20_000 == 0:       # a long run shows where it is
            dut._log.info(f"cycle {cycle}: {phase}, packets in {taken()}, out "
                          f"{[ends() for ends in delivered]} of {job['expected']}, "
                          f"moves {moved()}/{len(moves)}, storm left {len(storm)}, "
                          f"host writer at {writer.at()}")
        if phase == "host":
            if busy:
                return False
            for port, source in enumerate(inputs):
                source.extend([BEAT.const(beat).as_bits() for beats in packet_beats[port]
                               for beat in beats])
            phase, storm_at = "traffic", cycle
        elif phase == "traffic":
            if next_move < len(moves) and not busy and moved() == next_move and \
                    taken() >= moves[next_move]["after"]:
                writer.push(moves[next_move]["ops"])
                next_move += 1
            if storm and cycle >= storm_at + job["pace"]:
                writer.push([storm.pop(0)])
                storm_at = cycle
            if job["storm"] and not storm and not busy and stormed is None:
                stormed = not all(ends() >= want for ends, want in zip(delivered, job["expected"]))
            done = all(source.idle for source in inputs) and not busy and not storm and \
                next_move == len(moves) and moved() == len(moves) and \
                all(ends() >= want for ends, want in zip(delivered, job["expected"])) and \
                exception_ends() >= job["expected_exceptions"]
            if done:
                phase, waited = "settle", 0
        elif phase == "settle":
            waited += 1
            if waited >= settle:
                writer.push(job["reads"])
                phase = "read"
        elif phase == "read":
            return not busy
        return False

    beats = sum(len(packet) // 16 + 1 for port in job["packets"] for packet in port)
    slack = 1 / max(0.05, 1 - max(job["stall"], job["gap"]))
    budget = 5000 * (1 + len(job["host_ops"]) + len(job["reads"]) + len(moves) + len(storm)) + \
        int(200 * beats * slack) + settle + job["pace"] * len(storm)
    sources = [*host_sources.values(), *inputs, levels]
    sinks = [*reply_sinks.values(), *outputs, exceptions, *events, *migrated, *fenced]
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
            "counters": counters, "cycles": cycles, "stormed": bool(stormed),
            "moved": sorted((cycle, engine, value) for engine, sink in enumerate(migrated)
                            for cycle, value in zip(sink.cycles, sink.received)),
        }, file)
