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

    The count crosses in Gray code, as an :class:`AsyncFIFO`'s pointers do: it
    changes one bit per event, so a sample taken while it changes is the count
    before or after, never a mix. A pulse synchronizer would lose events closer
    together than a few cycles of the reading clock.

    Latency: ``count`` follows an event after one `event_domain` cycle and four
    `count_domain` cycles (two synchronizer stages, the decode register, one
    more for the source register). Throughput: one event per `event_domain`
    cycle.
    """

    def __init__(self, *, event_domain: str, count_domain: str = "sync", width: int = 32):
        self._event_domain, self._count_domain, self._width = event_domain, count_domain, width
        super().__init__({"event": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        width = self._width
        total = Signal(width)
        gray = Signal(width)
        after = Signal(width)
        m.d.comb += after.eq(total + self.event)
        m.d[self._event_domain] += [total.eq(after), gray.eq(after ^ (after >> 1))]

        seen = Signal(width)
        m.submodules.sync_gray = FFSynchronizer(gray, seen, o_domain=self._count_domain)
        # Gray to binary: each bit is the XOR of the Gray bits from it up.
        binary = [None] * width
        binary[width - 1] = seen[width - 1]
        for k in reversed(range(width - 1)):
            binary[k] = binary[k + 1] ^ seen[k]
        m.d[self._count_domain] += self.count.eq(Cat(*binary))
        return m
