# SPDX-License-Identifier: BSD-2-Clause
"""The TOML configuration of ``espnic run`` and ``espnic load`` (DESIGN.md section 7).

A config file holds ``[[sa]]`` tables (one SA each, the fields of
:class:`~espnic.hdl.engine.sa.SaConfig`) and ``[[policy]]`` tables (one
outbound selector rule each). Their field names are the CLI options' and a
contract: fields may be added, none renamed.

:func:`load_config` / :func:`parse_config` read a file / a text into a
:class:`Config`; :func:`parse_sa` / :func:`parse_policy` read one table (or one
command's options) on their own. Every mistake is a :class:`ConfigError`: one
line naming the place, the field and the reason, e.g.
``C.toml: sa[2].key: must be hex of 16 or 32 bytes, not 15 bytes`` (tables
count from 0, as in the TOML array). A key or salt never appears in an error
message or a ``repr``.

For the controller: :func:`policy_rule` is a policy's row of the forwarder's
policy table (the table's ``WRITE`` rule), :func:`spi_key` an inbound SA's key
in the SPI table.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
import tomllib
from os import PathLike
from typing import Any, Mapping

from ..hdl.engine.sa import NATT_PORT, SPI_MIN, SaConfig
from ..hdl.forwarder.policy import PolicyAction

__all__ = ["ConfigError", "SaSpec", "PolicySpec", "Config", "load_config", "parse_config",
           "parse_sa", "parse_policy", "format_config", "policy_rule", "spi_key",
           "PROTO_NAMES"]

#: Protocol names a policy's ``proto`` takes besides numbers and ``"any"``. ``icmp``
#: is ICMPv6 (58) in an IPv6 policy: the protocol the user means there.
PROTO_NAMES = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
#: Protocols whose packets carry ports (the parser's: others have sport = dport = 0).
_PORTED = {6: "tcp", 17: "udp", 132: "sctp"}
_ANY_PORT = (0, 65535)

_SA_FIELDS = tuple(f.name for f in dataclasses.fields(SaConfig))
_LIFETIME_KEYS = ("packets_soft", "packets_hard", "bytes_soft", "bytes_hard")
_POLICY_FIELDS = ("src", "dst", "proto", "sport", "dport", "action", "sa", "priority")
_POLICY_REQUIRED = ("src", "dst", "action")
_TABLES = ("sa", "policy")


class ConfigError(ValueError):
    """A mistake in a config: ``str(error)`` is one line, ``WHERE.FIELD: REASON``.

    ``where`` is the place (``"C.toml: sa[2]"``), ``field`` the field (None for the
    place as a whole), ``reason`` what is wrong; a CLI that took the field as an
    option can say ``--FIELD: REASON`` from them.
    """

    def __init__(self, where: str, field: str | None, reason: str):
        self.where, self.field, self.reason = where, field, reason
        place = where if field is None else f"{where}.{field}" if where else field
        super().__init__(f"{place}: {reason}" if place else reason)


@dataclasses.dataclass(frozen=True, repr=False)
class SaSpec:
    """One ``[[sa]]`` table: the SA and where the user wants it (``engine``: an
    engine index, or None for ``"auto"``: the controller's allocation policy)."""

    config: SaConfig
    engine: int | None = None

    def __repr__(self):
        # The key and salt are secrets (RFC 4106 derives both from the keying material).
        def shown(name):
            value = getattr(self.config, name)
            return "<secret>" if name in ("key", "salt") else hex(value) if name == "spi" \
                else repr(value)
        fields = ", ".join(f"{f.name}={shown(f.name)}" for f in dataclasses.fields(self.config)
                           if f.name != "engine")
        return f"SaSpec({fields}, engine={self.engine!r})"


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """One ``[[policy]]`` table: an outbound selector rule (RFC 4301 4.4.1).

    ``proto`` None is any protocol; ``sport``/``dport`` are inclusive ranges
    (``(0, 65535)`` is any); ``sa`` is the SPI of the outbound SA a ``PROTECT``
    rule sends to (None for the other actions). The highest ``priority`` wins;
    among equal priorities the earlier policy (the controller writes them in
    config order, and the table's lowest index wins a tie).
    """

    src: ipaddress.IPv4Network | ipaddress.IPv6Network
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    action: PolicyAction
    proto: int | None = None
    sport: tuple[int, int] = _ANY_PORT
    dport: tuple[int, int] = _ANY_PORT
    sa: int | None = None
    priority: int = 0


@dataclasses.dataclass
class Config:
    """A whole config: SAs and policies in file order. ``source`` names it in errors."""

    sas: list[SaSpec] = dataclasses.field(default_factory=list)
    policies: list[PolicySpec] = dataclasses.field(default_factory=list)
    source: str = dataclasses.field(default="<config>", compare=False)

    def check_engines(self, engines: int) -> None:
        """Raise :class:`ConfigError` naming the first SA pinned to an engine the
        device does not have (it has `engines`, numbered from 0)."""
        if type(engines) is not int or engines < 1:
            raise ValueError(f"engines must be a positive integer, not {engines!r}")
        for index, spec in enumerate(self.sas):
            if spec.engine is not None and spec.engine >= engines:
                raise ConfigError(f"{self.source}: sa[{index}]", "engine",
                                  f"engine {spec.engine} does not exist: the device has "
                                  f"{engines} engine{'s' if engines > 1 else ''} "
                                  f"(0..{engines - 1})")

    def outbound_sa(self, spi: int) -> SaSpec:
        """The outbound SA with SPI `spi` (what a PROTECT policy's ``sa`` names)."""
        for spec in self.sas:
            if spec.config.direction == "out" and spec.config.spi == spi:
                return spec
        raise KeyError(f"no outbound SA with SPI {spi:#x}")


# ---- reading -----------------------------------------------------------------------------

def load_config(path: str | PathLike) -> Config:
    """Read and check the config file at `path` (errors name it as given)."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise ConfigError(source, None, f"cannot read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(source, None, f"not UTF-8 text (byte {raw[error.start]:#04x} at "
                                        f"offset {error.start})") from None
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """Read and check a config's TOML `text`; `source` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, None, _syntax_reason(str(error))) from None
    for name in document:
        if name not in _TABLES:
            raise ConfigError(f"{source}: {name}", None, "unknown table" + _suggest(name, _TABLES))
    sa_tables = _tables(document, "sa", source)
    policy_tables = _tables(document, "policy", source)

    sas, seen = [], {}
    for index, table in enumerate(sa_tables):
        where = f"{source}: sa[{index}]"
        spec = parse_sa(table, where=where)
        config = spec.config
        if config.direction == "in" and config.dst is None:
            raise ConfigError(where, "dst", "required for an inbound SA (the forwarder finds "
                                            "it by SPI and destination)")
        identity = (config.spi, config.dst, config.direction)
        if identity in seen:
            raise ConfigError(where, "spi", f"{config.spi:#x} is already used by "
                                            f"sa[{seen[identity]}] (same spi, dst and direction)")
        seen[identity] = index
        sas.append(spec)

    outbound = {}
    for index, spec in enumerate(sas):
        if spec.config.direction == "out":
            outbound.setdefault(spec.config.spi, []).append(index)
    policies = []
    for index, table in enumerate(policy_tables):
        where = f"{source}: policy[{index}]"
        policy = parse_policy(table, where=where)
        if policy.sa is not None:
            users = outbound.get(policy.sa, [])
            if not users:
                inbound = any(s.config.spi == policy.sa for s in sas)
                known = ", ".join(f"{spi:#x}" for spi in outbound) or "none"
                raise ConfigError(where, "sa", f"{policy.sa:#x} names no outbound SA of the "
                                  f"config{' (it is an inbound SA)' if inbound else ''}; "
                                  f"outbound SPIs: {known}")
            if len(users) > 1:
                raise ConfigError(where, "sa", f"{policy.sa:#x} names "
                                  f"{' and '.join(f'sa[{k}]' for k in users)}: outbound SAs a "
                                  f"policy names need distinct SPIs")
        policies.append(policy)
    return Config(sas, policies, source)


def _syntax_reason(message: str) -> str:
    # tomllib says "Invalid value (at line 3, column 7)"; 3.11 has no lineno attribute.
    found = re.fullmatch(r"(.*?) \(at line (\d+), column (\d+)\)", message)
    if found:
        what, line, column = found.groups()
        return f"TOML syntax error at line {line}, column {column}: {what[:1].lower()}{what[1:]}"
    found = re.fullmatch(r"(.*?) \(at end of document\)", message)
    if found:
        return f"TOML syntax error at the end of the file: {found[1][:1].lower()}{found[1][1:]}"
    return f"TOML syntax error: {message}"


def _tables(document: dict, name: str, source: str) -> list:
    tables = document.get(name, [])
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: {name}", None, f"must be [[{name}]] tables (an array of "
                                                     f"tables), not {_kind(tables)}")
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {name}[{index}]", None,
                              f"must be a table, not {_kind(table)}")
    return tables


