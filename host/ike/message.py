# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 messages on the wire (RFC 7296 section 3): the header, the generic payload
chain and the bodies of the payloads espnic reads and writes.

Parsing is strict: every length is checked against what holds it, and any
mistake raises :class:`IkeParseError` (one line, no message bytes in it). The SK
payload is left encrypted here (:mod:`.crypto` opens it); it must be the last
payload of a message.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

HEADER_LEN = 28
#: RFC 3948 section 2.2: a UDP payload on the NAT-T port starting with four zero bytes
#: is IKE (the marker, then the message); anything else there is ESP.
NON_ESP_MARKER = bytes(4)
IKE_VERSION = 0x20           # major 2, minor 0

# exchange types (section 3.1)
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
EXCHANGES = {IKE_SA_INIT: "IKE_SA_INIT", IKE_AUTH: "IKE_AUTH",
             CREATE_CHILD_SA: "CREATE_CHILD_SA", INFORMATIONAL: "INFORMATIONAL"}

# header flags
FLAG_INITIATOR, FLAG_VERSION, FLAG_RESPONSE = 0x08, 0x10, 0x20

# payload types (section 3.2)
PT_NONE, PT_SA, PT_KE, PT_IDI, PT_IDR, PT_CERT, PT_CERTREQ, PT_AUTH = 0, 33, 34, 35, 36, 37, 38, 39
PT_NONCE, PT_NOTIFY, PT_DELETE, PT_VENDOR, PT_TSI, PT_TSR, PT_SK = 40, 41, 42, 43, 44, 45, 46
PT_CP, PT_EAP, PT_SKF = 47, 48, 53
KNOWN_PAYLOADS = frozenset(range(33, 49)) | {PT_SKF}

# protocol ids
PROTO_IKE, PROTO_AH, PROTO_ESP = 1, 2, 3

# notify types (section 3.10.1)
N_UNSUPPORTED_CRITICAL_PAYLOAD = 1
N_INVALID_IKE_SPI = 4
N_INVALID_SYNTAX = 7
N_INVALID_MESSAGE_ID = 9
N_NO_PROPOSAL_CHOSEN = 14
N_INVALID_KE_PAYLOAD = 17
N_AUTHENTICATION_FAILED = 24
N_SINGLE_PAIR_REQUIRED = 34
N_NO_ADDITIONAL_SAS = 35
N_TS_UNACCEPTABLE = 38
N_TEMPORARY_FAILURE = 43
N_CHILD_SA_NOT_FOUND = 44
N_INITIAL_CONTACT = 16384
N_NAT_DETECTION_SOURCE_IP = 16388
N_NAT_DETECTION_DESTINATION_IP = 16389
N_COOKIE = 16390
N_USE_TRANSPORT_MODE = 16391
N_REKEY_SA = 16393
ERROR_NOTIFY_MAX = 16383      # types below 16384 are errors

# identification types (section 3.5)
ID_IPV4_ADDR, ID_FQDN, ID_RFC822_ADDR, ID_IPV6_ADDR, ID_KEY_ID = 1, 2, 3, 5, 11

# authentication method (section 3.8)
AUTH_SHARED_KEY_MIC = 2

# traffic selector types (section 3.13.1)
TS_IPV4_ADDR_RANGE, TS_IPV6_ADDR_RANGE = 7, 8


class IkeParseError(ValueError):
    """A malformed IKE message; the message says what is wrong in one line."""


class UnsupportedCriticalPayload(IkeParseError):
    """A payload of a type this implementation does not know, marked critical."""

    def __init__(self, payload_type: int):
        self.payload_type = payload_type
        super().__init__(f"unsupported critical payload type {payload_type}")


@dataclass
class Payload:
    """One payload: its type and body (the bytes after the generic header)."""
    type: int
    body: bytes = field(repr=False)
    critical: bool = False


@dataclass
class Header:
    spi_i: int
    spi_r: int
    next_payload: int
    exchange: int
    flags: int
    msg_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)


@dataclass
class Message:
    """A parsed message: header, the plain payloads, and (when the message has an SK
    payload) the offset of that payload, still encrypted."""
    header: Header
    payloads: list
    raw: bytes = field(repr=False)
    sk_offset: int | None = None
    sk_first: int = PT_NONE

    def find(self, ptype: int):
        return next((p for p in self.payloads if p.type == ptype), None)

    def notifies(self) -> list:
        return [parse_notify(p.body) for p in self.payloads if p.type == PT_NOTIFY]


