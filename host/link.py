# SPDX-License-Identifier: BSD-2-Clause
"""Host side of the frame protocol of ``hdl/bridge/regmap.py``, over a byte port.

:class:`FrameLink` sends one frame at a time and waits for its answer (an ``ACK``,
or ``DATA`` for a ``READ``); with no answer in ``timeout`` it resends the same
frame with the same tag, which the device acknowledges ``DUPLICATE`` if it had
executed it already, so a lost answer never executes a ``WRITE``, a ``SEND`` (of
any kind: no payload of a ``SEND_MANY`` either) or an ``INJECT`` twice. ``ITEM``
and ``PACKET`` frames that arrive meanwhile are queued for :meth:`items` and
:meth:`packets`.
Frame codec and CRC are the gateware module's own (:mod:`espnic.hdl.bridge.framing`).
"""

import collections
import time

from ..hdl.bridge.framing import FrameDecoderModel, encode_frame
from ..hdl.bridge.regmap import HEADER_BYTES, MAX_BODY, FrameKind, PacketSource, Status

__all__ = ["FrameLink", "LinkError", "DeviceError"]


class LinkError(IOError):
    """The device did not answer (after all retries)."""


class DeviceError(RuntimeError):
    """The device answered, refusing the frame."""

    def __init__(self, status: Status, what: str):
        self.status = status
        super().__init__(f"device refused {what}: {status.name}")