def _kind(value: Any) -> str:
    """A value's type as TOML calls it."""
    return {bool: "boolean", int: "integer", float: "float", str: "string", dict: "table",
            list: "array"}.get(type(value), type(value).__name__)


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(known)})"


# ---- one SA ------------------------------------------------------------------------------

def parse_sa(table: Mapping[str, Any], *, where: str = "sa") -> SaSpec:
    """One ``[[sa]]`` table (or ``espnic sa add``'s options by field name) as an
    :class:`SaSpec`; SaConfig's checks, its errors as :class:`ConfigError` at `where`."""
    try:
        config = SaConfig.from_mapping(table)
    except ValueError as error:
        field, reason = _sa_error(str(error), table)
        # `from None`: SaConfig's own message may quote a malformed key.
        raise ConfigError(where, field, reason) from None
    return SaSpec(config, None if config.engine == "auto" else config.engine)


_SA_MESSAGE = re.compile(r"SA field '([^']+)': (.*)", re.DOTALL)


def _sa_error(message: str, table: Mapping[str, Any]) -> tuple[str | None, str]:
    """SaConfig's ``SA field 'NAME': REASON`` as (field, reason) in the config's words,
    with no secret in it."""
    found = _SA_MESSAGE.fullmatch(message)
    field, reason = (found[1], found[2]) if found else (None, message)
    value = table.get(field) if field else None
    if reason.startswith("unknown field"):
        reason = "unknown field" + _suggest(field, _SA_FIELDS)
    elif reason == "missing":
        reason = "missing (a required field)"
    elif field in ("key", "salt"):
        reason = _hex_reason(field, value, reason)
    elif field == "spi":
        reason = _spi_reason(value, reason)
    elif field == "engine":
        if type(value) is int and value >= 0:
            reason = f"engine {value} is out of range 0..65535"
        else:
            reason = f"must be \"auto\" or an engine index (an integer from 0), not {value!r}"
    elif field == "lifetime":
        unknown = re.match(r"unknown key '([^']+)'", reason)
        if unknown:
            field, reason = f"lifetime.{unknown[1]}", "unknown field" + _suggest(unknown[1],
                                                                                 _LIFETIME_KEYS)
    return field, _without_secrets(reason, table)