# -- header and chain --------------------------------------------------------------------

def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise IkeParseError(f"message of {len(data)} bytes is shorter than the IKE header")
    spi_i, spi_r, nxt, version, exchange, flags, msg_id, length = struct.unpack(
        "!QQBBBBII", data[:HEADER_LEN])
    if version >> 4 != 2:
        raise IkeParseError(f"IKE major version {version >> 4}, not 2")
    if length != len(data):
        raise IkeParseError(f"header length {length}, datagram {len(data)} bytes")
    if spi_i == 0:
        raise IkeParseError("initiator SPI is zero")
    return Header(spi_i, spi_r, nxt, exchange, flags, msg_id, length)


def parse_chain(first: int, data: bytes, offset: int = 0, *, stop_at_sk: bool = True):
    """The payloads of ``data[offset:]`` starting with type ``first``; returns
    ``(payloads, sk_offset, sk_first)``. Unknown non-critical payloads are skipped."""
    payloads, nxt = [], first
    while nxt != PT_NONE:
        if len(data) - offset < 4:
            raise IkeParseError(f"payload type {nxt}: truncated generic header")
        following, flags, length = struct.unpack_from("!BBH", data, offset)
        if length < 4 or offset + length > len(data):
            raise IkeParseError(f"payload type {nxt}: length {length} does not fit")
        critical = bool(flags & 0x80)
        if nxt == PT_SK and stop_at_sk:
            if offset + length != len(data):
                raise IkeParseError("SK payload is not the last payload")
            return payloads, offset, following
        if nxt not in KNOWN_PAYLOADS:
            if critical:
                raise UnsupportedCriticalPayload(nxt)
        else:
            payloads.append(Payload(nxt, bytes(data[offset + 4:offset + length]), critical))
        offset += length
        nxt = following
    if offset != len(data):
        raise IkeParseError(f"{len(data) - offset} bytes after the last payload")
    return payloads, None, PT_NONE


def parse_message(data: bytes) -> Message:
    data = bytes(data)
    header = parse_header(data)
    payloads, sk_offset, sk_first = parse_chain(header.next_payload, data, HEADER_LEN)
    return Message(header, payloads, data, sk_offset, sk_first)


def encode_chain(payloads, last_next: int = PT_NONE) -> tuple[int, bytes]:
    """(type of the first payload, the chained bytes); the last payload's next is
    ``last_next``."""
    out = bytearray()
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].type if i + 1 < len(payloads) else last_next
        out += struct.pack("!BBH", nxt, 0x80 if p.critical else 0, 4 + len(p.body)) + p.body
    return (payloads[0].type if payloads else last_next), bytes(out)


def encode_header(spi_i, spi_r, next_payload, exchange, flags, msg_id, length) -> bytes:
    return struct.pack("!QQBBBBII", spi_i, spi_r, next_payload, IKE_VERSION, exchange, flags,
                       msg_id, length)


def encode_plain(spi_i, spi_r, exchange, flags, msg_id, payloads) -> bytes:
    first, body = encode_chain(payloads)
    return encode_header(spi_i, spi_r, first, exchange, flags, msg_id,
                         HEADER_LEN + len(body)) + body


# -- payload bodies ----------------------------------------------------------------------

@dataclass(frozen=True)
class Transform:
    type: int
    id: int
    key_len: int | None = None      # bits (attribute 14), for ENCR


@dataclass
class Proposal:
    num: int
    protocol: int
    spi: bytes
    transforms: list


