# SPDX-License-Identifier: BSD-2-Clause
"""The device driver: one API over every link to an espnic device.

The driver knows nothing the device does not tell it: it reads the capability
block, rebuilds the :class:`~espnic.hdl.bridge.regmap.RegisterMap` from it, and
packs and unpacks every register and channel payload with the gateware's own
layouts.
"""

import collections
import time

from amaranth.lib import data

from ..hdl.bridge.host import MAX_READ_WORDS
from ..hdl.bridge.regmap import CAPABILITIES, MAX_BODY, MAX_INJECT, RegisterMap
from ..hdl.engine.sa import SaConfig, sa_layout
from ..hdl.engine.sa_table import HostOp, control_record
from ..hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus
from .link import FrameLink, LinkError
from .transport import open_link

__all__ = ["Device", "LinkError", "layout_values"]


class Device:
    """An espnic device behind ``link`` (a :class:`FrameLink`)."""

    def __init__(self, link: FrameLink):
        self.link = link
        self.regmap = RegisterMap.from_capabilities(link.read(0, 2 + len(CAPABILITIES)))
        self._items = collections.deque()      # taken from the link while awaiting a reply

    @classmethod
    def open(cls, url: str, *, timeout: float = 1.0, retries: int = 3) -> "Device":
        """The device behind ``url`` (any URL :func:`~.transport.open_link` takes)."""
        return cls(open_link(url, timeout=timeout, retries=retries))

    def close(self):
        self.link.close()

    @property
    def params(self) -> dict:
        """The device's construction parameters, from its capability block."""
        return dict(self.regmap.params)

    # -- registers --------------------------------------------------------------------------

    def read(self, name: str) -> int:
        return self.link.read(self.regmap.register(name).address, 1)[0]

    def write(self, name: str, value: int):
        register = self.regmap.register(name)
        if register.access != "rw":
            raise ValueError(f"register {name!r} is read-only")
        self.link.write(register.address, value)

    def counters(self) -> dict:
        """Every read-only register that is not a capability, by name, read in bursts."""
        wanted = [r for r in self.regmap.registers if r.access == "ro" and r.value is None]
        values = {}
        start = 0
        while start < len(wanted):
            first = wanted[start].address
            run = [r for r in wanted[start:] if r.address < first + MAX_READ_WORDS]
            words = self.link.read(first, run[-1].address - first + 1)
            values.update({r.name: words[r.address - first] for r in run})
            start += len(run)
        return values

    # -- channels ---------------------------------------------------------------------------

    def _payload(self, channel: str, index: int, fields) -> tuple:
        """The in channel named ``channel`` and ``fields`` packed as its payload bytes."""
        described = self.regmap.channel(channel)
        if described.direction != "in":
            raise ValueError(f"channel {channel!r} goes from the device to the host")
        if not 0 <= index < described.count:
            raise ValueError(f"channel {channel!r} has streams 0..{described.count - 1}, "
                             f"not {index}")
        layout = data.Layout.cast(described.layout)
        bits = fields if isinstance(fields, int) else layout.const(fields).as_bits()
        return described, bits.to_bytes(described.payload_bytes, "little")

    def send(self, channel: str, index: int, fields) -> None:
        """Offer ``fields`` (a dict for the channel's layout, or its bits as an int) to
        stream ``index`` of in channel ``channel``.

        The payload's trailing zero bytes stay home (a ``SEND_SHORT``: a ``READ`` of
        an SA goes as a few bytes instead of 157), except for a payload with a key
        (an ``engine_host`` ``WRITE`` or ``IMPORT``): that goes whole, so a frame
        cut short is refused by its length and never writes a record with its tail
        zeroed (see ``SEND_SHORT`` in :mod:`espnic.hdl.bridge.regmap`)."""
        described, payload = self._payload(channel, index, fields)
        short = payload.rstrip(b"\0") or payload[:1]
        # A link without short SENDs (a BAR's, where bytes cost no wire time) gets the
        # whole payload.
        send_short = getattr(self.link, "send_short", None)
        if len(short) < len(payload) and send_short is not None \
                and not self._carries_key(described, payload):
            send_short(described.number, index, short)
        else:
            self.link.send(described.number, index, payload)

    @staticmethod
    def _carries_key(channel, payload: bytes) -> bool:
        if channel.name != "engine_host":
            return False
        op = data.Layout.cast(channel.layout).from_bits(int.from_bytes(payload, "little")).op
        return op in (HostOp.WRITE, HostOp.IMPORT)

    def send_many(self, channel: str, index: int, many) -> None:
        """Offer each of ``many`` (as :meth:`send` takes them) to stream ``index`` of in
        channel ``channel``, in order, in as few ``SEND_MANY`` frames as they fit;
        each frame's payloads are taken all or none."""
        payloads = [self._payload(channel, index, fields) for fields in many]
        if not payloads:
            return
        described = payloads[0][0]
        if not hasattr(self.link, "send_many"):     # a link without bursts (a BAR's)
            for _, payload in payloads:
                self.link.send(described.number, index, payload)
            return
        per_frame = MAX_BODY // described.payload_bytes
        for start in range(0, len(payloads), per_frame):
            self.link.send_many(described.number, index,
                                [payload for _, payload in payloads[start:start + per_frame]])

    def inject(self, port: int, packet: bytes) -> None:
        """Put ``packet`` (an IP packet, or a frame on an Ethernet port) into ingress
        ``port`` as if it had arrived there."""
        if not 0 <= port < self.regmap.params["ports"]:
            raise ValueError(f"the device has ports 0..{self.regmap.params['ports'] - 1}, "
                             f"not {port}")
        if not 1 <= len(packet) <= MAX_INJECT:
            raise ValueError(f"a packet to inject must be 1..{MAX_INJECT} bytes, "
                             f"not {len(packet)}")
        self.link.inject(port, bytes(packet))

    def packets(self, *, wait: float = 0.0) -> list:
        """``(PacketSource, port, packet, aborted)`` of every packet the device has sent
        the host (from an egress port, or its exception queue) so far."""
        return self.link.packets(wait=wait)

    def items(self, *, wait: float = 0.0) -> list:
        """``(channel name, index, payload)`` of the device's items so far that no
        :meth:`request` took as its reply (events, fence and migration reports),
        payloads unpacked with the channel's layout; waits up to ``wait`` seconds
        for the first."""
        if not self._items:
            self._items.extend(self._unpack(self.link.items(wait=wait)))
        taken = list(self._items)
        self._items.clear()
        return taken

    def _unpack(self, items) -> list:
        by_number = {c.number: c for c in self.regmap.channels}
        unpacked = []
        for number, index, payload in items:
            channel = by_number.get(number)
            if channel is None or channel.direction != "out":
                raise LinkError(f"item for unknown channel {number}")
            bits = int.from_bytes(payload, "little")
            unpacked.append((channel.name, index, data.Layout.cast(channel.layout)
                             .from_bits(bits)))
        return unpacked

    def request(self, channel: str, index: int, fields, *, reply: str,
                wait: float | None = None):
        """:meth:`send`, then the item of out channel ``reply`` (stream ``index``) that
        answers it; other items that come meanwhile stay for :meth:`items`. ``wait``:
        seconds to wait for the reply (default: what the link waits for an answer
        with all its retries)."""
        self.send(channel, index, fields)
        if wait is None:
            wait = self.link.timeout * (self.link.retries + 1)
        deadline = time.monotonic() + wait
        while True:
            for n, item in enumerate(self._items):
                if item[:2] == (reply, index):
                    del self._items[n]
                    return item[2]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkError(f"no {reply}[{index}] item in answer to {channel}[{index}] "
                                f"within {wait:g} s")
            self._items.extend(self._unpack(self.link.items(wait=min(remaining, 0.05))))

    # -- SAs and tables -------------------------------------------------------------------

    def _check(self, what: str, value: int, count: int):
        if type(value) is not int or not 0 <= value < count:
            raise ValueError(f"{what} must be 0..{count - 1} on this device, not {value!r}")

    def _sa_write(self, slot: int, sa) -> dict:
        self._check("slot", slot, self.params["slots"])
        if isinstance(sa, SaConfig):
            sa = sa.to_record(sa_layout(self.params["window"]))
        if isinstance(sa, data.Const):
            sa = control_record(sa)
        return {"op": HostOp.WRITE, "slot": slot, "record": sa}

    def write_sa(self, engine: int, slot: int, sa) -> None:
        """Write SA ``sa`` (an :class:`SaConfig`, a full SA record, or the fields the
        table keeps as a dict) into ``slot`` of ``engine``, its counters cleared. The
        SEND is whole or not at all; the key cannot be read back."""
        self._check("engine", engine, self.params["engines"])
        self.send("engine_host", engine, self._sa_write(slot, sa))

    def write_sas(self, engine: int, sas) -> None:
        """Write each ``(slot, sa)`` of ``sas`` as :meth:`write_sa` does, in order, in
        bursts: as many records a frame as fit (13), each frame all or nothing. On an
        error the frames before the failing one are written."""
        self._check("engine", engine, self.params["engines"])
        self.send_many("engine_host", engine, [self._sa_write(slot, sa) for slot, sa in sas])

    def read_sa(self, engine: int, slot: int):
        """The SA in ``slot`` of ``engine`` as the table gives it back: ``record`` (key
        and salt read as zero) and ``counters``."""
        self._check("engine", engine, self.params["engines"])
        self._check("slot", slot, self.params["slots"])
        return self.request("engine_host", engine, {"op": HostOp.READ, "slot": slot},
                            reply="engine_reply")

    def delete_sa(self, engine: int, slot: int) -> None:
        """Zeroize ``slot`` of ``engine``: record, key and counters."""
        self._check("engine", engine, self.params["engines"])
        self._check("slot", slot, self.params["slots"])
        self.send("engine_host", engine, {"op": HostOp.DELETE, "slot": slot})

    def spi_entry(self, forwarder: int, op: SpiOp, key: int, engine: int = 0,
                  slot: int = 0) -> SpiStatus:
        """Insert, replace or remove forwarder ``forwarder``'s SPI-table entry for
        ``key`` (an :data:`SPI_KEY` value), pointing at ``slot`` of ``engine``."""
        self._check("forwarder", forwarder, self.params["ports"] + self.params["nested"])
        if isinstance(key, int):
            key = SPI_KEY.from_bits(key)
        reply = self.request("spi_host", forwarder, {
            "op": op, "key": key, "value": {"engine": engine, "slot": slot}},
            reply="spi_reply")
        return SpiStatus(reply.status)

    def write_policy(self, port: int, index: int, rule: dict) -> bool:
        """Write rule ``index`` of port ``port``'s policy table (the table's ``WRITE``
        rule fields; addresses as ints or 16 bytes in wire order); False: refused."""
        self._check("port", port, self.params["ports"])
        self._check("rule index", index, self.params["rules"])
        reply = self.request("policy_host", port,
                             {"index": index, "rule": layout_values(rule)}, reply="policy_reply")
        return bool(reply.ok)

    def write_route(self, index: int, **route) -> bool:
        """Write route ``index`` (``valid``, ``ipv6``, ``dst``, ``length``, ``port``);
        False: refused."""
        self._check("route index", index, self.params["routes"])
        reply = self.request("route_host", 0, {"index": index, **layout_values(route)},
                             reply="route_reply")
        return bool(reply.ok)


def layout_values(fields: dict) -> dict:
    """Addresses given as bytes (wire order) as the ints the layouts take."""
    return {name: int.from_bytes(value, "little") if isinstance(value, bytes) else value
            for name, value in fields.items()}
