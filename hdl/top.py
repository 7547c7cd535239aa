# SPDX-License-Identifier: BSD-2-Clause
"""``EspNic``: the data plane on one chip -- forwarders, engines, egress.

::

    i[p] -> [EthernetStrip] -> Classifier -> Dispatcher -+-> engine queues (one per engine) -> EspEngine[k] -+
      (one forwarder per ingress port p)                 +-> bypass queue ------------------------------------+-> merge -> Egress -> o[port]
                                                         +-> exception queue (to the host)                    |     (route table)
    (nested) PacketFifo -> Classifier -> Dispatcher -+  (the local forwarder: input from egress port `ports`) -+

Each ingress port has its own forwarder (classifier with its own SPI and
policy tables, dispatcher), all programmed by the host and sharing the
engines: in front of each engine the ports' packets for it are merged a
packet at a time (round robin) into that engine's :class:`EngineQueue`, so
one busy engine holds only its own queue. The engines' outputs and the ports'
bypass traffic are merged a packet at a time into the :class:`Egress`, which
picks each packet's port by its destination in the route table.

Order: one SA lives on one engine and every path is first in, first out, so
packets of an SA leave in the order they came in on a port. Fail closed:
a packet reaches an engine or the bypass only through a table entry, and
leaves only through a route; every other packet is counted where it dies.

Nested SAs (``nested=True``): the route table can send a packet to port
``ports``, the device itself. Such packets go whole (a :class:`PacketFifo`
drops aborted ones) into a *local forwarder*, forwarder ``ports``: a
classifier with an SPI table the host programs (``spi_host[ports]``) and no
policy, and a dispatcher like any port's. So the inner ESP packet an inbound
SA has decapsulated goes straight to the inner SA's engine, whichever it is
(the fabric's packet path). Anything else routed to the device is a policy
miss (dropped or to the host, counted on the local forwarder); as every pass
through the local forwarder ends in a decapsulation, no packet loops.

Throughput: each ingress port takes one 16-byte beat per cycle; the engines
work in parallel; the egress carries one beat per cycle in all (the merge
point), so the device's aggregate output is at most one port's line rate.

Host access (until the register bus of issue 5 puts one address space in
front of it) is per unit: ``engine_host[k]`` for engine k's SA table,
``spi_host[p]`` / ``policy_host[p]`` for port p's filters, ``route_host``
for the egress routes, each with its reply stream; ``fence_host[p]`` sends a
fence (an engine and slot) through port p's forwarder, and
``engine_fenced[k]`` says when one has passed engine k: every packet port p
classified before it has left that engine (or died there); the host must take
these reports. ``pause[p]`` stops forwarder p's classifier taking packets,
``idle[p]`` says all it has taken are decided. ``engine_hold[k]`` puts a slot
of engine k on hold for a live migration into it: a decision for that slot
waits at its port's hold gate (with the port's packets behind it) until the
slot's state has been imported, so a hold never blocks an engine's queue.
"""

from collections.abc import Sequence

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .engine.engine import EspEngine
from .fabric.link import FabricLink
from .fabric.mover import HOLD, MIGRATE_ARM, slot_report
from .engine.sa import REPLAY_WINDOW
from .engine.sa_table import SaTable
from .forwarder.classifier import Classifier, Decision, engine_slot
from .forwarder.dispatcher import Dispatcher, EngineQueue, dispatch_beat
from .forwarder.egress import EGRESS_BEAT, Egress, route_layouts
from .forwarder.policy import policy_layouts
from .forwarder.spi_table import spi_table_layouts
from .forwarder.ethernet import EthernetStrip
from .packet.layouts import beats_as, packet_beat
from .packet.fifo import PacketFifo
from .packet.merge import PacketMerger
from .packet.register import SkidBuffer, cut

__all__ = ["EspNic", "host_layouts", "PORT_COUNTERS", "ENGINE_COUNTERS", "EGRESS_COUNTERS",
           "FABRIC_COUNTERS", "LOCAL_COUNTERS", "LOCAL_DEPTH"]

_WIDTH = 16
#: Beats of the local forwarder's packet FIFO: 2,048 bytes, the longest packet routed
#: to the device itself (longer ones are counted in ``local_oversize``).
LOCAL_DEPTH = 128

#: Counters of each ingress port: the classifier's drops, then the dispatcher's.
PORT_COUNTERS = ("malformed", "spi_miss", "policy_miss", "discarded",
                 "bypassed", "to_host", "no_engine", "not_ip", "runt")
