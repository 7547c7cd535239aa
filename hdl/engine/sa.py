# SPDX-License-Identifier: BSD-2-Clause
"""The Security Association record: one source of truth for gateware, model and host.

An ESP engine keeps one :func:`sa_layout` record per SA slot and one
:data:`SA_COUNTERS` record next to it. The reference model (``espnic.sim.model``)
stores exactly these bits, the host driver packs them with the same layout.

Encoding of the fields (DESIGN.md section 4):

* ``key`` and ``salt`` follow the project's byte order for wide signals: byte
  ``i`` in bits ``[8*i, 8*i+8)``, i.e. ``value == int.from_bytes(octets,
  "little")`` (the same as ``GCM_COMMAND.key`` / ``nonce``). AES-128 uses key
  bytes 0..15, the rest is zero.
* ``spi``, ``seq``, the addresses, the ports and the lifetimes are numeric
  values. An address is ``int(ipaddress.ip_address(text))``: IPv4 sits in the
  low 32 bits. (Gateware emits them most significant byte first on the wire.)
* ``seq``: outbound, the last sequence number used (the next packet gets
  ``seq + 1``); inbound, the highest authenticated sequence number (the right
  edge of the replay window), 64 bits wide so the ESN high half is kept.
* ``replay_bitmap``: bit ``i`` set means sequence number ``seq - i`` has been
  received and authenticated. Only the low ``window`` bits are used; the width
  of the field is the engine's maximum window (:data:`REPLAY_WINDOW` by
  default, a parameter of :func:`sa_layout`).
* All enums have a zero member, so a zeroized (deleted) record decodes as an
  ``INVALID`` SA.

:class:`SaConfig` is the user-facing form (TOML ``[[sa]]`` table and CLI
options, DESIGN.md section 7) with strict validation; ``to_record`` /
``from_record`` convert to and from the layout.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any, Mapping

from amaranth.lib import data, enum

__all__ = [
    "REPLAY_WINDOW", "MIN_REPLAY_WINDOW", "NATT_PORT", "SPI_MIN",
    "Direction", "Mode", "Encap", "IpVersion", "SaState",
    "sa_layout", "SA_RECORD", "SA_LIFETIME", "SA_TUNNEL", "SA_NATT", "SA_COUNTERS",
    "SaConfig",
]

#: Default (and default maximum) inbound replay window, in packets.
REPLAY_WINDOW = 1024
#: Smallest window accepted: RFC 4303 section 3.4.3 makes 32 mandatory and 64 the
#: recommended default; the project requires 64.
MIN_REPLAY_WINDOW = 64
#: RFC 3948 UDP encapsulation port.
NATT_PORT = 4500
#: SPI values 0..255 are reserved by IANA (RFC 4303 section 2.1).
SPI_MIN = 256


class Direction(enum.Enum, shape=1):
    IN  = 0
    OUT = 1


class Mode(enum.Enum, shape=1):
    TRANSPORT = 0
    TUNNEL    = 1


class Encap(enum.Enum, shape=1):
    NONE = 0
    UDP  = 1   # RFC 3948


class IpVersion(enum.Enum, shape=4):
    NONE = 0   # no endpoints (transport mode SA without src/dst)
    IPV4 = 4
    IPV6 = 6


class SaState(enum.Enum, shape=2):
    INVALID  = 0   # empty slot, deleted SA: every packet is dropped
    VALID    = 1
    DRAINING = 2   # being replaced: inbound still accepted, outbound refused


#: Soft and hard lifetimes; 0 means "no limit". ``bytes`` counts cleartext IP
#: packet bytes (what enters an outbound SA / leaves an inbound SA).
SA_LIFETIME = data.StructLayout({
    "packets_soft": 64,
    "packets_hard": 64,
    "bytes_soft":   64,
    "bytes_hard":   64,
})

#: SA endpoints: the outer header of tunnel mode (numeric address values).
SA_TUNNEL = data.StructLayout({
    "ip_version": IpVersion,
    "src":        128,
    "dst":        128,
})

#: NAT traversal (RFC 3948 UDP encapsulation).
SA_NATT = data.StructLayout({
    "encap": Encap,
    "sport": 16,
    "dport": 16,
})


def sa_layout(window: int = REPLAY_WINDOW) -> data.StructLayout:
    """SA record layout for an engine whose largest replay window is ``window`` packets."""
    if not isinstance(window, int) or window < MIN_REPLAY_WINDOW or window % 32:
        raise ValueError(f"window must be a multiple of 32 and at least {MIN_REPLAY_WINDOW}, "
                         f"not {window!r}")
    return data.StructLayout({
        "state":         SaState,
        "direction":     Direction,
        "mode":          Mode,
        "esn":           1,
        "key_256":       1,      # 1: AES-256, 0: AES-128
        "key":           256,    # write-only over the host link
        "salt":          32,     # write-only over the host link
        "spi":           32,
        "seq":           64,
        "window":        16,     # configured window size in packets (<= bitmap width)
        "replay_bitmap": window,
        "tunnel":        SA_TUNNEL,
        "natt":          SA_NATT,
        "lifetime":      SA_LIFETIME,
    })


#: SA record of an engine with the default window.
SA_RECORD = sa_layout()

#: Per-SA counters and event flags, next to the record (not part of it, so that
#: the host can read and clear them without touching the SA).
SA_COUNTERS = data.StructLayout({
    "packets":           64,   # processed successfully
    "bytes":             64,   # cleartext IP bytes of those packets
    "auth_fail":         32,   # ICV mismatch
    "replay_drop":       32,   # duplicate, left of the window, or sequence number 0
    "malformed_drop":    32,   # bad length, header, padding, next header
    "seq_overflow_drop": 32,   # outbound sequence number exhausted
    "expired_drop":      32,   # hard lifetime reached, or SA draining (outbound)
    "soft_expired":      1,    # event flag: soft lifetime crossed (raised once)
    "hard_expired":      1,    # event flag: hard lifetime reached or sequence exhausted
})


_LIFETIME_KEYS = ("packets_soft", "packets_hard", "bytes_soft", "bytes_hard")
_FIELDS_HELP = "spi, direction, mode, key, salt, src, dst, esn, encap, window, seq, engine, lifetime, sport, dport"


def _fail(field: str, reason: str):
    raise ValueError(f"SA field {field!r}: {reason}")


def _parse_hex(field: str, value: Any, lengths: tuple[int, ...]) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        octets = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        try:
            octets = bytes.fromhex(text)
        except ValueError:
            _fail(field, f"not a hex string: {value!r}")
    else:
        _fail(field, f"expected a hex string, not {type(value).__name__}")
    if len(octets) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        _fail(field, f"must be {want} bytes ({' or '.join(str(2 * n) for n in lengths)} hex digits), "
                     f"not {len(octets)}")
    return octets


def _parse_int(field: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                _fail(field, f"not an integer: {value!r}")
        else:
            _fail(field, f"expected an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        _fail(field, f"{value} is out of range {lo}..{hi}")
    return value


def _parse_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        _fail(field, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return value.lower()


def _parse_addr(field: str, value: Any):
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        _fail(field, f"not an IPv4 or IPv6 address: {value!r}")


@dataclasses.dataclass
class SaConfig:
    """One SA as the user writes it (TOML ``[[sa]]`` / CLI), validated on construction.

    Field names are the contract of DESIGN.md section 7. After construction the
    fields are normalised: ``direction``/``mode``/``encap`` lower case, ``key`` and
    ``salt`` lower-case hex without prefix, ``src``/``dst`` canonical address
    text (or ``None``), ``lifetime`` a dict with all four keys. A bad field
    raises :class:`ValueError` whose message names the field and the reason.
    """

    spi: int
    direction: str
    # Secrets: never in a repr (a log line, a traceback's locals).
    key: str | bytes = dataclasses.field(repr=False)
    salt: str | bytes = dataclasses.field(repr=False)
    mode: str = "tunnel"
    src: str | None = None
    dst: str | None = None
    esn: bool = False
    encap: str = "none"
    window: int = REPLAY_WINDOW
    seq: int = 0
    engine: str | int = "auto"
    lifetime: Mapping[str, int] = dataclasses.field(default_factory=dict)
    sport: int = NATT_PORT     # UDP encapsulation ports (RFC 3948 default 4500)
    dport: int = NATT_PORT

    def __post_init__(self):
        self.spi = _parse_int("spi", self.spi, SPI_MIN, 2**32 - 1)
        self.direction = _parse_choice("direction", self.direction, ("in", "out"))
        self.mode = _parse_choice("mode", self.mode, ("tunnel", "transport"))
        self.key = _parse_hex("key", self.key, (16, 32)).hex()
        self.salt = _parse_hex("salt", self.salt, (4,)).hex()
        if not isinstance(self.esn, bool):
            _fail("esn", f"must be true or false, not {self.esn!r}")
        self.encap = _parse_choice("encap", self.encap, ("none", "udp"))
        self.window = _parse_int("window", self.window, MIN_REPLAY_WINDOW, 2**16 - 1)
        self.seq = _parse_int("seq", self.seq, 0, 2**64 - 1 if self.esn else 2**32 - 1)
        if self.engine != "auto":
            self.engine = _parse_int("engine", self.engine, 0, 2**16 - 1)
        self.sport = _parse_int("sport", self.sport, 1, 2**16 - 1)
        self.dport = _parse_int("dport", self.dport, 1, 2**16 - 1)

        src, dst = _parse_addr("src", self.src), _parse_addr("dst", self.dst)
        if src is not None and dst is not None and src.version != dst.version:
            _fail("dst", f"IPv{dst.version} address with an IPv{src.version} src")
        if self.mode == "tunnel":
            for name, addr in (("src", src), ("dst", dst)):
                if addr is None:
                    _fail(name, "required in tunnel mode (outer header endpoint)")
        if (src is None) != (dst is None):
            _fail("dst" if dst is None else "src", "src and dst must be given together")
        self.src = None if src is None else str(src)
        self.dst = None if dst is None else str(dst)

        if not isinstance(self.lifetime, Mapping):
            _fail("lifetime", f"expected a table of {', '.join(_LIFETIME_KEYS)}")
        lifetime = {}
        for name, value in self.lifetime.items():
            if name not in _LIFETIME_KEYS:
                _fail("lifetime", f"unknown key {name!r} (expected {', '.join(_LIFETIME_KEYS)})")
            lifetime[name] = _parse_int(f"lifetime.{name}", value, 0, 2**64 - 1)
        for name in _LIFETIME_KEYS:
            lifetime.setdefault(name, 0)
        for kind in ("packets", "bytes"):
            soft, hard = lifetime[f"{kind}_soft"], lifetime[f"{kind}_hard"]
            if soft and hard and soft > hard:
                _fail(f"lifetime.{kind}_soft", f"{soft} is larger than {kind}_hard {hard}")
        self.lifetime = lifetime

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> "SaConfig":
        """From a TOML ``[[sa]]`` table (or CLI options); unknown and missing fields are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        for name in table:
            if name not in names:
                raise ValueError(f"SA field {name!r}: unknown field (known: {_FIELDS_HELP})")
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
                    and f.name not in table:
                raise ValueError(f"SA field {f.name!r}: missing")
        return cls(**table)

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    @property
    def salt_bytes(self) -> bytes:
        return bytes.fromhex(self.salt)

    def to_record(self, layout: data.StructLayout = SA_RECORD) -> data.Const:
        """The SA record (state ``VALID``) with this configuration, as a ``data.Const`` of ``layout``.

        Inbound SAs start with a full replay bitmap: with ``seq = N``, nothing at
        or below N is accepted (the safe choice when the real bitmap is unknown).
        ``int(record.as_bits())`` is the raw record value.
        """
        bitmap_width = layout["replay_bitmap"].width
        if self.window > bitmap_width:
            _fail("window", f"{self.window} is larger than the engine's maximum window {bitmap_width}")
        key = self.key_bytes
        if self.src is None:
            tunnel = {"ip_version": IpVersion.NONE, "src": 0, "dst": 0}
        else:
            src, dst = ipaddress.ip_address(self.src), ipaddress.ip_address(self.dst)
            tunnel = {"ip_version": IpVersion.IPV4 if src.version == 4 else IpVersion.IPV6,
                      "src": int(src), "dst": int(dst)}
        inbound = self.direction == "in"
        bitmap = (1 << self.window) - 1 if inbound and self.seq else 0
        return layout.const({
            "state":         SaState.VALID,
            "direction":     Direction.IN if inbound else Direction.OUT,
            "mode":          Mode.TUNNEL if self.mode == "tunnel" else Mode.TRANSPORT,
            "esn":           int(self.esn),
            "key_256":       int(len(key) == 32),
            "key":           int.from_bytes(key, "little"),
            "salt":          int.from_bytes(self.salt_bytes, "little"),
            "spi":           self.spi,
            "seq":           self.seq,
            "window":        self.window,
            "replay_bitmap": bitmap,
            "tunnel":        tunnel,
            "natt":          {"encap": Encap.UDP if self.encap == "udp" else Encap.NONE,
                              "sport": self.sport, "dport": self.dport},
            "lifetime":      dict(self.lifetime),
        })

    @classmethod
    def from_record(cls, record, layout: data.StructLayout = SA_RECORD) -> "SaConfig":
        """Inverse of :meth:`to_record` (the replay bitmap and state are not part of a config)."""
        if not isinstance(record, data.Const):
            record = data.Const(layout, int(record))
        if record.state == SaState.INVALID:
            raise ValueError("SA record: state is INVALID (empty or deleted slot)")
        key_len = 32 if record.key_256 else 16
        version = record.tunnel.ip_version
        if version == IpVersion.NONE:
            src = dst = None
        else:
            make = ipaddress.IPv4Address if version == IpVersion.IPV4 else ipaddress.IPv6Address
            src, dst = str(make(record.tunnel.src)), str(make(record.tunnel.dst))
        return cls(
            spi=record.spi,
            direction="in" if record.direction == Direction.IN else "out",
            mode="tunnel" if record.mode == Mode.TUNNEL else "transport",
            key=record.key.to_bytes(32, "little")[:key_len],
            salt=record.salt.to_bytes(4, "little"),
            src=src, dst=dst,
            esn=bool(record.esn),
            encap="udp" if record.natt.encap == Encap.UDP else "none",
            window=record.window,
            seq=record.seq,
            lifetime={name: getattr(record.lifetime, name) for name in _LIFETIME_KEYS},
            sport=record.natt.sport, dport=record.natt.dport,
        )
