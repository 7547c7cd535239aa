# SPDX-License-Identifier: BSD-2-Clause
"""An engine's host side and its end of the fabric: host operations, window loads,
and SAs moving out of and into the engine.

:class:`SaMover` sits between the host link and an engine's :class:`SaTable`
and replay unit (through :class:`InboundControl`'s ``load`` and ``read``):

* **host operations** go to the table; a WRITE or DELETE also (re)loads the
  slot's replay window (an inbound SA written with ``seq = N > 0`` starts with
  every number up to N received, any other slot with an empty window), one
  ring word per cycle and then the head row, during which ``loading`` holds
  new packets off. EXPORT and IMPORT, the fabric's own table operations, are
  refused from the host: taken and dropped (``refused``), so neither a key nor
  a slot's live state can be read or forged over the host link;
* **export**: ``arm`` names a slot, the engine and slot it moves to and how
  many fences (one per forwarder) must pass first. The engine reports each
  fence that has passed on ``passed`` (every packet before it is through the
  engine) and waits until the mover takes it; the mover hands it on to
  ``fenced``, and after the last fence for the armed slot it EXPORTs the slot
  (record with key, counters; the table zeroizes it in the same operation),
  sends them on ``state_out``, then for an inbound SA reads every ring word and
  the head row of its window and sends them too, and clears the window. Only
  then does it take the fence, so the engine starts no packet meanwhile;
* **import**: a message on ``state_in`` is written into the slot it names: the
  record and counters (IMPORT: nothing is cleared, no lifetime event raised
  again), the ring words and head row (window loads); with its last beat the
  slot's *hold* (``hold``, shown on ``held`` / ``held_slot``: the device keeps
  packets for it waiting at their ports' hold gates; set by the host before it
  points the filters here) is released and the slot is reported on ``migrated``.

So a slot's state is in one engine at a time, key and sequence number
included: an SA moved is never encrypted under the same (key, IV) twice.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..engine.replay import ring_words
from ..engine.sa import Direction
from ..engine.sa_table import HostOp, SaTable
from .link import MAX_ENGINES, BeatKind, fabric_beat

__all__ = ["MIGRATE_ARM", "HOLD", "slot_report", "SaMover"]


def slot_report(slots: int) -> data.StructLayout:
    """What ``passed``, ``fenced`` and ``migrated`` carry: a slot."""
    return data.StructLayout({"slot": range(slots)})


def MIGRATE_ARM(slots: int) -> data.StructLayout:   # noqa: N802 (a layout, named as one)
    """What ``arm`` takes: move `slot` to slot `dest_slot` of engine `engine` once
    `fences` fences have passed."""
    return data.StructLayout({"slot": range(slots), "engine": range(MAX_ENGINES),
                              "dest_slot": range(slots), "fences": 4})


def HOLD(slots: int) -> data.StructLayout:   # noqa: N802
    """What ``hold`` takes: hold packets for `slot` (``hold = 1``) until its state
    has been imported, or stop holding (``hold = 0``)."""
    return data.StructLayout({"slot": range(slots), "hold": 1})


class SaMover(wiring.Component):
    """An engine's host path and fabric end (see the module docstring).

    Parameters
    ----------
    slots, window : the engine's.
    replay : the engine's replay-unit ports (``load``, ``read``, ``read_result``
        members of :class:`InboundControl`'s signature), to match their layouts.

    An export takes about ``4 * (ring_words + 1) + 8`` cycles for an inbound SA
    (one ring word a time), 8 for an outbound one; an import one cycle per beat
    (a HEADER waits for the table).
    """

    def __init__(self, *, slots: int, window: int, replay: dict):
        self._slots, self._window = slots, window
        ops = SaTable.layouts(slots, window)
        beat = stream.Signature(fabric_beat(slots, window))
        meta = slot_report(slots)
        super().__init__({
            "host":        In(stream.Signature(ops["HOST_OP"])),
            "host_reply":  Out(stream.Signature(ops["HOST_REPLY"])),
            "table":       Out(stream.Signature(ops["HOST_OP"])),
            "table_reply": In(stream.Signature(ops["HOST_REPLY"])),
            "load":        replay["load"].flip(),
            "read":        replay["read"].flip(),
            "read_result": replay["read_result"].flip(),
            "loading":     Out(1),
            "arm":         In(stream.Signature(MIGRATE_ARM(slots))),
            "hold":        In(stream.Signature(HOLD(slots))),
            "held":        Out(1),
            "held_slot":   Out(range(slots)),
            "passed":      In(stream.Signature(meta)),
            "fenced":      Out(stream.Signature(meta)),
            "state_out":   Out(beat),
            "state_in":    In(beat),
            "migrated":    Out(stream.Signature(meta)),
            "refused":     Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        words = ring_words(self._window)
        ops = SaTable.layouts(self._slots, self._window)

        # ---- the table's operations: the fabric's (export, import) before the host's ---
        own = Signal(ops["HOST_OP"])          # the export's or import's operation
        own_valid = Signal()
        op = self.host.payload
        refuse = (op.op == HostOp.EXPORT) | (op.op == HostOp.IMPORT)
        # Which replies are the export's (in order: the table answers one at a time).
        m.submodules.replies = replies = SyncFIFO(width=1, depth=4)
        loading = Signal()
        take_own = own_valid & ~loading & replies.w_rdy
        take_host = self.host.valid & ~refuse & ~own_valid & ~loading & replies.w_rdy
        m.d.comb += [
            self.table.payload.eq(Mux(own_valid, own, op)),
            self.table.valid.eq(take_own | take_host),
            self.host.ready.eq((take_host & self.table.ready) | (self.host.valid & refuse)),
            replies.w_data.eq(own_valid),
            replies.w_en.eq(self.table.valid & self.table.ready
                            & ((self.table.payload.op == HostOp.READ)
                               | (self.table.payload.op == HostOp.READ_COUNTERS)
                               | (self.table.payload.op == HostOp.EXPORT))),
        ]
        with m.If(self.host.valid & refuse):
            m.d.sync += self.refused.eq(self.refused + 1)
        exported = Signal()                   # the export's reply is there
        m.d.comb += [
            self.host_reply.payload.eq(self.table_reply.payload),
            self.host_reply.valid.eq(self.table_reply.valid & replies.r_rdy & ~replies.r_data),
            exported.eq(self.table_reply.valid & replies.r_rdy & replies.r_data),
        ]
        reply_taken = Signal()
        m.d.comb += [self.table_reply.ready.eq(Mux(replies.r_data, reply_taken,
                                                   self.host_reply.ready) & replies.r_rdy),
                     replies.r_en.eq(self.table_reply.valid & self.table_reply.ready)]

        # ---- window loads: a host WRITE/DELETE, an export's clear, an import's rows ----
        load_slot, top, fill = Signal(range(self._slots)), Signal(64), Signal()
        index = Signal(range(words + 1))
        clear = Signal()                      # the export asks for its slot's clear
        clear_slot = Signal(range(self._slots))
        host_load = self.table.valid & self.table.ready & ~own_valid & \
            ((op.op == HostOp.WRITE) | (op.op == HostOp.DELETE))
        with m.If(host_load):
            inbound_write = (op.op == HostOp.WRITE) & (op.record.direction == Direction.IN)
            m.d.sync += [loading.eq(1), index.eq(0), load_slot.eq(op.slot),
                         top.eq(Mux(inbound_write, op.record.seq, 0)),
                         fill.eq(inbound_write & (op.record.seq != 0))]
        with m.Elif(clear & ~loading):
            m.d.sync += [loading.eq(1), index.eq(0), load_slot.eq(clear_slot), top.eq(0),
                         fill.eq(0)]
        head = index == words
        incoming = self.state_in.payload
        importing = Signal()                  # state_in's current beat is a window row
        load = self.load.payload
        with m.If(loading):
            m.d.comb += [
                load.slot.eq(load_slot), load.head.eq(head), load.index.eq(index),
                load.top.eq(top),
                # The head word holds top's own 32-number block up to top itself.
                load.word.eq(Mux(fill, Mux(head, (C(1, 33) << (top[:5] + 1)) - 1, 2**32 - 1),
                                 0)),
                load.valid.eq(Mux(fill, (1 << words) - 1, 0)),
                self.load.valid.eq(1),
            ]
            with m.If(self.load.ready):
                m.d.sync += index.eq(index + 1)
                with m.If(head):
                    m.d.sync += loading.eq(0)
        with m.Else():
            m.d.comb += [
                load.slot.eq(incoming.slot), load.head.eq(incoming.kind == BeatKind.HEAD),
                load.index.eq(incoming.index), load.top.eq(incoming.top),
                load.word.eq(incoming.word), load.valid.eq(incoming.valid),
                self.load.valid.eq(importing),
            ]
        m.d.comb += self.loading.eq(loading)

        # ---- hold ---------------------------------------------------------------------
        m.d.comb += self.hold.ready.eq(1)
        with m.If(self.hold.valid):
            m.d.sync += [self.held.eq(self.hold.payload.hold),
                         self.held_slot.eq(self.hold.payload.slot)]

        # ---- export: after the armed slot's last fence --------------------------------
        armed = Signal(MIGRATE_ARM(self._slots))
        is_armed = Signal()
        m.d.comb += self.arm.ready.eq(~is_armed)
        with m.If(self.arm.valid & ~is_armed):
            m.d.sync += [armed.eq(self.arm.payload), is_armed.eq(1)]
        passing = self.passed.payload
        record = Signal(ops["HOST_REPLY"])
        ring = Signal(range(words + 1))
        row = Signal(self.read_result.payload.shape())
        out = self.state_out.payload
        m.d.comb += [out.engine.eq(armed.engine), out.slot.eq(armed.dest_slot)]
        own_export = Signal()
        with m.FSM(name="export"):
            with m.State("FENCE"):
                m.d.comb += [self.fenced.payload.eq(passing), self.fenced.valid.eq(self.passed.valid)]
                last = is_armed & (passing.slot == armed.slot) & (armed.fences <= 1)
                with m.If(self.passed.valid & self.fenced.ready):
                    with m.If(last):
                        m.next = "EXPORT"
                    with m.Else():
                        m.d.comb += self.passed.ready.eq(1)
                        with m.If(is_armed & (passing.slot == armed.slot)):
                            m.d.sync += armed.fences.eq(armed.fences - 1)
            with m.State("EXPORT"):
                m.d.comb += [own_export.eq(1), own.op.eq(HostOp.EXPORT), own.slot.eq(armed.slot)]
                with m.If(take_own & self.table.ready):
                    m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += reply_taken.eq(1)
                with m.If(exported):
                    m.d.sync += [record.eq(self.table_reply.payload), ring.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                inbound = record.record.direction == Direction.IN
                m.d.comb += [out.kind.eq(BeatKind.HEADER), out.record.eq(record.record),
                             out.counters.eq(record.counters), out.last.eq(~inbound),
                             self.state_out.valid.eq(1)]
                with m.If(self.state_out.ready):
                    with m.If(inbound):
                        m.next = "ASK"
                    with m.Else():
                        m.next = "DONE"
            with m.State("ASK"):
                m.d.comb += [self.read.payload.slot.eq(armed.slot),
                             self.read.payload.head.eq(ring == words),
                             self.read.payload.index.eq(ring),
                             self.read.valid.eq(1)]
                with m.If(self.read.ready):
                    m.next = "SEND"
            with m.State("SEND"):
                # The row is taken into a register first, so the replay unit's ready
                # does not depend on the link's (which can lead back to this engine's
                # own replay unit: a combinational cycle).
                m.d.comb += self.read_result.ready.eq(1)
                with m.If(self.read_result.valid):
                    m.d.sync += row.eq(self.read_result.payload)
                    m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += [out.kind.eq(Mux(ring == words, BeatKind.HEAD, BeatKind.RING)),
                             out.index.eq(ring), out.top.eq(row.top), out.word.eq(row.word),
                             out.valid.eq(row.valid), out.last.eq(ring == words),
                             self.state_out.valid.eq(1)]
                with m.If(self.state_out.ready):
                    m.d.sync += ring.eq(ring + 1)
                    m.next = "ASK"
                    with m.If(ring == words):
                        m.next = "CLEAR"
            with m.State("CLEAR"):
                m.d.comb += [clear.eq(1), clear_slot.eq(armed.slot)]
                with m.If(~loading & ~host_load):
                    m.next = "DONE"
            with m.State("DONE"):
                # The fence is taken only now: the engine starts no packet meanwhile.
                m.d.comb += self.passed.ready.eq(1)
                m.d.sync += is_armed.eq(0)
                m.next = "FENCE"

        # ---- import --------------------------------------------------------------------
        # A message's last beat waits while the previous import is still unreported.
        reported = Signal()                   # `migrated` has a slot to offer
        kind = incoming.kind
        may = ~incoming.last | ~reported
        header = self.state_in.valid & (kind == BeatKind.HEADER) & may
        m.d.comb += importing.eq(self.state_in.valid & (kind != BeatKind.HEADER) & ~loading & may)
        with m.If(header & ~own_export):
            m.d.comb += [own.op.eq(HostOp.IMPORT), own.slot.eq(incoming.slot),
                         own.record.eq(incoming.record), own.counters.eq(incoming.counters)]
        m.d.comb += own_valid.eq(own_export | header)
        done = Mux(kind == BeatKind.HEADER, header & ~own_export & take_own & self.table.ready,
                   importing & self.load.ready)
        m.d.comb += self.state_in.ready.eq(done)
        finished = self.state_in.valid & done & incoming.last
        with m.If(finished):
            m.d.sync += [reported.eq(1), self.migrated.payload.slot.eq(incoming.slot)]
            with m.If(self.held & (self.held_slot == incoming.slot)):
                m.d.sync += self.held.eq(0)
        with m.Elif(self.migrated.ready):
            m.d.sync += reported.eq(0)
        m.d.comb += self.migrated.valid.eq(reported)
        return m
