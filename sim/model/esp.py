# SPDX-License-Identifier: BSD-2-Clause
"""Reference ESP data plane of one engine: RFC 4303 ESP with AES-GCM (RFC 4106).

:class:`EspModel` holds one engine's SA table as raw :func:`sa_layout` records
and :data:`SA_COUNTERS` records (the same bits the gateware keeps), and
processes one IP packet at a time (raw IPv4/IPv6 bytes, no link header):

* ``out`` SAs encapsulate: tunnel mode wraps the whole packet in a new outer
  header built from the SA endpoints; transport mode inserts ESP after the
  original IP header (IPv6: after hop-by-hop, routing and destination options
  that precede a routing header, as Linux and scapy do). Optional RFC 3948 UDP
  encapsulation between the IP header and ESP.
* ``in`` SAs decapsulate: ESP (protocol 50) or UDP-encapsulated ESP must match
  the SA's ``encap``; SPI check, replay check before and window update after
  ICV verification (:mod:`.replay`), padding check, inner packet restored
  (tunnel) or header rebuilt (transport).

Decisions the RFCs leave open (the gateware must do the same, byte for byte):

* IV = the 64-bit sequence number, big-endian, so (key, IV) never repeats.
* Padding: the minimum to align to 4 bytes, contents 1, 2, 3, ...; inbound
  requires exactly that monotonic pattern (RFC 4303 section 2.4).
* Tunnel outer IPv4 header: IHL 5, TOS copied from the inner header (DSCP and
  ECN: RFC 4301 5.1.2.1 / RFC 6040 normal mode), ID = low 16 bits of the
  sequence number, DF copied from inner IPv4 (set for inner IPv6), TTL
  :data:`OUTER_TTL`, no options. Outer IPv6: traffic class copied, flow label
  0, hop limit :data:`OUTER_TTL`.
* TTL / hop limit (RFC 4301 section 5.1.2.1, tables and note 2): the outer
  one is *constructed* by the encapsulator, never copied from the inner
  header; the inner one is decremented as part of forwarding, before
  encapsulation and after decapsulation, and not by the node that originates
  the packet. The engine cannot tell forwarded from originated packets and
  bypass traffic never reaches it, so the forwarder does the decrement and
  the engine leaves inner TTL / hop limit unchanged, in both directions.
  Transport mode keeps the original header's TTL / hop limit (the header is
  rewritten, not constructed: only length, protocol / next header and the IPv4
  checksum change).
* Tunnel decapsulation: outer CE with inner ECT(0)/ECT(1) sets inner CE
  (RFC 6040); otherwise the inner header is released unchanged. Trailing bytes
  after the inner packet's own length (TFC padding, RFC 4303 2.7) are removed.
* UDP encapsulation: checksum 0 over IPv4 (RFC 3948); over IPv6 a real checksum
  (RFC 8200 forbids 0 outside RFC 6935 tunnels). Inbound ignores the checksum
  and the ports (the classifier matched them) and drops non-ESP markers.
* Fragments (IPv4 MF/offset, IPv6 fragment header) are malformed here:
  reassembly happens before the engine, fragmentation after it.
* Counted bytes are cleartext IP packet bytes (outbound input, inbound output).
  Lifetimes: a packet is refused once a hard limit has been *reached*, so the
  packet that reaches it is still processed; the soft event fires once, on the
  packet that reaches the soft limit. Sequence exhaustion (2^32-1 without ESN,
  2^64-1 with) refuses the packet that would wrap and raises ``hard_expired``.
* The replay window is updated once the ICV is verified, even if the padding
  check then fails (the sender did use that sequence number).
* An inbound packet whose next header is 59 (RFC 4303 2.6 dummy) is consumed:
  window updated, nothing released, reason ``"dummy"``, no counter.

``process`` returns ``(packet, "ok")`` or ``(None, reason)``; the reasons of
drops counted per SA are ``auth_fail``, ``replay``, ``malformed``,
``seq_overflow``, ``hard_expired``; ``no_sa``, ``wrong_direction`` and
``unknown_spi`` are not packets of the SA and go to :attr:`EspModel.engine_counters`.
"""

from __future__ import annotations

import struct

from amaranth.lib import data
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...hdl.engine.sa import (
    REPLAY_WINDOW, SA_COUNTERS, Direction, Encap, IpVersion, Mode, SaConfig, SaState, sa_layout,
)
from ...hdl.engine.protocol import (ECN_CE, ESP_MIN_BYTES, IPV6_EXT_WALKED, IV_BYTES, OUTER_TTL,
                                    PROTO_ESP, PROTO_FRAGMENT, PROTO_IPV4, PROTO_IPV6, PROTO_NONE,
                                    PROTO_UDP)
