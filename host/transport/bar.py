# SPDX-License-Identifier: BSD-2-Clause
"""``pcie://``: the device's BAR, memory-mapped, as the host's register-access layer.

:class:`MmapBar` maps a PCI resource file (``/sys/bus/pci/devices/D:B:D.F/resourceN``)
and does aligned 32-bit loads and stores on it. :class:`BarLink` gives the methods
of :class:`~espnic.host.link.FrameLink` that :class:`~espnic.host.device.Device`
uses (``read``, ``write``, ``send``, ``inject``, ``items``, ``packets``,
``timeout``, ``retries``, ``close``) over any object with ``read32(offset)`` and
``write32(offset, value)``, laid out by the gateware's own
:class:`~espnic.hdl.bridge.bar.BarLayout`; so the driver, the controller and the
CLI run unchanged on a BAR.

A BAR has no frames to lose: nothing is resent (``retries`` and ``resends`` are
0); ``timeout`` bounds how long :class:`BarLink` polls a doorbell that stays busy.
"""

import mmap
import os
import re
import sys
import time
from urllib.parse import parse_qs, urlsplit

from ...hdl.bridge.bar import DOORBELL, EXTRACT_STATUS, INJECT_BYTES, INJECT_REQUEST, BarLayout
from ...hdl.bridge.regmap import CAPABILITIES, MAX_INJECT, PacketSource, RegisterMap, Status
from ..link import DeviceError, LinkError

__all__ = ["MmapBar", "BarLink", "BarError", "resource_path", "open_bar_link"]

#: Where Linux shows a PCI function's BARs.
SYSFS_DEVICES = "/sys/bus/pci/devices"
_ADDRESS = re.compile(r"(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")


class BarError(OSError):
    """The BAR could not be opened or mapped."""


def resource_path(url: str) -> str:
    """The resource file a ``pcie://`` URL names: ``pcie:///PATH`` is PATH itself;
    ``pcie://DOMAIN:BUS:DEV.FN`` (domain optional, ``?bar=N``, default 0) is
    ``/sys/bus/pci/devices/DOMAIN:BUS:DEV.FN/resourceN``."""
    parts = urlsplit(url)
    if parts.scheme != "pcie":
        raise ValueError(f"not a pcie:// URL: {url!r}")
    options = parse_qs(parts.query)
    unknown = set(options) - {"bar"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} in device URL {url!r}; "
                         f"known: bar")
    if not parts.netloc:
        if "bar" in options:
            raise ValueError(f"bar= goes with a PCI address, not with a file: {url!r}")
        if not parts.path.startswith("/"):
            raise ValueError(f"a pcie:// URL names a PCI address (pcie://0000:01:00.0) or a "
                             f"resource file (pcie:///sys/...), not {url!r}")
        return parts.path
    found = _ADDRESS.fullmatch(parts.netloc)
    if not found or parts.path not in ("", "/"):
        raise ValueError(f"a pcie:// URL names a PCI address DOMAIN:BUS:DEV.FN "
                         f"(pcie://0000:01:00.0), not {url!r}")
    domain, bus, device, function = found.groups()
    bar = options.get("bar", ["0"])[-1]
    if bar not in tuple("012345"):
        raise ValueError(f"bar must be 0..5 in device URL {url!r}, not {bar!r}")
    name = f"{(domain or '0000').lower()}:{bus.lower()}:{device.lower()}.{function}"
    return f"{SYSFS_DEVICES}/{name}/resource{bar}"


