# SPDX-License-Identifier: BSD-2-Clause
"""The host's view of an :class:`~espnic.hdl.top.EspNic`: registers, channels, frames.

One definition serves the gateware (:class:`~.host.HostBridge` wires each entry to the
device's signal of the same name), the host driver (which packs and unpacks with
the same layouts) and ``docs/registers.md`` (:func:`registers_markdown`).

**Registers** are 32-bit words at word addresses:

* the *capability block* at 0: a magic word, the map's version and every
  construction parameter of the device, so a host that has read it can rebuild
  this whole map (:func:`RegisterMap.from_capabilities`);
* *control and status*: ``pause``, ``miss_to_host`` (read/write bit masks, bit
  p for forwarder p) and ``idle`` (read-only);
* *counters*, read-only: the device's, then each forwarder's, then each
  engine's, then the bridge's own.

**Channels** carry the device's host streams, whose payloads are wide records
(an SA record is 157 bytes): a host frame writes payloads into stream ``index``
of an *in* channel (all or nothing: nothing is offered to the device before the
frame's CRC and length are checked): ``SEND`` one whole payload, ``SEND_MANY``
N >= 1 whole payloads in order, ``SEND_SHORT`` a payload's leading bytes, the
rest zero. Each item an *out* channel's stream offers goes to the host as a
frame of its own. A payload travels as ``ceil(layout.size / 8)`` bytes, the
layout's bits in little-endian order (its first fields first), the padding zero.

Why ``SEND_SHORT`` is a kind of its own: a frame cut short whose last two bytes
happen to be the CRC of the rest (one cut in 65,536) passes the CRC check. A
``SEND`` or ``SEND_MANY`` so cut is still refused, by its length, so an SA record
(which carries a key) is never written with its tail zeroed; only a frame the
host sent short can be padded, and the host sends a record in full.

**Frames** (the payload of one :mod:`.framing` frame) start with a header:
``kind``, ``tag`` and two bytes whose meaning depends on the kind. See
:class:`FrameKind` and :class:`Status`.
"""

import inspect
from dataclasses import dataclass

from amaranth.lib import data, enum

from .framing import MAX_FRAME

__all__ = ["MAGIC", "VERSION", "CAPABILITIES", "FrameKind", "Status", "PacketSource",
           "HEADER_BYTES", "MAX_BODY", "MAX_INJECT",
           "Register", "Channel", "RegisterMap", "nic_parameters", "payload_bytes",
           "BRIDGE_COUNTERS", "BRIDGE_COUNTER_DOCS", "registers_markdown"]

#: Word 0 of the capability block: "ESPN" in ASCII, little-endian.
MAGIC = int.from_bytes(b"ESPN", "little")
#: Word 1: bumped whenever an address, a channel or a frame changes meaning.
VERSION = 4

#: Words 2.. of the capability block: the device's construction parameters, by the
#: keyword of :class:`~espnic.hdl.top.EspNic`. Profiles and ``ethernet`` are encoded
#: (see :meth:`RegisterMap.capability_values`).
CAPABILITIES = ("engines", "ports", "slots", "window", "spi_entries", "spi_ways", "rules",
                "stages", "routes", "nested", "profile", "data_width", "queue_depth",
                "ethernet")
_PROFILES = ("compact", "fast")
_CAPABILITY_WORDS = 32          # room for more parameters without moving anything

#: The host link's own counters, in register order, with what each counts.
BRIDGE_COUNTER_DOCS = {
    "bad_crc": "frames with a bad CRC (or a lone ESCAPE before the closing FLAG)",
    "too_short": "frames shorter than a byte and the CRC",
    "too_long": "frames longer than the decoder takes",
    "bad_command": "frames refused (a status other than OK or DUPLICATE)",
    "duplicates": "resent frames answered DUPLICATE, not executed again",
    "inject_aborted": "injected packets dropped whole (a bad or cut INJECT frame)",
    "frames_dropped": "good frames thrown away unanswered: one that began while the "
                      "frame before was still kept (a resend; the host resends again), "
                      "or an INJECT whose packet found the inject FIFO full",
    "uart_framing_errors": "UART characters with a low stop bit (0 on other links)",
    "uart_overruns": "UART characters lost for want of room (0 on other links)",
}
BRIDGE_COUNTERS = tuple(BRIDGE_COUNTER_DOCS)

