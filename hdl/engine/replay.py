# SPDX-License-Identifier: BSD-2-Clause
"""Inbound anti-replay windows of all SA slots of an engine (RFC 4303 section 3.4.3, Appendix A).

:class:`ReplayWindowUnit` is the gateware of ``sim/model/replay.py: ReplayWindow``:
the same ESN reconstruction, the same verdicts, the same state, for ``slots`` SAs
at once. The pure-Python helpers at the end convert between its storage and the SA
record's (``seq``, ``replay_bitmap``) form.

Storage (no shifter)
--------------------
The window of a slot is a ring of ``R`` bits, ``R`` = the smallest power of two
``>= window``: sequence number ``s`` lives at bit ``s mod R``, i.e. bit ``s mod 32`` of
word ``(s >> 5) mod N`` of the ring (``N = R / 32`` words), so a window of ``size <= R``
consecutive numbers never collides with itself. Per slot, one *head* row holds

* ``top``: the highest authenticated 64-bit sequence number (the record's ``seq``);
* ``word``: the bits of top's own 32-number block ``Tb = top >> 5`` (bit ``p`` for
  ``Tb*32 + p``, only ``p <= top mod 32`` can be set). The ring word at index
  ``Tb mod N`` still holds the block one lap earlier, ``Tb - N``, whose numbers above
  ``top mod 32`` are still in the window: with the top block in the head, no word
  ever mixes two laps;
* ``valid``: ``N`` bits, bit ``i`` set when ring word ``i`` holds the block ``b = i
  (mod N)`` of ``[Tb - N, Tb - 1]``. A word whose bit is clear reads as zero.

Moving the window by ``d = (new top >> 5) - Tb >= 1`` blocks costs one head write and
one ring write whatever ``d`` is (lazy clearing): the old head word goes to ring
index ``Tb mod N`` (valid if ``d <= N``), the ``min(d - 1, N)`` indices after it are
marked invalid (bit ``i`` cleared when ``i`` lies strictly between ``Tb`` and the new
top's block mod ``N``, or always when ``d > N``: two comparisons with a constant per
valid bit, not a ``window``-wide barrel shifter), and the new head word is the new
top's bit.
An update inside the window sets one bit in the head word or in one ring word (and
its valid bit). Memories: ``heads`` (``slots`` rows of ``96 + N`` bits) and ``ring``
(``slots * N`` rows of 32 bits), both ``amaranth.lib.memory.Memory`` with one
synchronous read port and one write port, no forwarding between them.

Operations
----------
Four input streams are arbitrated into one pipeline, at most one operation per
cycle, fixed priority ``load`` > ``update`` > ``read`` > ``check``:

* ``check`` (``slot``, ``esn``, ``size``, ``seq_lo``): the model's
  ``reconstruct`` and ``check``, answered on ``check_result`` with the verdict
  (:class:`ReplayVerdict`) and the reconstructed 64-bit number (high half zero
  when the verdict is ``NO_FIT``). Done before authentication.
* ``update`` (``slot``, ``esn``, ``size``, ``seq``: the full number the check
  returned and the ICV was verified with, ``authenticated``): a *commit*. The
  check is run again on the current state (``seq``'s low half reconstructed
  again) and the window is updated (``update_result.written``) only if the packet
  is authenticated, still new (verdict ``OK``) and reconstructs to the same
  ``seq``. ``update_result`` carries the fresh verdict and number.
* ``load`` (``slot``, ``head`` 1: write the head row ``top``/``word``/``valid``;
  ``head`` 0: write ring word ``index`` with ``word``): one memory row each;
  :func:`load_requests` / :func:`clear_requests` give the rows that install an
  SA's window or zeroize a deleted slot. No result.
* ``read`` (``slot``, ``head`` 1: the head row; ``head`` 0: ring word ``index``):
  the source side of live SA migration, which moves an inbound SA's whole window
  to another engine. ``read_result`` carries the row as the ``load`` of the same
  ``slot``/``head``/``index`` takes it (:func:`read_result_layout`): a head read
  gives ``top``, ``word`` and ``valid``; a ring read gives ``word`` (``top`` and
  ``valid`` 0), zero when the word's valid bit is clear (it reads as zero anyway,
  and stale bits of an earlier lap never leave the unit). Loading the head and the
  ``N`` ring words read from slot ``s`` into slot ``t`` of any unit with the same
  ``window`` gives ``t`` the window of ``s``: the same answers to every later check
  and update (with the SA's same ``size`` and ``esn``). :func:`read_requests` gives
  the ``N + 1`` requests; the reads use the memories' read ports, as checks do.

Latency and throughput: three stages (0: arbitrate and read; 1: reconstruct and
compare, every comparison one carry chain from the memory rows; 2: verdict, write,
result register), so a result (also a read's) is offered 3 cycles after its request
is accepted. One operation per cycle, except that an operation on a slot with an
update or a load in stage 1 or 2 waits until that has written (at most 2 cycles;
checks and reads never make anything wait). So a single SA sustains a check and an
update every 4 cycles (check N+1, update N, 2 waits), many SAs one operation per
cycle; a slot's whole window is read in ``N + 1`` consecutive cycles. With
``read_register=True`` the rows are registered once more before stage 1 (the
block RAM's output register, for a fast clock on ECP5): latency 4, a write's slot
waits up to 3 cycles, a check and an update of one SA every 5 cycles. An unready
result stream stalls the pipeline: the inputs' ``ready`` depends combinationally on
``check_result.ready`` / ``update_result.ready`` / ``read_result.ready`` (and on the
offered ``slot``).

Ordering: every operation sees the effect of every operation accepted before it
and none of those after it (fixed priority in one cycle: ``load`` > ``update`` >
``read`` > ``check``); the result of each is the model's for the operations
in acceptance order. So an engine that, per slot, sends ``check N``, ``update N``,
``check N+1`` in that order gets the model's program-order answers exactly. A read
is held off like a check by an update or load of its slot still in stage 1 or 2,
so it returns the row that operation wrote, never the one before it.

Hazard contract for an engine that overlaps
-------------------------------------------
An engine that checks packet N+1 while packet N is still being authenticated gets
a check answered on a state that lacks N's update. That check is advisory; the
commit is the packet's final replay verdict. The engine must

1. send exactly one ``update`` per checked packet, in packet order per slot,
   after its authentication: ``authenticated`` = ICV verified, or 0 when the ICV
   failed or was not computed because the check dropped the packet (``seq`` then
   is what the check returned, or just ``seq_lo`` after ``NO_FIT``);
2. decide from ``update_result``: a verdict other than ``OK`` is a replay drop;
   ``OK`` with ``seq`` equal to the one used for the ICV and the ICV verified is
   accepted (``written`` is 1); ``OK`` with the same ``seq`` and the ICV failed is
   an authentication failure; any other ``OK`` (the reconstruction changed, or the
   check had dropped the packet so it was never authenticated) means the packet
   must be checked and authenticated again before any later packet of the slot is
   committed (*re-run*);
3. keep a slot's ``size`` and ``esn`` constant between loads, and not load a slot
   with packets of it in flight;
4. to migrate a slot, stop admitting its packets and wait for the commits of
   those in flight, then read its head and ring words: with no update of the slot
   accepted between the first and the last read, the rows are one consistent
   state (a read sees every update accepted before it, so no commit is lost).

With this, every packet's outcome (accepted / authentication failure / replay
drop) and the window are those of the model applied in program order (check N,
authenticate N, update N, check N+1, ...). Re-runs never happen without ESN: the
window only moves forward, so a drop on an old state is a drop on a newer one
and a number's interpretation never changes. With ESN they need the window's
bottom to pass the number the check reconstructed, or a ``NO_FIT`` at the very
start of an SA, while the packet is in flight. If the engine does not overlap
packets of the same slot, it can skip the commit of dropped packets.
"""