from .replay import ReplayWindow

__all__ = ["EspModel", "DROP_COUNTERS", "OUTER_TTL", "internet_checksum"]


#: Drop reason -> the SA counter it increments.
DROP_COUNTERS = {
    "auth_fail":    "auth_fail",
    "replay":       "replay_drop",
    "malformed":    "malformed_drop",
    "seq_overflow": "seq_overflow_drop",
    "hard_expired": "expired_drop",
}
#: Drops that are not charged to an SA.
ENGINE_DROPS = ("no_sa", "wrong_direction", "unknown_spi")



class _Drop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def internet_checksum(octets: bytes) -> int:
    """RFC 1071 one's-complement checksum."""
    if len(octets) % 2:
        octets += b"\0"
    total = sum(struct.unpack(f"!{len(octets) // 2}H", octets))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def _ipv4_with_checksum(header: bytes) -> bytes:
    header = header[:10] + b"\0\0" + header[12:]
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]


class _Ip:
    """A parsed IP packet, trimmed to its own length."""

    def __init__(self, packet: bytes, *, for_transport: bool):
        if len(packet) < 1:
            raise _Drop("malformed")
        self.version = packet[0] >> 4
        if self.version == 4:
            if len(packet) < 20:
                raise _Drop("malformed")
            ihl = (packet[0] & 0xf) * 4
            total, = struct.unpack_from("!H", packet, 2)
            if ihl < 20 or not ihl <= total <= len(packet):
                raise _Drop("malformed")
            if internet_checksum(packet[:ihl]) != 0:
                raise _Drop("malformed")
            flags_offset, = struct.unpack_from("!H", packet, 6)
            self.fragment = bool(flags_offset & 0x3fff)
            self.df = bool(flags_offset & 0x4000)
            self.tos = packet[1]
            self.packet = packet[:total]
            self.header_len = ihl
            self.proto = packet[9]
            self.proto_offset = 9
        elif self.version == 6:
            if len(packet) < 40:
                raise _Drop("malformed")
            plen, = struct.unpack_from("!H", packet, 4)
            if plen == 0 or 40 + plen > len(packet):   # jumbograms are not supported
                raise _Drop("malformed")
            self.packet = packet[:40 + plen]
            self.tos = (struct.unpack_from("!I", packet)[0] >> 20) & 0xff
            self.df = True
            self.fragment = False
            # Walk to where ESP goes (outbound) or is (inbound).
            nh, nh_offset, offset, routing_seen = packet[6], 6, 40, False
            while nh in IPV6_EXT_WALKED or nh == PROTO_FRAGMENT:
                if nh == PROTO_FRAGMENT:
                    self.fragment = True
                    break
                if nh == 60 and routing_seen and for_transport:
                    break
                routing_seen |= nh == 43
                if offset + 2 > len(self.packet):
                    raise _Drop("malformed")
                ext_len = (self.packet[offset + 1] + 1) * 8
                if offset + ext_len > len(self.packet):
                    raise _Drop("malformed")
                nh, nh_offset, offset = self.packet[offset], offset, offset + ext_len
            self.header_len = offset
            self.proto = nh
            self.proto_offset = nh_offset
        else:
            raise _Drop("malformed")

    @property
    def header(self) -> bytes:
        return self.packet[:self.header_len]

    @property
    def payload(self) -> bytes:
        return self.packet[self.header_len:]

    def rebuilt(self, proto: int, payload: bytes) -> bytes:
        """This packet's header (options / extension headers kept) carrying ``payload``."""
        header = bytearray(self.header)
        header[self.proto_offset] = proto
        if self.version == 4:
            struct.pack_into("!H", header, 2, len(header) + len(payload))
            return _ipv4_with_checksum(bytes(header)) + payload
        struct.pack_into("!H", header, 4, len(header) - 40 + len(payload))
        return bytes(header) + payload


def _addr_bytes(version: IpVersion, value: int) -> bytes:
    return value.to_bytes(4 if version == IpVersion.IPV4 else 16, "big")


def _udp_header(sport: int, dport: int, src: bytes, dst: bytes, payload: bytes) -> bytes:
    length = 8 + len(payload)
    if len(src) == 4:
        return struct.pack("!HHHH", sport, dport, length, 0)   # RFC 3948 section 2.1
    pseudo = src + dst + struct.pack("!IxxxB", length, PROTO_UDP)
    checksum = internet_checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload)
    return struct.pack("!HHHH", sport, dport, length, checksum or 0xffff)


