# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench of `EspEngine`: writes SAs, runs packets, reads the counters back.

The job (JSON, path in ``ESPNIC_JOB``) is written by :mod:`espnic.sim.engine_job`,
which also holds the model's expectation; this bench only drives the ports. The
host writes every SA record (``host``), then the slot of each packet (``meta``)
and the packets' beats (``i``) go in as two independent streams with random
idle cycles (``gap``), while ``o`` is taken with random back-pressure
(``stall``) and ``events`` is always ready. Once every input beat has been
taken and every expected packet has come out, the engine runs on for the job's
``settle_cycles``: its idle flag is not a port (see
:data:`espnic.sim.engine_job.SETTLE_CYCLES`); where the simulator exposes
``inbound.busy`` anyway the bench checks that it fell in time, and a stray
extra output packet would still be recorded. Then the bench reads every slot's
counters and record over ``host``/``host_reply`` and samples ``no_sa``,
``unknown_spi`` and ``unsupported``. It checks the output framing
(``first``/``last``, bytes past ``count`` zero, ``o_inbound`` steady within a
packet) and writes the packets, the events and the counters to
``ESPNIC_JOB_RESULT``.
"""

import json
import os
import random
from pathlib import Path

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from espnic.hdl.engine.engine import engine_meta
from espnic.hdl.engine.sa import SA_COUNTERS
from espnic.hdl.engine.sa_table import Event, HostOp, SaTable, control_layout
from espnic.hdl.gcm.layouts import BLOCK_BYTES
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats, packet_beat
from espnic.sim.cocotb_streams import StreamSink, StreamSource, run_cycles

BEAT = packet_beat(BLOCK_BYTES)


def _event_name(value):
    """The model's name of an :class:`Event` field (a member, or its value if unnamed)."""
    return (value if isinstance(value, Event) else Event(value)).name.lower()


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["ESPNIC_JOB"]).read_text())
    slots, window = job["slots"], job["window"]
    ops = SaTable.layouts(slots, window)
    host_op, host_reply = ops["HOST_OP"], ops["HOST_REPLY"]
    control = control_layout(window)
    meta_layout = engine_meta(slots)
    rng = random.Random(job.get("seed", 0))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    host = StreamSource(dut, "host", rng=rng)
    replies = StreamSink(dut, "host_reply", rng=rng)
    meta = StreamSource(dut, "meta", rng=rng, gap_prob=job.get("gap", 0.0))
    beats_in = StreamSource(dut, "i", rng=rng, gap_prob=job.get("gap", 0.0))
    out = StreamSink(dut, "o", rng=rng, stall_prob=job.get("stall", 0.0))
    events = StreamSink(dut, "events", rng=rng)
    # o_inbound is valid with each beat: sample it at every handshake on o, and
    # count the packets that have come out.
    out_inbound, out_abort, out_packets = [], [], 0
    sample_out = out.sample
    last_bit = BEAT["last"].offset

    def sample_with_inbound(cycle):
        nonlocal out_packets
        taken = len(out.received)
        sample_out(cycle)
        if len(out.received) > taken:
            out_inbound.append(int(dut.o_inbound.value))
            out_abort.append(int(dut.o_abort.value))
            out_packets += out.received[-1] >> last_bit & 1
    out.sample = sample_with_inbound

    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    writes = [host_op.const({"op": HostOp.WRITE, "slot": write["slot"],
                             "record": data.Const(control, write["record"])}).as_bits()
              for write in job["writes"]]
    slots_in = [meta_layout.const({"slot": packet["slot"]}).as_bits() for packet in job["packets"]]
    beats = [BEAT.const(beat).as_bits() for packet in job["packets"]
             for beat in beats_from_bytes(bytes.fromhex(packet["data"]), BLOCK_BYTES)]
    reads = [host_op.const({"op": HostOp.READ_COUNTERS, "slot": slot}).as_bits()
             for slot in range(slots)]
    expected = job["expected_outputs"]
    settle = job["settle_cycles"]
    phase, waited = "write", 0
    # The engine's idle flag is not a port; where the simulator exposes the
    # design's hierarchy (cocotb builds Verilator with --public-flat-rw), the bench
    # checks with it that the fixed settling time was long enough.
    try:
        busy = dut.inbound.busy
    except AttributeError:
        busy = None
    busy_cycles = 0          # the last settling cycle in which the engine was busy

    def step():
        """Called once per cycle by run_cycles: moves the job through its phases
        (one loop for the whole run, so every driver steps at every clock edge and
        a source lowers valid as soon as its queue runs empty)."""
        nonlocal phase, waited, busy_cycles
        if phase == "write":
            # The SAs first: a packet's lookup must find its SA written.
            host.extend(writes)
            phase = "writing"
        elif phase == "writing" and host.idle:
            meta.extend(slots_in)
            beats_in.extend(beats)
            phase = "traffic"
        elif phase == "traffic" and meta.idle and beats_in.idle and out_packets >= expected:
            phase, waited = "settle", 0
        elif phase == "settle":
            waited += 1
            if busy is not None and int(busy.value):
                busy_cycles = waited
                assert waited < settle, f"the engine is still busy after {settle} cycles"
            if waited >= settle:
                host.extend(reads)
                phase = "read"
        elif phase == "read" and len(replies.received) == slots:
            return True
        return False

    slack = 1 / max(0.05, 1 - max(job.get("stall", 0.0), job.get("gap", 0.0)))
    budget = (2000 * (1 + len(slots_in) + len(writes) + slots)
              + int(100 * len(beats) * slack) + settle)
    cycles = await run_cycles(dut.clk, [host, meta, beats_in], [replies, out, events],
                              until=step, max_cycles=budget)
    engine_counters = {name: int(getattr(dut, name).value)
                       for name in ("no_sa", "unknown_spi", "unsupported", "truncated")}

    beats_out = [BEAT.from_bits(value) for value in out.received]
    assert not beats_out or beats_out[-1].last, "the last output packet is incomplete"
    # bytes_from_beats checks first/last and the bytes past count.
    received = bytes_from_beats(beats_out, BLOCK_BYTES)
    ends = [index for index, beat in enumerate(beats_out) if beat.last]
    starts = [0, *(end + 1 for end in ends)][:len(ends)]
    outputs = []
    for number, (packet, start, end) in enumerate(zip(received, starts, ends, strict=True)):
        flags = set(out_inbound[start:end + 1])
        assert len(flags) == 1, f"output packet {number}: o_inbound changes within it"
        outputs.append({"data": packet.hex(), "inbound": bool(flags.pop()),
                        "aborted": bool(out_abort[end]), "done_cycle": out.cycles[end]})

    counters, seqs = {}, {}
    for slot, value in enumerate(replies.received):
        reply = host_reply.from_bits(value)
        counters[slot] = {name: int(reply.counters[name]) for name, _ in SA_COUNTERS}
        seqs[slot] = int(reply.record.seq)
    with open(os.environ["ESPNIC_JOB_RESULT"], "w") as file:
        json.dump({
            "outputs": outputs, "cycles": cycles, "settle_busy_cycles": busy_cycles,
            "counters": counters, "seqs": seqs,
            "engine_counters": engine_counters,
            "events": [(int(event.slot), _event_name(event.event))
                       for event in map(ops["EVENT"].from_bits, events.received)],
        }, file)
