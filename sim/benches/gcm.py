# SPDX-License-Identifier: BSD-2-Clause
"""cocotb bench of `GcmCore`: runs a job of messages, records what comes out.

The job (JSON, path in ``ESPNIC_JOB``) is written by :mod:`espnic.sim.gcm_job`,
which also judges the outcome against an independent oracle; this bench only
drives the ports, checks the stream framing (one ``last`` per message, no
``overrun``) and writes the outputs and handshake cycles to ``ESPNIC_JOB_RESULT``.
"""

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from espnic.hdl.gcm.layouts import (BLOCK_BYTES, GCM_COMMAND, GCM_OUTPUT, GCM_RESULT,
                                    block_from_bytes, block_to_bytes)
from espnic.sim.cocotb_streams import StreamSink, StreamSource, run_cycles


def _blocks(octets):
    return [block_from_bytes(octets[i:i + BLOCK_BYTES]) for i in range(0, len(octets), BLOCK_BYTES)]


def _command(message):
    key = bytes.fromhex(message["key"])
    return GCM_COMMAND.const({
        "key": block_from_bytes(key),
        "key_256": int(len(key) == 32),
        "nonce": block_from_bytes(bytes.fromhex(message["nonce"])),
        "aad_len": len(message["aad"]) // 2,
        "text_len": len(message["text"]) // 2,
        "decrypt": int(message["decrypt"]),
    }).as_bits()


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["ESPNIC_JOB"]).read_text())
    messages = job["messages"]
    rng = random.Random(job.get("seed", 0))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    cmd = StreamSource(dut, "cmd", rng=rng, gap_prob=job.get("in_gap", 0.0))
    data_in = StreamSource(dut, "data_in", rng=rng, gap_prob=job.get("in_gap", 0.0))
    data_out = StreamSink(dut, "data_out", rng=rng, stall_prob=job.get("out_stall", 0.0))
    result = StreamSink(dut, "result", rng=rng, stall_prob=job.get("out_stall", 0.0))
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    total_blocks = 0
    for message in messages:
        cmd.extend([_command(message)])
        blocks = (_blocks(bytes.fromhex(message["aad"])) + _blocks(bytes.fromhex(message["text"])))
        if message["decrypt"]:
            blocks.append(block_from_bytes(bytes.fromhex(message["tag"])))
        data_in.extend(blocks)
        total_blocks += len(blocks) + 2

    slack = 1 / max(0.05, 1 - max(job.get("in_gap", 0.0), job.get("out_stall", 0.0)))
    text_blocks = sum(-(-len(m["text"]) // (2 * BLOCK_BYTES)) for m in messages)
    cycles = await run_cycles(dut.clk, [cmd, data_in], [data_out, result],
                              until=lambda: (len(result.received) == len(messages)
                                             and len(data_out.received) >= text_blocks),
                              max_cycles=int((1000 + 40 * total_blocks) * slack))
    await ClockCycles(dut.clk, 4)
    assert int(dut.overrun.value) == 0, "the core's fixed schedule was violated (overrun)"
    assert len(data_out.received) == text_blocks, "more output blocks than text blocks"

    outputs, position = [], 0
    for index, message in enumerate(messages):
        text_len = len(message["text"]) // 2
        count = -(-text_len // BLOCK_BYTES)
        beats = [GCM_OUTPUT.from_bits(v) for v in data_out.received[position:position + count]]
        position += count
        assert len(beats) == count, f"message {index}: {len(beats)} of {count} output blocks"
        lasts = [int(beat.last) for beat in beats]
        assert lasts == [0] * (count - 1) + [1] * (count > 0), \
            f"message {index}: last flags {lasts}"
        text = b"".join(block_to_bytes(beat.data) for beat in beats)
        assert not any(text[text_len:]), f"message {index}: bytes past text_len are not zero"
        verdict = GCM_RESULT.from_bits(result.received[index])
        outputs.append({"text": text[:text_len].hex(), "tag": block_to_bytes(verdict.tag).hex(),
                        "tag_ok": bool(verdict.tag_ok)})

    with open(os.environ["ESPNIC_JOB_RESULT"], "w") as file:
        json.dump({"outputs": outputs, "cycles": cycles,
                   "cmd_cycles": cmd.cycles, "result_cycles": result.cycles,
                   "out_cycles": data_out.cycles}, file)