def _hex_reason(field: str, value: Any, reason: str) -> str:
    """The reason a key or salt is refused, never quoting it."""
    want = "16 or 32" if field == "key" else "4"
    length = re.search(r"must be .* bytes .*, not (\d+)$", reason)
    if length:
        return f"must be hex of {want} bytes, not {length[1]} bytes"
    if not isinstance(value, str):
        return f"must be a hex string of {want} bytes, not {_kind(value)}"
    digits = value.strip()
    digits = digits[2:] if digits[:2].lower() == "0x" else digits
    count = len(re.sub(r"\s", "", digits))
    if re.fullmatch(r"[0-9a-fA-F\s]*", digits) and count % 2:
        return f"must be hex of {want} bytes, not an odd number of hex digits ({count})"
    return f"must be hex of {want} bytes, not hex (a character other than 0-9, a-f)"


def _spi_reason(value: Any, reason: str) -> str:
    try:
        spi = value if type(value) is int else int(value, 0) if isinstance(value, str) else None
    except ValueError:
        spi = None
    if spi is None:
        return f"must be an integer {SPI_MIN}..2**32-1, not {value!r}"
    if 0 <= spi < SPI_MIN:
        return f"{spi} is reserved (0..{SPI_MIN - 1}, RFC 4303 section 2.1): " \
               f"use {SPI_MIN}..2**32-1"
    if spi > 2**32 - 1:
        return f"{spi:#x} does not fit in 32 bits (at most 2**32-1)"
    return f"must be {SPI_MIN}..2**32-1, not {spi}"


