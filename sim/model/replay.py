# SPDX-License-Identifier: BSD-2-Clause
"""Anti-replay window of an inbound SA (RFC 4303 section 3.4.3 and Appendix A).

The state is exactly the SA record's: ``top`` (``seq`` field, the highest
authenticated 64-bit sequence number), ``bitmap`` (``replay_bitmap``: bit ``i``
set means ``top - i`` was received) and ``size`` (``window``). The engine does

1. ``full = window.reconstruct(seq_lo)`` (ESN: Appendix A; otherwise the
   32-bit number itself), or ``None`` when no 64-bit number fits;
2. ``window.check(full)`` **before** the ICV is verified (cheap drop of
   duplicates and left-of-window packets);
3. ``window.update(full)`` only **after** the ICV has been verified, so a
   forged packet can never move the window.
"""

from __future__ import annotations

__all__ = ["ReplayWindow"]

_MASK32 = 2**32 - 1


class ReplayWindow:
    def __init__(self, size: int, top: int = 0, bitmap: int = 0, *, esn: bool = False):
        self.size, self.top, self.esn = size, top, esn
        self.bitmap = bitmap & ((1 << size) - 1)

    def reconstruct(self, seq_lo: int) -> int | None:
        """The full sequence number of a packet carrying ``seq_lo`` (RFC 4303 Appendix A2.2)."""
        if not self.esn:
            return seq_lo
        w = self.size
        tl, th = self.top & _MASK32, self.top >> 32
        if tl >= w - 1:
            # Case A: the window lies within one 2^32 block.
            seqh = th if seq_lo >= tl - w + 1 else th + 1
        else:
            # Case B: the window spans a 2^32 boundary; its bottom is in the block below.
            seqh = th - 1 if seq_lo >= (tl - w + 1) & _MASK32 else th
        if not 0 <= seqh <= _MASK32:
            return None     # below 0 (before the first block) or past 2^64-1
        return (seqh << 32) | seq_lo

    def check(self, full: int | None) -> bool:
        """True if a packet with this sequence number may be new (call before authentication)."""
        if full is None or full == 0:
            return False    # sequence number 0 is never sent (RFC 4303 section 3.3.3)
        if full > self.top:
            return True
        offset = self.top - full
        if offset >= self.size:
            return False    # left of the window
        return not (self.bitmap >> offset) & 1

    def update(self, full: int):
        """Mark ``full`` as received (call only after the ICV has been verified)."""
        if full > self.top:
            shift = full - self.top
            self.bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & ((1 << self.size) - 1)
            self.top = full
        else:
            self.bitmap |= 1 << (self.top - full)