from __future__ import annotations

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.hdl import MemoryData
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .sa import MIN_REPLAY_WINDOW, REPLAY_WINDOW

__all__ = [
    "ReplayVerdict", "ReplayOp", "ring_bits", "ring_words",
    "check_request_layout", "check_result_layout", "update_request_layout",
    "update_result_layout", "load_request_layout", "read_request_layout",
    "read_result_layout", "head_layout",
    "ReplayWindowUnit",
    "storage_from_window", "window_from_storage", "load_requests", "clear_requests",
    "read_requests",
]

_MASK32 = 2**32 - 1
_MASK64 = 2**64 - 1
#: The SA record's ``window`` field is 16 bits wide.
_SIZE_BITS = 16


class ReplayVerdict(enum.Enum, shape=3):
    OK        = 0   # new: right of the window, or inside it and not yet received
    ZERO      = 1   # sequence number 0 is never sent (RFC 4303 section 3.3.3)
    LEFT      = 2   # left of the window
    DUPLICATE = 3
    NO_FIT    = 4   # ESN: no 64-bit number in [0, 2^64) fits (RFC 4303 A2.2)


class ReplayOp(enum.Enum, shape=3):
    NONE   = 0
    CHECK  = 1
    UPDATE = 2
    LOAD   = 3
    READ   = 4


