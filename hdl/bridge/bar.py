# SPDX-License-Identifier: BSD-2-Clause
"""``BarBridge``: the device's :class:`~.regmap.RegisterMap` on a 32-bit memory-mapped
bus, the register side of a PCIe endpoint's BAR.

No board of this project has a PCIe endpoint: :class:`BarBus` is what an endpoint
core's BAR interface would drive (a dword address, a write strobe with its word,
a read strobe answered by a word one cycle later), and ``BarBridge`` is tested in
simulation with the real host driver on it (``tests/test_bar.py``).

The layout (:class:`BarLayout`, byte offset = 4 x word address; ``docs/bar.md``
is generated from it by :func:`bar_markdown`) is defined here once, from the
register map, for the gateware, the host (``host/transport/bar.py``) and the docs:

* the **registers** at their word addresses (the capability block at 0, so a host
  rebuilds everything from it), read-only ones counted when written;
* the BAR's own **counters**: ``bad_reads`` (reads of undefined offsets, which
  return 0) and ``bad_writes`` (writes that did nothing: to a read-only or
  undefined offset, a payload word while its offer waits, a refused doorbell or
  pop), also readable as the register ``bad_command``;
* a **window per in channel**: its payload words (write-only: a read returns 0,
  never what was written: SA records carry keys) and a doorbell. Writing ``k`` to
  the doorbell offers the whole payload to stream ``k`` (all or nothing: nothing
  reaches a stream before its doorbell); once the stream has taken it, the
  payload words are cleared, so the next payload never carries words of this one.
  A doorbell read is :data:`DOORBELL`: ``busy`` (an offer waits for its stream)
  and ``refused`` (the last ring named no stream, or came while busy);
* a **window per out channel**: ``status`` (bit k: stream k has an item), ``pop``
  (writing ``k`` takes stream k's item) and each stream's payload words (the item
  it offers; 0 while it has none). Reads have no side effects;
* the **packet mailbox**: ``inject_buffer`` (write-only) and ``inject_doorbell``
  (write :data:`INJECT_REQUEST`: the packet's length and ingress port; read
  :data:`DOORBELL`), and ``extract_status`` (:data:`EXTRACT_STATUS`),
  ``extract_length``, ``extract_buffer`` and ``extract_pop`` for the packets the
  device sends to the host (egress ports first, in order, then the exception
  queue, a whole packet at a time).
"""

import math
from dataclasses import dataclass

from amaranth import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .host import device_side
from .regmap import DOC_PARAMETERS, MAX_INJECT, Channel, PacketSource, RegisterMap

__all__ = ["BarBus", "BarLayout", "BarBridge", "InWindow", "OutWindow", "DOORBELL",
           "INJECT_REQUEST", "EXTRACT_STATUS", "INJECT_BYTES", "EXTRACT_BYTES",
           "bar_markdown"]

#: Bytes of the inject buffer: the longest packet an ``INJECT`` frame carries fits.
INJECT_BYTES = 2048
#: Bytes of the extract buffer: an injected packet of :data:`~.regmap.MAX_INJECT`
#: bytes after the largest ESP encapsulation fits; a longer one is cut (``truncated``).
EXTRACT_BYTES = 4096
_BEAT_BYTES = 16
#: Windows start at a multiple of this many words (16 bytes), for legible offsets.
_WINDOW_ALIGN = 4

#: An in channel's doorbell, or the inject doorbell, when read.
DOORBELL = data.FlexibleLayout(32, {"busy": data.Field(1, 0), "refused": data.Field(1, 1)})
#: What the host writes to ``inject_doorbell``.
INJECT_REQUEST = data.FlexibleLayout(32, {"length": data.Field(16, 0),
                                          "port": data.Field(8, 16)})
#: ``extract_status``: ``waiting`` (a packet is in the buffer), ``aborted`` (the
#: device cut it short), ``truncated`` (longer than the buffer: the rest is gone),
#: the port and the :class:`~.regmap.PacketSource`.
EXTRACT_STATUS = data.FlexibleLayout(32, {"waiting": data.Field(1, 0),
                                          "aborted": data.Field(1, 1),
                                          "truncated": data.Field(1, 2),
                                          "port": data.Field(8, 8),
                                          "source": data.Field(8, 16)})


