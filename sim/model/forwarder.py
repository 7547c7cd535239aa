# SPDX-License-Identifier: BSD-2-Clause
"""Reference forwarder, in Python: what the gateware's forwarder decides per packet.

:func:`parse` is ``hdl/forwarder/parser.py: IpParser`` -- the record the
classifier works from -- with the same rules (see that module's docstring).
:class:`RouteTableModel` and :func:`egress` are ``hdl/forwarder/egress.py``'s
route table and egress: the port a packet leaves by.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ...hdl.engine.protocol import PROTO_ESP, PROTO_FRAGMENT, PROTO_UDP
from ...hdl.forwarder.parser import NATT_PORT, PacketKind
from ...hdl.forwarder.classifier import Decision
from ...hdl.forwarder.policy import PolicyAction
from ...hdl.forwarder.spi_table import SpiStatus, bucket_of
from .esp import internet_checksum

__all__ = ["Parsed", "parse", "SpiTableModel", "PolicyTableModel", "spi_key", "classify",
           "RouteTableModel", "egress"]

_PORTED = (6, PROTO_UDP, 132)


@dataclass(frozen=True)
class Parsed:
    """The fields of :data:`PARSED`, as numbers and bytes (addresses 4 or 16 bytes)."""
    kind: PacketKind = PacketKind.IP
    malformed: bool = False
    ipv6: bool = False
    fragment: bool = False
    proto: int = 0
    src: bytes = b""
    dst: bytes = b""
    sport: int = 0
    dport: int = 0
    spi: int = 0
    length: int = 0


def parse(packet: bytes) -> Parsed:
    """The parser's record of a raw IP packet (only ``malformed`` counts when it is set)."""
    if not packet:
        return Parsed(malformed=True)
    version = packet[0] >> 4
    if version == 6:
        if len(packet) < 40:
            return Parsed(malformed=True, ipv6=True)
        plen, proto = struct.unpack_from("!HB", packet, 4)
        header_len, src, dst = 40, packet[8:24], packet[24:40]
        fragment = proto == PROTO_FRAGMENT
        malformed = plen == 0
        length = 40 + plen
    elif version == 4:
        header_len = (packet[0] & 15) * 4
        if len(packet) < max(header_len, 20) or header_len < 20:
            return Parsed(malformed=True)
        length, flags, proto = struct.unpack_from("!H2xHxB", packet, 2)
        src, dst = packet[12:16], packet[16:20]
        fragment = (flags & 0x3fff) != 0
        malformed = length < header_len or internet_checksum(packet[:header_len]) != 0
    else:
        return Parsed(malformed=True)
    after = packet[header_len:header_len + 12] + bytes(12)
    sport, dport, _, _, spi_udp = struct.unpack_from("!HHHHI", after)
    first_word, = struct.unpack_from("!I", after)
    ported = proto in _PORTED and not fragment
    esp = proto == PROTO_ESP and not fragment
    udp_esp = (proto == PROTO_UDP and not fragment and NATT_PORT in (sport, dport)
               and spi_udp != 0)
    kind = PacketKind.ESP if esp else PacketKind.UDP_ESP if udp_esp else PacketKind.IP
    return Parsed(kind=kind, malformed=malformed, ipv6=version == 6, fragment=fragment,
                  proto=proto, src=src, dst=dst, sport=sport if ported else 0,
                  dport=dport if ported else 0,
                  spi=first_word if esp else spi_udp if udp_esp else 0, length=length)


class SpiTableModel:
    """``hdl/forwarder/spi_table.py: SpiTable`` in Python: the same buckets (by
    :func:`bucket_of`), the same first-free-way placement, the same statuses.
    Keys are :data:`SPI_KEY` values (ints), values anything."""

    def __init__(self, *, entries: int, ways: int = 4):
        self.buckets, self.ways = entries // ways, ways
        self._rows = [[None] * ways for _ in range(self.buckets)]

    def _row(self, key):
        return self._rows[bucket_of(key, self.buckets)]

    def _find(self, row, key):
        return next((k for k, slot in enumerate(row) if slot and slot[0] == key), None)

    def insert(self, key, value) -> SpiStatus:
        row = self._row(key)
        if self._find(row, key) is not None:
            return SpiStatus.COLLISION
        if None not in row:
            return SpiStatus.FULL
        row[row.index(None)] = (key, value)
        return SpiStatus.OK

    def remove(self, key) -> SpiStatus:
        row = self._row(key)
        way = self._find(row, key)
        if way is None:
            return SpiStatus.NOT_FOUND
        row[way] = None
        return SpiStatus.OK

    def replace(self, key, value) -> SpiStatus:
        row = self._row(key)
        way = self._find(row, key)
        if way is None:
            return SpiStatus.NOT_FOUND
        row[way] = (key, value)
        return SpiStatus.OK

    def lookup(self, key):
        """The value, or None (a miss)."""
        way = self._find(self._row(key), key)
        return None if way is None else self._row(key)[way][1]

    @property
    def used(self) -> int:
        return sum(slot is not None for row in self._rows for slot in row)


def _prefix_matches(address: bytes, prefix: bytes, length: int) -> bool:
    whole, rest = divmod(length, 8)
    if address[:whole] != prefix[:whole]:
        return False
    return rest == 0 or (address[whole] ^ prefix[whole]) >> (8 - rest) == 0