def _without_secrets(reason: str, table: Mapping[str, Any]) -> str:
    for name in ("key", "salt"):
        value = table.get(name)
        if isinstance(value, str) and value.strip() and value.strip() in reason:
            reason = reason.replace(value.strip(), "<secret>")
    return reason


# ---- one policy --------------------------------------------------------------------------

def parse_policy(table: Mapping[str, Any], *, where: str = "policy") -> PolicySpec:
    """One ``[[policy]]`` table (or ``espnic policy add``'s options by field name) as a
    :class:`PolicySpec`. Whether ``sa`` names an outbound SA is the caller's to check
    (:func:`parse_config` does, against the config's SAs)."""
    for name in table:
        if name not in _POLICY_FIELDS:
            raise ConfigError(where, name, "unknown field" + _suggest(name, _POLICY_FIELDS))
    for name in _POLICY_REQUIRED:
        if name not in table:
            raise ConfigError(where, name, "missing (a required field)")

    def fail(field, reason):
        raise ConfigError(where, field, reason)

    src = _network(table["src"], lambda reason: fail("src", reason))
    dst = _network(table["dst"], lambda reason: fail("dst", reason))
    if src.version != dst.version:
        fail("dst", f"IPv{dst.version} network with an IPv{src.version} src")

    action_text = table["action"]
    actions = {a.name.lower(): a for a in PolicyAction}
    if not isinstance(action_text, str) or action_text.lower() not in actions:
        fail("action", f"must be one of {', '.join(map(repr, actions))}, not {action_text!r}")
    action = actions[action_text.lower()]

    proto = _proto(table.get("proto", "any"), src.version, lambda reason: fail("proto", reason))
    ports = {}
    for name in ("sport", "dport"):
        ports[name] = _ports(table.get(name, "any"), lambda reason, name=name: fail(name, reason))
        if ports[name] != _ANY_PORT and proto is not None and proto not in _PORTED:
            fail(name, f"protocol {proto} has no ports (only tcp, udp and sctp do): "
                       f"use \"any\"")

    priority = _integer(table.get("priority", 0), 0, 255,
                        lambda reason: fail("priority", reason))
    sa = table.get("sa")
    if action == PolicyAction.PROTECT:
        if sa is None:
            fail("sa", "missing: a \"protect\" policy needs the SPI of an outbound SA")
        sa = _integer(sa, SPI_MIN, 2**32 - 1, lambda reason: fail("sa", reason))
    elif sa is not None:
        fail("sa", f"only for action \"protect\", not {action.name.lower()!r}")
    return PolicySpec(src=src, dst=dst, action=action, proto=proto, sport=ports["sport"],
                      dport=ports["dport"], sa=sa, priority=priority)


def _network(value: Any, fail):
    if not isinstance(value, str):
        fail(f"must be an address or prefix like \"10.1.0.0/16\", not {_kind(value)}")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        fail(f"not an IPv4 or IPv6 prefix: {value!r}")
    fail(f"{value!r} has host bits set (the prefix is {str(loose)!r})")


def _integer(value: Any, lo: int, hi: int, fail) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            fail(f"not an integer: {value!r}")
    elif type(value) is not int:
        fail(f"must be an integer, not {_kind(value)}")
    if not lo <= value <= hi:
        fail(f"{value} is out of range {lo}..{hi}")
    return value


def _proto(value: Any, version: int, fail) -> int | None:
    if isinstance(value, str):
        name = value.strip().lower()
        if name == "any":
            return None
        if name == "icmp" and version == 6:
            return PROTO_NAMES["icmpv6"]
        if name in PROTO_NAMES:
            return PROTO_NAMES[name]
        if not name.isdigit():
            fail(f"must be \"any\", a protocol number or one of "
                 f"{', '.join(map(repr, PROTO_NAMES))}, not {value!r}")
    return _integer(value, 0, 255, fail)


def _ports(value: Any, fail) -> tuple[int, int]:
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "any":
            return _ANY_PORT
        found = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
        if found:
            lo, hi = (_integer(part, 0, 65535, fail) for part in found.groups())
            if lo > hi:
                fail(f"range {lo}-{hi} is empty (lo > hi)")
            return lo, hi
        if not text.isdigit():
            fail(f"must be \"any\", a port or a range \"lo-hi\", not {value!r}")
    port = _integer(value, 0, 65535, fail)
    return port, port