class BarBus(wiring.Signature):
    """A 32-bit memory-mapped bus, from the side that drives it (an endpoint core).

    ``address`` is a word address (byte offset / 4); only whole, aligned words
    travel (no byte enables). At most one access per cycle: ``write`` with
    ``write_data``, or ``read``, answered the next cycle by ``read_data`` with
    ``read_valid``. A read has no side effects.
    """

    def __init__(self, address_width: int):
        if type(address_width) is not int or not 1 <= address_width <= 30:
            raise ValueError(f"address_width must be an integer from 1 to 30, "
                             f"not {address_width!r}")
        self.address_width = address_width
        super().__init__({
            "address":    Out(address_width),
            "write":      Out(1),
            "write_data": Out(32),
            "read":       Out(1),
            "read_data":  In(32),
            "read_valid": In(1),
        })

    def __eq__(self, other):
        return type(other) is BarBus and other.address_width == self.address_width

    def __repr__(self):
        return f"BarBus({self.address_width})"


@dataclass(frozen=True)
class InWindow:
    """An in channel's window: ``words`` payload words from ``payload``, then
    ``doorbell`` (word addresses)."""
    channel: Channel
    payload: int
    words: int
    doorbell: int


@dataclass(frozen=True)
class OutWindow:
    """An out channel's window: ``status``, ``pop``, and stream k's ``words``
    payload words from ``payload[k]`` (word addresses)."""
    channel: Channel
    status: int
    pop: int
    payload: tuple
    words: int


def _payload_words(channel: Channel) -> int:
    return (channel.payload_bytes + 3) // 4


def _align(address: int, to: int) -> int:
    return (address + to - 1) // to * to