#: Counters of each engine (its SA table counts per SA besides).
ENGINE_COUNTERS = ("no_sa", "unknown_spi", "unsupported", "truncated")
#: Counters of the egress.
EGRESS_COUNTERS = ("no_route", "egress_malformed")
#: Counters of the fabric.
FABRIC_COUNTERS = ("misrouted", "arm_refused")
#: Counters of the local path (``nested``; 0 without it).
LOCAL_COUNTERS = ("local_aborted", "local_oversize")


def host_layouts(*, engines: int, ports: int, slots: int, window: int = REPLAY_WINDOW,
                 rules: int = 16, routes: int = 8, nested: bool = False) -> dict:
    """The payload layout of each of :class:`EspNic`'s host streams, by member name:
    what the host packs and unpacks (without building the design)."""
    target = engine_slot(engines, slots)
    table, spi = SaTable.layouts(slots, window), spi_table_layouts(target)
    policy, route = policy_layouts(rules, target), route_layouts(routes, ports + nested)
    return {
        "engine_host": table["HOST_OP"], "engine_reply": table["HOST_REPLY"],
        "engine_events": table["EVENT"], "engine_fenced": slot_report(slots),
        "engine_arm": MIGRATE_ARM(slots), "engine_hold": HOLD(slots),
        "engine_migrated": slot_report(slots),
        "fence_host": target,
        "spi_host": spi["OP"], "spi_reply": spi["REPLY"],
        "policy_host": policy["WRITE"], "policy_reply": policy["REPLY"],
        "route_host": route["WRITE"], "route_reply": route["REPLY"],
    }