# ---- writing -----------------------------------------------------------------------------

def format_config(config: Config) -> str:
    """`config` as TOML that :func:`parse_config` reads back to an equal Config. It
    holds the keys: write it where the original config was, nowhere else."""
    lines = []
    for spec in config.sas:
        sa = spec.config
        lines += ["[[sa]]", f"spi = {sa.spi:#x}", f"direction = {_string(sa.direction)}",
                  f"mode = {_string(sa.mode)}", f"key = {_string(sa.key)}",
                  f"salt = {_string(sa.salt)}"]
        if sa.src is not None:
            lines += [f"src = {_string(sa.src)}", f"dst = {_string(sa.dst)}"]
        lines += [f"esn = {str(sa.esn).lower()}", f"encap = {_string(sa.encap)}",
                  f"window = {sa.window}", f"seq = {sa.seq}",
                  f"engine = {_string('auto') if spec.engine is None else spec.engine}"]
        if any(sa.lifetime.values()):
            lines.append("lifetime = { " + ", ".join(f"{name} = {sa.lifetime[name]}"
                                                     for name in _LIFETIME_KEYS) + " }")
        for name in ("sport", "dport"):
            if getattr(sa, name) != NATT_PORT:
                lines.append(f"{name} = {getattr(sa, name)}")
        lines.append("")
    names = {number: name for name, number in PROTO_NAMES.items()}
    for policy in config.policies:
        proto = "any" if policy.proto is None else names.get(policy.proto, policy.proto)
        lines += ["[[policy]]", f"src = {_string(str(policy.src))}",
                  f"dst = {_string(str(policy.dst))}",
                  f"proto = {_string(proto) if isinstance(proto, str) else proto}",
                  f"sport = {_port_text(policy.sport)}", f"dport = {_port_text(policy.dport)}",
                  f"action = {_string(policy.action.name.lower())}"]
        if policy.sa is not None:
            lines.append(f"sa = {policy.sa:#x}")
        lines += [f"priority = {policy.priority}", ""]
    return "\n".join(lines)


def _string(text: str) -> str:
    return json.dumps(text)    # a JSON string of printable ASCII is a TOML basic string


def _port_text(ports: tuple[int, int]) -> str:
    lo, hi = ports
    return _string("any") if ports == _ANY_PORT else str(lo) if lo == hi \
        else _string(f"{lo}-{hi}")


# ---- the forwarder's tables --------------------------------------------------------------

def _wire(address) -> bytes:
    """An address as the tables hold it: 16 bytes in wire order, IPv4 in the first 4."""
    packed = address.packed
    return packed + bytes(16 - len(packed))


def policy_rule(spec: PolicySpec, *, engine: int = 0, slot: int = 0) -> dict:
    """The policy table's ``WRITE`` rule for `spec` (``hdl/forwarder/policy.py``), its
    value pointing at `slot` of `engine` (what a PROTECT hit sends the packet to; the
    other actions carry it unused)."""
    return {
        "valid": True, "ipv6": spec.src.version == 6, "priority": spec.priority,
        "src": _wire(spec.src.network_address), "src_len": spec.src.prefixlen,
        "dst": _wire(spec.dst.network_address), "dst_len": spec.dst.prefixlen,
        "any_proto": spec.proto is None, "proto": spec.proto or 0,
        "sport_lo": spec.sport[0], "sport_hi": spec.sport[1],
        "dport_lo": spec.dport[0], "dport_hi": spec.dport[1],
        "action": spec.action.value,
        "value": {"engine": engine, "slot": slot},
    }


def spi_key(sa: SaConfig | SaSpec) -> int:
    """The forwarder's SPI table key (``hdl/forwarder/spi_table.py: SPI_KEY``) of
    inbound SA `sa`: its SPI, its destination and whether it is UDP-encapsulated."""
    config = sa.config if isinstance(sa, SaSpec) else sa
    if config.direction != "in" or config.dst is None:
        raise ValueError(f"SA {config.spi:#x}: only an inbound SA with a dst has an SPI "
                         f"table key")
    dst = int.from_bytes(_wire(ipaddress.ip_address(config.dst)), "little")
    return config.spi | dst << 32 | int(config.encap == "udp") << 160
