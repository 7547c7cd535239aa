# SPDX-License-Identifier: BSD-2-Clause
"""Host-link figures: what the real host software gets through a device's serial link.

:func:`run_hostlink` runs the cocotb bench :mod:`espnic.sim.benches.hostlink` on
the simulated device server's own build (``sim/device_server.py: design()``:
``EspNicDevice(link="bytes", packets="link")``, one compact engine, one port),
its byte link paced like a UART of ``divisor`` cycles per bit. In the simulator's
process a thread runs :func:`host_session`: the host driver (``host/device.py``
over ``host/link.py``, stop-and-wait) and the controller (``host/controller``)
doing the timed runs below, each checked afterwards over the same link.

What is timed (in link cycles, which stand still while the host computes: the
host counts as infinitely fast; see the bench's docstring):

``sa_records``
    ``count`` SA records written to engine 0 (``Device.write_sa``: one
    ``engine_host`` ``WRITE`` ``SEND``, its ``ACK`` awaited), outbound tunnel SAs
    with random keys and salts (escaped bytes as real keys get them). The bulk
    load of SA data; for an outbound SA the whole device side of an install.
``sa_burst``
    ``burst`` SA records (default ``count``) written to engine 0 by
    ``Device.write_sas``: ``SEND_MANY`` frames of as many records as fit one (13),
    each frame's ``ACK`` awaited; slot ``n % 13`` for the n-th, so the slots hold
    the last frame's when it is checked. The bulk load in bursts.
``add_sa_out``, ``add_sa_in``
    ``count`` outbound / inbound SAs installed by ``Controller.add_sa`` (a new
    controller for each run, its database in memory): the record written, read
    back and compared (a ``READ``, a ``SEND_SHORT`` of a few bytes, and its
    156-byte ``engine_reply`` item), and for an inbound SA its SPI-table entry
    inserted (a ``spi_host`` ``INSERT``, short too, and its ``spi_reply``). The inbound SAs' keys are chosen so that no
    SPI-table bucket overflows.

Each from the first byte of the first frame on the wire to the last byte of the
last answer.

``packets``
    ``count`` IPv4/UDP packets of one size, random payloads, injected into port
    0 (``Device.inject``: an ``INJECT``, its ``ACK`` awaited; the next goes
    without waiting for the packet to come back) that a ``BYPASS`` rule sends to
    a route out of port 0, which comes back to the host as a ``PACKET`` frame,
    each checked against :class:`~espnic.sim.model.nic.NicModel`. The device
    sends a packet's ``ACK`` only after the ``PACKET`` frame it is sending, so a
    run's first packet goes faster than the others, and its last ``PACKET`` frame
    is a tail that no later packet overlaps: the rate is the steady state, taken
    from the ``PACKET`` frames' arrivals (``arrivals``: ``count - 1`` packets
    between the first and the last); the run's ``cycles`` go from its first byte
    to its last ``PACKET`` frame.

``runs`` in the job (default: all of :data:`SA_RUNS` and ``packets``) picks which
of them run.

Setup, read-back and checks go at a byte per cycle, untimed (the pacing is the
bench's; the device's byte link takes a byte per cycle).
"""

import ipaddress
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..hdl.bridge.regmap import MAX_BODY, FrameKind, PacketSource
from ..hdl.engine.sa import SaConfig, sa_layout
from ..hdl.engine.sa_table import control_layout, control_record
from ..hdl.forwarder.policy import PolicyAction
from ..hdl.forwarder.spi_table import SpiOp, SpiStatus, bucket_of

__all__ = ["DEVICE", "ANSWER_TIMEOUT", "SA_RUNS", "RUNS", "host_session", "run_hostlink",
           "sa_configs", "inbound_configs", "bypass_packets"]