HEADER_BYTES = 4
#: The longest body of a frame: what the frame decoder takes (``MAX_FRAME``, 2,048
#: bytes of payload) less the header. The bridge buffers a ``SEND``'s body in a block
#: RAM this deep, so a ``SEND_MANY`` carries up to 13 SA records.
MAX_BODY = MAX_FRAME - HEADER_BYTES
#: The longest packet an ``INJECT`` carries: a whole body.
MAX_INJECT = MAX_BODY


class FrameKind(enum.Enum, shape=8):
    """Byte 0 of a frame. Host to device: ``READ``, ``WRITE``, ``SEND``,
    ``SEND_MANY``, ``SEND_SHORT``, ``INJECT``; device to host: ``ACK`` (one per host
    frame that arrived whole), ``DATA`` (a ``READ``'s words), ``ITEM`` (an item of
    an out channel), ``PACKET``."""
    READ  = 0x01   # bytes 2..3: word address; body: 1 byte, the number of words (1..64)
    WRITE = 0x02   # bytes 2..3: word address; body: one 32-bit word
    SEND  = 0x03   # byte 2: channel, byte 3: stream index; body: the payload
    INJECT = 0x04  # byte 2: ingress port, byte 3: 0; body: the packet (1..MAX_INJECT bytes)
    SEND_MANY = 0x05   # as SEND; body: N >= 1 payloads, offered in order, one ACK
    SEND_SHORT = 0x06  # as SEND; body: the payload's first 1..all bytes, the rest zero
    ACK   = 0x81   # byte 2: Status; byte 3: 0
    DATA  = 0x82   # bytes 2..3: the address read; body: the words
    ITEM  = 0x83   # byte 2: channel, byte 3: stream index; body: the payload
    PACKET = 0x84  # byte 2: port, byte 3: PacketSource; body: the packet, then 1 if aborted else 0


class PacketSource(enum.Enum, shape=8):
    """Byte 3 of a ``PACKET`` frame: where the packet left the device."""
    EGRESS    = 0x00   # byte 2 is the egress port
    EXCEPTION = 0x01   # the exception queue (misses sent to the host); byte 2 is the ingress port


class Status(enum.Enum, shape=8):
    """Byte 2 of an ``ACK``: what became of the host frame with the same tag."""
    OK          = 0x00   # executed (for a SEND kind: the stream took every payload)
    DUPLICATE   = 0x01   # same tag as the frame before: a resent WRITE/SEND/INJECT, not executed again
    BAD_KIND    = 0x02
    BAD_ADDRESS = 0x03   # a READ/WRITE beyond the map, or a WRITE to a read-only word
    BAD_CHANNEL = 0x04   # no such in channel or stream index
    BAD_LENGTH  = 0x05   # body length not what the kind (or the channel's payload) needs
    BAD_PORT    = 0x06   # an INJECT to a port the device does not have


@dataclass(frozen=True)
class Register:
    """A 32-bit word. ``signal``/``index`` name the :class:`EspNic` member it
    reads or writes (``index`` None: not an array); ``value`` is a constant's."""
    name: str
    address: int
    access: str                  # "ro" | "rw"
    doc: str
    signal: str | None = None
    index: int | None = None
    value: int | None = None


@dataclass(frozen=True)
class Channel:
    """An array of ``count`` host streams of the device (its member ``name``)."""
    name: str
    number: int
    direction: str               # "in": host to device; "out": device to host
    count: int
    layout: data.Layout
    doc: str

    @property
    def payload_bytes(self) -> int:
        return payload_bytes(self.layout)


def payload_bytes(layout) -> int:
    return (data.Layout.cast(layout).size + 7) // 8