def _check_window(window):
    if (type(window) is not int or window < MIN_REPLAY_WINDOW or window % 32
            or window > 2**_SIZE_BITS - 32):
        raise ValueError(f"window must be a multiple of 32 from {MIN_REPLAY_WINDOW} to "
                         f"{2**_SIZE_BITS - 32}, not {window!r}")


def ring_bits(window: int) -> int:
    """``R``: bits of a slot's ring, the smallest power of two ``>= window``."""
    _check_window(window)
    return 1 << (window - 1).bit_length()


def ring_words(window: int) -> int:
    """``N``: 32-bit words of a slot's ring."""
    return ring_bits(window) // 32


def _slot_shape(slots):
    return range(slots)


def check_request_layout(slots: int) -> data.StructLayout:
    return data.StructLayout({
        "slot":   _slot_shape(slots),
        "esn":    1,
        "size":   _SIZE_BITS,     # the SA's configured window, 1..window
        "seq_lo": 32,             # from the ESP header
    })


def check_result_layout() -> data.StructLayout:
    return data.StructLayout({
        "verdict": ReplayVerdict,
        "seq":     64,           # reconstructed; high half 0 when NO_FIT
    })


def update_request_layout(slots: int) -> data.StructLayout:
    return data.StructLayout({
        "slot":          _slot_shape(slots),
        "esn":           1,
        "size":          _SIZE_BITS,
        "seq":           64,     # the number the ICV was computed with
        "authenticated": 1,      # ICV verified
    })


def update_result_layout() -> data.StructLayout:
    return data.StructLayout({
        "verdict": ReplayVerdict,   # of the check run again at commit time
        "seq":     64,              # reconstructed again
        "written": 1,               # the window now includes `seq`
    })


def head_layout(window: int) -> data.StructLayout:
    return data.StructLayout({
        "top":   64,
        "word":  32,
        "valid": ring_words(window),
    })


def load_request_layout(slots: int, window: int) -> data.StructLayout:
    n = ring_words(window)
    return data.StructLayout({
        "slot":  _slot_shape(slots),
        "head":  1,                # 1: head row (top, word, valid); 0: ring word `index`
        "index": range(n),
        "top":   64,
        "word":  32,
        "valid": n,
    })


def read_request_layout(slots: int, window: int) -> data.StructLayout:
    return data.StructLayout({
        "slot":  _slot_shape(slots),
        "head":  1,                # 1: head row; 0: ring word `index`
        "index": range(ring_words(window)),
    })


def read_result_layout(window: int) -> data.StructLayout:
    """A row as ``load`` takes it: the head row, or a ring word in ``word`` (top, valid 0)."""
    return head_layout(window)


def _one_hot(value, width):
    return Cat(value == k for k in range(width))


