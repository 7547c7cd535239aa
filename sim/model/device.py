# SPDX-License-Identifier: BSD-2-Clause
"""The device at its host link, in Python: what ``model://`` talks to.

:class:`DeviceModel` is ``hdl/device.py: EspNicDevice(packets="link")`` seen from
the host: wire bytes in, wire bytes out. It decodes frames with the gateware's
rules (:class:`FrameDecoderModel`), executes them as ``hdl/bridge/host.py:
HostBridge`` does (the same statuses, the same duplicate rule, the same register
map, built from the same :class:`RegisterMap`) on a :class:`NicModel`, and
answers with the same frames. The host driver cannot tell it from the device but
by timing; ``tests/test_device_model.py`` holds the two to the same answers.

What the host streams do here, as in ``hdl/top.py``:

* ``engine_host``: ``WRITE`` (counters cleared, the replay window loaded: an
  inbound SA written with ``seq = N > 0`` has everything up to N received),
  ``READ`` / ``READ_COUNTERS`` (an ``engine_reply`` item: the record with key
  and salt as zero, the counters), ``DELETE``; ``EXPORT`` / ``IMPORT`` and other
  values are taken and do nothing (the fabric's own operations);
* ``spi_host``, ``policy_host``, ``route_host``: the tables' models, a reply item each;
* ``engine_hold``, ``engine_arm``, ``fence_host``: live migration. A packet
  decided for a held slot waits at its forwarder's hold gate with the
  forwarder's later packets (and fences) behind it; a fence reports on
  ``engine_fenced`` as it passes its engine; the armed slot's last fence moves
  the SA (export, import, the hold released) and reports on ``engine_migrated``.

A ``SEND_MANY``'s payloads go to their stream in order, as the bridge offers
them; the model answers its ``ACK`` first and then executes them, while on the
device the items some of them cause (an ``engine_reply`` for a ``READ``) may
come before the ``ACK``, which goes once the last payload was taken.

The model answers each frame as it is decoded: no frame ever waits for the
transmitter, so none is dropped for arriving while one waits (``frames_dropped``
reads 0, as do the UART counters: there is no UART). The model processes each
packet as it is injected, so nothing is ever in flight:
``idle`` reads all ones, a fence passes at once. Differences from the device,
none of which a host can provoke with whole, well-formed packets: a packet cut
short of its IP length that the device sends out as an aborted ``PACKET`` (flag
1) is not sent here; the local forwarder (``nested``) has no hold gate; an arm
or fence naming an engine the device lacks is refused or dropped without the
device's stall.
"""

from __future__ import annotations

import enum
from collections import Counter, deque

from amaranth.lib import data

from ...hdl.bridge.framing import FrameDecoderModel, encode_frame
from ...hdl.bridge.host import MAX_READ_WORDS
from ...hdl.bridge.regmap import (HEADER_BYTES, MAX_BODY, FrameKind, PacketSource,
                                  RegisterMap, Status)
from ...hdl.engine.sa import Direction, SaConfig, SaState, sa_layout
from ...hdl.engine.sa_table import Event, HostOp
from ...hdl.forwarder.spi_table import SpiOp
from .nic import Forward, NicModel, Outcome

__all__ = ["DeviceModel"]

_WORD = 0xffffffff
_EVENTS = {"soft_expired": Event.SOFT_EXPIRED, "hard_expired": Event.HARD_EXPIRED}
_SEND_KINDS = {kind.value for kind in (FrameKind.SEND, FrameKind.SEND_MANY, FrameKind.SEND_SHORT)}