class EspModel:
    """One ESP engine's SA table and data plane, in software.

    ``slots``: SA slots of the engine. ``window``: the engine's maximum replay
    window (width of the record's bitmap). ``events`` collects ``(slot, name)``
    tuples: ``"soft_expired"``, ``"hard_expired"``.
    """

    def __init__(self, *, slots: int = 16, window: int = REPLAY_WINDOW):
        if slots <= 0:
            raise ValueError(f"slots must be positive, not {slots!r}")
        self.layout = sa_layout(window)
        self.slots = slots
        self._records = [0] * slots
        self._counters = [0] * slots
        self.events: list[tuple[int, str]] = []
        self.engine_counters = {name: 0 for name in ENGINE_DROPS}

    # -- SA table (register semantics) ------------------------------------------------------

    def _check_slot(self, slot: int):
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot must be 0..{self.slots - 1}, not {slot!r}")

    def install(self, slot: int, config: SaConfig):
        """Write a VALID record for ``config`` into ``slot`` and clear its counters."""
        self.write_record(slot, config.to_record(self.layout))

    def write_record(self, slot: int, record):
        self._check_slot(slot)
        bits = record.as_bits() if isinstance(record, data.Const) else int(record)
        if not 0 <= bits < 1 << self.layout.size:
            raise ValueError(f"record must fit in {self.layout.size} bits")
        self._records[slot] = bits
        self._counters[slot] = 0

    def read_record(self, slot: int) -> data.Const:
        """The record as the host reads it: key and salt read as zero (issue 3, key hygiene)."""
        self._check_slot(slot)
        bits = self._records[slot]
        for name in ("key", "salt"):
            field = self.layout[name]
            bits &= ~(((1 << field.width) - 1) << field.offset)
        return data.Const(self.layout, bits)

    def delete(self, slot: int):
        """Zeroize the slot: the record (key and salt included) and its counters."""
        self._check_slot(slot)
        self._records[slot] = 0
        self._counters[slot] = 0

    def export(self, slot: int) -> tuple[int, int]:
        """Move the SA out of ``slot`` (live migration, the table's ``EXPORT``):
        ``(record bits, counters bits)``, the record with its key and salt, and
        the slot zeroized as :meth:`delete` does, so the SA is live in one place only.

        An inbound SA's whole state is in these two values: the replay window is
        the record's ``seq`` (its top) and ``replay_bitmap`` (this model keeps no
        window object between packets), so :meth:`import_` of them elsewhere
        carries on with the same window. The gateware's table keeps the record
        without the bitmap (``control_record``) and moves the bitmap through the
        replay unit. An empty slot exports ``(0, 0)`` and stays empty."""
        self._check_slot(slot)
        state = self._records[slot], self._counters[slot]
        self.delete(slot)
        return state

    def import_(self, slot: int, record, counters):
        """Write a record and counters from :meth:`export` into ``slot`` (the table's
        ``IMPORT``), replay window and event flags included: a lifetime the SA had
        crossed before it moved does not raise its event again (events are raised
        when a count reaches a limit whose flag is clear)."""
        self._check_slot(slot)
        record = record.as_bits() if isinstance(record, data.Const) else int(record)
        counters = counters.as_bits() if isinstance(counters, data.Const) else int(counters)
        if not 0 <= record < 1 << self.layout.size:
            raise ValueError(f"record must fit in {self.layout.size} bits")
        if not 0 <= counters < 1 << SA_COUNTERS.size:
            raise ValueError(f"counters must fit in {SA_COUNTERS.size} bits")
        self._records[slot] = record
        self._counters[slot] = counters

    def set_state(self, slot: int, state: SaState):
        self._check_slot(slot)
        self._records[slot] = self._splice(self._records[slot], self.layout["state"], state.value)

    def counters(self, slot: int) -> dict[str, int]:
        self._check_slot(slot)
        const = data.Const(SA_COUNTERS, self._counters[slot])
        return {name: const[name] for name, _ in SA_COUNTERS}

    @staticmethod
    def _splice(bits: int, field, value: int) -> int:
        mask = ((1 << field.width) - 1) << field.offset
        return (bits & ~mask) | ((value << field.offset) & mask)

    def _count(self, slot: int, name: str, increment: int = 1, *, set_to: int | None = None):
        field = SA_COUNTERS[name]
        bits = self._counters[slot]
        value = (bits >> field.offset) & ((1 << field.width) - 1)
        value = set_to if set_to is not None else min(value + increment, (1 << field.width) - 1)
        self._counters[slot] = self._splice(bits, field, value)

    def _event(self, slot: int, name: str):
        if not self.counters(slot)[name]:
            self._count(slot, name, set_to=1)
            self.events.append((slot, name))

    # -- data plane --------------------------------------------------------------------------

    def process(self, slot: int, packet: bytes) -> tuple[bytes | None, str]:
        """Process one raw IP packet on the SA in ``slot``: ``(output, "ok")`` or ``(None, reason)``."""
        self._check_slot(slot)
        sa = data.Const(self.layout, self._records[slot])
        if sa.state == SaState.INVALID:
            self.engine_counters["no_sa"] += 1
            return None, "no_sa"
        try:
            self._check_lifetime(slot, sa)
            if sa.direction == Direction.OUT:
                if sa.state != SaState.VALID:
                    raise _Drop("hard_expired")   # draining: no new outbound traffic
                output = self._outbound(slot, sa, bytes(packet))
            else:
                output = self._inbound(slot, sa, bytes(packet))
        except _Drop as drop:
            if drop.reason in DROP_COUNTERS:
                self._count(slot, DROP_COUNTERS[drop.reason])
            elif drop.reason in self.engine_counters:
                self.engine_counters[drop.reason] += 1
            return None, drop.reason
        if output is None:
            return None, "dummy"
        # Cleartext IP bytes: the packet released, or the packet taken (to its IP length).
        counted = output if sa.direction == Direction.IN else _Ip(packet, for_transport=False).packet
        self.account(slot, len(counted))
        return output, "ok"

    def account(self, slot: int, length: int):
        """Count a processed packet of `length` cleartext bytes; crossing a soft or
        hard lifetime raises its event once."""
        self._count(slot, "packets")
        self._count(slot, "bytes", length)
        counters = self.counters(slot)
        lifetime = data.Const(self.layout, self._records[slot]).lifetime
        if (lifetime.packets_soft and counters["packets"] >= lifetime.packets_soft) or \
                (lifetime.bytes_soft and counters["bytes"] >= lifetime.bytes_soft):
            self._event(slot, "soft_expired")
        if (lifetime.packets_hard and counters["packets"] >= lifetime.packets_hard) or \
                (lifetime.bytes_hard and counters["bytes"] >= lifetime.bytes_hard):
            self._event(slot, "hard_expired")

    def _check_lifetime(self, slot, sa):
        counters = self.counters(slot)
        lifetime = sa.lifetime
        if (lifetime.packets_hard and counters["packets"] >= lifetime.packets_hard) or \
                (lifetime.bytes_hard and counters["bytes"] >= lifetime.bytes_hard):
            raise _Drop("hard_expired")

    @staticmethod
    def _aad(sa, seq: int) -> bytes:
        # RFC 4106 section 5: SPI || seq (32) or SPI || seq_hi || seq_lo with ESN.
        if sa.esn:
            return struct.pack("!IQ", sa.spi, seq)
        return struct.pack("!II", sa.spi, seq & 0xffffffff)

    @staticmethod
    def _cipher(sa) -> AESGCM:
        key = sa.key.to_bytes(32, "little")[:32 if sa.key_256 else 16]
        return AESGCM(key)

    def _outbound(self, slot, sa, packet: bytes) -> bytes:
        inner = _Ip(packet, for_transport=sa.mode == Mode.TRANSPORT)
        seq_max = 2**64 - 1 if sa.esn else 2**32 - 1
        if sa.seq >= seq_max:
            self._event(slot, "hard_expired")
            raise _Drop("seq_overflow")
        seq = sa.seq + 1

        if sa.mode == Mode.TUNNEL:
            data_, next_header = inner.packet, PROTO_IPV4 if inner.version == 4 else PROTO_IPV6
        else:
            if inner.fragment:
                raise _Drop("malformed")
            data_, next_header = inner.payload, inner.proto

        pad_len = -(len(data_) + 2) % 4
        plaintext = data_ + bytes(range(1, pad_len + 1)) + bytes([pad_len, next_header])
        iv = seq.to_bytes(IV_BYTES, "big")
        nonce = sa.salt.to_bytes(4, "little") + iv
        sealed = self._cipher(sa).encrypt(nonce, plaintext, self._aad(sa, seq))
        esp = struct.pack("!II", sa.spi, seq & 0xffffffff) + iv + sealed

        # The sequence number is consumed once the packet is built (never reused).
        self._records[slot] = self._splice(self._records[slot], self.layout["seq"], seq)

        udp = sa.natt.encap == Encap.UDP
        if sa.mode == Mode.TUNNEL:
            version = sa.tunnel.ip_version
            src, dst = _addr_bytes(version, sa.tunnel.src), _addr_bytes(version, sa.tunnel.dst)
            if udp:
                esp = _udp_header(sa.natt.sport, sa.natt.dport, src, dst, esp) + esp
            proto = PROTO_UDP if udp else PROTO_ESP
            # RFC 4301 5.1.2.1: the outer TTL / hop limit is constructed (OUTER_TTL), not
            # copied; the inner one is the forwarder's to decrement (see the module docstring).
            if version == IpVersion.IPV4:
                header = struct.pack("!BBHHHBBH4s4s", 0x45, inner.tos, 20 + len(esp),
                                     seq & 0xffff, 0x4000 if inner.df else 0,
                                     OUTER_TTL, proto, 0, src, dst)
                return _ipv4_with_checksum(header) + esp
            header = struct.pack("!IHBB16s16s", (6 << 28) | (inner.tos << 20), len(esp),
                                 proto, OUTER_TTL, src, dst)
            return header + esp

        # Transport mode (RFC 4301 5.1.2): the original header is rewritten, its TTL /
        # hop limit, addresses, TOS and ID kept; only length, protocol and checksum change.
        if udp:
            if inner.version == 4:
                src, dst = inner.packet[12:16], inner.packet[16:20]
            else:
                src, dst = inner.packet[8:24], inner.packet[24:40]
            esp = _udp_header(sa.natt.sport, sa.natt.dport, src, dst, esp) + esp
        return inner.rebuilt(PROTO_UDP if udp else PROTO_ESP, esp)

    def _inbound(self, slot, sa, packet: bytes) -> bytes | None:
        outer = _Ip(packet, for_transport=False)
        if outer.fragment:
            raise _Drop("malformed")
        esp = outer.payload
        if outer.proto == PROTO_UDP:
            if sa.natt.encap != Encap.UDP or len(esp) < 8:
                raise _Drop("malformed")
            udp_len, = struct.unpack_from("!H", esp, 4)
            if udp_len != len(esp):
                raise _Drop("malformed")
            esp = esp[8:]
            # RFC 3948 section 2.2/2.3: a zero "SPI" is the non-ESP (IKE) marker.
            if len(esp) < 4 or esp[:4] == b"\0\0\0\0":
                raise _Drop("malformed")
        elif outer.proto == PROTO_ESP:
            if sa.natt.encap != Encap.NONE:
                raise _Drop("malformed")
        else:
            raise _Drop("malformed")
        if len(esp) < ESP_MIN_BYTES:
            raise _Drop("malformed")
        spi, seq_lo = struct.unpack_from("!II", esp)
        if spi != sa.spi:
            raise _Drop("unknown_spi")

        window = ReplayWindow(sa.window, sa.seq, sa.replay_bitmap, esn=bool(sa.esn))
        seq = window.reconstruct(seq_lo)
        if not window.check(seq):
            raise _Drop("replay")
        iv = esp[8:8 + IV_BYTES]
        nonce = sa.salt.to_bytes(4, "little") + iv
        try:
            plaintext = self._cipher(sa).decrypt(nonce, esp[8 + IV_BYTES:], self._aad(sa, seq))
        except InvalidTag:
            raise _Drop("auth_fail")

        window.update(seq)
        record = self._splice(self._records[slot], self.layout["seq"], window.top)
        self._records[slot] = self._splice(record, self.layout["replay_bitmap"], window.bitmap)

        pad_len, next_header = plaintext[-2], plaintext[-1]
        if pad_len > len(plaintext) - 2 or \
                plaintext[-2 - pad_len:-2] != bytes(range(1, pad_len + 1)):
            raise _Drop("malformed")
        payload = plaintext[:-2 - pad_len]
        if next_header == PROTO_NONE:
            return None

        if sa.mode == Mode.TUNNEL:
            if next_header not in (PROTO_IPV4, PROTO_IPV6):
                raise _Drop("malformed")
            inner = _Ip(payload, for_transport=False)
            if inner.version != (4 if next_header == PROTO_IPV4 else 6):
                raise _Drop("malformed")
            released = bytearray(inner.packet)
            # RFC 6040 normal mode: congestion marked on the outer header reaches the inner one.
            if outer.tos & 3 == ECN_CE and inner.tos & 3 in (1, 2):
                if inner.version == 4:
                    released[1] |= ECN_CE
                    released[:inner.header_len] = _ipv4_with_checksum(bytes(released[:inner.header_len]))
                else:
                    released[1] |= ECN_CE << 4
            return bytes(released)
        return outer.rebuilt(next_header, payload)
