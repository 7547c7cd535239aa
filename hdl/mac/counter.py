# SPDX-License-Identifier: BSD-2-Clause
"""An event counter whose events happen in one clock domain and whose count is
read in another."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["CrossedCounter"]


class CrossedCounter(wiring.Component):
    """Counts cycles of `event_domain` with ``event`` high; ``count`` shows the
    total in `count_domain` (32 bits, wrapping).

    The events cross as a small counter in Gray code (`gray_width` bits), as an
    :class:`AsyncFIFO`'s pointers do: it changes one bit per event, so a sample
    taken while it changes is the count before or after, never a mix. Each
    `count_domain` cycle adds what it moved since the last one to ``count``. So
    no event is lost as long as fewer than ``2**gray_width`` happen between two
    `count_domain` clock edges (8 bits: a reading clock 1/255 of the event
    clock's is enough), where a pulse synchronizer would lose events closer
    together than a few reading cycles; and only the small counter pays for the
    synchronizer, not the 32-bit total.

    Latency: ``count`` follows an event after one `event_domain` cycle and three
    `count_domain` cycles (two synchronizer stages, the sum). Throughput: one
    event per `event_domain` cycle.
    """

    def __init__(self, *, event_domain: str, count_domain: str = "sync", width: int = 32,
                 gray_width: int = 8):
        self._event_domain, self._count_domain = event_domain, count_domain
        self._gray_width = gray_width
        super().__init__({"event": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        bits = self._gray_width
        events = Signal(bits)
        gray = Signal(bits)
        after = Signal(bits)
        m.d.comb += after.eq(events + self.event)
        m.d[self._event_domain] += [events.eq(after), gray.eq(after ^ (after >> 1))]

        seen = Signal(bits)
        m.submodules.sync_gray = FFSynchronizer(gray, seen, o_domain=self._count_domain)
        # Gray to binary: each bit is the XOR of the Gray bits from it up.
        binary = [None] * bits
        binary[bits - 1] = seen[bits - 1]
        for k in reversed(range(bits - 1)):
            binary[k] = binary[k + 1] ^ seen[k]
        now, before = Signal(bits), Signal(bits)
        m.d.comb += now.eq(Cat(*binary))
        m.d[self._count_domain] += [self.count.eq(self.count + (now - before)[:bits]),
                                    before.eq(now)]
        return m
