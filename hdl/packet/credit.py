# SPDX-License-Identifier: BSD-2-Clause
"""Credits: a FIFO's places promised to items before they reach it, so the pipeline
that carries them there never has to stop.

A pipeline that stops when its output waits needs one enable on all its
registers, a net driven by the consumer's ready that reaches every flip-flop of
every stage. In the filters that is hundreds of flip-flops a stage, and on the
ECP5 build such enables were among the most congested nets. With credits the
pipeline runs free: an item enters only when a place in the FIFO behind it is
promised to it, counting every item already on its way, and items wait in the
FIFO, not in the pipeline.

:func:`credit_counter` is the count; :class:`ResultQueue` is the count and the
FIFO together, for a lookup pipeline of a fixed latency.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["credit_counter", "ResultQueue"]


def credit_counter(m, name, depth, *, spent, freed, registered):
    """Places of a FIFO of `depth` entries not yet promised to an item.

    `spent` promises one, `freed` (the FIFO's read) gives one back. Returns
    whether a place is free. With `registered`, `freed` is counted a cycle late
    (the consumer's ready then ends at a flip-flop, not in the counter) and
    "a place is free" is a flip-flop too; counting a freed place late only ever
    makes the count smaller than the room there is, never larger.
    """
    credits = Signal(range(depth + 1), init=depth, name=f"{name}_credits")
    if registered:
        freed_late = Signal(name=f"{name}_freed")
        m.d.sync += freed_late.eq(freed)
        freed = freed_late
    with m.Switch(Cat(spent, freed)):
        with m.Case(0b01):
            m.d.sync += credits.eq(credits - 1)
        with m.Case(0b10):
            m.d.sync += credits.eq(credits + 1)
    if not registered:
        return credits != 0
    # credits - spent + freed != 0, with `spent` only ever when credits != 0.
    room = Signal(init=1, name=f"{name}_room")
    m.d.sync += room.eq(freed | (credits > 1) | (credits == 1) & ~spent)
    return room


class ResultQueue(wiring.Component):
    """The results of a lookup pipeline that never stops, queued for a consumer that may.

    ``taken`` is a lookup entering the pipeline; ``latency`` cycles later its result
    arrives on ``i`` with ``i_valid``, and always finds a place: ``room`` (a
    flip-flop) allows a lookup only when one is free, counting the lookups in
    flight. ``o`` offers the results in order from registers (a
    :class:`SyncFIFOBuffered`).

    Parameters
    ----------
    shape : the result's layout.
    latency : cycles from ``taken`` to ``i_valid``.

    Latency :attr:`DELAY` cycles from ``i_valid`` to ``o.valid``. Throughput: with ``o``
    always ready, a lookup every cycle (the FIFO is as
    deep as the loop from ``taken`` to the place given back is long).
    """

    #: Cycles from a result arriving to its being offered (the buffered FIFO's).
    DELAY = 2

    def __init__(self, shape, *, latency: int):
        if type(latency) is not int or latency < 1:
            raise ValueError(f"latency must be a positive integer, not {latency!r}")
        if not isinstance(shape, data.Layout):
            raise TypeError(f"shape must be a data layout, not {shape!r}")
        self._latency = latency
        super().__init__({
            "taken":   In(1),
            "room":    Out(1),
            "i":       In(shape),
            "i_valid": In(1),
            "o":       Out(stream.Signature(shape)),
        })

    @property
    def depth(self) -> int:
        # From a place promised to its being promised again: the lookup's latency, the
        # FIFO's delay, the read counted a cycle late, and `room` a register.
        return self._latency + self.DELAY + 2

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=Shape.cast(self.i.shape()).width,
                                                    depth=self.depth)
        read = self.o.valid & self.o.ready
        m.d.comb += [
            self.room.eq(credit_counter(m, "results", self.depth, spent=self.taken,
                                        freed=read, registered=True)),
            fifo.w_data.eq(self.i),
            fifo.w_en.eq(self.i_valid),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
        ]
        return m
