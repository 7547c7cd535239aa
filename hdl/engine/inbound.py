# SPDX-License-Identifier: BSD-2-Clause
"""The inbound checks of an engine around the decapsulator: SPI, anti-replay,
and the packet's outcome into the SA's counters.

For each inbound packet the engine's dispatcher hands :class:`InboundControl`
a :data:`INBOUND_START` (the SA's slot, SPI, ESN flag and window size, and
whether its hard lifetime has been reached) and the packet to the
decapsulator. Then, in the order of ``EspModel._inbound``, in two stages that
each take the packets in order:

*Admission*

1. the decapsulator parses the outer header and offers the ESP header
   (``header``), or says that the outer header failed (``malformed``);
2. the SPI is compared with the SA's and the replay unit checks the sequence
   number (and reconstructs its high half, ESN); ``admit`` lets the packet in
   (``go``) or has it dropped unopened (an unknown SPI goes to the engine
   counter ``unknown_spi``, a replay -- duplicate, left of the window, 0, no
   ESN fit -- to the SA's ``replay_drop``).

*Settlement*

3. once the decapsulator has the packet's ICV result (``settle``), the replay
   unit's *commit* runs the check again on the window as every earlier packet
   left it and takes the number if the packet is authentic and still new;
   ``settled.accept`` says so, and only an accepted packet is released. A
   packet found a replay here is a replay drop, whether its ICV was good or
   not (as the model, which checks the window first);
4. from the verdict the outcome is accounted (``PACKET`` with the released
   length, nothing for a dummy, ``AUTH_FAIL``, ``REPLAY``, ``MALFORMED``),
   with the record's ``seq`` advanced to a committed number.

Packets may overlap (the decapsulator has a buffer bank for each): admission
of packet N+1 may come before packet N's commit. That check is then advisory
(the replay unit's hazard contract): a number it refuses stays refused on any
later window (the window only moves forward), and one it lets in is checked
again at the commit. The high half of an ESN number comes from that first
check, so the dispatcher never overlaps an ESN packet with another packet of
its SA (it waits for ``busy`` to fall). Drops before the ICV skip the commit:
without ESN that never changes a later packet's answer.

An SA whose hard lifetime has been reached (``expired``) sends no packet to
the decapsulator: it goes through both stages in its turn and is accounted
as ``EXPIRED``.

``busy`` is high while any inbound packet is between ``start`` and its
accounting request.

Latency: the ESP header to ``admit`` 5 cycles (the replay unit's 3 + 2);
``settle`` to ``settled`` 5 (3 + 2); the verdict to the accounting request 1.
Throughput: a packet every 4 cycles in each stage when the two stages do not
contend for the replay unit (its single pipeline takes one operation a cycle).
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .decap import (DECAP_ADMIT, DECAP_HEADER, DECAP_SETTLE, DECAP_SETTLED, DECAP_VERDICT,
                    DecapStatus)
from .replay import ReplayVerdict, ReplayWindowUnit
from .sa import REPLAY_WINDOW
from .sa_table import SaTable, Tally

__all__ = ["InboundControl", "inbound_start"]


def inbound_start(slots: int) -> data.StructLayout:
    """What the dispatcher knows of an inbound packet's SA from the SA table."""
    return data.StructLayout({
        "slot":    range(slots),
        "spi":     32,
        "esn":     1,
        "window":  16,       # the SA's configured window size
        "expired": 1,        # hard lifetime reached: drop, account as EXPIRED
    })


def _in_flight(slots: int) -> data.StructLayout:
    """A packet between its admission and its settlement."""
    return data.StructLayout({
        "sa":          inbound_start(slots),
        "seq":         64,     # the number the admission check reconstructed
        "checked":     1,      # a well-formed header was checked (else MALFORMED before it)
        "unknown_spi": 1,
        "go":          1,
    })


