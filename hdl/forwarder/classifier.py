# SPDX-License-Identifier: BSD-2-Clause
"""The classifier: each packet's fate from its parsed headers and the two filters.

:class:`Classifier` parses each raw IP packet (:class:`IpParser`) and looks
every record up in both filters at once -- the :class:`SpiTable` by (SPI,
destination, UDP encapsulation) and the :class:`PolicyTable` by selectors --
so the two results come back in packet order, one pair per cycle. Then, as
``sim/model/forwarder.py: classify`` does:

* malformed: ``DROP`` (counted in ``malformed``);
* ESP or UDP-encapsulated ESP: a hit in the SPI table is ``ENGINE`` (inbound,
  with the entry's engine and slot); a miss is ``DROP`` (``spi_miss``), or
  ``HOST`` when ``miss_to_host`` is set;
* anything else: the best policy rule; ``PROTECT`` is ``ENGINE`` (outbound,
  the rule's engine and slot), ``BYPASS`` is ``BYPASS``, ``DISCARD`` is ``DROP``
  (``discarded``); no rule is ``DROP`` (``policy_miss``), or ``HOST``.

Fail closed: nothing reaches an engine or the bypass without a table entry
that says so.

One :data:`decision` per packet on ``decision``, then the packet's beats on
``o`` (its first beat only once the decision has been taken).

``pause`` stops the classifier taking records (fences still go in); ``idle``
says every record taken has been decided. A host that pauses, waits for
``idle``, changes entries and sends a fence knows no packet was classified
between the change and the fence (how a live migration cuts an SA's traffic).

A *fence* (``fence``, an engine and a slot, from the host) takes a record's
place in the same in-order pipeline and comes out as a decision with
``fence`` set and no beats: every packet the classifier looked up before it
was decided before it, every packet after it after. The dispatcher turns it
into a marker in that engine's queue, so the engine knows when every packet
classified before the fence has been through it (what a host needs before it
deletes or moves an SA whose entries it has just changed).
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..packet.layouts import packet_beat
from .parser import PARSED, IpParser, PacketKind
from .policy import PolicyAction, PolicyTable
from .spi_table import SpiTable

__all__ = ["Decision", "engine_slot", "decision_layout", "Classifier"]


class Decision(enum.Enum, shape=2):
    DROP   = 0
    ENGINE = 1
    BYPASS = 2
    HOST   = 3   # the host's exception queue


def engine_slot(engines: int, slots: int) -> data.StructLayout:
    """What both filters map to: an engine and an SA slot on it."""
    return data.StructLayout({"engine": range(max(engines, 2)), "slot": range(slots)})


def decision_layout(engines: int, slots: int) -> data.StructLayout:
    return data.StructLayout({
        "decision": Decision,
        "inbound":  1,                      # ENGINE: an SPI-table hit
        "target":   engine_slot(engines, slots),
        "fence":    1,                      # a fence (ENGINE, no beats), not a packet
    })


def _pending(engines: int, slots: int) -> data.StructLayout:
    """What waits for its lookups: a packet's record, or a fence and its target."""
    return data.StructLayout({"record": PARSED, "fence": 1,
                              "target": engine_slot(engines, slots)})