def nic_parameters(**params) -> dict:
    """``params`` with :class:`EspNic`'s defaults filled in (its signature is the one
    definition of them) and ``ethernet`` as a tuple of bools, one per port."""
    from ..top import EspNic
    signature = inspect.signature(EspNic.__init__)
    known = [name for name in signature.parameters if name != "self"]
    for name in params:
        if name not in known:
            raise TypeError(f"unknown EspNic parameter {name!r}; known: {known}")
    full = {name: params.get(name, signature.parameters[name].default) for name in known}
    if isinstance(full["ethernet"], bool):
        full["ethernet"] = (full["ethernet"],) * full["ports"]
    full["ethernet"] = tuple(full["ethernet"])
    return full


# What each host stream of EspNic is for; the order is the channel numbering.
_CHANNEL_DOCS = {
    "engine_host":     "engine k's SA table: write / read back / delete a slot, read its counters",
    "spi_host":        "forwarder p's SPI table: add / change / remove an entry",
    "policy_host":     "port p's outbound policy rules",
    "route_host":      "the egress route table",
    "fence_host":      "send a fence (engine, slot) through forwarder p",
    "engine_arm":      "arm a live migration out of a slot of engine k",
    "engine_hold":     "hold a slot of engine k for a migration into it",
    "engine_reply":    "engine k's answers to engine_host",
    "spi_reply":       "forwarder p's answers to spi_host",
    "policy_reply":    "port p's answers to policy_host",
    "route_reply":     "answers to route_host",
    "engine_events":   "engine k's SA events (lifetimes, sequence exhaustion)",
    "engine_fenced":   "a fence passed engine k",
    "engine_migrated": "an SA moved into engine k",
}