class EspNic(wiring.Component):
    """The whole data plane (see the module docstring).

    Parameters
    ----------
    engines : ESP engines working in parallel (1 to 16).
    ports : ingress/egress ports (1 to 8), each with its own forwarder.
    data_width : beat width in bytes; 16 (the only one built).
    profile : the engines' GCM datapath profile, ``"compact"`` or ``"fast"``.
    slots : SA slots per engine.
    window : the largest replay window.
    ethernet : per port (a bool for all), whether it carries Ethernet frames
        (stripped on the way in; egress sends IP packets: the L2 header on
        the way out is not built yet).
    queue_depth : beats of queue in front of each engine and in each port's
        bypass (0 on one engine: no engine queue, the dispatcher feeds it). The
        default, 128, holds a whole 1,500-byte packet (94 beats): a port's
        dispatcher that cannot finish a packet into a full queue serves no other
        engine meanwhile, which cost 8 compact engines a quarter of their
        throughput at 1,400 bytes with 64 (docs/performance.md).
    spi_entries, spi_ways, rules, stages : each port's filter sizes.
    routes : the egress route table's size (one route a pipeline stage).
    nested : a local forwarder (see the module docstring): egress port ``ports``
        is the device itself, forwarder ``ports`` its input; the per-forwarder
        host streams, ``miss_to_host`` and the port counters have one more
        element, ``sent`` too.
    """

    def __init__(self, *, engines: int = 1, ports: int = 1, data_width: int = _WIDTH,
                 profile: str = "compact", slots: int = 16, window: int = REPLAY_WINDOW,
                 ethernet: bool | Sequence[bool] = False, queue_depth: int = 128,
                 spi_entries: int = 64, spi_ways: int = 4, rules: int = 16, stages: int = 4,
                 routes: int = 8, nested: bool = False):
        if type(engines) is not int or not 1 <= engines <= 16:
            raise ValueError(f"engines must be an integer from 1 to 16, not {engines!r}")
        if type(ports) is not int or not 1 <= ports <= 8:
            raise ValueError(f"ports must be an integer from 1 to 8, not {ports!r}")
        if data_width != _WIDTH:
            raise ValueError(f"not supported: data_width {data_width!r}; only 16-byte beats "
                             f"are built (the 4- and 8-byte data paths are not)")
        if isinstance(ethernet, bool):
            ethernet = (ethernet,) * ports
        ethernet = tuple(ethernet)
        if len(ethernet) != ports or not all(isinstance(flag, bool) for flag in ethernet):
            raise ValueError(f"ethernet must be a bool or {ports} bools (one per port), "
                             f"not {ethernet!r}")
        if type(queue_depth) is not int or queue_depth < 0 or (0 < queue_depth < 4):
            raise ValueError(f"queue_depth must be 0 or an integer of at least 4, "
                             f"not {queue_depth!r}")
        if queue_depth == 0 and engines > 1:
            raise ValueError("queue_depth 0 is for one engine: with more, a busy engine "
                             "would hold the others")
        if not isinstance(nested, bool):
            raise TypeError(f"nested must be a bool, not {nested!r}")
        self.engines, self.ports, self.slots = engines, ports, slots
        self.nested = nested
        #: Forwarders: one per ingress port, then (nested) the local one, whose
        #: input is egress port `ports` (the device itself).
        self.forwarders = ports + nested
        self.profile, self.ethernet, self._queue_depth = profile, ethernet, queue_depth
        self._engines = [EspEngine(profile=profile, slots=slots, window=window)
                         for _ in range(engines)]
        # The local forwarder's policy table is never written (no policy_host): every
        # packet routed to the device that is not ESP for one of its SAs is a miss.
        self._classifiers = [Classifier(engines=engines, slots=slots, spi_entries=spi_entries,
                                        spi_ways=spi_ways, rules=rules if p < ports else stages,
                                        stages=stages)
                             for p in range(self.forwarders)]
        # One route a pipeline stage: the choice among a stage's matches is a priority
        # chain, the deepest logic of the route table with several routes a stage.
        self._egress = Egress(ports=ports + nested, routes=routes, stages=routes)
        self._fabric = FabricLink(engines=engines, slots=slots, window=window)
        beat = stream.Signature(packet_beat(_WIDTH))
        # One host stream (or one per engine / per port) for each unit's table.
        counts = {"engine": engines, "spi": self.forwarders, "policy": ports,
                  "fence": self.forwarders}
        host = {}
        for name, layout in host_layouts(engines=engines, ports=ports, slots=slots,
                                         window=window, rules=rules, routes=routes,
                                         nested=nested).items():
            unit, kind = name.split("_")
            member = (Out if kind in ("reply", "events", "fenced", "migrated") else In)(
                stream.Signature(layout))
            host[name] = member.array(counts[unit]) if unit in counts else member
        super().__init__({
            "i":              In(beat).array(ports),
            "o":              Out(stream.Signature(EGRESS_BEAT)).array(ports),
            "exception":      Out(beat),
            "exception_port": Out(range(max(self.forwarders, 2))),
            **host,
            "miss_to_host":   In(1).array(self.forwarders),
            "pause":          In(1).array(self.forwarders),   # the classifier takes no record
            "idle":           Out(1).array(self.forwarders),  # every record taken decided
            **{name: Out(32).array(self.forwarders) for name in PORT_COUNTERS},
            **{name: Out(32).array(engines) for name in ENGINE_COUNTERS},
            "misrouted":        Out(32),     # fabric messages for an engine there is not
            "arm_refused":      Out(32),     # moves to the engine itself or to none
            "no_route":         Out(32),
            "egress_malformed": Out(32),
            "sent":             Out(32).array(ports + nested),
            "local_aborted":    Out(32),     # aborted packets routed to the device itself
            "local_oversize":   Out(32),     # longer than its local packet FIFO
        })

    def engine(self, index: int) -> EspEngine:
        """Engine `index` (its ``inbound`` and ``decap`` for testbenches)."""
        return self._engines[index]

    def classifier(self, port: int) -> Classifier:
        """Port `port`'s classifier (its ``decision`` stream for testbenches)."""
        return self._classifiers[port]

    def elaborate(self, platform):
        m = Module()
        engines, ports, depth = self.engines, self.ports, self._queue_depth

        # ---- one forwarder per ingress port -----------------------------------------------
        dispatchers = []
        inputs = [wiring.flipped(self.i[p]) for p in range(self.ports)]
        if self.nested:
            # Packets the egress routes to the device itself, whole and unaborted only
            # (an aborted packet's head must not reach an engine).
            m.submodules.local_fifo = local = PacketFifo(layout=EGRESS_BEAT, depth=LOCAL_DEPTH)
            m.d.comb += [self.local_aborted.eq(local.dropped),
                         self.local_oversize.eq(local.oversize)]
            # (a PacketFifo has passed whole packets only: no abort to carry on)
            inputs.append(beats_as(m, local.o, packet_beat(_WIDTH)))
        for p, classifier in enumerate(self._classifiers):
            m.submodules[f"classifier{p}"] = classifier
            m.submodules[f"dispatcher{p}"] = dispatcher = Dispatcher(engines=engines,
                                                                     slots=self.slots)
            dispatchers.append(dispatcher)
            if p < self.ports and self.ethernet[p]:
                m.submodules[f"ethernet{p}"] = strip = EthernetStrip()
                wiring.connect(m, inputs[p], strip.i)
                wiring.connect(m, strip.o, classifier.i)
                m.d.comb += [self.not_ip[p].eq(strip.not_ip), self.runt[p].eq(strip.runt)]
            else:
                wiring.connect(m, inputs[p], classifier.i)
            self._hold_gate(m, classifier.decision, dispatcher.decision)
            wiring.connect(m, classifier.o, dispatcher.i)
            wiring.connect(m, wiring.flipped(self.spi_host[p]), classifier.spi_host)
            wiring.connect(m, classifier.spi_reply, wiring.flipped(self.spi_reply[p]))
            wiring.connect(m, wiring.flipped(self.fence_host[p]), classifier.fence)
            if p < self.ports:
                wiring.connect(m, wiring.flipped(self.policy_host[p]), classifier.policy_host)
                wiring.connect(m, classifier.policy_reply, wiring.flipped(self.policy_reply[p]))
            else:
                m.d.comb += classifier.policy_reply.ready.eq(1)
            m.d.comb += [classifier.miss_to_host.eq(self.miss_to_host[p]),
                         classifier.pause.eq(self.pause[p]), self.idle[p].eq(classifier.idle)]
            for name in ("malformed", "spi_miss", "policy_miss", "discarded"):
                m.d.comb += getattr(self, name)[p].eq(getattr(classifier, name))
            for name in ("bypassed", "to_host", "no_engine"):
                m.d.comb += getattr(self, name)[p].eq(getattr(dispatcher, name))

        # ---- the engines, each behind the merge of the ports' packets for it ---------------
        m.submodules.fabric = fabric = self._fabric
        m.d.comb += self.misrouted.eq(fabric.misrouted)
        egress_sources, refused_arms = [], []
        for k, engine in enumerate(self._engines):
            m.submodules[f"engine{k}"] = engine
            wiring.connect(m, wiring.flipped(self.engine_host[k]), engine.host)
            wiring.connect(m, engine.host_reply, wiring.flipped(self.engine_reply[k]))
            wiring.connect(m, engine.events, wiring.flipped(self.engine_events[k]))
            wiring.connect(m, engine.fenced, wiring.flipped(self.engine_fenced[k]))
            # A move to the engine itself would hold its own queue behind the slot it
            # waits for; one to an engine the device lacks would never arrive: refused.
            arm = self.engine_arm[k]
            bad = (arm.payload.engine == k) | (arm.payload.engine >= engines)
            m.d.comb += [engine.arm.payload.eq(arm.payload),
                         engine.arm.valid.eq(arm.valid & ~bad),
                         arm.ready.eq(engine.arm.ready | bad)]
            refused_arms.append(arm.valid & bad)
            wiring.connect(m, wiring.flipped(self.engine_hold[k]), engine.hold)
            wiring.connect(m, engine.migrated, wiring.flipped(self.engine_migrated[k]))
            wiring.connect(m, engine.state_out, fabric.i[k])
            wiring.connect(m, fabric.o[k], engine.state_in)
            for name in ENGINE_COUNTERS:
                m.d.comb += getattr(self, name)[k].eq(getattr(engine, name))
            feed = self._merged(m, f"engine{k}_merge", [d.engine[k] for d in dispatchers],
                                dispatch_beat(self.slots))
            if depth:
                m.submodules[f"engine{k}_queue"] = queue = EngineQueue(slots=self.slots,
                                                                       depth=depth)
                wiring.connect(m, feed, queue.i)
                wiring.connect(m, queue.o, engine.i)
                wiring.connect(m, queue.meta, engine.meta)
            else:
                self._split(m, feed, engine)
            egress_sources.append(beats_as(m, engine.o, EGRESS_BEAT, abort=engine.o_abort))

        m.d.sync += self.arm_refused.eq(self.arm_refused + sum(refused_arms))

        # ---- bypass traffic and exceptions ---------------------------------------------------
        for p, dispatcher in enumerate(dispatchers):
            bypass = dispatcher.bypass
            if depth:
                bypass = self._queued(m, f"bypass{p}_queue", bypass, depth)
            egress_sources.append(beats_as(m, bypass, EGRESS_BEAT, abort=C(0)))
        if len(dispatchers) > 1:
            m.submodules.exceptions = merger = PacketMerger(width=_WIDTH, count=len(dispatchers))
            for p, dispatcher in enumerate(dispatchers):
                wiring.connect(m, dispatcher.host, merger.i[p])
            wiring.connect(m, merger.o, wiring.flipped(self.exception))
            m.d.comb += self.exception_port.eq(merger.source)
        else:
            wiring.connect(m, dispatchers[0].host, wiring.flipped(self.exception))

        # ---- egress --------------------------------------------------------------------------
        m.submodules.egress = egress = self._egress
        # A skid buffer between the merge and the egress: the merge's choice among the
        # engines' and bypass outputs and the egress parser's input were one path.
        cut(m, "to_egress", SkidBuffer, self._merged(m, "egress_merge", egress_sources, EGRESS_BEAT),
            egress.i)
        for p in range(ports):
            wiring.connect(m, egress.o[p], wiring.flipped(self.o[p]))
        if self.nested:
            wiring.connect(m, egress.o[ports], local.i)
        for p in range(ports + self.nested):
            m.d.comb += self.sent[p].eq(egress.sent[p])
        wiring.connect(m, wiring.flipped(self.route_host), egress.host)
        wiring.connect(m, egress.host_reply, wiring.flipped(self.route_reply))
        m.d.comb += [self.no_route.eq(egress.no_route),
                     self.egress_malformed.eq(egress.malformed)]
        return m

    def _hold_gate(self, m, decision, dispatcher):
        """`decision` to `dispatcher`, except that a packet for a slot on hold (a live
        migration's destination, until its state is in) waits here, and its port's
        packets behind it: the hold stops one port, never an engine's queue, so the
        engine that holds the SA's state now can always drain (no deadlock)."""
        order, target = decision.payload, decision.payload.target
        held = Cat(engine.held & (engine.held_slot == target.slot)
                   & (target.engine == k) for k, engine in enumerate(self._engines)).any()
        wait = (order.decision == Decision.ENGINE) & ~order.fence & held
        m.d.comb += [dispatcher.payload.eq(order), dispatcher.valid.eq(decision.valid & ~wait),
                     decision.ready.eq(dispatcher.ready & ~wait)]

    @staticmethod
    def _merged(m, name, sources, layout):
        """One stream of whole packets from `sources` (round robin), or the one source."""
        if len(sources) == 1:
            return sources[0]
        m.submodules[name] = merger = PacketMerger(layout=layout, count=len(sources))
        for index, source in enumerate(sources):
            wiring.connect(m, source, merger.i[index])
        return merger.o

    @staticmethod
    def _queued(m, name, source, depth):
        """`source` behind a FIFO of `depth` beats."""
        layout = source.payload.shape()
        m.submodules[name] = fifo = SyncFIFOBuffered(width=layout.size, depth=depth)
        out = stream.Signature(layout).create()
        m.d.comb += [
            fifo.w_data.eq(source.payload), fifo.w_en.eq(source.valid), source.ready.eq(fifo.w_rdy),
            out.payload.eq(fifo.r_data), out.valid.eq(fifo.r_rdy), fifo.r_en.eq(out.ready),
        ]
        return out

    def _split(self, m, feed, engine):
        """No queue (one engine): the slot of each packet's first beat to ``meta``, the
        beats to ``i``; the first beat goes once both have taken it, in either order.
        A fence's marker goes to ``meta`` only."""
        meta_done, beat_done = Signal(), Signal()
        beat = feed.payload
        meta_fire = engine.meta.valid & engine.meta.ready
        beat_fire = engine.i.valid & engine.i.ready
        for name in packet_beat(_WIDTH).members:
            m.d.comb += engine.i.payload[name].eq(beat[name])
        m.d.comb += [
            engine.meta.payload.slot.eq(beat.slot),
            engine.meta.payload.fence.eq(beat.fence),
            engine.meta.valid.eq(feed.valid & beat.first & ~meta_done),
            engine.i.valid.eq(feed.valid & ~beat.fence & ~beat_done),
        ]
        both = (meta_done | meta_fire | ~beat.first) & (beat_done | beat_fire | beat.fence)
        m.d.comb += feed.ready.eq(both)
        with m.If(feed.valid & both):
            m.d.sync += [meta_done.eq(0), beat_done.eq(0)]
        with m.Else():
            with m.If(meta_fire):
                m.d.sync += meta_done.eq(1)
            with m.If(beat_fire):
                m.d.sync += beat_done.eq(1)
        return m
