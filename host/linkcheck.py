# SPDX-License-Identifier: BSD-2-Clause
"""``espnic link-check``: prove a board's host link with the ``link-check`` design
(:class:`~espnic.boards.linkcheck.LinkCheck`), which sends every good frame back.

Frames of random bytes (every byte value appears, FLAG and ESCAPE included, so
the escaping is exercised both ways) go out one at a time; each must come back
equal within ``timeout``. The result counts what came back equal, different or
not at all, and the payload rate achieved.
"""

import random
import time
from dataclasses import dataclass

from ..hdl.bridge.framing import ESCAPE, FLAG, MAX_FRAME, encode_frame
from .link import FrameLink
from .transport import open_port

__all__ = ["LinkCheckResult", "link_check"]


@dataclass
class LinkCheckResult:
    frames: int            # sent
    echoed: int            # came back equal
    wrong: int             # came back different
    lost: int              # did not come back within the timeout
    payload_bytes: int     # of the frames sent
    seconds: float

    @property
    def ok(self) -> bool:
        return self.echoed == self.frames

    def summary(self) -> str:
        rate = self.payload_bytes / self.seconds if self.seconds else 0.0
        verdict = "OK" if self.ok else "FAILED"
        return (f"link-check {verdict}: {self.echoed}/{self.frames} frames echoed, "
                f"{self.wrong} wrong, {self.lost} lost; {self.payload_bytes:,} payload bytes "
                f"each way in {self.seconds:.2f} s ({rate:,.0f} B/s)")


def _payloads(frames: int, max_size: int, rng: random.Random):
    # The first frame is all FLAGs and ESCAPEs: each becomes two bytes on the wire.
    yield bytes([FLAG, ESCAPE] * (min(max_size, 16) // 2))
    for _ in range(frames - 1):
        yield rng.randbytes(rng.randint(4, max_size))


def link_check(url: str, *, frames: int = 64, max_size: int = 256, seed: int = 1,
               timeout: float = 1.0, port=None) -> LinkCheckResult:
    """Send `frames` frames of 4 to `max_size` random bytes to the device at `url`
    (or on the already open `port`) and check each comes back."""
    if type(frames) is not int or frames < 1:
        raise ValueError(f"frames must be a positive integer, not {frames!r}")
    if type(max_size) is not int or not 4 <= max_size <= MAX_FRAME:
        raise ValueError(f"max_size must be an integer from 4 to {MAX_FRAME}, not {max_size!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    own = port is None
    link = FrameLink(open_port(url, timeout=0.02) if own else port)
    result = LinkCheckResult(frames, 0, 0, 0, 0, 0.0)
    start = time.monotonic()
    try:
        if hasattr(link.port, "reset_input_buffer"):
            link.port.reset_input_buffer()          # bytes from before are no answer
        for payload in _payloads(frames, max_size, random.Random(seed)):
            result.payload_bytes += len(payload)
            link.port.write(encode_frame(payload))
            answer = link.receive_frame(time.monotonic() + timeout)
            if answer is None:
                result.lost += 1
            elif answer == payload:
                result.echoed += 1
            else:
                result.wrong += 1
    finally:
        result.seconds = time.monotonic() - start
        if own:
            link.close()
    return result
