# SPDX-License-Identifier: BSD-2-Clause
"""Run the whole device (``hdl/top.py: EspNic``) on traffic, with :class:`NicModel`
as the oracle.

A :class:`NicSetup` says what the host programs: SAs into engines, SPI-table
entries and policy rules into each port's classifier, routes into the egress.
:func:`run_nic` writes it into an :class:`EspNic` (over its host ports, in
Amaranth's simulator) and into a :class:`NicModel`, sends each port's packets
in with random gaps, takes each egress port's packets out with random stalls,
and once everything is quiet reads every counter back. It returns what both
saw; :func:`check_nic_run` is what a test asserts.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from ..hdl.engine.sa import SA_COUNTERS
from ..hdl.engine.sa_table import HostOp, control_record
from ..hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus
from ..hdl.packet import beats_from_bytes, bytes_from_beats
from ..hdl.top import ENGINE_COUNTERS, LOCAL_COUNTERS, PORT_COUNTERS, EspNic, host_layouts
from .amaranth_sim import run_sim, stream_get, stream_get_packets, stream_put, stream_put_all, \
    stream_record
from ..host.device import layout_values
from .model.nic import NicModel

__all__ = ["NicSetup", "Migration", "NicRun", "spi_op", "policy_op", "route_op", "run_nic",
           "run_nic_cocotb", "check_nic_run", "exception_collector", "egress_packets", "host_ok",
           "counter_reads", "SETTLE_CYCLES"]

_TIMEOUT = 50_000   # cycles without progress before a run is declared hung
_QUIET = 400        # cycles with no packet entering an engine and none in flight: done


@dataclass
class NicSetup:
    """What the host programs. Policy rules and routes are the tables' write layouts
    as dicts (addresses as 16 bytes, wire order)."""
    engines: int = 1
    ports: int = 1
    slots: int = 4
    rules: int = 8
    routes: int = 8
    sas: list = field(default_factory=list)          # (engine, slot, SaConfig)
    spi_entries: list = field(default_factory=list)  # (port, key int, engine, slot)
    policy: list = field(default_factory=list)       # (port, index, rule dict)
    route_writes: list = field(default_factory=list)  # route write dicts
    miss_to_host: tuple = ()     # per forwarder (the local one last)
    nested: bool = False         # a local forwarder: egress port `ports` is the device

    @property
    def forwarders(self) -> int:
        return self.ports + self.nested

    def model(self) -> NicModel:
        model = NicModel(engines=self.engines, ports=self.ports, slots=self.slots,
                         nested=self.nested,
                         rules=self.rules, routes=self.routes)
        for engine, slot, config in self.sas:
            model.install(engine, slot, config)
        for port, key, engine, slot in self.spi_entries:
            assert model.spi[port].insert(key, {"engine": engine, "slot": slot}) == SpiStatus.OK
        for port, index, rule in self.policy:
            assert model.policy[port].write(index, rule)
        for write in self.route_writes:
            assert model.routes.write(**write)
        for port, flag in enumerate(self.miss_to_host):
            model.miss_to_host[port] = flag
        return model

    def host_ops(self, model: NicModel) -> list:
        """What the host writes, in order: ``(stream, index or None, payload, reply
        stream or None)``, the stream a member of :class:`EspNic` (an array when
        `index` is not None)."""
        ops = []
        for engine, slot, config in self.sas:
            record = control_record(config.to_record(model.engine[engine].layout))
            ops.append(("engine_host", engine, {"op": HostOp.WRITE, "slot": slot,
                                                "record": record}, None))
        ops += [spi_op(port, SpiOp.INSERT, key, engine, slot)
                for port, key, engine, slot in self.spi_entries]
        ops += [policy_op(port, index, rule) for port, index, rule in self.policy]
        ops += [route_op(write) for write in self.route_writes]
        return ops

    def params(self, profile: str) -> dict:
        """The :class:`EspNic` parameters of the device this setup is for."""
        return dict(engines=self.engines, ports=self.ports, profile=profile, slots=self.slots,
                    nested=self.nested, rules=self.rules, stages=2, routes=self.routes)

    def device(self, profile: str) -> EspNic:
        return EspNic(**self.params(profile))


@dataclass
class Migration:
    """A live move of the SA in engine/slot `source` to `dest`, started once the
    ports together have taken `after` packets in: `dest` put on hold, `repoint`
    (host operations that point the SA's table entries at `dest`) written,
    `source` armed to move after one fence per port, a fence sent through every
    port (:meth:`host_ops`), then the move awaited (`dest` reported on
    ``engine_migrated``)."""
    after: int
    source: tuple
    dest: tuple
    repoint: list

    def host_ops(self, forwarders: int) -> list:
        """The host operations of the move, in order, as :meth:`NicSetup.host_ops`,
        with two more kinds: ``("pause", p, value, None)`` sets forwarder p's
        ``pause``, ``("idle", p, 1, None)`` waits until its ``idle`` is 1. Every
        forwarder is paused and drained before the entries change and the fence
        goes in, so no packet is classified between the two: the fence comes after
        every packet for `source`, and no packet for `dest` (held at its port's
        dispatch until the import) is in front of it."""
        (source, slot), (dest, dest_slot) = self.source, self.dest
        ports = range(forwarders)
        return [("engine_hold", dest, {"slot": dest_slot, "hold": 1}, None),
                ("engine_arm", source, {"slot": slot, "engine": dest, "dest_slot": dest_slot,
                                        "fences": forwarders}, None),
                *(("pause", port, 1, None) for port in ports),
                *(("idle", port, 1, None) for port in ports),
                *self.repoint,
                *(("fence_host", port, {"engine": source, "slot": slot}, None) for port in ports),
                *(("pause", port, 0, None) for port in ports)]


@dataclass
class NicRun:
    outputs: dict        # egress port -> [packet] as the device sent them (aborted ones left out)
    exceptions: list     # (ingress port, packet) to the host's exception queue
    outcomes: list       # the model's Outcome per packet of the traffic
    counters: dict       # device counters by name (lists per port / engine)
    sa_counters: dict    # (engine, slot) -> SA counters read over the host port
    model: NicModel
    aborted: int = 0
    stormed: bool = False     # every storm operation was done before the last packet left
    in_cycles: list = field(default_factory=list)    # cycle of each packet's first beat taken
    out_cycles: list = field(default_factory=list)   # cycle of each packet's last beat sent
    fences: list = field(default_factory=list)  # (engine's packets out when it passed, model's)


def spi_op(port: int, op: SpiOp, key: int, engine: int = 0, slot: int = 0) -> tuple:
    """A host operation on port `port`'s SPI table (as :meth:`NicSetup.host_ops`)."""
    return ("spi_host", port, {"op": op, "key": SPI_KEY.from_bits(key),
                               "value": {"engine": engine, "slot": slot}}, "spi_reply")


def policy_op(port: int, index: int, rule: dict) -> tuple:
    """A write of rule `index` of port `port`'s policy table."""
    return ("policy_host", port, {"index": index, "rule": layout_values(rule)}, "policy_reply")


def route_op(write: dict) -> tuple:
    """A write of a route."""
    return ("route_host", None, layout_values(write), "route_reply")


def host_ok(reply) -> bool:
    """Whether a table's reply says the write was done."""
    return reply.status == SpiStatus.OK if hasattr(reply, "status") else bool(reply.ok)


def _unit(dut, name: str, index):
    """Member `name` of `dut`, or element `index` of it (a per-engine or per-port array)."""
    member = getattr(dut, name)
    return member if index is None else member[index]


async def _host_op(ctx, dut, op: tuple, what: str = "host"):
    """Write one host operation (as :meth:`NicSetup.host_ops` gives them) and, for a
    table that answers, check the answer says it was done."""
    name, index, payload, reply = op
    if name == "pause":
        ctx.set(dut.pause[index], payload)
        return
    if name == "idle":
        waited = 0
        while ctx.get(dut.idle[index]) != payload:
            await ctx.tick()
            waited += 1
            assert waited < _TIMEOUT, f"{what}: forwarder {index} never idle"
        return
    await stream_put(ctx, _unit(dut, name, index), payload, timeout=_TIMEOUT)
    if reply is not None:
        answer = await stream_get(ctx, _unit(dut, reply, index), timeout=_TIMEOUT)
        assert host_ok(answer), f"{what} {name}: {payload}"


def counter_reads(setup: NicSetup, migrations) -> list:
    """One READ_COUNTERS per SA of `setup`, at the engine and slot where the last of
    `migrations` that moved it put it: ``[((engine, slot) of the setup, host op)]``,
    the ops as :meth:`NicSetup.host_ops` gives them."""
    where = {}
    for migration in migrations:
        origin = next((o for o, now in where.items() if now == migration.source),
                      migration.source)
        where[origin] = migration.dest
    reads = []
    for engine, slot, _config in setup.sas:
        at_engine, at_slot = where.get((engine, slot), (engine, slot))
        reads.append(((engine, slot), ("engine_host", at_engine,
                                       {"op": HostOp.READ_COUNTERS, "slot": at_slot},
                                       "engine_reply")))
    return reads


def egress_packets(received: dict, ports: int) -> tuple[dict, int]:
    """Each egress port's beats (``received[port]``) as packets, aborted ones left
    out, and how many were aborted."""
    outputs, aborted = {}, 0
    for port in range(ports):
        packets = bytes_from_beats(received[port], 16)
        ends = [beat for beat in received[port] if beat.last]
        outputs[port] = [packet for packet, end in zip(packets, ends, strict=True)
                         if not end.abort]
        aborted += sum(end.abort for end in ends)
    return outputs, aborted


def exception_collector(dut, packets: int, into: list):
    """A testbench that takes `packets` packets from `dut`'s exception queue and
    appends ``(ingress port, packet)`` for each to `into`."""
    async def collect(ctx):
        beats, ports, ended = [], [], 0
        ctx.set(dut.exception.ready, 1)
        while ended < packets:
            _clk, _rst, valid, beat, port = await ctx.tick().sample(
                dut.exception.valid, dut.exception.payload, dut.exception_port)
            if valid:
                beats.append(beat)
                ended += beat.last
                if beat.first:
                    ports.append(port)
        into.extend(zip(ports, bytes_from_beats(beats, 16), strict=True))
    return collect


def run_nic(setup: NicSetup, traffic, *, profile="compact", stall=0.0, gap=0.0,
            seed=0, storm=(), pace=40, fences=(), migrations=()) -> NicRun:
    """`traffic` (``[(port, packet)]``) through an :class:`EspNic` programmed with
    `setup` and through its model (see the module docstring).

    `storm`: host operations ``(stream, index, payload, reply)`` as
    :meth:`NicSetup.host_ops` gives them, written one every `pace` cycles while
    the traffic flows (each one must be answered as done). They are not applied
    to the model: a storm is made of changes no packet of the traffic can tell
    (entries that share buckets with the traffic's, rules and routes nothing
    matches, entries rewritten with what they hold).

    `fences`: ``(after, port, engine, slot)``: a fence through port `port` to
    `engine`, sent once that port has taken `after` packets in. For each, the run
    records (:attr:`NicRun.fences`) how many packets the engine had sent out when
    it said the fence had passed, and how many of the packets classified before
    the fence the model says it sends out: they must be equal (one port).

    `migrations`: :class:`Migration` s, one after the other while the traffic
    flows. The model does not move anything: a move must change nothing a packet
    can tell. Each SA's counters are read where its last move put it."""
    model = setup.model()
    outcomes = [model.process(port, packet) for port, packet in traffic]
    dut = setup.device(profile)
    want = defaultdict(int)
    for outcome in outcomes:
        if outcome.port is not None:
            want[outcome.port] += 1
    want_exceptions = sum(outcome.exception for outcome in outcomes)
    received = defaultdict(list)
    exceptions, sent, events, stormed, collected = [], [], [], [], []
    counters, sa_counters = {}, {}

    async def host(ctx):
        for op in setup.host_ops(model):
            await _host_op(ctx, dut, op)
        for port, flag in enumerate(setup.miss_to_host):
            ctx.set(dut.miss_to_host[port], flag)
        sent.append("host")

    taken = defaultdict(int)        # packets each port has taken in
    fence_log = []                  # (engine, decisions before it on its port, cycle passed)

    async def send_fences(ctx):
        for after, port, engine, slot in fences:
            while taken[port] < after:
                await ctx.tick()
            await stream_put(ctx, dut.fence_host[port], {"engine": engine, "slot": slot},
                             timeout=_TIMEOUT)

    moved = []                      # (engine, slot) of each move reported, in order

    async def migrate(ctx):
        for number, migration in enumerate(migrations):
            while sum(taken.values()) < migration.after:
                await ctx.tick()
            for op in migration.host_ops(setup.forwarders):
                await _host_op(ctx, dut, op, f"move {number}")
            waited = 0
            while len(moved) <= number:
                await ctx.tick()
                waited += 1
                assert waited < _TIMEOUT, f"move {number} ({migration.source} to " \
                    f"{migration.dest}) not done after {_TIMEOUT} cycles"
            assert moved[number] == tuple(migration.dest), f"move {number}: {moved[number]}"

    async def host_storm(ctx):
        while not sent:
            await ctx.tick()
        for op in storm:
            await ctx.tick().repeat(pace)
            await _host_op(ctx, dut, op, "storm")
        # All done while traffic flowed: some packet still to come out.
        stormed.append(len(collected) < setup.ports)

    def feeder(port):
        async def feed(ctx):
            while not sent:
                await ctx.tick()
            beats = [beat for p, packet in traffic if p == port
                     for beat in beats_from_bytes(packet, 16)]
            await stream_put_all(ctx, dut.i[port], beats, rng=random.Random(seed * 31 + port),
                                 gap_prob=gap, timeout=_TIMEOUT)
            sent.append(port)
        return feed

    def collector(port):
        async def collect(ctx):
            received[port] = await stream_get_packets(
                ctx, dut.o[port], want[port], rng=random.Random(seed * 17 + port),
                stall_prob=stall, timeout=_TIMEOUT)
            collected.append(port)
        return collect


    async def read_back(ctx):
        # Quiet: every port's traffic in, and for a while no packet entering an
        # engine and none in flight inbound (drops happen without output).
        quiet, cycles = 0, 0
        while quiet < _QUIET:
            await ctx.tick()
            cycles += 1
            assert cycles < 20 * _TIMEOUT, "the device never went quiet: " + \
                f"inputs done {sorted(sent, key=str)}, moves {len(moved)}/{len(migrations)}, " \
                f"packets out {[len([b for b in received[p] if b.last]) for p in want]} " \
                f"of {[want[p] for p in want]}"
            busy = any(ctx.get(dut.engine(k).inbound.busy) for k in range(setup.engines))
            moving = any(ctx.get(dut.engine(k).i.valid) for k in range(setup.engines))
            done = len(sent) == setup.ports + 1 and len(moved) == len(migrations) and \
                all(len([b for b in received[p] if b.last]) == want[p] for p in want)
            quiet = quiet + 1 if done and not busy and not moving else 0
        for sa, (stream_name, index, payload, reply) in counter_reads(setup, migrations):
            await stream_put(ctx, _unit(dut, stream_name, index), payload, timeout=_TIMEOUT)
            answer = await stream_get(ctx, _unit(dut, reply, index), timeout=_TIMEOUT)
            sa_counters[sa] = {name: getattr(answer.counters, name) for name, _ in SA_COUNTERS}
        for name in (*PORT_COUNTERS, *ENGINE_COUNTERS, "sent"):
            counters[name] = [ctx.get(signal) for signal in getattr(dut, name)]
        for name in ("no_route", "egress_malformed", "misrouted", "arm_refused",
                     *LOCAL_COUNTERS):
            counters[name] = ctx.get(getattr(dut, name))

    in_cycles, out_cycles = [], []

    async def watch(ctx):
        cycle = 0
        ports, engines = range(setup.ports), range(setup.engines)
        decisions = [dut.classifier(p).decision for p in ports]
        engine_out = [dut.engine(k).o for k in engines]
        signals = [(dut.i[p].valid & dut.i[p].ready & dut.i[p].payload.first) for p in ports] + \
            [(dut.o[p].valid & dut.o[p].ready & dut.o[p].payload.last) for p in ports] + \
            [(d.valid & d.ready) for d in decisions] + [d.payload for d in decisions] + \
            [(o.valid & o.ready & o.payload.last) for o in engine_out] + \
            [(f.valid & f.ready) for f in dut.engine_fenced]
        decided = [0] * setup.ports
        sent_out = [0] * setup.engines
        waiting = [[] for _ in engines]       # fences on their way, per engine
        async for _clk, _rst, *fired in ctx.tick().sample(*signals):
            cycle += 1
            P, E = setup.ports, setup.engines
            entered, left = fired[:P], fired[P:2 * P]
            moved, orders = fired[2 * P:3 * P], fired[3 * P:4 * P]
            outs, passed = fired[4 * P:4 * P + E], fired[4 * P + E:]
            for port in ports:
                taken[port] += entered[port]
                if moved[port]:
                    if orders[port].fence:
                        waiting[orders[port].target.engine].append((port, decided[port]))
                    else:
                        decided[port] += 1
            in_cycles.extend([cycle] * sum(entered))
            out_cycles.extend([cycle] * sum(left))
            for k in engines:
                sent_out[k] += outs[k]
                if passed[k]:
                    port, before = waiting[k].pop(0)
                    fence_log.append((k, port, before, sent_out[k]))

    fenced = []
    processes = [stream_record(dut.engine_events[k], events) for k in range(setup.engines)]
    processes += [stream_record(dut.engine_fenced[k], fenced) for k in range(setup.engines)]

    def record_moves(engine):
        async def process(ctx):
            ctx.set(dut.engine_migrated[engine].ready, 1)
            async for _clk, _rst, valid, payload in ctx.tick().sample(
                    dut.engine_migrated[engine].valid, dut.engine_migrated[engine].payload):
                if valid:
                    moved.append((engine, payload.slot))
        return process
    processes += [record_moves(k) for k in range(setup.engines)]
    processes.append(watch)
    run_sim(dut, host, host_storm, send_fences, migrate, *(feeder(p) for p in range(setup.ports)),
            *(collector(p) for p in range(setup.ports)),
            exception_collector(dut, want_exceptions, exceptions), read_back,
            processes=processes)
    outputs, aborted = egress_packets(received, setup.ports)
    # What the model says each fence's engine had sent out by then: the outputs of the
    # packets classified before it (one port per fence here: their order is the port's).
    left_engine = ("ok", "aborted", "no_route", "egress_malformed")
    fence_counts = []
    for engine, port, before, seen in fence_log:
        earlier = [o for (p, _packet), o in zip(traffic, outcomes) if p == port][:before]
        want = sum(1 for o in earlier if o.flow and o.flow[0] == "sa" and o.flow[1] == engine
                   and o.reason in left_engine)
        fence_counts.append((seen, want))
    return NicRun(outputs, exceptions, outcomes, counters, sa_counters, model, aborted,
                  bool(stormed and stormed[0]), in_cycles, out_cycles, fence_counts)


def check_nic_run(run: NicRun, traffic):
    """Everything the device did must be what the model did: each egress port's
    packets as a set, each flow's (SA, or a port's bypass traffic) in order; the
    exception queue per port in order; every counter, every SA's counters."""
    for port, got in run.outputs.items():
        expected = [(o.flow, o.packet) for o in run.outcomes if o.port == port]
        assert sorted(got) == sorted(packet for _flow, packet in expected), f"port {port}"
        flow_of = {packet: flow for flow, packet in expected}
        for flow in {flow for flow, _packet in expected}:
            assert [p for p in got if flow_of[p] == flow] == \
                [p for f, p in expected if f == flow], f"port {port}, flow {flow}: order"
    want_exceptions = [(port, packet) for (port, packet), outcome in zip(traffic, run.outcomes)
                       if outcome.exception]
    for port in {port for port, _packet in traffic}:
        assert [p for q, p in run.exceptions if q == port] == \
            [p for q, p in want_exceptions if q == port], f"exceptions of port {port}"
    assert run.counters == run.model.counters()
    for (engine, slot), got in run.sa_counters.items():
        assert got == run.model.engine[engine].counters(slot), f"engine {engine} slot {slot}"


#: Cycles the Verilator bench keeps the device running once every packet is in and
#: every expected one out, before reading the counters: a dropped packet leaves no
#: output to wait for, and an inbound one still has its ICV check and accounting
#: ahead (at most a whole 1,500-byte packet on the compact core, under 2,000 cycles).
SETTLE_CYCLES = 3000


def run_nic_cocotb(setup: NicSetup, traffic, *, profile="compact", stall=0.0, gap=0.0,
                   seed=0, storm=(), pace=40, migrations=(), simulator="verilator",
                   timeout=None) -> NicRun:
    """:func:`run_nic` on the device's Verilog, in Verilator (or Icarus) through the
    cocotb bench :mod:`espnic.sim.benches.nic`, storms and migrations included
    (fences on their own are not). The build is cached by the device's parameters
    and the content of ``hdl/``."""
    from .cocotb_runner import run_job

    model = setup.model()
    outcomes = [model.process(port, packet) for port, packet in traffic]
    layouts = host_layouts(engines=setup.engines, ports=setup.ports, slots=setup.slots,
                           nested=setup.nested,
                           window=model.engine[0].layout["replay_bitmap"].width,
                           rules=setup.rules, routes=setup.routes)

    def bits(name, payload):
        if name in ("pause", "idle"):        # a signal to set or to wait for
            return payload
        return layouts[name].const(payload).as_bits()

    def packed(ops):
        return [{"stream": name, "index": index, "bits": bits(name, payload), "reply": reply}
                for name, index, payload, reply in ops]

    host_ops = packed(setup.host_ops(model))
    reads_by_sa = counter_reads(setup, migrations)
    reads = packed(op for _sa, op in reads_by_sa)
    moves = [{"after": move.after, "ops": packed(move.host_ops(setup.forwarders))}
             for move in migrations]
    job = {
        "engines": setup.engines, "ports": setup.ports, "forwarders": setup.forwarders,
        "host_ops": host_ops, "reads": reads,
        "miss_to_host": [bool(flag) for flag in setup.miss_to_host],
        "packets": [[packet.hex() for p, packet in traffic if p == port]
                    for port in range(setup.ports)],
        "expected": [sum(o.port == port for o in outcomes) for port in range(setup.ports)],
        "expected_exceptions": sum(o.exception for o in outcomes),
        "counters": {**{name: setup.forwarders for name in PORT_COUNTERS},
                     **{name: setup.engines for name in ENGINE_COUNTERS},
                     **{name: None for name in LOCAL_COUNTERS},
                     "sent": setup.ports + setup.nested, "no_route": None,
                     "egress_malformed": None,
                     "misrouted": None, "arm_refused": None},
        "stall": stall, "gap": gap, "seed": seed, "settle_cycles": SETTLE_CYCLES,
        "moves": moves, "storm": packed(storm), "pace": pace,
    }
    params = {"engines": setup.engines, "ports": setup.ports, "profile": profile,
              "nested": setup.nested,
              "slots": setup.slots, "rules": setup.rules, "stages": 2, "routes": setup.routes}
    name = f"nic_{profile}_{setup.engines}x{setup.ports}{'_nested' if setup.nested else ''}"
    result = run_job(EspNic, name=name, params=params,
                     test_module="espnic.sim.benches.nic", job=job, simulator=simulator,
                     timeout=timeout)

    moved = [(engine, layouts["engine_migrated"].from_bits(value).slot)
             for _cycle, engine, value in result["moved"]]
    assert moved == [tuple(move.dest) for move in migrations], f"moves reported: {moved}"
    # Every reply of every table written to says done (each stream checked once).
    answered = {(op["reply"], op["index"]) for op in
                host_ops + [op for move in moves for op in move["ops"]] + packed(storm)
                if op["reply"] is not None}
    for reply, index in answered:
        path = f"{reply}__{index}" if index is not None else reply
        for answer in result["replies"][path]:
            assert host_ok(layouts[reply].from_bits(answer)), f"{path}: refused"
    reply_layout = layouts["engine_reply"]
    sa_counters = {}
    answers = {engine: iter(result["replies"][f"engine_reply__{engine}"])
               for engine in range(setup.engines)}
    for sa, (_name, engine, _payload, _reply) in reads_by_sa:   # in order per engine
        answer = reply_layout.from_bits(next(answers[engine]))
        sa_counters[sa] = {name: int(answer.counters[name]) for name, _ in SA_COUNTERS}
    outputs, aborted = {}, 0
    for port, packets in enumerate(result["outputs"]):
        outputs[port] = [bytes.fromhex(p["data"]) for p in packets if not p["aborted"]]
        aborted += sum(p["aborted"] for p in packets)
    exceptions = [(port, bytes.fromhex(packet)) for port, packet in result["exceptions"]]
    return NicRun(outputs, exceptions, outcomes, result["counters"], sa_counters, model, aborted,
                  result["stormed"])