class RegisterMap:
    """Registers and channels of an :class:`EspNic` built with ``params`` (its
    keyword arguments; omitted ones take its defaults)."""

    def __init__(self, **params):
        from ..top import (ENGINE_COUNTERS, EGRESS_COUNTERS, FABRIC_COUNTERS, LOCAL_COUNTERS,
                           PORT_COUNTERS, host_layouts)
        self.params = p = nic_parameters(**params)
        if p["profile"] not in _PROFILES:
            raise ValueError(f"profile must be one of {_PROFILES}, not {p['profile']!r}")
        forwarders = p["ports"] + p["nested"]
        registers = [Register("magic", 0, "ro", 'capability: "ESPN"', value=MAGIC),
                     Register("version", 1, "ro", "capability: register map version",
                              value=VERSION)]
        for offset, (name, value) in enumerate(self.capability_values().items()):
            registers.append(Register(name, 2 + offset, "ro", f"capability: {name}",
                                      value=value))
        address = _CAPABILITY_WORDS

        def add(name, access, doc, signal=None, index=None):
            nonlocal address
            registers.append(Register(name, address, access, doc, signal, index))
            address += 1

        add("pause", "rw", "bit p: forwarder p's classifier takes no packet", "pause")
        add("miss_to_host", "rw", "bit p: forwarder p's misses go to the exception queue "
            "instead of being dropped", "miss_to_host")
        add("idle", "ro", "bit p: every packet forwarder p took is decided", "idle")
        address = 2 * _CAPABILITY_WORDS
        local = LOCAL_COUNTERS if p["nested"] else ()
        for name in FABRIC_COUNTERS + EGRESS_COUNTERS + local:
            add(name, "ro", "device counter", name)
        for port in range(p["ports"] + p["nested"]):
            add(f"sent[{port}]", "ro", f"packets sent on egress port {port}", "sent", port)
        for f in range(forwarders):
            for name in PORT_COUNTERS:
                add(f"{name}[{f}]", "ro", f"forwarder {f} counter", name, f)
        for k in range(p["engines"]):
            for name in ENGINE_COUNTERS:
                add(f"{name}[{k}]", "ro", f"engine {k} counter", name, k)
        for name, doc in BRIDGE_COUNTER_DOCS.items():
            add(name, "ro", f"host link: {doc}", f"bridge.{name}")
        self.registers = tuple(registers)
        self._by_name = {register.name: register for register in registers}

        layouts = host_layouts(engines=p["engines"], ports=p["ports"], slots=p["slots"],
                               window=p["window"], rules=p["rules"], routes=p["routes"],
                               nested=p["nested"])
        counts = {"engine": p["engines"], "spi": forwarders, "policy": p["ports"],
                  "fence": forwarders, "route": 1}
        channels = []
        for number, (name, doc) in enumerate(_CHANNEL_DOCS.items()):
            unit, kind = name.split("_")
            direction = "out" if kind in ("reply", "events", "fenced", "migrated") else "in"
            channels.append(Channel(name, number, direction, counts[unit], layouts[name], doc))
        if set(layouts) != set(_CHANNEL_DOCS):
            raise AssertionError(f"host streams without a channel: "
                                 f"{sorted(set(layouts) ^ set(_CHANNEL_DOCS))}")
        self.channels = tuple(channels)

    def capability_values(self) -> dict:
        p = self.params
        encoded = {"nested": int(p["nested"]), "profile": _PROFILES.index(p["profile"]),
                   "ethernet": sum(flag << port for port, flag in enumerate(p["ethernet"]))}
        return {name: encoded.get(name, p[name]) for name in CAPABILITIES}

    @classmethod
    def from_capabilities(cls, words) -> "RegisterMap":
        """The map of the device whose capability block (from address 0) is ``words``."""
        words = list(words)
        if len(words) < 2 + len(CAPABILITIES) or words[0] != MAGIC:
            raise ValueError("not an espnic device: the capability block does not start "
                             f"with the magic word {MAGIC:#010x}")
        if words[1] != VERSION:
            raise ValueError(f"register map version {words[1]} is not supported "
                             f"(this host speaks version {VERSION})")
        values = dict(zip(CAPABILITIES, words[2:]))
        values["nested"] = bool(values["nested"])
        values["profile"] = _PROFILES[values["profile"]]
        values["ethernet"] = tuple(bool(values["ethernet"] >> port & 1)
                                   for port in range(values["ports"]))
        return cls(**values)

    @property
    def words(self) -> int:
        """Size of the register space: addresses 0 .. words-1."""
        return self.registers[-1].address + 1

    @property
    def status_registers(self) -> tuple:
        """The read-only registers a device signal drives, in address order: a bridge's
        ``status[i]`` is the i-th."""
        return tuple(r for r in self.registers if r.access == "ro" and r.signal is not None)

    @property
    def control_registers(self) -> tuple:
        """The read/write registers, in address order: a bridge's ``control[i]``."""
        return tuple(r for r in self.registers if r.access == "rw")

    def register(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no register {name!r}") from None

    def channel(self, name: str) -> Channel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(f"no channel {name!r}")


def _layout_fields(layout, prefix=""):
    for name, field in data.Layout.cast(layout):
        shape = field.shape
        if isinstance(shape, data.StructLayout):
            yield from _layout_fields(shape, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field.offset, field.width


def registers_markdown(regmap: RegisterMap) -> str:
    """``docs/registers.md`` for ``regmap`` (generated; a test checks it is current)."""
    params = ", ".join(f"{k}={v!r}" for k, v in regmap.params.items())
    lines = [
        "# espnic register map",
        "",
        "Generated by `python -m espnic.hdl.bridge.regmap` from `hdl/bridge/regmap.py`;",
        "do not edit. Addresses are of 32-bit words. The map depends on the device's",
        "parameters (read them from the capability block); this one is for",
        f"`EspNic({params})`.",
        "",
        "## Frames",
        "",
        "Each frame payload starts with `kind`, `tag`, two header bytes, then the body.",
        "The device answers every host frame that arrives whole with an `ACK` of the",
        "same tag, a good `READ` with a `DATA` frame instead. A `WRITE`, `SEND*` or",
        "`INJECT` whose tag equals that of the whole frame just before it (of any kind)",
        "is acknowledged `DUPLICATE` and not executed again: a host waits for each answer",
        "and resends only the frame it waits for, so it may resend one whose answer it did",
        "not get, and it must give consecutive frames different tags. The device takes",
        "every byte as it arrives, whatever it is sending (full duplex), and keeps one",
        "frame and one answer: a frame that arrives while the answer before it waits",
        "(behind an `ITEM` or `PACKET` frame going out) is executed once that answer is",
        "out; one that begins while a frame is still kept (not yet executed, or a `SEND`",
        "whose stream has not taken its payloads) is dropped unanswered and counted",
        "(`frames_dropped`), as is an `INJECT` whose packet finds the device's inject",
        "FIFO full. A host that waits for each answer meets this only when it resends.",
        "The three `SEND`",
        "kinds offer payloads to an in channel's stream only once the frame is known",
        "whole and its length right, and are acknowledged once every payload was taken:",
        "`SEND` one payload, `SEND_MANY` N of them in order (a burst: all or none),",
        "`SEND_SHORT` a payload's leading bytes, which the bridge pads with zeros (a",
        "`READ` of an SA is about 10 bytes on the wire instead of 165; the host sends",
        "records with keys whole, so a frame cut short can never write one with its",
        "tail zeroed). Device items come as `ITEM` frames (tag 0) whenever the device",
        "has them. `INJECT` puts a packet into an",
        "ingress port as if it had arrived there (whole or not at all: a bad frame's",
        "packet is dropped), and every packet the device sends out of an egress port or",
        "to its exception queue comes to the host as a `PACKET` frame (tag 0).",
        "",
        "| kind | value | header bytes 2..3 | body |",
        "| --- | ---: | --- | --- |",
    ]
    for kind in FrameKind:
        lines.append(f"| `{kind.name}` | {kind.value:#04x} | {_KIND_DOCS[kind][0]} | "
                     f"{_KIND_DOCS[kind][1]} |")
    lines += ["", "| ACK status | value |", "| --- | ---: |"]
    lines += [f"| `{status.name}` | {status.value:#04x} |" for status in Status]
    lines += ["", "## Registers", "", "| address | name | access | value / meaning |",
              "| ---: | --- | --- | --- |"]
    for register in regmap.registers:
        meaning = register.doc if register.value is None else f"{register.doc} = {register.value:#x}"
        lines.append(f"| {register.address:#05x} | `{register.name}` | {register.access} | "
                     f"{meaning} |")
    lines += ["", "## Channels", "",
              "| channel | name | direction | streams | payload bytes | what for |",
              "| ---: | --- | --- | ---: | ---: | --- |"]
    for channel in regmap.channels:
        lines.append(f"| {channel.number} | `{channel.name}` | {channel.direction} | "
                     f"{channel.count} | {channel.payload_bytes} | {channel.doc} |")
    lines += ["", "## Channel payloads", "",
              "Bit offsets within the payload (little-endian bytes).", ""]
    for channel in regmap.channels:
        lines += [f"### {channel.number}: `{channel.name}`", "", "| field | bits | width |",
                  "| --- | ---: | ---: |"]
        lines += [f"| `{name}` | {offset} | {width} |"
                  for name, offset, width in _layout_fields(channel.layout)]
        lines.append("")
    return "\n".join(lines)


_KIND_DOCS = {
    FrameKind.READ:  ("word address (LE)", "1 byte: words to read, 1..64"),
    FrameKind.WRITE: ("word address (LE)", "the word, 4 bytes LE"),
    FrameKind.SEND:  ("channel, stream index", "the payload, exactly its bytes"),
    FrameKind.SEND_MANY: ("channel, stream index",
                          "N >= 1 payloads, exactly N times their bytes; offered in order"),
    FrameKind.SEND_SHORT: ("channel, stream index",
                           "the payload's first 1..all bytes; the bridge adds zeros"),
    FrameKind.INJECT: ("ingress port, 0", f"the packet, 1..{MAX_INJECT} bytes"),
    FrameKind.PACKET: ("port, source (0 egress, 1 exception queue)",
                       "the packet, then a byte: 1 if the device aborted it, else 0"),
    FrameKind.ACK:   ("status, 0", "none"),
    FrameKind.DATA:  ("word address (LE)", "the words, 4 bytes LE each"),
    FrameKind.ITEM:  ("channel, stream index", "the payload"),
}

#: The parameter set ``docs/registers.md`` shows.
DOC_PARAMETERS = {"engines": 2, "ports": 2, "nested": True}


if __name__ == "__main__":
    print(registers_markdown(RegisterMap(**DOC_PARAMETERS)))