class MmapBar:
    """A memory-mapped file (a PCI resource file) read and written a 32-bit word at a
    time: ``read32(offset)``, ``write32(offset, value)``, little-endian as PCI is.

    ``size``: bytes to map (default: the file's size, which for a resource file is
    the BAR's). Offsets must be multiples of 4 inside the mapping.
    """

    def __init__(self, path, size: int | None = None):
        path = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_SYNC", 0))
        except FileNotFoundError:
            raise BarError(f"no such BAR: {path} does not exist (is the device there, "
                           f"and its address and bar number right? see lspci -D)") from None
        except PermissionError:
            raise BarError(f"no permission to map {path}: mapping a BAR needs root or write "
                           f"access to the resource file") from None
        except OSError as error:
            raise BarError(f"cannot open {path}: {error.strerror}") from None
        try:
            available = os.fstat(fd).st_size
            if size is None:
                size = available
            if type(size) is not int or size <= 0 or size % 4:
                raise BarError(f"size must be a positive multiple of 4 bytes, not {size!r} "
                               f"(mapping {path})")
            if available and size > available:
                raise BarError(f"{path} has {available} bytes, fewer than the {size} to map")
            try:
                self._map = mmap.mmap(fd, size, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as error:
                raise BarError(f"cannot map {size} bytes of {path}: {error.strerror}") from None
        finally:
            os.close(fd)
        self.path, self.size = path, size
        # A cast memoryview makes each access one aligned 32-bit load or store, as a
        # device register needs (bytes-wise copies could split it).
        self._words = memoryview(self._map).cast("I")
        if self._words.itemsize != 4:
            raise BarError("this platform's unsigned int is not 32 bits")
        self._swap = sys.byteorder == "big"

    def _index(self, offset: int) -> int:
        if type(offset) is not int:
            raise TypeError(f"offset must be an integer, not {offset!r}")
        if offset % 4:
            raise ValueError(f"offset {offset:#x} is not a multiple of 4")
        if not 0 <= offset < self.size:
            raise ValueError(f"offset {offset:#x} is outside the BAR (0..{self.size - 4:#x})")
        return offset // 4

    def read32(self, offset: int) -> int:
        value = self._words[self._index(offset)]
        return int.from_bytes(value.to_bytes(4, "little"), "big") if self._swap else value

    def write32(self, offset: int, value: int):
        index = self._index(offset)
        if type(value) is not int or not 0 <= value < 1 << 32:
            raise ValueError(f"value must be a 32-bit unsigned integer, not {value!r}")
        self._words[index] = int.from_bytes(value.to_bytes(4, "little"), "big") \
            if self._swap else value

    def close(self):
        if self._map is not None:
            self._words.release()
            self._map.close()
            self._map = None

    def __repr__(self):
        return f"MmapBar({self.path!r}, size={self.size})"


def _words_of(payload: bytes) -> list[int]:
    padded = bytes(payload) + bytes(-len(payload) % 4)
    return [int.from_bytes(padded[n:n + 4], "little") for n in range(0, len(padded), 4)]


class BarLink:
    """:class:`~espnic.host.link.FrameLink`'s register-access methods over ``bar``
    (``read32``/``write32``; ``close()`` if it has one).

    ``timeout``: seconds a doorbell may stay busy (its stream not taking the
    payload, the inject buffer not emptying) before :class:`LinkError`.
    """

    retries = 0
    resends = 0

    def __init__(self, bar, *, timeout: float = 1.0):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.bar, self.timeout = bar, timeout
        words = [bar.read32(4 * n) for n in range(2 + len(CAPABILITIES))]
        self.regmap = RegisterMap.from_capabilities(words)
        self.layout = BarLayout(self.regmap)
        size = getattr(bar, "size", None)
        if size is not None and size < self.layout.size:
            raise LinkError(f"the BAR has {size} bytes; this device's layout needs "
                            f"{self.layout.size} (is it the right BAR?)")

    def close(self):
        close = getattr(self.bar, "close", None)
        if close is not None:
            close()

    # -- registers -------------------------------------------------------------------------

    def read(self, address: int, words: int) -> list[int]:
        if words < 1 or address < 0 or address + words > self.regmap.words:
            raise DeviceError(Status.BAD_ADDRESS, f"READ of {words} words at {address:#x}")
        return [self.bar.read32(4 * (address + n)) for n in range(words)]

    def write(self, address: int, word: int) -> Status:
        register = next((r for r in self.regmap.registers if r.address == address), None)
        if register is None or register.access != "rw":
            raise DeviceError(Status.BAD_ADDRESS, f"WRITE at {address:#x}")
        self.bar.write32(4 * address, word & 0xffffffff)
        return Status.OK

    # -- in channels and the inject buffer -------------------------------------------------

    def _until_free(self, doorbell: int, what: str):
        """Poll ``doorbell`` until it is not busy; its last state."""
        deadline = time.monotonic() + self.timeout
        while True:
            state = DOORBELL.from_bits(self.bar.read32(4 * doorbell))
            if not state.busy:
                return state
            if time.monotonic() >= deadline:
                raise LinkError(f"{what}: still busy after {self.timeout} s")

    def send(self, channel: int, index: int, payload: bytes) -> Status:
        what = f"SEND to channel {channel}[{index}]"
        try:
            window = self.layout.in_window(channel)
        except KeyError:
            raise DeviceError(Status.BAD_CHANNEL, what) from None
        if not 0 <= index < window.channel.count:
            raise DeviceError(Status.BAD_CHANNEL, what)
        if len(payload) != window.channel.payload_bytes:
            raise DeviceError(Status.BAD_LENGTH, what)
        self._until_free(window.doorbell, what)
        for n, word in enumerate(_words_of(payload)):
            self.bar.write32(4 * (window.payload + n), word)
        self.bar.write32(4 * window.doorbell, index)
        # Done when the stream has taken it, as a frame's ACK says.
        if self._until_free(window.doorbell, what).refused:
            raise DeviceError(Status.BAD_CHANNEL, what)
        return Status.OK

    def inject(self, port: int, packet: bytes) -> Status:
        what = f"INJECT into port {port}"
        if not 0 <= port < self.regmap.params["ports"]:
            raise DeviceError(Status.BAD_PORT, what)
        if not 1 <= len(packet) <= min(MAX_INJECT, INJECT_BYTES):
            raise DeviceError(Status.BAD_LENGTH, what)
        layout = self.layout
        self._until_free(layout.inject_doorbell, what)
        for n, word in enumerate(_words_of(packet)):
            self.bar.write32(4 * (layout.inject_buffer + n), word)
        request = INJECT_REQUEST.const({"length": len(packet), "port": port}).as_bits()
        self.bar.write32(4 * layout.inject_doorbell, request)
        # Accepted: busy until the packet is in the ingress (the next inject waits).
        if DOORBELL.from_bits(self.bar.read32(4 * layout.inject_doorbell)).refused:
            raise DeviceError(Status.BAD_LENGTH, what)
        return Status.OK

    # -- out channels and the extract buffer -----------------------------------------------

    def _take_items(self) -> list:
        taken = []
        for window in self.layout.out_windows:
            waiting = self.bar.read32(4 * window.status)
            for k, start in enumerate(window.payload):
                if waiting >> k & 1:
                    words = [self.bar.read32(4 * (start + n)) for n in range(window.words)]
                    payload = b"".join(w.to_bytes(4, "little") for w in words)
                    self.bar.write32(4 * window.pop, k)
                    taken.append((window.channel.number, k,
                                  payload[:window.channel.payload_bytes]))
        return taken

    def _take_packet(self):
        layout = self.layout
        status = EXTRACT_STATUS.from_bits(self.bar.read32(4 * layout.extract_status))
        if not status.waiting:
            return None
        length = self.bar.read32(4 * layout.extract_length)
        words = [self.bar.read32(4 * (layout.extract_buffer + n))
                 for n in range((length + 3) // 4)]
        self.bar.write32(4 * layout.extract_pop, 1)
        packet = b"".join(w.to_bytes(4, "little") for w in words)[:length]
        return (PacketSource(int(status.source)), int(status.port), packet,
                bool(status.aborted or status.truncated))

    def _poll(self, take, wait: float) -> list:
        deadline = time.monotonic() + wait
        got = []
        while True:
            more = take()
            got += more
            if not more and (got or time.monotonic() >= deadline):
                return got

    def items(self, *, wait: float = 0.0) -> list:
        """``(channel, index, payload)`` of every item the device offers now; polls up
        to ``wait`` seconds for the first."""
        return self._poll(self._take_items, wait)

    def packets(self, *, wait: float = 0.0) -> list:
        """``(PacketSource, port, packet, aborted)`` of every packet the device has for
        the host now; polls up to ``wait`` seconds for the first (a packet cut at the
        buffer's end comes as aborted)."""
        return self._poll(lambda: [p] if (p := self._take_packet()) else [], wait)


def open_bar_link(url: str, *, timeout: float = 1.0) -> BarLink:
    """A :class:`BarLink` on the BAR a ``pcie://`` URL names."""
    return BarLink(MmapBar(resource_path(url)), timeout=timeout)