class DeviceModel:
    """An ``EspNicDevice(packets="link", **params)`` in Python (module docstring).

    :meth:`feed` takes wire bytes from the host and returns the wire bytes the
    device sends back.
    """

    def __init__(self, **params):
        self.regmap = RegisterMap(**params)
        p = self.regmap.params
        if any(p["ethernet"]):
            raise ValueError("not supported: the model of a device with Ethernet ports "
                             "(it takes IP packets)")
        self.nic = NicModel(engines=p["engines"], ports=p["ports"], slots=p["slots"],
                            spi_entries=p["spi_entries"], spi_ways=p["spi_ways"],
                            rules=p["rules"], routes=p["routes"], nested=p["nested"],
                            window=p["window"])
        self.forwarders = p["ports"] + p["nested"]
        self._channels = {c.number: c for c in self.regmap.channels}
        self._decoder = FrameDecoderModel(on_abort=self._aborted)
        self._header = bytearray(HEADER_BYTES)       # kept across frames, as the bridge's
        self._last_tag: int | None = None
        self.control = {r.name: 0 for r in self.regmap.registers if r.access == "rw"}
        self.counts = Counter()                     # the bridge's own and arm_refused
        self._control_layout = data.Layout.cast(self.regmap.channel("engine_reply").layout)
        self._record_layout = sa_layout(p["window"])
        self._waiting = [deque() for _ in range(p["ports"])]    # injected while paused
        self._gates = [deque() for _ in range(p["ports"])]      # behind a hold
        self._held: set[tuple[int, int]] = set()
        self._armed: dict[tuple[int, int], list] = {}     # (engine, slot) -> [dest, slot, fences]
        self._out = bytearray()

    # -- wire -----------------------------------------------------------------------------

    def feed(self, wire: bytes) -> bytes:
        """Take the host's wire bytes; return the device's."""
        for payload in self._decoder.feed(wire):
            self._frame(payload)
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send(self, kind: FrameKind, tag: int, b2: int, b3: int, body: bytes = b""):
        self._out += encode_frame(bytes([kind.value, tag, b2, b3]) + body)

    def _aborted(self, payload: bytes):
        """A bad frame's payload bytes, which the gateware's decoder passed on before it
        knew: an INJECT's went into the inject FIFO, which drops them and counts it."""
        header = self._header
        header[:min(len(payload), HEADER_BYTES)] = payload[:HEADER_BYTES]
        if (len(payload) > HEADER_BYTES and header[0] == FrameKind.INJECT.value
                and header[2] < self.regmap.params["ports"]
                and header[1] != self._last_tag):
            self.counts["inject_aborted"] += 1

    # -- frames, as HostBridge executes them ----------------------------------------------

    def _frame(self, payload: bytes):
        header = self._header
        header[:min(len(payload), HEADER_BYTES)] = payload[:HEADER_BYTES]
        kind, tag = header[0], header[1]
        body = payload[HEADER_BYTES:]
        duplicate = tag == self._last_tag
        self._last_tag = tag
        if len(payload) < HEADER_BYTES or (kind != FrameKind.INJECT.value
                                           and len(body) > MAX_BODY):
            return self._refuse(tag, Status.BAD_LENGTH)
        if kind == FrameKind.READ.value:
            return self._read(tag, body)
        if kind == FrameKind.WRITE.value:
            return self._write(tag, body, duplicate)
        if kind in _SEND_KINDS:
            return self._send_items(FrameKind(kind), tag, body, duplicate)
        if kind == FrameKind.INJECT.value:
            return self._inject(tag, body, duplicate)
        return self._refuse(tag, Status.BAD_KIND)

    def _refuse(self, tag: int, status: Status):
        self.counts["duplicates" if status is Status.DUPLICATE else "bad_command"] += 1
        self._send(FrameKind.ACK, tag, status.value, 0)

    def _ack(self, tag: int):
        self._send(FrameKind.ACK, tag, Status.OK.value, 0)

    def _address(self) -> int:
        return self._header[2] | self._header[3] << 8

    def _read(self, tag: int, body: bytes):
        if len(body) != 1:
            return self._refuse(tag, Status.BAD_LENGTH)
        address, n = self._address(), body[0]
        if not 1 <= n <= MAX_READ_WORDS or address + n > self.regmap.words:
            return self._refuse(tag, Status.BAD_ADDRESS)
        words = self.registers()
        self._send(FrameKind.DATA, tag, self._header[2], self._header[3],
                   b"".join(words.get(a, 0).to_bytes(4, "little")
                            for a in range(address, address + n)))

    def _write(self, tag: int, body: bytes, duplicate: bool):
        if len(body) != 4:
            return self._refuse(tag, Status.BAD_LENGTH)
        address = self._address()
        register = next((r for r in self.regmap.registers if r.address == address), None)
        if register is None or register.access != "rw":
            return self._refuse(tag, Status.BAD_ADDRESS)
        if duplicate:
            return self._refuse(tag, Status.DUPLICATE)
        self.control[register.name] = int.from_bytes(body, "little")
        self._ack(tag)
        flags = self.control["miss_to_host"]
        self.nic.miss_to_host = [bool(flags >> f & 1) for f in range(self.forwarders)]
        for port in range(len(self._waiting)):
            self._take_waiting(port)

    def _send_items(self, kind: FrameKind, tag: int, body: bytes, duplicate: bool):
        channel = self._channels.get(self._header[2])
        index = self._header[3]
        if channel is None or channel.direction != "in" or index >= channel.count:
            return self._refuse(tag, Status.BAD_CHANNEL)
        size = channel.payload_bytes
        if kind is FrameKind.SEND:
            length_ok = len(body) == size
        elif kind is FrameKind.SEND_MANY:
            length_ok = body and len(body) % size == 0
        else:
            length_ok = 1 <= len(body) <= size
        if not length_ok:
            return self._refuse(tag, Status.BAD_LENGTH)
        if duplicate:
            return self._refuse(tag, Status.DUPLICATE)
        self._ack(tag)
        body = body.ljust(size, b"\0")           # a SEND_SHORT's tail: zeros
        mask = (1 << channel.layout.size) - 1
        for start in range(0, len(body), size):
            bits = int.from_bytes(body[start:start + size], "little") & mask
            getattr(self, "_on_" + channel.name)(index, channel.layout.from_bits(bits))

    def _inject(self, tag: int, body: bytes, duplicate: bool):
        port = self._header[2]
        if port >= self.regmap.params["ports"]:
            return self._refuse(tag, Status.BAD_PORT)
        if not body:
            return self._refuse(tag, Status.BAD_LENGTH)
        if duplicate:
            return self._refuse(tag, Status.DUPLICATE)
        self._ack(tag)
        self._waiting[port].append(body)
        self._take_waiting(port)

    def _item(self, name: str, index: int, fields: dict):
        channel = self.regmap.channel(name)
        bits = data.Layout.cast(channel.layout).const(fields).as_bits()
        self._send(FrameKind.ITEM, 0, channel.number, index,
                   bits.to_bytes(channel.payload_bytes, "little"))

    # -- registers ------------------------------------------------------------------------

    def registers(self) -> dict[int, int]:
        """Every register's value by address, as a READ would give it now."""
        counters = self.nic.counters()
        counters["arm_refused"] = self.counts["arm_refused"]
        # No UART here, and each frame is answered as it is decoded, so none is ever
        # kept waiting for the transmitter: nothing to drop for a resend that overtakes
        # one (uart_framing_errors, uart_overruns, frames_dropped read 0).
        bridge = {"bad_crc": self._decoder.bad_crc, "too_short": self._decoder.too_short,
                  "too_long": self._decoder.too_long, "frames_dropped": 0,
                  "uart_framing_errors": 0, "uart_overruns": 0, **self.counts}
        words = {}
        for register in self.regmap.registers:
            if register.value is not None:
                value = register.value
            elif register.access == "rw":
                value = self.control[register.name]
            elif register.name == "idle":
                value = (1 << self.forwarders) - 1     # nothing is ever in flight here
            elif register.signal.startswith("bridge."):
                value = bridge.get(register.signal.removeprefix("bridge."), 0)
            else:
                value = counters[register.signal]
                if register.index is not None:
                    value = value[register.index]
            words[register.address] = value & _WORD
        return words

    # -- packets --------------------------------------------------------------------------

    def _take_waiting(self, port: int):
        """Forwarder `port`'s classifier takes what was injected, unless paused."""
        while self._waiting[port] and not self.control["pause"] >> port & 1:
            packet = self._waiting[port].popleft()
            decided = self.nic.decide(port, packet)
            if isinstance(decided, Outcome):
                self._deliver(decided)
            else:
                self._gates[port].append((decided, packet))
                self._pass_gate(port)

    def _pass_gate(self, port: int):
        gate = self._gates[port]
        while gate:
            decided, packet = gate[0]
            target = decided.target
            if target is not None and (target["engine"], target["slot"]) in self._held:
                return
            gate.popleft()
            if packet is None:
                self._fence_passes(target["engine"], target["slot"])
            else:
                self._deliver(self.nic.finish(decided, packet))
                self._report_events()

    def _deliver(self, outcome: Outcome):
        if outcome.exception:
            self._send(FrameKind.PACKET, 0, outcome.ingress, PacketSource.EXCEPTION.value,
                       outcome.packet + b"\0")
        elif outcome.port is not None:
            self._send(FrameKind.PACKET, 0, outcome.port, PacketSource.EGRESS.value,
                       outcome.packet + b"\0")

    def _report_events(self):
        for engine, model in enumerate(self.nic.engine):
            for slot, name in model.events:
                self._item("engine_events", engine, {"slot": slot, "event": _EVENTS[name]})
            model.events.clear()

    # -- host streams ---------------------------------------------------------------------

    def _on_engine_host(self, engine: int, op):
        model, slot = self.nic.engine[engine], op.slot
        if op.op == HostOp.WRITE:
            fields = {name: getattr(op.record, name) for name, _ in op.record.shape()}
            inbound_seq = fields["direction"] == Direction.IN and fields["seq"]
            fields["replay_bitmap"] = (1 << fields["window"]) - 1 if inbound_seq else 0
            record = self._record_layout.const(fields)
            model.write_record(slot, record)
            self.nic.configs[engine][slot] = _config(record, self._record_layout)
        elif op.op == HostOp.DELETE:
            model.delete(slot)
            self.nic.configs[engine].pop(slot, None)
        elif op.op in (HostOp.READ, HostOp.READ_COUNTERS):
            read = model.read_record(slot)
            record = {name: getattr(read, name)
                      for name, _ in self._control_layout["record"].shape}
            counters = self._control_layout["counters"].shape.const(model.counters(slot))
            self._item("engine_reply", engine, {"record": record, "counters": counters})

    def _on_spi_host(self, port: int, op):
        table, key = self.nic.spi[port], op.key.as_bits()
        value = {"engine": op.value.engine, "slot": op.value.slot}
        if op.op == SpiOp.INSERT:
            status = table.insert(key, value)
        elif op.op == SpiOp.REMOVE:
            status = table.remove(key)
        else:
            status = table.replace(key, value)
        self._item("spi_reply", port, {"status": status})

    def _on_policy_host(self, port: int, write):
        rule = write.rule
        fields = {name: _plain(getattr(rule, name)) for name, _ in rule.shape()}
        fields["src"] = fields["src"].to_bytes(16, "little")
        fields["dst"] = fields["dst"].to_bytes(16, "little")
        fields["value"] = {"engine": rule.value.engine, "slot": rule.value.slot}
        ok = write.index < self.regmap.params["rules"] and \
            self.nic.policy[port].write(write.index, fields)
        self._item("policy_reply", port, {"ok": int(ok)})

    def _on_route_host(self, _index: int, write):
        ok = write.index < self.regmap.params["routes"] and self.nic.routes.write(
            write.index, bool(write.valid), bool(write.ipv6),
            _plain(write.dst).to_bytes(16, "little"),
            int(write.length), int(write.port))
        self._item("route_reply", 0, {"ok": int(ok)})

    def _on_fence_host(self, port: int, target):
        engine, slot = target.engine, target.slot
        if engine >= self.regmap.params["engines"]:
            return
        if port >= len(self._gates):           # the local forwarder: nothing in it
            return self._fence_passes(engine, slot)
        self._gates[port].append((Forward(port, {"engine": engine, "slot": slot}), None))
        self._pass_gate(port)

    def _on_engine_hold(self, engine: int, hold):
        if hold.hold:
            self._held.add((engine, hold.slot))
        else:
            self._release(engine, hold.slot)

    def _on_engine_arm(self, engine: int, arm):
        if arm.engine == engine or arm.engine >= self.regmap.params["engines"]:
            self.counts["arm_refused"] += 1
            return
        self._armed[(engine, arm.slot)] = [arm.engine, arm.dest_slot, arm.fences]

    def _fence_passes(self, engine: int, slot: int):
        self._item("engine_fenced", engine, {"slot": slot})
        armed = self._armed.get((engine, slot))
        if armed is None:
            return
        armed[2] -= 1
        if armed[2] > 0:
            return
        del self._armed[(engine, slot)]
        dest, dest_slot, _ = armed
        record, counters = self.nic.engine[engine].export(slot)
        self.nic.engine[dest].import_(dest_slot, record, counters)
        self.nic.configs[dest][dest_slot] = self.nic.configs[engine].pop(slot, None)
        self._item("engine_migrated", dest, {"slot": dest_slot})
        self._release(dest, dest_slot)

    def _release(self, engine: int, slot: int):
        self._held.discard((engine, slot))
        for port in range(len(self._gates)):
            self._pass_gate(port)


def _plain(value) -> int:
    """A field of a ``data.Const`` as an int (a struct's bits, an enum's value)."""
    if hasattr(value, "as_bits"):
        return value.as_bits()
    return value.value if isinstance(value, enum.Enum) else int(value)


def _config(record: data.Const, layout) -> SaConfig | None:
    """The configuration the engine's support checks look at, or None for a record
    that is not a valid SA (the engine treats the slot as empty)."""
    if record.state != SaState.VALID:
        return None
    try:
        return SaConfig.from_record(record, layout)
    except ValueError:
        return None
