# SPDX-License-Identifier: BSD-2-Clause
"""The ``espnic ike`` config: an ``[ike]`` table and ``[[peer]]`` tables (TOML,
the style of ``examples/ike.toml``). Every mistake is a :class:`ConfigError` of
one line naming the table, the field and the reason, never a secret.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ...hdl.engine.sa import NATT_PORT
from ..config import ConfigError
from .message import TrafficSelector
from .proposals import ProposalError, parse_esp_proposal, parse_ike_proposal

log = logging.getLogger("espnic.ike")

DEFAULT_IKE = ["aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048",
               "aes128gcm16-prfsha256-x25519"]
DEFAULT_ESP = ["aes128gcm16", "aes256gcm16", "aes128gcm16-esn", "aes256gcm16-esn"]

_IKE_FIELDS = {"listen", "port", "port_natt", "half_open_limit", "half_open_timeout",
               "retransmit_timeout", "retransmit_tries", "delete_rekeyed_delay"}
_PEER_FIELDS = {"name", "address", "port", "port_natt", "local_id", "remote_id", "psk",
                "psk_env", "ike_proposals", "esp_proposals", "local_ts", "remote_ts", "start",
                "rekey_time", "life_time", "dpd_delay", "child_rekey_time", "child_life_time",
                "natt", "local_address", "child_rekey_packets", "child_life_packets",
                "child_rekey_bytes", "child_life_bytes"}


@dataclass
class PeerConfig:
    """One peer: where it is, who both sides are, the PSK, what to propose and
    protect, when to start, rekey, give up and probe."""
    name: str
    address: str
    psk: bytes = field(repr=False)
    local_id: str = ""
    remote_id: str = ""
    port: int = 500
    port_natt: int = NATT_PORT
    ike_proposals: list = field(default_factory=lambda: list(map(parse_ike_proposal, DEFAULT_IKE)))
    esp_proposals: list = field(default_factory=lambda: list(map(parse_esp_proposal, DEFAULT_ESP)))
    local_ts: list = field(default_factory=list)
    remote_ts: list = field(default_factory=list)
    start: str = "wait"
    rekey_time: float = 3600.0       # IKE SA
    life_time: float = 4000.0
    child_rekey_time: float = 3600.0
    child_life_time: float = 4000.0
    dpd_delay: float = 30.0          # 0: no liveness checks
    # CHILD_SA volume limits, counted by the device's engines (0: none): the soft
    # one makes the controller ask for a rekey, the hard one deletes the SA.
    child_rekey_packets: int = 0
    child_life_packets: int = 0
    child_rekey_bytes: int = 0
    child_life_bytes: int = 0
    natt: str = "auto"               # "auto": NAT-T socket when a port isn't 500; "detect"
    local_address: str | None = None


@dataclass
class IkeConfig:
    listen: list = field(default_factory=lambda: ["0.0.0.0"])
    port: int = 500
    port_natt: int = NATT_PORT
    half_open_limit: int = 32        # half-open IKE SAs before cookies are asked for
    half_open_timeout: float = 30.0
    retransmit_timeout: float = 2.0  # first wait; doubled each time
    retransmit_tries: int = 5
    # After a CHILD_SA rekey the old inbound SA stays this long past the peer's side of
    # the DELETE exchange: its ESP still in flight (or queued) is decrypted, not lost.
    delete_rekeyed_delay: float = 5.0
    peers: list = field(default_factory=list)

    def peer(self, name: str) -> PeerConfig:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(f"no peer named {name!r}")


def load_ike_config(path) -> IkeConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(str(path), None, f"cannot read: {error.strerror or error}") from None
    return parse_ike_config(text, source=str(path), base=path.parent)


def parse_ike_config(text: str, *, source: str = "<config>", base=None,
                     environ=None) -> IkeConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, None, f"not TOML: {str(error).splitlines()[0]}") from None
    environ = os.environ if environ is None else environ
    base = Path(base or ".")
    unknown = set(doc) - {"ike", "peer"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown table (expected ike, peer)")
    ike = doc.get("ike", {})
    where = f"{source}: ike"
    if not isinstance(ike, dict):
        raise ConfigError(where, None, "must be a table")
    _known(ike, _IKE_FIELDS, where)
    config = IkeConfig()
    listen = ike.get("listen", config.listen)
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not listen:
        raise ConfigError(where, "listen", "must be a list of addresses")
    for addr in listen:
        _address(addr, where, "listen")
    config.listen = list(listen)
    config.port = _int(ike, "port", config.port, 0, 65535, where)
    config.port_natt = _int(ike, "port_natt", config.port_natt, 0, 65535, where)
    config.half_open_limit = _int(ike, "half_open_limit", config.half_open_limit, 0, 1 << 20,
                                  where)
    config.half_open_timeout = _seconds(ike, "half_open_timeout", config.half_open_timeout,
                                        where)
    config.retransmit_timeout = _seconds(ike, "retransmit_timeout", config.retransmit_timeout,
                                         where)
    config.retransmit_tries = _int(ike, "retransmit_tries", config.retransmit_tries, 1, 20,
                                   where)
    config.delete_rekeyed_delay = _seconds(ike, "delete_rekeyed_delay",
                                           config.delete_rekeyed_delay, where, zero=True)
    peers = doc.get("peer", [])
    if not isinstance(peers, list):
        raise ConfigError(source, "peer", "must be an array of tables ([[peer]])")
    names = set()
    for i, table in enumerate(peers):
        peer = parse_peer(table, where=f"{source}: peer[{i}]", base=base, environ=environ)
        if peer.name in names:
            raise ConfigError(f"{source}: peer[{i}]", "name", f"{peer.name!r} used twice")
        names.add(peer.name)
        config.peers.append(peer)
    return config


def parse_peer(table, *, where: str = "peer", base=None, environ=None) -> PeerConfig:
    environ = os.environ if environ is None else environ
    if not isinstance(table, dict):
        raise ConfigError(where, None, "must be a table")
    _known(table, _PEER_FIELDS, where)
    for req in ("name", "address"):
        if not isinstance(table.get(req), str) or not table.get(req):
            raise ConfigError(where, req, "required (a string)")
    address = _address(table["address"], where, "address")
    psk = _psk(table, where, Path(base or "."), environ)
    peer = PeerConfig(name=table["name"], address=address, psk=psk)
    for name in ("local_id", "remote_id"):
        value = table.get(name, "")
        if not isinstance(value, str):
            raise ConfigError(where, name, "must be a string")
        setattr(peer, name, value)
    peer.port = _int(table, "port", 500, 1, 65535, where)
    peer.port_natt = _int(table, "port_natt", NATT_PORT, 1, 65535, where)
    for name, parse in (("ike_proposals", parse_ike_proposal),
                        ("esp_proposals", parse_esp_proposal)):
        if name in table:
            value = table[name]
            if not isinstance(value, list) or not value or not all(isinstance(v, str)
                                                                   for v in value):
                raise ConfigError(where, name, "must be a non-empty list of proposal names")
            try:
                setattr(peer, name, [parse(v) for v in value])
            except ProposalError as error:
                raise ConfigError(where, name, str(error)) from None
    for name in ("local_ts", "remote_ts"):
        value = table.get(name)
        if value is None:
            raise ConfigError(where, name, "required (a list of networks, e.g. [\"10.1.0.0/16\"])")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError(where, name, "must be a list of networks")
        try:
            setattr(peer, name, [TrafficSelector.from_network(v) for v in value])
        except (ValueError, TypeError):
            raise ConfigError(where, name, f"not a network: {value!r}") from None
    start = table.get("start", "wait")
    if start not in ("initiate", "wait"):
        raise ConfigError(where, "start", f"must be \"initiate\" or \"wait\", not {start!r}")
    peer.start = start
    natt = table.get("natt", "auto")
    if natt not in ("auto", "detect"):
        raise ConfigError(where, "natt", f"must be \"auto\" or \"detect\", not {natt!r}")
    peer.natt = natt
    peer.rekey_time = _seconds(table, "rekey_time", peer.rekey_time, where)
    peer.life_time = _seconds(table, "life_time", max(peer.life_time, peer.rekey_time), where)
    peer.child_rekey_time = _seconds(table, "child_rekey_time", peer.rekey_time, where)
    peer.child_life_time = _seconds(table, "child_life_time", peer.life_time, where)
    if peer.life_time < peer.rekey_time:
        raise ConfigError(where, "life_time", f"{peer.life_time:g} is shorter than rekey_time "
                                              f"{peer.rekey_time:g}")
    if peer.child_life_time < peer.child_rekey_time:
        raise ConfigError(where, "child_life_time", "shorter than child_rekey_time")
    peer.dpd_delay = _seconds(table, "dpd_delay", peer.dpd_delay, where, zero=True)
    for kind in ("packets", "bytes"):
        soft, hard = f"child_rekey_{kind}", f"child_life_{kind}"
        setattr(peer, soft, _int(table, soft, 0, 0, 2**63, where))
        setattr(peer, hard, _int(table, hard, 0, 0, 2**63, where))
        if getattr(peer, hard) and getattr(peer, soft) > getattr(peer, hard):
            raise ConfigError(where, soft, f"larger than {hard}")
    if "local_address" in table:
        peer.local_address = _address(table["local_address"], where, "local_address")
    return peer


def _known(table, known, where):
    for key in table:
        if key not in known:
            raise ConfigError(where, key, f"unknown field (known: {', '.join(sorted(known))})")


def _address(value, where, name) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise ConfigError(where, name, f"not an IP address: {value!r}") from None


def _int(table, name, default, lo, hi, where) -> int:
    value = table.get(name, default)
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(where, name, f"must be an integer from {lo} to {hi}, not {value!r}")
    return value


def _seconds(table, name, default, where, *, zero=False) -> float:
    value = table.get(name, default)
    if type(value) not in (int, float) or value < 0 or (value == 0 and not zero):
        raise ConfigError(where, name, f"must be a positive number of seconds, not {value!r}")
    return float(value)


def _psk(table, where, base: Path, environ) -> bytes:
    given = [k for k in ("psk", "psk_env") if k in table]
    if len(given) != 1:
        raise ConfigError(where, "psk", "give exactly one of psk = \"file:PATH\" and psk_env")
    if "psk_env" in table:
        name = table["psk_env"]
        if not isinstance(name, str) or not environ.get(name):
            raise ConfigError(where, "psk_env", f"environment variable {name!r} is not set")
        return environ[name].encode()
    value = table["psk"]
    if not isinstance(value, str) or not value:
        raise ConfigError(where, "psk", "must be a non-empty string")
    if value.startswith("file:"):
        path = base / value[5:]
        try:
            secret = path.read_bytes().rstrip(b"\r\n")
        except OSError as error:
            raise ConfigError(where, "psk", f"cannot read {path}: "
                                            f"{error.strerror or error}") from None
        if not secret:
            raise ConfigError(where, "psk", f"{path} is empty")
        return secret
    log.warning("%s: psk written inline in the config: prefer psk = \"file:PATH\" or psk_env",
                where)
    return value.encode()