class Classifier(wiring.Component):
    """Parser and filters (see the module docstring).

    Parameters
    ----------
    engines, slots : the engines and SA slots per engine a decision can name.
    spi_entries, spi_ways : the :class:`SpiTable`'s size.
    rules, stages : the :class:`PolicyTable`'s size.

    Latency: the parser's (5 cycles after the beat that completes the record),
    then ``stages + 4`` cycles of lookup (the policy table's, its result queue
    included; the SPI table's 5 are fewer); a packet's first beat leaves the cycle
    after its decision. The beats wait in a FIFO of ``stages + 6`` so the lookups of
    the packets behind overlap with this one's: a packet costs as many cycles as it
    has beats, 2 at least (its decision and its first beat take one cycle each), so
    one beat per cycle for packets of two beats or more.
    """

    def __init__(self, *, engines: int, slots: int, spi_entries: int = 64, spi_ways: int = 4,
                 rules: int = 16, stages: int = 4):
        if type(engines) is not int or not 1 <= engines <= 16:
            raise ValueError(f"engines must be an integer from 1 to 16, not {engines!r}")
        if type(slots) is not int or slots < 2 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two of at least 2, not {slots!r}")
        target = engine_slot(engines, slots)
        self._parser = IpParser()
        self._spi = SpiTable(entries=spi_entries, ways=spi_ways, value=target)
        self._policy = PolicyTable(rules=rules, stages=stages, value=target)
        self._layout = decision_layout(engines, slots)
        self._pending = _pending(engines, slots)
        super().__init__({
            "i":            In(stream.Signature(packet_beat(16))),
            "fence":        In(stream.Signature(target)),
            "decision":     Out(stream.Signature(self._layout)),
            "o":            Out(stream.Signature(packet_beat(16))),
            "spi_host":     self._spi.signature.members["host"],
            "spi_reply":    self._spi.signature.members["host_reply"],
            "policy_host":  self._policy.signature.members["host"],
            "policy_reply": self._policy.signature.members["host_reply"],
            "miss_to_host": In(1),
            "pause":        In(1),
            "idle":         Out(1),
            "malformed":    Out(32),
            "spi_miss":     Out(32),
            "policy_miss":  Out(32),
            "discarded":    Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.parser = parser = self._parser
        m.submodules.spi = spi = self._spi
        m.submodules.policy = policy = self._policy
        # The record and result FIFOs read out of registers: the decision's logic, and
        # the dispatcher's behind it, start from flip-flops rather than from LUT-RAM
        # reads. The cycle that costs a record is hidden behind the lookups; a result's
        # is a cycle of latency.
        m.submodules.records = records = SyncFIFOBuffered(width=self._pending.size, depth=8)
        # The parser hands on a packet's first beat only after its record, and the next
        # record only after that beat: taking the beats into a FIFO at once lets the next
        # packet's lookups start while this one's first beat waits for its decision.
        beat_layout = packet_beat(16)
        m.submodules.beats = beats = SyncFIFOBuffered(width=beat_layout.size,
                                                      depth=self._policy.latency + 2)
        # The results wait in the filters' result queues (read from registers too), and
        # the filters' pipelines run on while they wait.
        spi_found, rule_found = spi.result, policy.result
        wiring.connect(m, wiring.flipped(self.i), parser.i)
        wiring.connect(m, wiring.flipped(self.spi_host), spi.host)
        wiring.connect(m, spi.host_reply, wiring.flipped(self.spi_reply))
        wiring.connect(m, wiring.flipped(self.policy_host), policy.host)
        wiring.connect(m, policy.host_reply, wiring.flipped(self.policy_reply))

        # ---- fork: every record to both filters and to the record FIFO ----------------
        # A fence goes first when there is one (the host's, rare); it is looked up too,
        # with whatever record is there, so the results stay paired with the FIFO.
        record = parser.parsed.payload
        fence = self.fence.valid
        offered = (parser.parsed.valid & ~self.pause) | fence
        takers = (spi.lookup.ready, policy.lookup.ready, records.w_rdy)
        entry = self._pending(records.w_data)
        m.d.comb += [
            spi.lookup.payload.spi.eq(record.spi),
            spi.lookup.payload.dst.eq(record.dst),
            spi.lookup.payload.udp.eq(record.kind == PacketKind.UDP_ESP),
            policy.lookup.payload.ipv6.eq(record.ipv6),
            policy.lookup.payload.src.eq(record.src),
            policy.lookup.payload.dst.eq(record.dst),
            policy.lookup.payload.proto.eq(record.proto),
            policy.lookup.payload.sport.eq(record.sport),
            policy.lookup.payload.dport.eq(record.dport),
            entry.record.eq(record),
            entry.fence.eq(fence),
            entry.target.eq(self.fence.payload),
            parser.parsed.ready.eq(Cat(takers).all() & ~fence & ~self.pause),
            self.fence.ready.eq(Cat(takers).all()),
            spi.lookup.valid.eq(offered & takers[1] & takers[2]),
            policy.lookup.valid.eq(offered & takers[0] & takers[2]),
            records.w_en.eq(offered & takers[0] & takers[1]),
            # Every record taken has been decided (a lookup in flight has its record
            # in the FIFO): with `pause`, the point where the host may change an entry
            # and send a fence with no decision between them.
            self.idle.eq(records.level == 0),
        ]

        # ---- join: the record and both results, in packet order ------------------------
        pending = self._pending(records.r_data)
        kept = pending.record
        inbound = (kept.kind == PacketKind.ESP) | (kept.kind == PacketKind.UDP_ESP)
        found, rule = spi_found.payload, rule_found.payload
        out = self.decision.payload
        miss = Mux(self.miss_to_host, Decision.HOST, Decision.DROP)
        with m.If(pending.fence):
            m.d.comb += [out.decision.eq(Decision.ENGINE), out.fence.eq(1),
                         out.target.eq(pending.target)]
        with m.Elif(kept.malformed):
            m.d.comb += out.decision.eq(Decision.DROP)
        with m.Elif(inbound):
            m.d.comb += [out.decision.eq(Mux(found.hit, Decision.ENGINE, miss)),
                         out.inbound.eq(1), out.target.eq(found.value)]
        with m.Elif(~rule.hit):
            m.d.comb += out.decision.eq(miss)
        with m.Else():
            with m.Switch(rule.action):
                with m.Case(PolicyAction.PROTECT):
                    m.d.comb += [out.decision.eq(Decision.ENGINE), out.target.eq(rule.value)]
                with m.Case(PolicyAction.BYPASS):
                    m.d.comb += out.decision.eq(Decision.BYPASS)
                with m.Default():
                    m.d.comb += out.decision.eq(Decision.DROP)
        all_in = records.r_rdy & spi_found.valid & rule_found.valid
        decided = self.decision.valid & self.decision.ready
        # One decision ahead of the beats at most (`ahead`, below).
        ahead = Signal()
        m.d.comb += [
            self.decision.valid.eq(all_in & ~ahead),
            records.r_en.eq(decided),
            spi_found.ready.eq(decided),
            rule_found.ready.eq(decided),
        ]
        with m.If(decided & ~pending.fence):
            with m.If(kept.malformed):
                m.d.sync += self.malformed.eq(self.malformed + 1)
            with m.Elif(inbound & ~found.hit):
                m.d.sync += self.spi_miss.eq(self.spi_miss + 1)
            with m.Elif(~inbound & ~rule.hit):
                m.d.sync += self.policy_miss.eq(self.policy_miss + 1)
            with m.Elif(~inbound & (rule.action == PolicyAction.DISCARD)):
                m.d.sync += self.discarded.eq(self.discarded + 1)

        # ---- the beats: a packet's first beat once its decision has been taken ---------
        beat = beat_layout(beats.r_data)
        let_through = ahead | ~beat.first
        m.d.comb += [
            beats.w_data.eq(parser.o.payload),
            beats.w_en.eq(parser.o.valid),
            parser.o.ready.eq(beats.w_rdy),
            self.o.payload.eq(beat),
            self.o.valid.eq(beats.r_rdy & let_through),
            beats.r_en.eq(self.o.ready & let_through),
        ]
        with m.If(decided & ~pending.fence):       # a fence has no beats
            m.d.sync += ahead.eq(1)
        with m.Elif(self.o.valid & self.o.ready & beat.first):
            m.d.sync += ahead.eq(0)
        return m