class ReplayWindowUnit(wiring.Component):
    """Anti-replay windows of ``slots`` inbound SAs, each up to ``window`` packets.

    Equivalent to ``sim/model/replay.py: ReplayWindow`` per slot (see the module
    docstring for the storage, the ordering guarantee and the hazard contract).
    Results ``latency`` = 3 cycles after the request (4 with ``read_register``); one
    operation (check, update, load or read) per cycle, priority ``load`` > ``update``
    > ``read`` > ``check``, an operation on the slot of a write in flight waiting up
    to 2 cycles (3); the inputs' ``ready`` depends combinationally on the result
    streams'.

    ``read``/``read_result`` give a slot's rows one at a time (head or ring word
    ``index``), exactly as ``load`` takes them: the source side of live SA
    migration, which moves an inbound SA's window to another engine (reads of the
    head and the ``N`` ring words, loaded into the other engine's slot, recreate
    the window there). A read has a check's latency and sees every operation
    accepted before it.

    ``heads`` (``slots`` rows of :func:`head_layout`) and ``ring`` (row
    ``slot * ring_words + index``) are the storage's ``MemoryData``.
    """

    def __init__(self, *, slots: int = 16, window: int = REPLAY_WINDOW,
                 read_register: bool = False):
        if type(slots) is not int or slots < 1:
            raise ValueError(f"slots must be a positive integer, not {slots!r}")
        _check_window(window)
        if type(read_register) is not bool:
            raise ValueError(f"read_register must be True or False, not {read_register!r}")
        self.slots, self.window, self.read_register = slots, window, read_register
        self.latency = 4 if read_register else 3
        self.ring_bits, self.ring_words = ring_bits(window), ring_words(window)
        # The storage, also for testbenches (``ctx.get(unit.heads[slot])``).
        self.heads = MemoryData(shape=head_layout(window), depth=slots, init=[])
        self.ring = MemoryData(shape=32, depth=slots * self.ring_words, init=[])
        super().__init__({
            "check":         In(stream.Signature(check_request_layout(slots))),
            "check_result":  Out(stream.Signature(check_result_layout())),
            "update":        In(stream.Signature(update_request_layout(slots))),
            "update_result": Out(stream.Signature(update_result_layout())),
            "load":          In(stream.Signature(load_request_layout(slots, window))),
            "read":          In(stream.Signature(read_request_layout(slots, window))),
            "read_result":   Out(stream.Signature(read_result_layout(window))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.ring_words
        log_n = n.bit_length() - 1

        m.submodules.heads = heads = Memory(self.heads)
        m.submodules.ring = ring = Memory(self.ring)
        head_wr = heads.write_port()
        ring_wr = ring.write_port()
        # No forwarding from the write to a read of the same row (it would cost a
        # multiplexer and a register per bit): an operation waits instead.
        head_rd = heads.read_port(transparent_for=())
        ring_rd = ring.read_port(transparent_for=())

        def stage(name):
            """The registers of an operation between two stages."""
            return {
                "op":    Signal(ReplayOp, name=f"{name}_op"),
                "slot":  Signal(_slot_shape(self.slots), name=f"{name}_slot"),
                "esn":   Signal(name=f"{name}_esn"),
                "size":  Signal(_SIZE_BITS, name=f"{name}_size"),
                "seq":   Signal(64, name=f"{name}_seq"),   # check: seq_lo; update: full; load: top
                "auth":  Signal(name=f"{name}_auth"),
                "head":  Signal(name=f"{name}_head"),
                "index": Signal(range(n), name=f"{name}_index"),  # the ring row read / loaded
                "word":  Signal(32, name=f"{name}_word"),
                "valid": Signal(n, name=f"{name}_valid"),
            }
        s1, s2 = stage("s1"), stage("s2")
        # With `read_register`, stage 1 only registers the rows (a block RAM's
        # output register) and stage "r" computes what stage 1 does otherwise.
        r = stage("r") if self.read_register else None

        # All stages move together; only a full result register stops them.
        check_room = ~self.check_result.valid | self.check_result.ready
        update_room = ~self.update_result.valid | self.update_result.ready
        read_room = ~self.read_result.valid | self.read_result.ready
        advance = Signal()
        m.d.comb += advance.eq(((s2["op"] != ReplayOp.CHECK) | check_room) &
                               ((s2["op"] != ReplayOp.UPDATE) | update_room) &
                               ((s2["op"] != ReplayOp.READ) | read_room))

        # Stage 0: arbitration, load > update > read > check (an update offered
        # with a check or read is ordered first: they see it). An operation on the
        # slot of an update or load in stage 1 or 2 waits until it has written
        # (stage 2), so that it reads the rows written. `index` is the ring row
        # each operation reads (check, update: the number's block mod N).
        s0 = {key: Signal.like(sig, name=f"s0_{key}") for key, sig in s1.items()}
        with m.If(self.load.valid):
            p = self.load.payload
            m.d.comb += [s0["op"].eq(ReplayOp.LOAD), s0["slot"].eq(p.slot), s0["seq"].eq(p.top),
                         s0["head"].eq(p.head), s0["index"].eq(p.index),
                         s0["word"].eq(p.word), s0["valid"].eq(p.valid)]
        with m.Elif(self.update.valid):
            p = self.update.payload
            m.d.comb += [s0["op"].eq(ReplayOp.UPDATE), s0["slot"].eq(p.slot), s0["esn"].eq(p.esn),
                         s0["size"].eq(p.size), s0["seq"].eq(p.seq), s0["auth"].eq(p.authenticated),
                         s0["index"].eq(p.seq[5:5 + log_n])]
        with m.Elif(self.read.valid):
            p = self.read.payload
            m.d.comb += [s0["op"].eq(ReplayOp.READ), s0["slot"].eq(p.slot),
                         s0["head"].eq(p.head), s0["index"].eq(p.index)]
        with m.Elif(self.check.valid):
            p = self.check.payload
            m.d.comb += [s0["op"].eq(ReplayOp.CHECK), s0["slot"].eq(p.slot), s0["esn"].eq(p.esn),
                         s0["size"].eq(p.size), s0["seq"].eq(p.seq_lo),
                         s0["index"].eq(p.seq_lo[5:5 + log_n])]
        def writes_slot(s):
            return ((s["op"] == ReplayOp.UPDATE) | (s["op"] == ReplayOp.LOAD)) & (s["slot"] == s0["slot"])
        hazard = writes_slot(s1) | writes_slot(s2)
        if r is not None:
            hazard |= writes_slot(r)
        accept = Signal()
        m.d.comb += [
            accept.eq(advance & ~hazard),
            self.load.ready.eq(accept),
            self.update.ready.eq(accept & ~self.load.valid),
            self.read.ready.eq(accept & ~self.load.valid & ~self.update.valid),
            self.check.ready.eq(accept & ~self.load.valid & ~self.update.valid & ~self.read.valid),
            # While the pipeline stands still nothing is written, so stage 1's rows
            # are held by reading them again (cheaper than a read enable, which
            # the iCE40 mapping turns into a register and a multiplexer per bit).
            head_rd.addr.eq(Mux(advance, s0["slot"], s1["slot"])),
            ring_rd.addr.eq(Mux(advance, Cat(s0["index"], s0["slot"]),
                                Cat(s1["index"], s1["slot"]))),
        ]
        # Stage 1 compares the memory rows with these, each in one carry chain:
        # seq_lo + size - 1 (seq_lo against top - size + 1), and the high half of an
        # update's number - 1 / + 1 (against top's high half + 1 / - 1).
        s1_size_m1 = Signal(_SIZE_BITS)
        s1_lo_plus = Signal(33)
        s1_hi_m1 = Signal(32)
        s1_hi_p1 = Signal(32)
        with m.If(advance):
            for key in s1:
                m.d.sync += s1[key].eq(s0[key])
            m.d.sync += [
                s1_size_m1.eq(s0["size"] - 1),
                s1_lo_plus.eq(s0["seq"][:32] + s0["size"] - 1),
                s1_hi_m1.eq(s0["seq"][32:] - 1),
                s1_hi_p1.eq(s0["seq"][32:] + 1),
            ]
            with m.If(~accept):
                m.d.sync += s1["op"].eq(ReplayOp.NONE)

        head_row, ring_row = head_rd.data, ring_rd.data
        c, c_size_m1, c_lo_plus, c_hi_m1, c_hi_p1 = s1, s1_size_m1, s1_lo_plus, s1_hi_m1, s1_hi_p1
        if r is not None:
            head_row, ring_row = Signal(head_layout(self.window)), Signal(32)
            c_size_m1, c_lo_plus = Signal.like(s1_size_m1), Signal.like(s1_lo_plus)
            c_hi_m1, c_hi_p1 = Signal.like(s1_hi_m1), Signal.like(s1_hi_p1)
            with m.If(advance):
                for key in r:
                    m.d.sync += r[key].eq(s1[key])
                m.d.sync += [
                    head_row.eq(head_rd.data), ring_row.eq(ring_rd.data),
                    c_size_m1.eq(s1_size_m1), c_lo_plus.eq(s1_lo_plus),
                    c_hi_m1.eq(s1_hi_m1), c_hi_p1.eq(s1_hi_p1),
                ]
            c = r

        # Stage 1 (r): reconstruct (RFC 4303 A2.2) and compare, each a carry chain
        # from the rows, in parallel.
        top, ring_word = head_row.top, ring_row
        tl, th = top[:32], top[32:]
        seq_lo = c["seq"][:32]
        within_block = tl >= c_size_m1       # case A: the window lies within one 2^32 block
        # seq_lo >= bottom (low half of top - size + 1) in case A / case B
        at_or_above = Mux(within_block, c_lo_plus >= tl, c_lo_plus[32] & (c_lo_plus[:32] >= tl))
        th_zero, th_one, th_max = th == 0, th == 1, th == _MASK32
        # The high half of `full` relative to th: +1, 0 or -1; without ESN it is 0,
        # which is th or th - 1 only if th is 0 or 1 (otherwise far below top).
        plus = Signal()
        same = Signal()
        minus = Signal()
        with m.If(c["esn"]):
            m.d.comb += [plus.eq(within_block & ~at_or_above),
                         minus.eq(~within_block & at_or_above),
                         same.eq(within_block == at_or_above)]
        with m.Else():
            m.d.comb += [same.eq(th_zero), minus.eq(th_one)]
        no_fit = c["esn"] & ((plus & th_max) | (minus & th_zero))
        seq_hi = Mux(c["esn"], Mux(plus, th + 1, Mux(minus, th - 1, th)), 0)
        # top - full = (th - seq_hi - borrow) * 2^32 + (tl - seq_lo) mod 2^32.
        low_diff = Signal(33)
        m.d.comb += low_diff.eq(tl - seq_lo)
        borrow = low_diff[32]
        right = plus | (same & borrow)
        near = (same & ~borrow) | (minus & borrow)     # top - full < 2^32: low_diff
        in_window = near & (low_diff[_SIZE_BITS:32] == 0) & (low_diff[:_SIZE_BITS] < c["size"])
        zero = (seq_lo == 0) & (~c["esn"] | (same & th_zero) | (minus & th_one))
        same_block = same & (seq_lo[5:] == tl[5:])
        # Blocks the window moves by, when `full` is right of top (< 2^28).
        block_diff = Signal(28)
        m.d.comb += block_diff.eq(seq_lo[5:] - tl[5:])
        blocks = Cat(block_diff[:27], block_diff[27] ^ plus)
        index = c["index"]          # seq_lo's block mod N (a read's requested word)
        ring_stored = Signal(32)    # the ring word holding `full`'s bit, zero when not valid
        m.d.comb += ring_stored.eq(Mux(head_row.valid.bit_select(index, 1), ring_word, 0))

        s2_flags = {name: Signal(name=f"s2_{name}") for name in
                    ("no_fit", "zero", "right", "in_window", "head_bit", "ring_bit", "same_block", "far",
                     "seq_match")}
        s2_top, s2_word, s2_ring_valid = Signal(64), Signal(32), Signal(n)
        s2_stored = Signal(32)
        s2_seq_hi = Signal(32)
        # Which ring words a move of the window clears, but for `far` (all of them):
        # the indices strictly between the top's block and `full`'s, mod N. Decided
        # here from stage 1's own values, so stage 2's path into the head row's
        # write is a few gates after its registers rather than these compares too.
        top_block = tl[5:5 + log_n]
        wraps = top_block >= index
        between = Signal(n)
        m.d.comb += between.eq(Cat(
            Mux(wraps, (top_block < k) | (index > k), (top_block < k) & (index > k))
            for k in range(n)))
        s2_between = Signal(n)
        with m.If(advance):
            for key in s2:
                m.d.sync += s2[key].eq(c[key])
            m.d.sync += [
                s2_flags["no_fit"].eq(no_fit),
                s2_flags["zero"].eq(zero),
                s2_flags["right"].eq(right),
                s2_flags["in_window"].eq(in_window),
                s2_flags["same_block"].eq(same_block),
                s2_flags["head_bit"].eq(head_row.word.bit_select(seq_lo[:5], 1)),
                s2_flags["ring_bit"].eq(ring_stored.bit_select(seq_lo[:5], 1)),
                s2_flags["far"].eq(blocks > n),
                s2_between.eq(between),
                s2_flags["seq_match"].eq(Mux(c["esn"],
                                             (plus & (th == c_hi_m1)) | (minus & (th == c_hi_p1)) |
                                             (same & (th == c["seq"][32:])),
                                             c["seq"][32:] == 0)),
                s2_top.eq(top),
                s2_word.eq(head_row.word),
                s2_ring_valid.eq(head_row.valid),
                s2_stored.eq(ring_stored),
                s2_seq_hi.eq(seq_hi),
            ]

        # Stage 2: verdict, commit (the memory writes), results.
        full = Cat(s2["seq"][:32], Mux(s2_flags["no_fit"], 0, s2_seq_hi))
        bit = Signal(32)
        m.d.comb += bit.eq(_one_hot(s2["seq"][:5], 32))
        verdict = Signal(ReplayVerdict)
        with m.If(s2_flags["no_fit"]):
            m.d.comb += verdict.eq(ReplayVerdict.NO_FIT)
        with m.Elif(s2_flags["zero"]):
            m.d.comb += verdict.eq(ReplayVerdict.ZERO)
        with m.Elif(s2_flags["right"]):
            m.d.comb += verdict.eq(ReplayVerdict.OK)
        with m.Elif(~s2_flags["in_window"]):
            m.d.comb += verdict.eq(ReplayVerdict.LEFT)
        with m.Elif(Mux(s2_flags["same_block"], s2_flags["head_bit"], s2_flags["ring_bit"])):
            m.d.comb += verdict.eq(ReplayVerdict.DUPLICATE)
        with m.Else():
            m.d.comb += verdict.eq(ReplayVerdict.OK)
        commit = Signal()
        m.d.comb += commit.eq((s2["op"] == ReplayOp.UPDATE) & advance & s2["auth"] &
                              (verdict == ReplayVerdict.OK) & s2_flags["seq_match"])

        # Moving the window from block Tb to Fb = Tb + d, d >= 1: the indices
        # strictly between Tb and Fb (mod N) are cleared, all of them if d > N;
        # Tb takes the old head word (valid while d <= N).
        right, same_block, far = s2_flags["right"], s2_flags["same_block"], s2_flags["far"]
        top_block = s2_top[5:5 + log_n]
        index = s2["seq"][5:5 + log_n]
        cleared = Signal(n)
        m.d.comb += cleared.eq(Mux(far, (1 << n) - 1, s2_between))
        moved_valid = Signal(n)
        m.d.comb += moved_valid.eq((s2_ring_valid & ~cleared) |
                                   Mux(far, 0, _one_hot(top_block, n)))

        with m.If(commit):
            m.d.comb += [
                head_wr.en.eq(1),
                head_wr.addr.eq(s2["slot"]),
                head_wr.data.top.eq(Mux(right, full, s2_top)),
                ring_wr.en.eq(~same_block),
                ring_wr.addr.eq(Cat(Mux(right, top_block, index), s2["slot"])),
                ring_wr.data.eq(Mux(right, s2_word, s2_stored | bit)),
            ]
            with m.If(same_block):
                m.d.comb += [head_wr.data.word.eq(s2_word | bit),
                             head_wr.data.valid.eq(s2_ring_valid)]
            with m.Elif(right):
                m.d.comb += [head_wr.data.word.eq(bit), head_wr.data.valid.eq(moved_valid)]
            with m.Else():
                m.d.comb += [head_wr.data.word.eq(s2_word),
                             head_wr.data.valid.eq(s2_ring_valid | _one_hot(index, n))]
        with m.Elif((s2["op"] == ReplayOp.LOAD) & advance):
            m.d.comb += [
                head_wr.en.eq(s2["head"]),
                head_wr.addr.eq(s2["slot"]),
                head_wr.data.top.eq(s2["seq"]),
                head_wr.data.word.eq(s2["word"]),
                head_wr.data.valid.eq(s2["valid"]),
                ring_wr.en.eq(~s2["head"]),
                ring_wr.addr.eq(Cat(s2["index"], s2["slot"])),
                ring_wr.data.eq(s2["word"]),
            ]

        with m.If(self.check_result.ready):
            m.d.sync += self.check_result.valid.eq(0)
        with m.If(self.update_result.ready):
            m.d.sync += self.update_result.valid.eq(0)
        with m.If(advance & (s2["op"] == ReplayOp.CHECK)):
            m.d.sync += [
                self.check_result.valid.eq(1),
                self.check_result.payload.verdict.eq(verdict),
                self.check_result.payload.seq.eq(full),
            ]
        with m.If(advance & (s2["op"] == ReplayOp.UPDATE)):
            m.d.sync += [
                self.update_result.valid.eq(1),
                self.update_result.payload.verdict.eq(verdict),
                self.update_result.payload.seq.eq(full),
                self.update_result.payload.written.eq(commit),
            ]
        with m.If(self.read_result.ready):
            m.d.sync += self.read_result.valid.eq(0)
        with m.If(advance & (s2["op"] == ReplayOp.READ)):
            m.d.sync += [
                self.read_result.valid.eq(1),
                self.read_result.payload.top.eq(Mux(s2["head"], s2_top, 0)),
                self.read_result.payload.word.eq(Mux(s2["head"], s2_word, s2_stored)),
                self.read_result.payload.valid.eq(Mux(s2["head"], s2_ring_valid, 0)),
            ]
        return m


# Pure-Python conversion between the SA record's (seq, replay_bitmap) and the storage.

def storage_from_window(top: int, bitmap: int, size: int, *, window: int = REPLAY_WINDOW):
    """The storage of a slot holding the model's window (``top``, ``bitmap``, ``size``).

    Returns ``(head, words)``: ``head`` a dict with ``top``, ``word``, ``valid`` (the
    head row) and ``words`` the ``N`` ring words. Only the low ``size`` bits of
    ``bitmap`` are kept, as the model does. Bits for "numbers" below zero (a new
    SA's record has a full bitmap whatever its ``seq``) are kept too, so that
    :func:`window_from_storage` gives the bitmap back unchanged.
    """
    n = ring_words(window)
    if not 1 <= size <= window:
        raise ValueError(f"size must be from 1 to the engine's window {window}, not {size!r}")
    if not 0 <= top <= _MASK64:
        raise ValueError(f"top must be a 64-bit sequence number, not {top!r}")
    top_block = top >> 5
    head_word, words, valid = 0, [0] * n, 0
    bitmap &= (1 << size) - 1
    for offset in range(size):
        if not (bitmap >> offset) & 1:
            continue
        seq = top - offset                  # may be negative: see the docstring
        if seq >> 5 == top_block:
            head_word |= 1 << (seq & 31)
        else:
            index = (seq >> 5) % n
            words[index] |= 1 << (seq & 31)
            valid |= 1 << index
    return {"top": top, "word": head_word, "valid": valid}, words


def window_from_storage(head, words, size: int, *, window: int = REPLAY_WINDOW):
    """Inverse of :func:`storage_from_window`: ``(top, bitmap)`` of a slot's storage."""
    n = ring_words(window)
    if len(words) != n:
        raise ValueError(f"words must hold the {n} ring words of window {window}, not {len(words)}")
    top = head["top"]
    top_block = top >> 5
    bitmap = 0
    for offset in range(size):
        seq = top - offset
        if seq >> 5 == top_block:
            word = head["word"]
        else:
            index = (seq >> 5) % n
            word = words[index] if (head["valid"] >> index) & 1 else 0
        bitmap |= ((word >> (seq & 31)) & 1) << offset
    return top, bitmap


def load_requests(slot: int, top: int, bitmap: int, size: int, *, window: int = REPLAY_WINDOW):
    """``load`` payloads (dicts) installing a window in ``slot``: every ring word
    (also the zero ones, so nothing of the slot's previous SA survives), then the head."""
    head, words = storage_from_window(top, bitmap, size, window=window)
    requests = [{"slot": slot, "head": 0, "index": i, "top": 0, "word": w, "valid": 0}
                for i, w in enumerate(words)]
    requests.append({"slot": slot, "head": 1, "index": 0, **head})
    return requests


def clear_requests(slot: int, *, window: int = REPLAY_WINDOW):
    """``load`` payloads zeroizing ``slot`` (SA deleted): an empty window with top 0."""
    return load_requests(slot, 0, 0, MIN_REPLAY_WINDOW, window=window)


def read_requests(slot: int, *, window: int = REPLAY_WINDOW):
    """``read`` payloads (dicts) of a slot's whole window: the head row, then every
    ring word. ``{**request, "slot": target, **result}`` is the matching ``load``."""
    return ([{"slot": slot, "head": 1, "index": 0}] +
            [{"slot": slot, "head": 0, "index": i} for i in range(ring_words(window))])
