# SPDX-License-Identifier: BSD-2-Clause
"""The inbound checks of an engine around the decapsulator: SPI, anti-replay,
and the packet's outcome into the SA's counters.

For each inbound packet the engine's dispatcher hands :class:`InboundControl`
a :data:`INBOUND_START` (the SA's slot, SPI, ESN flag and window size, and
whether its hard lifetime has been reached) and the packet to the
decapsulator. Then, in the order of ``EspModel._inbound``:

1. the decapsulator parses the outer header and offers the ESP header
   (``header``), or gives a ``MALFORMED`` verdict without one;
2. the SPI is compared with the SA's and the replay unit checks the sequence
   number (and reconstructs its high half, ESN); ``admit`` lets the packet in
   (``go``) or has it drained unopened (an unknown SPI goes to the engine
   counter ``unknown_spi``, a replay -- duplicate, left of the window, 0, no
   ESN fit -- to the SA's ``replay_drop``);
3. from the verdict: authentic packets (``OK``, ``DUMMY``, or ``MALFORMED``
   found after the ICV) are committed to the replay window, then accounted
   (``PACKET`` with the released length, nothing, or ``MALFORMED``, with the
   record's ``seq`` advanced); ``AUTH_FAIL`` and ``MALFORMED`` before the ICV
   are counted and leave the window alone.

Packets go through one at a time (the decapsulator has one buffer), so each
check sees the window with every earlier packet's update in it and the commit
of a checked packet always writes: this is the "no overlap" case of the
replay unit's hazard contract, which lets drops skip their commit. ``busy`` is
high from ``start`` until the packet's accounting has been handed to the SA
table, so the dispatcher can keep the next inbound packet's lifetime check
behind it.

An SA whose hard lifetime has been reached (``expired``) sends no packet to
the decapsulator: its outcome is accounted as ``EXPIRED`` at once.

Latency: the ESP header to ``admit`` 5 cycles (the replay unit's 3 + 2);
the verdict to the accounting request 2 cycles (``AUTH_FAIL``, drops) or 6
(commit: the replay unit's 3 + 3).
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .decap import DECAP_ADMIT, DECAP_HEADER, DECAP_VERDICT, DecapStatus
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


class InboundControl(wiring.Component):
    """SPI and replay checks of one inbound packet at a time, and its accounting
    (see the module docstring). Owns the engine's :class:`ReplayWindowUnit`,
    whose ``load`` port it exposes (the host path installs and clears windows).

    Parameters
    ----------
    slots : SA slots of the engine.
    window : the largest replay window (the replay unit's ring).
    read_register : the replay unit's block-RAM output register (fast clocks).
    """

    def __init__(self, *, slots: int = 16, window: int = REPLAY_WINDOW,
                 read_register: bool = False):
        self._replay = ReplayWindowUnit(slots=slots, window=window, read_register=read_register)
        self._slots = slots
        table = SaTable.layouts(slots, window)
        super().__init__({
            "start":       In(stream.Signature(inbound_start(slots))),
            "busy":        Out(1),
            "header":      In(stream.Signature(DECAP_HEADER)),
            "admit":       Out(stream.Signature(DECAP_ADMIT)),
            "verdict":     In(stream.Signature(DECAP_VERDICT)),
            "account":     Out(stream.Signature(table["ACCOUNT"])),
            "load":        self._replay.signature.members["load"],
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

        sa = Signal.like(self.start.payload)
        seq = Signal(64)               # the reconstructed sequence number
        unknown_spi = Signal()
        account = self.account.payload
        m.d.comb += [
            account.slot.eq(sa.slot),
            account.seq.eq(seq),
            replay.check.payload.slot.eq(sa.slot),
            replay.check.payload.esn.eq(sa.esn),
            replay.check.payload.size.eq(sa.window),
            replay.update.payload.slot.eq(sa.slot),
            replay.update.payload.esn.eq(sa.esn),
            replay.update.payload.size.eq(sa.window),
            replay.update.payload.seq.eq(seq),
            replay.update.payload.authenticated.eq(1),
        ]
        tally = Signal.like(account.tally)
        length = Signal.like(account.bytes)
        advance = Signal()
        m.d.comb += [account.tally.eq(tally), account.bytes.eq(length),
                     account.advance.eq(advance)]

        def then_account(kind, *, released=0, commit=False):
            m.d.sync += [tally.eq(kind), length.eq(released), advance.eq(commit)]
            m.next = "COMMIT" if commit else "ACCOUNT"

        with m.FSM(name="inbound"):
            with m.State("IDLE"):
                m.d.comb += self.start.ready.eq(1)
                with m.If(self.start.valid):
                    m.d.sync += [sa.eq(self.start.payload), unknown_spi.eq(0), seq.eq(0)]
                    with m.If(self.start.payload.expired):
                        then_account(Tally.EXPIRED)
                    with m.Else():
                        m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += replay.check.payload.seq_lo.eq(self.header.payload.seq_lo)
                with m.If(self.header.valid):
                    # The header is taken with its check request.
                    m.d.comb += [replay.check.valid.eq(1),
                                 self.header.ready.eq(replay.check.ready)]
                    with m.If(replay.check.ready):
                        m.d.sync += [seq.eq(self.header.payload.seq_lo),
                                     unknown_spi.eq(self.header.payload.spi != sa.spi)]
                        m.next = "CHECKED"
                with m.Elif(self.verdict.valid):
                    m.next = "VERDICT"     # malformed before the ESP header

            with m.State("CHECKED"):
                m.d.comb += [self.busy.eq(1), replay.check_result.ready.eq(1)]
                with m.If(replay.check_result.valid):
                    m.d.sync += seq.eq(replay.check_result.payload.seq)
                    with m.If(replay.check_result.payload.verdict != ReplayVerdict.OK):
                        m.d.sync += tally.eq(Tally.REPLAY)
                    with m.Else():
                        m.d.sync += tally.eq(Tally.NONE)
                    m.next = "ADMIT"

            with m.State("ADMIT"):
                m.d.comb += [
                    self.busy.eq(1),
                    self.admit.payload.go.eq(~unknown_spi & (tally == Tally.NONE)),
                    self.admit.payload.seq_hi.eq(seq[32:]),
                    self.admit.valid.eq(1),
                ]
                with m.If(self.admit.ready):
                    m.next = "VERDICT"

            with m.State("VERDICT"):
                verdict = self.verdict.payload
                m.d.comb += [self.busy.eq(1), self.verdict.ready.eq(1)]
                with m.If(self.verdict.valid):
                    with m.Switch(verdict.status):
                        with m.Case(DecapStatus.REFUSED):
                            with m.If(unknown_spi):
                                # Not a packet of this SA: the engine's counter.
                                m.d.sync += self.unknown_spi.eq(self.unknown_spi + 1)
                                m.next = "IDLE"
                            with m.Else():
                                then_account(Tally.REPLAY)
                        with m.Case(DecapStatus.AUTH_FAIL):
                            then_account(Tally.AUTH_FAIL)
                        with m.Case(DecapStatus.OK):
                            then_account(Tally.PACKET, released=verdict.length, commit=True)
                        with m.Case(DecapStatus.DUMMY):
                            then_account(Tally.NONE, commit=True)
                        with m.Default():     # MALFORMED, before or after the ICV
                            with m.If(verdict.authentic):
                                then_account(Tally.MALFORMED, commit=True)
                            with m.Else():
                                then_account(Tally.MALFORMED)

            with m.State("COMMIT"):
                m.d.comb += [self.busy.eq(1), replay.update.valid.eq(1)]
                with m.If(replay.update.ready):
                    m.next = "COMMITTED"

            with m.State("COMMITTED"):
                # With one packet at a time the commit always writes (see the docstring).
                m.d.comb += [self.busy.eq(1), replay.update_result.ready.eq(1)]
                with m.If(replay.update_result.valid):
                    m.next = "ACCOUNT"

            with m.State("ACCOUNT"):
                m.d.comb += [self.busy.eq(1), self.account.valid.eq(1)]
                with m.If(self.account.ready):
                    m.next = "IDLE"
        return m