def parse_sa(body: bytes) -> list:
    proposals, offset = [], 0
    while offset < len(body):
        if len(body) - offset < 8:
            raise IkeParseError("SA: truncated proposal")
        last, _, length, num, proto, spi_size, count = struct.unpack_from("!BBHBBBB", body,
                                                                            offset)
        if length < 8 + spi_size or offset + length > len(body):
            raise IkeParseError(f"SA: proposal length {length} does not fit")
        end = offset + length
        spi = body[offset + 8:offset + 8 + spi_size]
        pos, transforms = offset + 8 + spi_size, []
        for _ in range(count):
            if end - pos < 8:
                raise IkeParseError("SA: truncated transform")
            t_last, _, t_len, t_type, _, t_id = struct.unpack_from("!BBHBBH", body, pos)
            if t_len < 8 or pos + t_len > end:
                raise IkeParseError(f"SA: transform length {t_len} does not fit")
            key_len, apos = None, pos + 8
            while apos < pos + t_len:
                if pos + t_len - apos < 4:
                    raise IkeParseError("SA: truncated transform attribute")
                a_type, a_val = struct.unpack_from("!HH", body, apos)
                if a_type & 0x8000:
                    apos += 4
                    if a_type & 0x7FFF == 14:
                        key_len = a_val
                else:                       # TLV: not used by any transform we know
                    if apos + 4 + a_val > pos + t_len:
                        raise IkeParseError("SA: transform attribute length does not fit")
                    apos += 4 + a_val
            transforms.append(Transform(t_type, t_id, key_len))
            pos += t_len
            if t_last == 0:
                break
        if pos != end or len(transforms) != count:
            raise IkeParseError("SA: transform count or lengths disagree with the proposal")
        proposals.append(Proposal(num, proto, spi, transforms))
        offset = end
        if last == 0:
            break
    if offset != len(body) or not proposals:
        raise IkeParseError("SA: proposal chain does not fill the payload")
    return proposals


def encode_sa(proposals) -> bytes:
    out = bytearray()
    for i, prop in enumerate(proposals):
        tbytes = bytearray()
        for j, t in enumerate(prop.transforms):
            attrs = b"" if t.key_len is None else struct.pack("!HH", 0x800E, t.key_len)
            tbytes += struct.pack("!BBHBBH", 0 if j == len(prop.transforms) - 1 else 3, 0,
                                  8 + len(attrs), t.type, 0, t.id) + attrs
        out += struct.pack("!BBHBBBB", 0 if i == len(proposals) - 1 else 2, 0,
                           8 + len(prop.spi) + len(tbytes), prop.num, prop.protocol,
                           len(prop.spi), len(prop.transforms)) + prop.spi + tbytes
    return bytes(out)


def parse_ke(body: bytes) -> tuple[int, bytes]:
    if len(body) < 5:
        raise IkeParseError("KE: truncated")
    group, = struct.unpack_from("!H", body)
    return group, body[4:]


def encode_ke(group: int, public: bytes) -> bytes:
    return struct.pack("!HH", group, 0) + public


def parse_nonce(body: bytes) -> bytes:
    if not 16 <= len(body) <= 256:
        raise IkeParseError(f"Nonce of {len(body)} bytes (16..256)")
    return body


@dataclass
class Notify:
    protocol: int
    spi: bytes
    type: int
    data: bytes = field(repr=False)


def parse_notify(body: bytes) -> Notify:
    if len(body) < 4:
        raise IkeParseError("Notify: truncated")
    proto, spi_size, ntype = struct.unpack_from("!BBH", body)
    if 4 + spi_size > len(body):
        raise IkeParseError("Notify: SPI does not fit")
    return Notify(proto, body[4:4 + spi_size], ntype, body[4 + spi_size:])


def encode_notify(ntype: int, data: bytes = b"", *, protocol: int = 0, spi: bytes = b"") -> bytes:
    return struct.pack("!BBH", protocol, len(spi), ntype) + spi + data


def notify(ntype: int, data: bytes = b"", **kw) -> Payload:
    return Payload(PT_NOTIFY, encode_notify(ntype, data, **kw))


def parse_id(body: bytes) -> tuple[int, bytes]:
    if len(body) < 5:
        raise IkeParseError("ID: truncated")
    return body[0], body[4:]


def encode_id(id_type: int, data: bytes) -> bytes:
    return bytes([id_type, 0, 0, 0]) + data


def identity(text: str) -> tuple[int, bytes]:
    """An identity as written in a config: an IP address, user@domain, or a name."""
    try:
        addr = ipaddress.ip_address(text)
        return (ID_IPV4_ADDR if addr.version == 4 else ID_IPV6_ADDR), addr.packed
    except ValueError:
        pass
    return (ID_RFC822_ADDR if "@" in text else ID_FQDN), text.encode()


