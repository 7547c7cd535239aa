# SPDX-License-Identifier: BSD-2-Clause
"""Run a whole `EspEngine` in Verilator (cocotb), with the reference model as the oracle.

:func:`run_engine_cocotb` is :func:`espnic.sim.esp_job.run_engine` on the
Verilog of the engine: it computes what the model says for the traffic, writes
a job file (the SA records the host writes, the packets with their slots, the
output back-pressure), runs the cocotb bench :mod:`espnic.sim.benches.engine`
on the cached Verilator (or Icarus) build of ``EspEngine(profile, slots)`` and
returns an :class:`~espnic.sim.esp_job.EngineRun` with the same fields, so
tests assert on both simulators the same way.
"""

from ..hdl.engine.sa_table import control_layout, control_record
from .esp_job import EngineRun, model_outcomes
from .model import EspModel

__all__ = ["run_engine_cocotb", "SETTLE_CYCLES"]

#: Cycles the bench keeps the engine running once every input beat has been taken
#: and every expected output packet has come out, before it reads the counters.
#: The engine's idle flag (``inbound.busy``, which ``run_engine`` waits for) is not
#: a port of the Verilog top level, so the bench waits for a fixed time instead. An
#: inbound packet that is dropped (no output to wait for) still has its ICV check,
#: verdict and accounting ahead once its last beat has been taken; the decapsulator
#: takes input at the GCM core's rate, so that is short: measured on a forged or
#: truncated 1500-byte packet, 54 cycles (compact) and 24 (fast). 3000 cycles would
#: even cover a whole 1500-byte packet on the compact core, and the bench checks
#: ``inbound.busy`` through the hierarchy where the simulator exposes it.
SETTLE_CYCLES = 3000


def run_engine_cocotb(sa_configs: dict, traffic, *, profile="compact", slots: int = 4,
                      stall=0.0, gap=0.0, seed=0, simulator="verilator",
                      timeout=None) -> EngineRun:
    """Write `sa_configs` (slot -> :class:`SaConfig`) into the engine's Verilog and into
    a model, send `traffic` (``[(slot, packet)]``) through both, and read every slot's
    counters and record back once the engine has settled. Packets the engine does
    not support (:func:`~espnic.sim.esp_job.engine_supports`) skip the model and
    have the reason ``"unsupported"``.

    ``stall`` is the chance per cycle that the bench holds the output's ``ready``
    low, ``gap`` the chance that it holds back the next input beat or packet slot
    (as ``run_engine``'s); ``seed`` seeds both. ``timeout`` bounds the simulation's
    wall-clock seconds. The build is cached by the engine's parameters and the
    content of ``hdl/`` (:func:`espnic.sim.cocotb_runner.run_cocotb`).
    """
    from ..hdl.engine.engine import EspEngine
    from .cocotb_runner import run_job

    model = EspModel(slots=slots)
    window = model.layout["replay_bitmap"].width
    control = control_layout(window)
    writes = []
    for slot, config in sa_configs.items():
        model.install(slot, config)
        # The table keeps everything but the bitmap (the replay unit's); the host
        # writes exactly those fields.
        record = control.const(control_record(config.to_record(model.layout)))
        writes.append({"slot": slot, "record": record.as_bits()})

    reasons, expected = model_outcomes(model, sa_configs, traffic)

    job = {
        "slots": slots, "window": window, "writes": writes,
        "packets": [{"slot": slot, "data": bytes(packet).hex()} for slot, packet in traffic],
        "expected_outputs": len(expected[False]) + len(expected[True]) + reasons.count("aborted"),
        "stall": stall, "gap": gap, "seed": seed, "settle_cycles": SETTLE_CYCLES,
    }
    result = run_job(EspEngine, name=f"engine_{profile}",
                     params={"profile": profile, "slots": slots},
                     test_module="espnic.sim.benches.engine", job=job, simulator=simulator,
                     timeout=timeout)

    outputs = {False: [], True: []}
    for packet in result["outputs"]:
        if not packet["aborted"]:       # the egress discards an aborted packet
            outputs[packet["inbound"]].append(bytes.fromhex(packet["data"]))
    return EngineRun(
        reasons=reasons, outputs=outputs, expected=expected,
        counters={int(slot): counters for slot, counters in result["counters"].items()},
        seqs={int(slot): seq for slot, seq in result["seqs"].items()},
        engine_counters=result["engine_counters"],
        events=[(slot, name) for slot, name in result["events"]],
        done_cycles=[packet["done_cycle"] for packet in result["outputs"]],
        model=model)