class BarLayout:
    """Where everything of ``regmap``'s device sits in its BAR (word addresses)."""

    def __init__(self, regmap: RegisterMap):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {regmap!r}")
        self.regmap = regmap
        address = regmap.words

        def take(count: int) -> int:
            nonlocal address
            start = _align(address, _WINDOW_ALIGN)
            address = start + count
            return start

        self.bad_reads = take(2)
        self.bad_writes = self.bad_reads + 1
        windows_in, windows_out = [], []
        for channel in regmap.channels:
            words = _payload_words(channel)
            if channel.direction == "in":
                start = take(words + 1)
                windows_in.append(InWindow(channel, start, words, start + words))
            else:
                start = take(2 + channel.count * words)
                windows_out.append(OutWindow(channel, start, start + 1, tuple(
                    start + 2 + k * words for k in range(channel.count)), words))
        self.in_windows, self.out_windows = tuple(windows_in), tuple(windows_out)
        self.inject_doorbell = take(4)
        self.extract_status = self.inject_doorbell + 1
        self.extract_length = self.inject_doorbell + 2
        self.extract_pop = self.inject_doorbell + 3
        # The buffers sit at multiples of their size: a buffer word's index is the
        # address's low bits.
        self.inject_buffer = _align(address, INJECT_BYTES // 4)
        self.extract_buffer = _align(self.inject_buffer + INJECT_BYTES // 4, EXTRACT_BYTES // 4)
        end = self.extract_buffer + EXTRACT_BYTES // 4
        #: Address bits of the bus; the BAR is ``4 << address_width`` bytes.
        self.address_width = max(1, math.ceil(math.log2(end)))

    @property
    def size(self) -> int:
        """The BAR's size in bytes (a power of two, as PCIe wants)."""
        return 4 << self.address_width

    def in_window(self, number: int) -> InWindow:
        for window in self.in_windows:
            if window.channel.number == number:
                return window
        raise KeyError(f"no in channel {number}")

    def out_window(self, number: int) -> OutWindow:
        for window in self.out_windows:
            if window.channel.number == number:
                return window
        raise KeyError(f"no out channel {number}")


class BarBridge(wiring.Component):
    """The register map on a :class:`BarBus` (see the module docstring for the layout).

    Parameters
    ----------
    regmap : the :class:`RegisterMap` of the device this bridge fronts.

    Interface
    ---------
    bus : the BAR, driven by the endpoint (``In(BarBus(layout.address_width))``).
    status, control, <channel>[k], inject, egress[p], exception, exception_port :
        as :class:`~.host.HostBridge`'s, so the device wires either bridge alike.
    bad_reads, bad_writes : the BAR's counters.

    Latency: a read's word comes the cycle after its strobe; a write takes effect at
    the clock edge that ends its cycle, so a read in the next cycle sees it (a
    doorbell's offer is ``busy`` then; a pop has taken the item). An in channel's
    stream sees the payload the cycle after its doorbell. Throughput: one access per
    cycle. An SA record (an ``engine_host`` payload of 157 bytes) is 40 word writes
    and a doorbell, then doorbell reads until not ``busy``. The mailbox puts an
    injected packet into the ingress at one byte per cycle after its doorbell and
    takes one 16-byte beat per cycle of a packet leaving the device; the host reads
    it at one word per access.

    Cost: one payload register per in channel (all of them written whole at each
    doorbell: the stream sees no half-written payload) and the two buffers
    (2 KiB and 4 KiB of memory).
    """

    def __init__(self, regmap: RegisterMap):
        self.layout = BarLayout(regmap)
        self.regmap = regmap
        self.status_registers = regmap.status_registers
        self.control_registers = regmap.control_registers
        super().__init__({
            "bus": In(BarBus(self.layout.address_width)),
            "bad_reads": Out(32),
            "bad_writes": Out(32),
            **device_side(regmap),
        })

    def elaborate(self, platform):
        m = Module()
        layout, regmap, bus = self.layout, self.regmap, self.bus
        address, writing, word = bus.address, bus.write, bus.write_data

        read_value = Signal(32)       # the word at `address`, for a read of it
        readable = Signal()           # `address` is defined (a read of it is not counted)
        effective = Signal()          # a write to `address` now does something
        m.d.sync += [
            self.bad_reads.eq(self.bad_reads + (bus.read & ~readable)),
            self.bad_writes.eq(self.bad_writes + (writing & ~effective)),
        ]

        def reads(value=0):
            m.d.comb += [readable.eq(1), read_value.eq(value)]

        status_index = {r.address: i for i, r in enumerate(self.status_registers)}
        control_index = {r.address: i for i, r in enumerate(self.control_registers)}

        # ---- in channels: payload registers offered at the doorbell ---------------
        offers = []
        for window in layout.in_windows:
            channel = window.channel
            payload = Signal(32 * window.words, name=f"{channel.name}_payload")
            offering = Signal(name=f"{channel.name}_offering")
            refused = Signal(name=f"{channel.name}_refused")
            target = Signal(range(max(2, channel.count)), name=f"{channel.name}_target")
            for k, target_stream in enumerate(getattr(self, channel.name)):
                m.d.comb += [
                    target_stream.payload.eq(payload[:channel.layout.size]),
                    target_stream.valid.eq(offering & (target == k)),
                ]
                with m.If(target_stream.valid & target_stream.ready):
                    # Taken: the words go, so no later payload carries them.
                    m.d.sync += [offering.eq(0), payload.eq(0)]
            offers.append((window, payload, offering, refused, target))

        # ---- the packet mailbox: inject --------------------------------------------
        m.submodules.inject_memory = inject_memory = Memory(
            shape=32, depth=INJECT_BYTES // 4, init=[])
        inject_write = inject_memory.write_port()
        inject_read = inject_memory.read_port(domain="sync", transparent_for=())
        inject_busy, inject_refused = Signal(), Signal()
        inject_length = Signal(range(MAX_INJECT + 1))
        inject_port = Signal.like(self.inject.payload.port)
        position = Signal(range(INJECT_BYTES))           # the byte offered next
        fetched = Signal.like(inject_read.addr)          # the word inject_read.data holds
        request = Signal(INJECT_REQUEST)
        m.d.comb += request.eq(word)
        inject_ok = ~inject_busy & (request.length >= 1) & (request.length <= MAX_INJECT) & \
            (request.port < regmap.params["ports"])
        ready_byte = self.inject.valid & self.inject.ready
        # The next word is fetched as the last byte of this one goes: one byte a cycle.
        m.d.comb += [
            inject_read.addr.eq(position[2:] + (ready_byte & (position[:2] == 3))),
            self.inject.payload.data.eq(inject_read.data.word_select(position[:2], 8)),
            self.inject.payload.last.eq(position == inject_length - 1),
            self.inject.payload.port.eq(inject_port),
            self.inject.valid.eq(inject_busy & (fetched == position[2:])),
            inject_write.addr.eq(address[:len(inject_write.addr)]),
            inject_write.data.eq(word),
        ]
        m.d.sync += fetched.eq(inject_read.addr)
        with m.If(ready_byte):
            m.d.sync += position.eq(position + 1)
            with m.If(self.inject.payload.last):
                m.d.sync += inject_busy.eq(0)

        # ---- the packet mailbox: extract -------------------------------------------
        m.submodules.extract_memory = extract_memory = Memory(
            shape=8 * _BEAT_BYTES, depth=EXTRACT_BYTES // _BEAT_BYTES, init=[])
        extract_write = extract_memory.write_port()
        extract_read = extract_memory.read_port(domain="sync", transparent_for=())
        sources = [*self.egress, self.exception]
        source = Signal(range(len(sources)))
        beats = Signal(range(EXTRACT_BYTES // _BEAT_BYTES + 1))
        extract_length = Signal(range(EXTRACT_BYTES + 1))
        status = Signal(EXTRACT_STATUS)
        beat_data = Array(s.payload.data for s in sources)[source]
        beat_count = Array(s.payload.count for s in sources)[source]
        beat_last = Array(s.payload.last for s in sources)[source]
        beat_valid = Array(s.valid for s in sources)[source]
        beat_abort = Array([*(e.payload.abort for e in self.egress), C(0)])[source]
        m.d.comb += [extract_write.addr.eq(beats), extract_write.data.eq(beat_data),
                     extract_read.addr.eq(address[2:2 + len(extract_read.addr)])]
        popping = Signal()
        with m.FSM(name="extract"):
            with m.State("IDLE"):
                # The last If that holds wins: egress ports in order, then exceptions.
                for q, packets in reversed(list(enumerate(sources))):
                    with m.If(packets.valid):
                        from_exceptions = q == len(self.egress)
                        m.d.sync += [
                            source.eq(q), beats.eq(0), extract_length.eq(0),
                            status.eq(0),
                            status.port.eq(self.exception_port if from_exceptions else q),
                            status.source.eq(PacketSource.EXCEPTION.value if from_exceptions
                                             else PacketSource.EGRESS.value),
                        ]
                        m.next = "COLLECT"
            with m.State("COLLECT"):
                for q, packets in enumerate(sources):
                    m.d.comb += packets.ready.eq(source == q)
                with m.If(beat_valid):
                    with m.If(beats < EXTRACT_BYTES // _BEAT_BYTES):
                        m.d.comb += extract_write.en.eq(1)
                        m.d.sync += [beats.eq(beats + 1),
                                     extract_length.eq(extract_length + beat_count)]
                    with m.Else():
                        m.d.sync += status.truncated.eq(1)
                    with m.If(beat_last):
                        m.d.sync += [status.aborted.eq(beat_abort), status.waiting.eq(1)]
                        m.next = "FULL"
            with m.State("FULL"):
                with m.If(popping):
                    m.d.sync += status.eq(0)
                    m.next = "IDLE"

        # ---- decode --------------------------------------------------------------------
        in_inject = address[len(inject_write.addr):] == layout.inject_buffer >> \
            len(inject_write.addr)
        extract_bits = len(extract_read.addr) + 2
        in_extract = address[extract_bits:] == layout.extract_buffer >> extract_bits
        with m.Switch(address):
            for register in regmap.registers:
                with m.Case(register.address):
                    if register.value is not None:
                        reads(register.value)
                    elif register.address in status_index:
                        reads(self.status[status_index[register.address]])
                    else:
                        control = self.control[control_index[register.address]]
                        reads(control)
                        m.d.comb += effective.eq(1)
                        with m.If(writing):
                            m.d.sync += control.eq(word)
            with m.Case(layout.bad_reads):
                reads(self.bad_reads)
            with m.Case(layout.bad_writes):
                reads(self.bad_writes)
            for window, payload, offering, refused, target in offers:
                for n in range(window.words):
                    with m.Case(window.payload + n):
                        reads(0)                 # write-only: payloads carry keys
                        m.d.comb += effective.eq(~offering)
                        with m.If(writing & ~offering):
                            m.d.sync += payload.word_select(n, 32).eq(word)
                with m.Case(window.doorbell):
                    reads(Cat(offering, refused))
                    accepted = ~offering & (word < window.channel.count)
                    m.d.comb += effective.eq(accepted)
                    with m.If(writing):
                        with m.If(accepted):
                            m.d.sync += [offering.eq(1), target.eq(word), refused.eq(0)]
                        with m.Else():
                            m.d.sync += refused.eq(1)
            for window in layout.out_windows:
                channel_streams = getattr(self, window.channel.name)
                with m.Case(window.status):
                    reads(Cat(s.valid for s in channel_streams))
                with m.Case(window.pop):
                    reads(0)
                    for k, item in enumerate(channel_streams):
                        with m.If(word == k):
                            m.d.comb += [effective.eq(item.valid), item.ready.eq(writing)]
                for k, item in enumerate(channel_streams):
                    padded = Cat(item.payload.as_value(), C(0, 32 * window.words))
                    for n in range(window.words):
                        with m.Case(window.payload[k] + n):
                            reads(Mux(item.valid, padded.word_select(n, 32), 0))
            with m.Case(layout.inject_doorbell):
                reads(Cat(inject_busy, inject_refused))
                m.d.comb += effective.eq(inject_ok)
                with m.If(writing):
                    with m.If(inject_ok):
                        m.d.sync += [inject_busy.eq(1), inject_refused.eq(0), position.eq(0),
                                     inject_length.eq(request.length),
                                     inject_port.eq(request.port)]
                    with m.Else():
                        m.d.sync += inject_refused.eq(1)
            with m.Case(layout.extract_status):
                reads(status)
            with m.Case(layout.extract_length):
                reads(Mux(status.waiting, extract_length, 0))
            with m.Case(layout.extract_pop):
                reads(0)
                m.d.comb += [effective.eq(status.waiting), popping.eq(writing)]
            with m.Default():
                with m.If(in_inject):
                    reads(0)                     # write-only, as the channel payloads
                    m.d.comb += [effective.eq(~inject_busy),
                                 inject_write.en.eq(writing & ~inject_busy)]
                with m.Elif(in_extract):
                    m.d.comb += readable.eq(1)   # the word comes from the memory

        # ---- read data, a cycle after the strobe ---------------------------------------
        held = Signal(32)
        from_memory = Signal()
        lane = Signal(2)
        m.d.sync += [bus.read_valid.eq(bus.read),
                     from_memory.eq(bus.read & in_extract & status.waiting)]
        with m.If(bus.read):
            m.d.sync += [held.eq(read_value), lane.eq(address[:2])]
        m.d.comb += bus.read_data.eq(Mux(~bus.read_valid, 0, Mux(
            from_memory, extract_read.data.word_select(lane, 32), held)))
        return m


def bar_markdown(regmap: RegisterMap) -> str:
    """``docs/bar.md`` for ``regmap`` (generated; a test checks it is current)."""
    layout = BarLayout(regmap)
    params = ", ".join(f"{k}={v!r}" for k, v in regmap.params.items())

    def offset(word: int) -> str:
        return f"{4 * word:#06x}"

    def field_list(flexible) -> str:
        return ", ".join(f"`{name}` bit {field.offset}" if field.width == 1 else
                         f"`{name}` bits {field.offset}..{field.offset + field.width - 1}"
                         for name, field in flexible)

    lines = [
        "# espnic BAR layout",
        "",
        "Generated by `python -m espnic.hdl.bridge.bar` from `hdl/bridge/bar.py`; do not",
        "edit. Offsets are in bytes; every access is one aligned 32-bit little-endian",
        "word. The layout follows the register map (`docs/registers.md`), so it depends",
        "on the device's parameters (read them from the capability block at offset 0);",
        f"this one is for `EspNic({params})`, a BAR of {layout.size} bytes.",
        "",
        "No board of this project has a PCIe endpoint: `BarBridge` is the register side",
        "an endpoint core would drive, tested in simulation (`tests/test_bar.py`).",
        "",
        "Reads have no side effects. A read of an offset not listed returns 0 and counts",
        "in `bad_reads`; a write that does nothing (to a read-only or unlisted offset, to",
        "a payload word while its offer waits, a refused doorbell, a pop with no item)",
        "counts in `bad_writes`, which the register `bad_command` also reads.",
        "",
        f"* doorbell, when read: {field_list(DOORBELL)}",
        f"* `inject_doorbell`, written: {field_list(INJECT_REQUEST)}",
        f"* `extract_status`: {field_list(EXTRACT_STATUS)} (source: "
        + ", ".join(f"{s.value} {s.name.lower()}" for s in PacketSource) + ")",
        "",
        "An in channel's payload words are write-only (they read as 0: SA records carry",
        "keys). Writing `k` to its doorbell offers the whole payload to stream `k`; the",
        "doorbell reads `busy` until the stream has taken it, and then the payload words",
        "are cleared. An out channel's `status` has bit `k` set while stream `k` offers",
        "an item, whose payload words read as the item (0 with none); writing `k` to",
        "`pop` takes it. A payload's words are its bytes (`docs/registers.md`) in",
        "little-endian words, the padding zero.",
        "",
        "| offset | words | name | access | what |",
        "| ---: | ---: | --- | --- | --- |",
        f"| {offset(0)} | {regmap.words} | registers | as `docs/registers.md` | "
        "register at word address `a` is at offset `4a` |",
        f"| {offset(layout.bad_reads)} | 1 | `bad_reads` | ro | reads of undefined offsets |",
        f"| {offset(layout.bad_writes)} | 1 | `bad_writes` | ro | writes that did nothing |",
    ]
    for window in layout.in_windows:
        name = window.channel.name
        lines += [
            f"| {offset(window.payload)} | {window.words} | `{name}` payload | wo | "
            f"{window.channel.payload_bytes} bytes |",
            f"| {offset(window.doorbell)} | 1 | `{name}` doorbell | rw | "
            f"write the stream index, 0..{window.channel.count - 1} |",
        ]
    for window in layout.out_windows:
        name = window.channel.name
        lines += [
            f"| {offset(window.status)} | 1 | `{name}` status | ro | bit k: stream k has an item |",
            f"| {offset(window.pop)} | 1 | `{name}` pop | wo | write the stream index |",
        ]
        for k, start in enumerate(window.payload):
            lines.append(f"| {offset(start)} | {window.words} | `{name}[{k}]` item | ro | "
                         f"{window.channel.payload_bytes} bytes |")
    lines += [
        f"| {offset(layout.inject_doorbell)} | 1 | `inject_doorbell` | rw | inject the "
        f"buffer's first `length` bytes (1..{MAX_INJECT}) into ingress `port` |",
        f"| {offset(layout.extract_status)} | 1 | `extract_status` | ro | the packet in "
        "the extract buffer |",
        f"| {offset(layout.extract_length)} | 1 | `extract_length` | ro | its bytes |",
        f"| {offset(layout.extract_pop)} | 1 | `extract_pop` | wo | write anything: "
        "the next packet may come in |",
        f"| {offset(layout.inject_buffer)} | {INJECT_BYTES // 4} | `inject_buffer` | wo | "
        "the packet to inject, bytes in order |",
        f"| {offset(layout.extract_buffer)} | {EXTRACT_BYTES // 4} | `extract_buffer` | ro | "
        "the packet from the device, bytes in order |",
        "",
    ]
    return "\n".join(lines)

if __name__ == "__main__":
    print(bar_markdown(RegisterMap(**DOC_PARAMETERS)), end="")