class FrameLink:
    """Frames over ``port`` (pyserial's ``read``/``write`` with a short read timeout).

    ``timeout``: seconds to wait for an answer before resending; ``retries``:
    resends before :class:`LinkError`.
    """

    def __init__(self, port, *, timeout: float = 1.0, retries: int = 3):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if type(retries) is not int or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        self.port, self.timeout, self.retries = port, timeout, retries
        self._decoder = FrameDecoderModel()
        self._frames = collections.deque()     # decoded, not yet looked at
        self._items = collections.deque()
        self._packets = collections.deque()
        self._tag = 0
        self.resends = 0

    def close(self):
        self.port.close()

    # -- receiving ------------------------------------------------------------------------

    def receive_frame(self, deadline: float) -> bytes | None:
        """The next whole frame from the device (its payload, as it came: answers, items
        and packets alike), or None at ``deadline`` (a :func:`time.monotonic` time)."""
        while not self._frames:
            if time.monotonic() >= deadline:
                return None
            # What is there, or one byte: pyserial's read(n) waits for all n bytes
            # (or its timeout), which would cost every answer the whole timeout.
            chunk = self.port.read(max(1, getattr(self.port, "in_waiting", 0)))
            if chunk:
                self._frames.extend(self._decoder.feed(chunk))
        return self._frames.popleft()

    def _dispatch(self, frame: bytes) -> bytes | None:
        """An answer frame is returned; items are queued; anything else is dropped."""
        if len(frame) < HEADER_BYTES:
            return None
        if frame[0] == FrameKind.ITEM.value:
            self._items.append((frame[2], frame[3], frame[HEADER_BYTES:]))
            return None
        if frame[0] == FrameKind.PACKET.value and len(frame) > HEADER_BYTES:
            self._packets.append((PacketSource(frame[3]), frame[2],
                                  frame[HEADER_BYTES:-1], bool(frame[-1])))
            return None
        return frame

    def _drain(self, queue, wait: float) -> list:
        deadline = time.monotonic() + wait
        while not queue:
            frame = self.receive_frame(deadline)
            if frame is None:
                break
            self._dispatch(frame)
        # Whatever has arrived goes too: frames decoded already, bytes in the port.
        while True:
            while self._frames:
                self._dispatch(self._frames.popleft())
            waiting = getattr(self.port, "in_waiting", 0)
            if not waiting:
                break
            self._frames.extend(self._decoder.feed(self.port.read(waiting)))
        taken = list(queue)
        queue.clear()
        return taken

    def items(self, *, wait: float = 0.0) -> list:
        """``(channel, index, payload)`` of every item that has arrived; waits up to
        ``wait`` seconds for the first."""
        return self._drain(self._items, wait)

    def packets(self, *, wait: float = 0.0) -> list:
        """``(PacketSource, port, packet, aborted)`` of every packet that has
        arrived; waits up to ``wait`` seconds for the first."""
        return self._drain(self._packets, wait)

    # -- requests -------------------------------------------------------------------------

    def request(self, kind: FrameKind, b2: int, b3: int, body: bytes = b"") -> bytes:
        """Send a frame and return its answer (header included)."""
        if self._tag == 0 and kind is not FrameKind.READ:
            # A new session's first WRITE/SEND/INJECT could carry the tag of the last
            # session's last frame and be taken for its resend: a READ with tag 0,
            # which no other frame uses, comes first.
            self._exchange(FrameKind.READ, 0, 0, 0, bytes([1]))
        self._tag = self._tag % 255 + 1           # 1..255; consecutive frames differ
        return self._exchange(kind, self._tag, b2, b3, body)

    def _exchange(self, kind: FrameKind, tag: int, b2: int, b3: int, body: bytes) -> bytes:
        wire = encode_frame(bytes([kind.value, tag, b2, b3]) + bytes(body))
        for attempt in range(self.retries + 1):
            if attempt:
                self.resends += 1
            self.port.write(wire)
            deadline = time.monotonic() + self.timeout
            while (answer := self.receive_frame(deadline)) is not None:
                answer = self._dispatch(answer)
                if answer is not None and answer[1] == tag:
                    return answer
        raise LinkError(f"no answer to a {kind.name} frame after {self.retries + 1} tries "
                        f"of {self.timeout} s")

    def _acked(self, answer: bytes, what: str) -> Status:
        if answer[0] != FrameKind.ACK.value:
            raise LinkError(f"unexpected answer kind {answer[0]:#04x} to {what}")
        status = Status(answer[2])
        if status not in (Status.OK, Status.DUPLICATE):
            raise DeviceError(status, what)
        return status

    def read(self, address: int, words: int) -> list[int]:
        answer = self.request(FrameKind.READ, address & 0xff, address >> 8, bytes([words]))
        if answer[0] == FrameKind.ACK.value:
            raise DeviceError(Status(answer[2]), f"READ of {words} words at {address:#x}")
        body = answer[HEADER_BYTES:]
        if answer[0] != FrameKind.DATA.value or len(body) != 4 * words:
            raise LinkError(f"malformed DATA answer to a READ at {address:#x}")
        return [int.from_bytes(body[4 * n:4 * n + 4], "little") for n in range(words)]

    def write(self, address: int, word: int) -> Status:
        answer = self.request(FrameKind.WRITE, address & 0xff, address >> 8,
                              (word & 0xffffffff).to_bytes(4, "little"))
        return self._acked(answer, f"WRITE at {address:#x}")

    def send(self, channel: int, index: int, payload: bytes) -> Status:
        """One whole payload (exactly the channel's payload bytes) into stream
        ``index`` of channel ``channel``."""
        answer = self.request(FrameKind.SEND, channel, index, payload)
        return self._acked(answer, f"SEND to channel {channel}[{index}]")

    def send_short(self, channel: int, index: int, payload: bytes) -> Status:
        """A payload's first 1.. bytes; the device takes the rest as zeros. Not for a
        payload whose tail matters if lost (see ``SEND_SHORT`` in the register map)."""
        if not payload:
            raise ValueError("a short SEND carries at least one byte")
        answer = self.request(FrameKind.SEND_SHORT, channel, index, payload)
        return self._acked(answer, f"SEND_SHORT to channel {channel}[{index}]")

    def send_many(self, channel: int, index: int, payloads) -> Status:
        """Whole payloads (each exactly the channel's payload bytes) in one frame, to be
        offered in order: all of them, or none if the frame is refused or lost."""
        payloads = [bytes(payload) for payload in payloads]
        if not payloads:
            raise ValueError("a SEND_MANY carries at least one payload")
        if len({len(payload) for payload in payloads}) != 1:
            raise ValueError("the payloads of a SEND_MANY must all be the same length")
        body = b"".join(payloads)
        if len(body) > MAX_BODY:
            raise ValueError(f"{len(payloads)} payloads of {len(payloads[0])} bytes do not "
                             f"fit a frame (at most {MAX_BODY} bytes)")
        answer = self.request(FrameKind.SEND_MANY, channel, index, body)
        return self._acked(answer, f"SEND_MANY of {len(payloads)} to channel "
                                   f"{channel}[{index}]")

    def inject(self, port: int, packet: bytes) -> Status:
        answer = self.request(FrameKind.INJECT, port, 0, packet)
        return self._acked(answer, f"INJECT into port {port}")