class PolicyTableModel:
    """``hdl/forwarder/policy.py: PolicyTable`` in Python. A rule is a dict with the
    fields of its ``WRITE`` layout (addresses as 16 bytes, wire order); a selector a
    dict with the fields of :data:`SELECTOR`."""

    def __init__(self, *, rules: int):
        self._rules = [None] * rules

    def write(self, index: int, rule: dict) -> bool:
        limit = 128 if rule["ipv6"] else 32
        if rule["src_len"] > limit or rule["dst_len"] > limit:
            return False
        self._rules[index] = dict(rule)
        return True

    def _matches(self, rule, key) -> bool:
        return (rule["valid"] and rule["ipv6"] == key["ipv6"]
                and _prefix_matches(key["src"], rule["src"], rule["src_len"])
                and _prefix_matches(key["dst"], rule["dst"], rule["dst_len"])
                and (rule["any_proto"] or rule["proto"] == key["proto"])
                and rule["sport_lo"] <= key["sport"] <= rule["sport_hi"]
                and rule["dport_lo"] <= key["dport"] <= rule["dport_hi"])

    def lookup(self, key: dict):
        """``(index, action, value)`` of the best match (highest priority, then lowest
        index), or None: a miss."""
        best = None
        for index, rule in enumerate(self._rules):
            if rule and self._matches(rule, key) and (best is None
                                                      or rule["priority"] > best[0]["priority"]):
                best = (rule, index)
        if best is None:
            return None
        rule, index = best
        return index, PolicyAction(rule["action"]), rule["value"]


def spi_key(parsed: Parsed) -> int:
    """The :data:`SPI_KEY` value an inbound packet is looked up by."""
    dst = int.from_bytes(parsed.dst, "little")
    return parsed.spi | dst << 32 | int(parsed.kind == PacketKind.UDP_ESP) << 160


def classify(parsed: Parsed, spis: SpiTableModel, policy: PolicyTableModel, *,
             miss_to_host: bool = False) -> tuple[Decision, bool, object, str | None]:
    """``hdl/forwarder/classifier.py: Classifier``: ``(decision, inbound, target,
    counter)``; `target` is the table's value for ``ENGINE``, `counter` the name of
    the classifier counter the packet adds to, if any."""
    miss = Decision.HOST if miss_to_host else Decision.DROP
    if parsed.malformed:
        return Decision.DROP, False, None, "malformed"
    if parsed.kind in (PacketKind.ESP, PacketKind.UDP_ESP):
        target = spis.lookup(spi_key(parsed))
        if target is None:
            return miss, True, None, "spi_miss"
        return Decision.ENGINE, True, target, None
    pad = bytes(16 - len(parsed.src))
    found = policy.lookup({"ipv6": parsed.ipv6, "src": parsed.src + pad, "dst": parsed.dst + pad,
                           "proto": parsed.proto, "sport": parsed.sport, "dport": parsed.dport})
    if found is None:
        return miss, False, None, "policy_miss"
    _index, action, value = found
    if action == PolicyAction.PROTECT:
        return Decision.ENGINE, False, value, None
    if action == PolicyAction.BYPASS:
        return Decision.BYPASS, False, None, None
    return Decision.DROP, False, None, "discarded"


class RouteTableModel:
    """``hdl/forwarder/egress.py: RouteTable`` in Python, with :mod:`ipaddress`
    networks rather than masks: the longest prefix that covers the destination
    wins, the lowest index among equal lengths. Addresses are bytes in wire
    order (4 or 16; only an IPv4 address's first 4 bytes count)."""

    def __init__(self, *, routes: int, ports: int):
        self.ports = ports
        self._routes = [None] * routes

    @staticmethod
    def _address(ipv6: bool, dst: bytes):
        return ipaddress.IPv6Address(dst[:16]) if ipv6 else ipaddress.IPv4Address(dst[:4])

    def write(self, index: int, valid: bool, ipv6: bool, dst: bytes, length: int,
              port: int) -> bool:
        """The host's write: False (nothing written) for a prefix longer than the
        address or a port that does not exist; ``valid = False`` clears the route."""
        if length > (128 if ipv6 else 32) or port >= self.ports:
            return False
        network = ipaddress.ip_network((self._address(ipv6, dst), length), strict=False)
        self._routes[index] = (network, port) if valid else None
        return True

    def lookup(self, ipv6: bool, dst: bytes):
        """The port of the best route, or None (no route)."""
        address = self._address(ipv6, dst)
        best = None
        for route in self._routes:
            if (route and route[0].version == address.version and address in route[0]
                    and (best is None or route[0].prefixlen > best[0].prefixlen)):
                best = route
        return None if best is None else best[1]


def egress(routes: RouteTableModel, packet: bytes):
    """``hdl/forwarder/egress.py: Egress``: the port `packet` leaves by, or None
    (dropped: counted in ``malformed`` when ``parse(packet).malformed``, else in
    ``no_route``)."""
    parsed = parse(packet)
    if parsed.malformed:
        return None
    return routes.lookup(parsed.ipv6, parsed.dst)