#: The device the bench runs: the simulated device server's (``espnic sim``'s
#: default), so the bench shares its Verilator build.
DEVICE = {"engines": 1, "ports": 1, "profile": "compact"}
#: The SA runs, in the order they run.
SA_RUNS = ("sa_records", "sa_burst", "add_sa_out", "add_sa_in")
#: Every run: the SA runs, then packets of each size.
RUNS = SA_RUNS + ("packets",)
OUR = "192.0.2.1"              # the device's tunnel address: inbound SAs' destination
PEER = "192.0.2.200"
PACKET_SRC = "10.1.0.1"
PACKET_DST = "198.51.100.7"    # bypassed and routed out of port 0
_BYPASS_NET = ("198.51.100.0", 24)
#: Wall-clock seconds the driver waits for an answer before resending: far more
#: than the simulation takes (a resend would be the bench's fault; none is allowed).
ANSWER_TIMEOUT = 3600.0


def _wire(address: str) -> bytes:
    packed = ipaddress.ip_address(address).packed
    return packed + bytes(16 - len(packed))


def sa_configs(count: int, rng: random.Random, *, direction: str = "out",
               first_spi: int = 0x10000) -> list[SaConfig]:
    """`count` tunnel-mode SAs with random AES-128 keys and salts."""
    src, dst = (OUR, PEER) if direction == "out" else (PEER, OUR)
    return [SaConfig(spi=first_spi + n, direction=direction, mode="tunnel",
                     key=rng.randbytes(16).hex(), salt=rng.randbytes(4).hex(), src=src, dst=dst)
            for n in range(count)]


def inbound_configs(count: int, rng: random.Random, *, buckets: int, ways: int) -> list[SaConfig]:
    """`count` inbound SAs whose SPI-table keys fit a table of `buckets` rows of
    `ways` (a bulk load measures the link, not a full bucket's refusal)."""
    from ..host.config import spi_key

    chosen, used, spi = [], {}, 0x20000
    while len(chosen) < count:
        config = sa_configs(1, rng, direction="in", first_spi=spi)[0]
        spi += 1
        bucket = bucket_of(spi_key(config), buckets)
        if used.get(bucket, 0) < ways:
            used[bucket] = used.get(bucket, 0) + 1
            chosen.append(config)
    return chosen


def bypass_packets(size: int, count: int, rng: random.Random) -> list[bytes]:
    """`count` IPv4/UDP packets of exactly `size` bytes to :data:`PACKET_DST`, random payloads."""
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw

    if size < 28:
        raise ValueError(f"a packet has at least 28 bytes (IPv4 and UDP headers), not {size}")
    return [bytes(IP(src=PACKET_SRC, dst=PACKET_DST, id=n) / UDP(sport=1000, dport=2000)
                  / Raw(rng.randbytes(size - 28))) for n in range(count)]


def _bypass_rule() -> dict:
    dst, length = _BYPASS_NET
    return {"valid": True, "ipv6": False, "priority": 1, "src": bytes(16), "src_len": 0,
            "dst": _wire(dst), "dst_len": length, "any_proto": True, "proto": 0,
            "sport_lo": 0, "sport_hi": 65535, "dport_lo": 0, "dport_hi": 65535,
            "action": PolicyAction.BYPASS.value, "value": {"engine": 0, "slot": 0}}


def _bypass_route() -> dict:
    dst, length = _BYPASS_NET
    return {"valid": True, "ipv6": False, "dst": _wire(dst), "length": length, "port": 0}


# -- in the simulator's process: the host ------------------------------------------------


def _check_slots(device, configs, layout):
    """Each SA's record as the engine gives it back: every field but key and salt
    (read as zero) as written."""
    control = control_layout(layout["replay_bitmap"].width)
    for slot, config in enumerate(configs):
        got = device.read_sa(0, slot).record.as_bits()
        want = control.const(control_record(config.to_record(layout))).as_bits()
        for name, field in control:
            mask = (1 << field.width) - 1
            if name not in ("key", "salt") and \
                    (got >> field.offset ^ want >> field.offset) & mask:
                raise AssertionError(f"slot {slot}: field {name} differs from what was "
                                     f"written (SA {config.spi:#x})")