class InboundControl(wiring.Component):
    """SPI and replay checks of inbound packets, in order, and their accounting
    (see the module docstring). Owns the engine's :class:`ReplayWindowUnit`,
    whose ``load`` port it exposes (the host path installs and clears windows),
    and its ``read`` / ``read_result`` ports (live SA migration reads a window
    out, row by row, to ``load`` it into another engine).

    Parameters
    ----------
    slots : SA slots of the engine.
    window : the largest replay window (the replay unit's ring).
    in_flight : packets between admission and settlement (the decapsulator's
        banks, plus one for an expired packet behind them).
    read_register : the replay unit's block-RAM output register (fast clocks).
    """

    def __init__(self, *, slots: int = 16, window: int = REPLAY_WINDOW, in_flight: int = 2,
                 read_register: bool = False):
        if type(in_flight) is not int or not 1 <= in_flight <= 8:
            raise ValueError(f"in_flight must be an integer from 1 to 8, not {in_flight!r}")
        self._replay = ReplayWindowUnit(slots=slots, window=window, read_register=read_register)
        self._slots, self._in_flight = slots, in_flight
        table = SaTable.layouts(slots, window)
        super().__init__({
            "start":       In(stream.Signature(inbound_start(slots))),
            "busy":        Out(1),
            "header":      In(stream.Signature(DECAP_HEADER)),
            "admit":       Out(stream.Signature(DECAP_ADMIT)),
            "settle":      In(stream.Signature(DECAP_SETTLE)),
            "settled":     Out(stream.Signature(DECAP_SETTLED)),
            "verdict":     In(stream.Signature(DECAP_VERDICT)),
            "account":     Out(stream.Signature(table["ACCOUNT"])),
            "load":        self._replay.signature.members["load"],
            "read":        self._replay.signature.members["read"],
            "read_result": self._replay.signature.members["read_result"],
            "unknown_spi": Out(32),
        })

    @property
    def replay(self) -> ReplayWindowUnit:
        """The replay unit (its storage, for testbenches)."""
        return self._replay

    def elaborate(self, platform):
        m = Module()
        m.submodules.replay = replay = self._replay
        wiring.connect(m, wiring.flipped(self.load), replay.load)
        wiring.connect(m, wiring.flipped(self.read), replay.read)
        wiring.connect(m, replay.read_result, wiring.flipped(self.read_result))
        layout = _in_flight(self._slots)
        m.submodules.flight = flight = SyncFIFO(width=layout.size, depth=self._in_flight)
        admitting = self._admission(m, replay, flight, layout)
        settling = self._settlement(m, replay, flight, layout)
        m.d.comb += self.busy.eq(admitting | flight.r_rdy | settling)
        return m

    def _admission(self, m, replay, flight, layout):
        """Stage 1: start, header, check, admit; returns whether it holds a packet."""
        packet = Signal(layout)
        sa = packet.sa
        pushed = layout(flight.w_data)
        m.d.comb += [
            pushed.eq(packet),
            replay.check.payload.slot.eq(sa.slot),
            replay.check.payload.esn.eq(sa.esn),
            replay.check.payload.size.eq(sa.window),
            replay.check.payload.seq_lo.eq(self.header.payload.seq_lo),
            self.admit.payload.go.eq(packet.go),
            self.admit.payload.seq_hi.eq(packet.seq[32:]),
        ]
        busy = Signal()
        with m.FSM(name="admission"):
            with m.State("IDLE"):
                m.d.comb += self.start.ready.eq(1)
                with m.If(self.start.valid):
                    m.d.sync += [packet.eq(0), packet.sa.eq(self.start.payload)]
                    with m.If(self.start.payload.expired):
                        m.next = "PASS"        # straight to the settlement stage
                    with m.Else():
                        m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += busy.eq(1)
                with m.If(self.header.valid & self.header.payload.malformed):
                    m.d.comb += self.header.ready.eq(1)
                    m.next = "PASS"
                with m.Elif(self.header.valid):
                    # The header is taken with its check request.
                    m.d.comb += [replay.check.valid.eq(1),
                                 self.header.ready.eq(replay.check.ready)]
                    with m.If(replay.check.ready):
                        m.d.sync += [packet.checked.eq(1),
                                     packet.unknown_spi.eq(self.header.payload.spi != sa.spi)]
                        m.next = "CHECKED"

            with m.State("CHECKED"):
                m.d.comb += [busy.eq(1), replay.check_result.ready.eq(1)]
                with m.If(replay.check_result.valid):
                    result = replay.check_result.payload
                    m.d.sync += [packet.seq.eq(result.seq),
                                 packet.go.eq(~packet.unknown_spi
                                              & (result.verdict == ReplayVerdict.OK))]
                    m.next = "ADMIT"

            with m.State("ADMIT"):
                # Offered once the settlement stage has room for the packet.
                m.d.comb += [busy.eq(1), self.admit.valid.eq(flight.w_rdy),
                             flight.w_en.eq(self.admit.ready & flight.w_rdy)]
                with m.If(self.admit.ready & flight.w_rdy):
                    m.next = "IDLE"

            with m.State("PASS"):
                m.d.comb += [busy.eq(1), flight.w_en.eq(1)]
                with m.If(flight.w_rdy):
                    m.next = "IDLE"
        return busy

    def _settlement(self, m, replay, flight, layout):
        """Stage 2: commit, verdict, accounting; returns whether it holds a packet."""
        packet = Signal(layout)
        sa = packet.sa
        account = self.account.payload
        committed = Signal()           # the window took the packet's number
        replayed = Signal()            # the commit found it a replay after all
        tally = Signal.like(account.tally)
        length = Signal.like(account.bytes)
        m.d.comb += [
            replay.update.payload.slot.eq(sa.slot),
            replay.update.payload.esn.eq(sa.esn),
            replay.update.payload.size.eq(sa.window),
            replay.update.payload.seq.eq(packet.seq),
            replay.update.payload.authenticated.eq(self.settle.payload.authentic),
            self.settled.payload.accept.eq(committed),
            account.slot.eq(sa.slot),
            account.seq.eq(packet.seq),
            account.tally.eq(tally),
            account.bytes.eq(length),
            account.advance.eq(committed),
        ]
        busy = Signal()

        def then_account(kind, *, released=0):
            m.d.sync += [tally.eq(kind), length.eq(released)]
            m.next = "ACCOUNT"

        with m.FSM(name="settlement"):
            with m.State("IDLE"):
                m.d.comb += flight.r_en.eq(1)
                with m.If(flight.r_rdy):
                    given = layout(flight.r_data)
                    m.d.sync += [packet.eq(given), committed.eq(0), replayed.eq(0)]
                    with m.If(given.sa.expired):
                        then_account(Tally.EXPIRED)
                    with m.Else():
                        m.next = "VERDICT"

            with m.State("VERDICT"):
                verdict = self.verdict.payload
                m.d.comb += busy.eq(1)
                with m.If(self.settle.valid):
                    # The decapsulator has the ICV result of an admitted packet.
                    m.d.comb += [replay.update.valid.eq(1),
                                 self.settle.ready.eq(replay.update.ready)]
                    with m.If(replay.update.ready):
                        m.next = "COMMIT"
                with m.Elif(self.verdict.valid):
                    m.d.comb += self.verdict.ready.eq(1)
                    with m.If(replayed):
                        then_account(Tally.REPLAY)
                    with m.Else():
                        with m.Switch(verdict.status):
                            with m.Case(DecapStatus.REFUSED):
                                with m.If(packet.unknown_spi):
                                    # Not a packet of this SA: the engine's counter.
                                    m.d.sync += self.unknown_spi.eq(self.unknown_spi + 1)
                                    m.next = "IDLE"
                                with m.Else():
                                    then_account(Tally.REPLAY)
                            with m.Case(DecapStatus.AUTH_FAIL):
                                then_account(Tally.AUTH_FAIL)
                            with m.Case(DecapStatus.OK):
                                then_account(Tally.PACKET, released=verdict.length)
                            with m.Case(DecapStatus.DUMMY):
                                then_account(Tally.NONE)
                            with m.Default():     # MALFORMED, before or after the ICV
                                then_account(Tally.MALFORMED)

            with m.State("COMMIT"):
                m.d.comb += [busy.eq(1), replay.update_result.ready.eq(1)]
                with m.If(replay.update_result.valid):
                    result = replay.update_result.payload
                    # No overlap with ESN on one SA, so the number never changes here.
                    m.d.sync += [committed.eq(result.written),
                                 replayed.eq(result.verdict != ReplayVerdict.OK)]
                    m.next = "SETTLED"

            with m.State("SETTLED"):
                m.d.comb += [busy.eq(1), self.settled.valid.eq(1)]
                with m.If(self.settled.ready):
                    m.next = "VERDICT"

            with m.State("ACCOUNT"):
                m.d.comb += [busy.eq(1), self.account.valid.eq(1)]
                with m.If(self.account.ready):
                    m.next = "IDLE"
        return busy