def identity_text(id_type: int, data: bytes) -> str:
    if id_type in (ID_IPV4_ADDR, ID_IPV6_ADDR) and len(data) in (4, 16):
        return str(ipaddress.ip_address(data))
    return data.decode("utf-8", "replace")


def parse_auth(body: bytes) -> tuple[int, bytes]:
    if len(body) < 5:
        raise IkeParseError("AUTH: truncated")
    return body[0], body[4:]


def encode_auth(method: int, data: bytes) -> bytes:
    return bytes([method, 0, 0, 0]) + data


def parse_delete(body: bytes) -> tuple[int, list]:
    if len(body) < 4:
        raise IkeParseError("Delete: truncated")
    proto, spi_size, count = struct.unpack_from("!BBH", body)
    if len(body) != 4 + spi_size * count:
        raise IkeParseError("Delete: SPI count and length disagree")
    if proto == PROTO_IKE and spi_size not in (0, 8):
        raise IkeParseError("Delete: IKE with an SPI size other than 0")
    if proto in (PROTO_ESP, PROTO_AH) and spi_size != 4:
        raise IkeParseError(f"Delete: ESP SPI size {spi_size}")
    return proto, [body[4 + i * spi_size:4 + (i + 1) * spi_size] for i in range(count)]


def encode_delete(proto: int, spis) -> bytes:
    spis = list(spis)
    size = len(spis[0]) if spis else 0
    return struct.pack("!BBH", proto, size, len(spis)) + b"".join(spis)


@dataclass(frozen=True)
class TrafficSelector:
    """An address range with a protocol (0: any) and a port range."""
    start: ipaddress.IPv4Address | ipaddress.IPv6Address
    end: ipaddress.IPv4Address | ipaddress.IPv6Address
    proto: int = 0
    port_lo: int = 0
    port_hi: int = 65535

    @classmethod
    def from_network(cls, text: str) -> "TrafficSelector":
        net = ipaddress.ip_network(text, strict=False)
        return cls(net[0], net[-1])

    def intersect(self, other: "TrafficSelector"):
        if self.start.version != other.start.version:
            return None
        if self.proto and other.proto and self.proto != other.proto:
            return None
        start, end = max(self.start, other.start), min(self.end, other.end)
        lo, hi = max(self.port_lo, other.port_lo), min(self.port_hi, other.port_hi)
        if start > end or lo > hi:
            return None
        return TrafficSelector(start, end, self.proto or other.proto, lo, hi)

    def networks(self) -> list:
        return list(ipaddress.summarize_address_range(self.start, self.end))

    def __str__(self):
        nets = self.networks()
        where = str(nets[0]) if len(nets) == 1 else f"{self.start}-{self.end}"
        if self.proto:
            where += f"[{self.proto}/{self.port_lo}-{self.port_hi}]"
        return where


def parse_ts(body: bytes) -> list:
    if len(body) < 4:
        raise IkeParseError("TS: truncated")
    count, offset, out = body[0], 4, []
    for _ in range(count):
        if len(body) - offset < 8:
            raise IkeParseError("TS: truncated selector")
        ts_type, proto, length, lo, hi = struct.unpack_from("!BBHHH", body, offset)
        size = {TS_IPV4_ADDR_RANGE: 4, TS_IPV6_ADDR_RANGE: 16}.get(ts_type)
        if size is None:
            raise IkeParseError(f"TS: selector type {ts_type}")
        if length != 8 + 2 * size or offset + length > len(body):
            raise IkeParseError(f"TS: selector length {length}")
        start = ipaddress.ip_address(body[offset + 8:offset + 8 + size])
        end = ipaddress.ip_address(body[offset + 8 + size:offset + length])
        out.append(TrafficSelector(start, end, proto, lo, hi))
        offset += length
    if offset != len(body) or not out:
        raise IkeParseError("TS: selectors do not fill the payload")
    return out


def encode_ts(selectors) -> bytes:
    out = bytearray(bytes([len(selectors), 0, 0, 0]))
    for ts in selectors:
        ts_type = TS_IPV4_ADDR_RANGE if ts.start.version == 4 else TS_IPV6_ADDR_RANGE
        addrs = ts.start.packed + ts.end.packed
        out += struct.pack("!BBHHH", ts_type, ts.proto, 8 + len(addrs), ts.port_lo,
                           ts.port_hi) + addrs
    return bytes(out)