def host_session(device, port, job: dict, progress=lambda what: None) -> dict:
    """What the host does in one simulator run (in its own thread): the timed runs of
    the job, each checked. `port` is the bench's (``cycle``, ``byte_cycles``,
    ``to_device``, ``to_host``, ``frames``)."""
    from ..host.config import spi_key
    from ..host.controller import Controller
    from .model.nic import NicModel

    params = device.params
    rng = random.Random(job["seed"])
    layout = sa_layout(params["window"])
    count = job["sas"]
    if not 1 <= count <= params["slots"]:
        raise ValueError(f"sas must be 1..{params['slots']} (one engine's slots), not {count}")
    results = []
    before = device.counters()

    def timed(what: str, run, **row) -> dict:
        progress(f"{what} of {row['bytes']} bytes" if "bytes" in row else what)
        port.byte_cycles = 10 * job["divisor"]
        start = (port.cycle, port.to_device, port.to_host, len(port.frames))
        run()
        port.byte_cycles = 1
        frames = port.frames[start[3]:]
        results.append({"run": what, **row, "cycles": port.cycle - start[0],
                        "to_device": port.to_device - start[1],
                        "to_host": port.to_host - start[2],
                        "arrivals": [cycle for cycle, kind in frames
                                     if kind == FrameKind.PACKET.value]})

    runs = job.get("runs", RUNS)
    if "sa_records" in runs:
        configs = sa_configs(count, rng)
        records = [config.to_record(layout) for config in configs]
        timed("sa_records", lambda: [device.write_sa(0, slot, record)
                                     for slot, record in enumerate(records)], count=count)
        _check_slots(device, configs, layout)

    if "sa_burst" in runs:
        burst = job.get("burst") or count
        per_frame = min(params["slots"],
                        MAX_BODY // device.regmap.channel("engine_host").payload_bytes)
        configs = sa_configs(burst, rng, first_spi=0x40000)
        records = [(n % per_frame, config.to_record(layout)) for n, config in enumerate(configs)]
        timed("sa_burst", lambda: device.write_sas(0, records), count=burst)
        last = {slot: configs[n] for n, (slot, _) in enumerate(records)}
        _check_slots(device, [last[slot] for slot in sorted(last)], layout)

    for direction in ("out", "in"):
        if f"add_sa_{direction}" not in runs:
            continue
        if direction == "out":
            configs = sa_configs(count, rng, first_spi=0x30000)
        else:
            configs = inbound_configs(count, rng,
                                      buckets=params["spi_entries"] // params["spi_ways"],
                                      ways=params["spi_ways"])
        controller = Controller([device])
        timed(f"add_sa_{direction}", lambda: [controller.add_sa(config) for config in configs],
              count=count)
        placed = sorted((sa.state, sa.placement.engine, sa.placement.slot)
                        for sa in controller.sas())
        controller.close()
        if placed != [("active", 0, slot) for slot in range(count)]:
            raise AssertionError(f"add_sa left the SAs as {placed}")
        _check_slots(device, configs, layout)
        for config in configs if direction == "in" else ():
            # Every inbound SA's entry is there: a second one collides.
            if device.spi_entry(0, SpiOp.INSERT, spi_key(config)) != SpiStatus.COLLISION:
                raise AssertionError(f"the SPI entry of SA {config.spi:#x} is not in the table")

    model = NicModel(engines=params["engines"], ports=params["ports"], slots=params["slots"],
                     spi_entries=params["spi_entries"], spi_ways=params["spi_ways"],
                     rules=params["rules"], routes=params["routes"], window=params["window"])
    assert model.policy[0].write(0, _bypass_rule()) and model.routes.write(0, **_bypass_route())
    if not (device.write_policy(0, 0, _bypass_rule()) and device.write_route(0, **_bypass_route())):
        raise AssertionError("the device refused the bypass rule or its route")
    for size in job["sizes"] if "packets" in runs else ():
        packets = bypass_packets(size, job["packets"], rng)
        want = []
        for packet in packets:
            outcome = model.process(0, packet)
            assert outcome.port == 0, f"the model does not bypass a {size}-byte packet"
            want.append((PacketSource.EGRESS, 0, outcome.packet, False))
        got = []

        def inject():
            for packet in packets:
                device.inject(0, packet)
            while len(got) < len(packets):
                got.extend(device.packets(wait=ANSWER_TIMEOUT))

        timed("packets", inject, bytes=size, count=len(packets))
        if got != want:
            raise AssertionError(f"{size}-byte packets: the device sent {len(got)} packets "
                                 f"that differ from the model's {len(want)}")

    after = device.counters()
    errors = {name: after[name] - before[name]
              for name in ("bad_crc", "too_short", "too_long", "bad_command", "duplicates",
                           "inject_aborted")
              if after[name] != before[name]}
    if errors or device.link.resends:
        raise AssertionError(f"the link was not clean: {errors}, {device.link.resends} resends")
    return {"params": {name: value for name, value in params.items() if name != "ethernet"},
            "runs": results}


# -- in the caller's process -------------------------------------------------------------


def run_hostlink(*, divisor: int, sas: int = 8, packets: int = 4, sizes=(64, 512, 1400),
                 seed: int = 0, skip: bool = True, quiet: int | None = None,
                 burst: int | None = None, runs=RUNS, simulator: str | None = None,
                 timeout: float | None = None, progress=None) -> dict:
    """One simulator run of the bench at `divisor` cycles per bit (see the module
    docstring): ``{"params": the device's, "runs": [...], "seconds": wall time,
    ...}``, each run with its ``cycles``, the bytes it moved ``to_device`` and
    ``to_host`` and the ``arrivals`` (link cycles) of its ``PACKET`` frames; and the
    bench's ``link_cycles``, ``skipped_cycles`` and ``late_cycles``. `skip`: skip
    the idle rest of each character (:class:`~espnic.sim.benches.hostlink.Line`).
    `burst`: records of the ``sa_burst`` run (default `sas`); `runs`: which runs
    (names of :data:`RUNS`). `progress(line)` hears what the simulation is doing
    (from another thread)."""
    from ..hdl.device import EspNicDevice
    from .cocotb_runner import run_job
    from .device_server import design

    if packets < 2:
        raise ValueError(f"packets must be at least 2 (the rate is between arrivals), "
                         f"not {packets}")
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown run {sorted(unknown)[0]!r}; runs: {', '.join(RUNS)}")
    name, params = design(**DEVICE)
    job = {"divisor": divisor, "sas": sas, "packets": packets, "sizes": list(sizes),
           "seed": seed, "skip": skip, "runs": list(runs),
           **({} if quiet is None else {"quiet": quiet}),
           **({} if burst is None else {"burst": burst})}
    with tempfile.TemporaryDirectory(prefix="espnic-hostlink-") as tmp:
        log = Path(tmp, "progress")
        log.touch()
        job["progress"] = str(log)
        done = threading.Event()

        def follow():
            with open(log) as lines:
                while not done.wait(0.2):
                    for line in lines:
                        progress(line.rstrip("\n"))

        watcher = threading.Thread(target=follow, daemon=True, name="espnic-hostlink-progress")
        if progress is not None:
            watcher.start()
        started = time.monotonic()
        try:
            result = run_job(EspNicDevice, name=name, params=params,
                             test_module="espnic.sim.benches.hostlink", job=job,
                             simulator=simulator, timeout=timeout)
        finally:
            done.set()
            if watcher.is_alive():
                watcher.join()
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


if __name__ == "__main__":         # a quick look: python -m espnic.sim.hostlink_job DIVISOR
    print(json.dumps(run_hostlink(divisor=int(sys.argv[1]), sas=2, packets=2, sizes=(64,),
                                  progress=lambda line: print(line, file=sys.stderr)),
                     indent=1))
