# SPDX-License-Identifier: BSD-2-Clause
"""Independent interop harness for ESP packets: pcap files, scapy and tshark.

Whatever produces or consumes ESP — the reference model now, the gateware
engine later — is checked here against implementations that share no code
with espnic:

* :func:`scapy_sa` builds scapy's ``SecurityAssociation`` (AES-GCM, ESN,
  NAT-T, tunnel header) from an :class:`~espnic.hdl.engine.sa.SaConfig`, the
  one place tests turn an SA into scapy terms;
* :func:`tshark_decrypt` has Wireshark's ESP dissector decrypt a pcap file
  with an SA table (the ``esp_sa`` UAT) and returns what it decrypted and
  whether it found the ICV good;
* :func:`write_pcap` / :func:`read_pcap` move raw IP packets (bytes) through
  pcap files, the format ``espnic run`` reads and writes (DESIGN.md section 7).

Link type: :data:`LINKTYPE_RAW` (101) by default. The engine sees IP packets,
not frames, so a raw IP capture holds exactly the bytes it consumed or emitted,
with no invented MAC addresses; tshark dissects LINKTYPE_RAW by the version
nibble (IPv4 or IPv6) and then runs the same IP/ESP/UDP-4500 dissectors as
under Ethernet. Ethernet (:data:`LINKTYPE_ETHERNET`) is supported for files
that come from a real capture.

tshark version: written and checked against Wireshark 4.0 (Debian 12). Its
``esp_sa`` UAT has eight columns and no ESN setting, so it authenticates an
ESN packet with the 32-bit AAD (RFC 4106 section 5) and always reports it bad;
the decryption itself does not depend on the AAD (GCM counter mode) and is
still checked. :func:`tshark_decrypt` therefore reports the ICV of an ESN SA
as ``None`` (not checked) rather than tshark's wrong verdict.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

from ..hdl.engine.sa import SaConfig
from ..host.pcapio import (LINKTYPE_ETHERNET, LINKTYPE_RAW, ethernet_frame, ip_packet,
                           ip_packet_length, read_capture, write_capture)

__all__ = [
    "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "NATT_DECODE_PORT",
    "write_pcap", "read_pcap", "ip_packet_length", "scapy_sa", "esp_payload",
    "tshark_path", "esp_sa_uat", "TsharkEsp", "TsharkError", "tshark_command", "tshark_decrypt",
]

#: pcap link types (tcpdump.org/linktypes.html).
_LINKTYPES = {"raw": LINKTYPE_RAW, "ethernet": LINKTYPE_ETHERNET}

# Locally administered unicast addresses: a capture needs some, none is real.

#: UDP port Wireshark decodes as UDP-encapsulated ESP without being told.
NATT_DECODE_PORT = 4500
#: The Wireshark 4.0 name of RFC 4106 AES-GCM with a 16-byte ICV (AES-128 and
#: AES-256: the key length tells them apart).
_UAT_GCM16 = "AES-GCM with 16 octet ICV [RFC4106]"
#: AES-GCM is an AEAD: the UAT requires "NULL" authentication with it.
_UAT_AUTH_NONE = "NULL"
#: The only dissectors tshark runs. Wireshark 4.0 adds the ESP trailer and the
#: ICV verdict *after* dissecting the decrypted payload, so an exception in any
#: payload dissector (e.g. DNS on a UDP port 53 test packet) would lose them;
#: past UDP/ESP everything is shown as data.
_DISSECTORS = frozenset({
    "frame", "raw", "eth", "ethertype", "vlan", "data",
    "ip", "ipv6", "ipv6.hopopts", "ipv6.routing", "ipv6.dstopts", "ipv6.fraghdr",
    "udp", "udpencap", "esp",
})


# -- pcap ----------------------------------------------------------------------------------
# The files themselves are host/pcapio.py's (what `espnic run` reads and writes).

def write_pcap(path, packets: Iterable[bytes], *, link: str = "raw") -> Path:
    """Write raw IP packets to a pcap file, as raw IP (``"raw"``) or Ethernet frames."""
    if link not in _LINKTYPES:
        raise ValueError(f"link must be one of {', '.join(map(repr, _LINKTYPES))}, not {link!r}")
    path = Path(path)
    wrap = ethernet_frame if link == "ethernet" else bytes
    write_capture(path, _LINKTYPES[link], [(0.0, wrap(bytes(packet))) for packet in packets])
    return path


def read_pcap(path) -> list[bytes]:
    """The raw IP packets of a pcap or pcapng file (raw IP or Ethernet link type).

    Ethernet frames lose their header (and VLAN tags and minimum-size padding);
    frames that carry neither IPv4 nor IPv6 are an error, so a test never
    silently compares fewer packets than the file holds.
    """
    capture = read_capture(path)
    packets = []
    for number, (_timestamp, frame) in enumerate(capture.packets, 1):
        packet = ip_packet(frame, capture.linktype)
        if packet is None:
            raise ValueError(f"{path}: packet {number} is not IPv4 or IPv6 over Ethernet")
        packets.append(packet)
    return packets


# -- scapy ------------------------------------------------------------------------------------

def _ip_header(src: str, dst: str):
    return IP(src=src, dst=dst) if ipaddress.ip_address(src).version == 4 else IPv6(src=src, dst=dst)


def scapy_sa(config: SaConfig, *, tunnel_header=None) -> SecurityAssociation:
    """scapy's independent ESP implementation of the SA ``config``.

    AES-GCM with the key and salt of the SA (scapy takes them as one string,
    RFC 4106 section 8.1), ``esn_en`` from ``esn``, RFC 3948 UDP encapsulation
    with the SA's ports, and in tunnel mode an outer header from ``src``/``dst``
    (``tunnel_header`` overrides it, e.g. to set TOS, ID or TTL). Its sequence
    state is scapy's own: set ``seq_num`` / ``esn`` before encrypting.
    """
    if config.mode == "tunnel" and tunnel_header is None:
        tunnel_header = _ip_header(config.src, config.dst)
    return SecurityAssociation(
        ESP, spi=config.spi, crypt_algo="AES-GCM",
        crypt_key=config.key_bytes + config.salt_bytes,
        tunnel_header=tunnel_header if config.mode == "tunnel" else None,
        nat_t_header=UDP(sport=config.sport, dport=config.dport) if config.encap == "udp" else None,
        esn_en=config.esn)


def esp_payload(packet: bytes, mode: str) -> tuple[int, bytes]:
    """``(next header, payload data)`` that ESP must carry for the cleartext ``packet``.

    Tunnel mode: the whole packet (RFC 4303 next header 4 or 41). Transport
    mode: what follows the IP header (IPv6 without extension headers only).
    Parsed with scapy, so the expectation does not come from the model.
    """
    ip = IP(packet) if packet[0] >> 4 == 4 else IPv6(packet)
    if mode == "tunnel":
        return (4 if ip.version == 4 else 41), bytes(packet)
    if ip.version == 6 and ip.nh in (0, 43, 44, 60):
        raise ValueError("esp_payload: IPv6 extension headers are not supported in transport mode")
    header_len = ip.ihl * 4 if ip.version == 4 else 40
    end = ip_packet_length(packet)
    return (ip.proto if ip.version == 4 else ip.nh), bytes(packet[header_len:end])


# -- tshark -----------------------------------------------------------------------------------

class TsharkError(RuntimeError):
    """tshark is missing, refused its options, or failed to read the file."""


def tshark_path() -> str | None:
    """The tshark executable on PATH, or None."""
    return shutil.which("tshark")


def _uat_field(value: str) -> str:
    if '"' in value or "\\" in value:
        raise ValueError(f"UAT field must not contain quotes or backslashes: {value!r}")
    return f'"{value}"'


def esp_sa_uat(config: SaConfig) -> list[str]:
    """The ``esp_sa`` UAT records (Wireshark 4.0 format) that decrypt the SA ``config``.

    Columns: protocol, source, destination, SPI, encryption algorithm,
    encryption key, authentication algorithm, authentication key. The key is
    the SA key followed by the 4-byte salt, in hex (RFC 4106 section 8.1, as
    IKEv2 derives it). An SA with endpoints matches on them; one without
    (transport mode) matches any address, once for IPv4 and once for IPv6.
    Each record goes to tshark as ``-o uat:esp_sa:RECORD``.
    """
    if config.src is not None:
        version = ipaddress.ip_address(config.src).version
        endpoints = [(f"IPv{version}", config.src, config.dst)]
    else:
        endpoints = [("IPv4", "*", "*"), ("IPv6", "*", "*")]
    key = "0x" + (config.key_bytes + config.salt_bytes).hex()
    return [",".join(_uat_field(field) for field in (
        protocol, src, dst, f"0x{config.spi:08x}", _UAT_GCM16, key, _UAT_AUTH_NONE, ""))
        for protocol, src, dst in endpoints]


@dataclasses.dataclass(frozen=True)
class TsharkEsp:
    """What tshark's ESP dissector made of one frame.

    ``data`` is the decrypted payload without padding and trailer (Wireshark's
    "ESP Contained Data"): the inner packet in tunnel mode, the transport
    payload in transport mode; ``None`` when tshark decrypted nothing.
    ``icv_good`` is tshark's ICV verdict, ``None`` when it could not check it
    (no SA matched, or an ESN SA: see the module docstring).
    """

    frame: int
    spi: int | None
    seq: int | None          # the 32-bit sequence number field on the wire
    icv_good: bool | None
    next_header: int | None
    data: bytes | None


#: tshark fields read per frame, in this order.
_FIELDS = ("frame.number", "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad",
           "esp.protocol", "esp.contained_data")


def _first(value: str) -> str:
    """The outermost occurrence of a field (nested ESP lists one per layer)."""
    return value.split(",")[0]


def _int_or_none(value: str) -> int | None:
    return int(_first(value), 0) if value else None


def _parse_frame(line: str, esn_spis: frozenset[int]) -> TsharkEsp:
    frame, spi, seq, good, bad, proto, data = (line.split("\t") + [""] * len(_FIELDS))[:len(_FIELDS)]
    spi_value = _int_or_none(spi)
    icv_good = None
    if good or bad:
        icv_good = _first(good) == "1" and _first(bad) != "1"
    if spi_value in esn_spis:
        icv_good = None   # Wireshark 4.0 authenticates without the ESN high half
    return TsharkEsp(
        frame=int(frame), spi=spi_value, seq=_int_or_none(seq), icv_good=icv_good,
        next_header=_int_or_none(proto),
        data=bytes.fromhex(_first(data).replace(":", "")) if data else None)


def _decode_as(configs: Sequence[SaConfig]) -> list[str]:
    """``-d`` options so that UDP encapsulation on a port other than 4500 is dissected as ESP."""
    ports = {port for c in configs if c.encap == "udp" for port in (c.sport, c.dport)}
    options = []
    for port in sorted(ports - {NATT_DECODE_PORT}):
        options += ["-d", f"udp.port=={port},udpencap"]
    return options


@functools.lru_cache(maxsize=None)
def _disabled_protocols(tshark: str) -> tuple[str, ...]:
    """Every protocol this tshark knows except :data:`_DISSECTORS` (``tshark -G protocols``)."""
    result = subprocess.run([tshark, "-G", "protocols"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise TsharkError(f"tshark -G protocols exited with {result.returncode}: {result.stderr.strip()}")
    names = (line.split("\t")[2] for line in result.stdout.splitlines() if line.count("\t") >= 2)
    return tuple(name for name in names if name not in _DISSECTORS)


def tshark_command(path, configs: Sequence[SaConfig], *, tshark: str | None = None) -> list[str]:
    """The tshark command line that decrypts ``path`` with the SA table ``configs``."""
    tshark = tshark or tshark_path()
    if tshark is None:
        raise TsharkError("tshark is not installed (Debian/Ubuntu: apt-get install tshark)")
    command = [tshark, "-n", "-r", str(path),
               "-o", "esp.enable_encryption_decode:TRUE",
               "-o", "esp.enable_authentication_check:TRUE",
               # Sequence analysis only adds expert notes; it is not what we check.
               "-o", "esp.do_esp_sequence_analysis:FALSE"]
    for config in configs:
        for record in esp_sa_uat(config):
            command += ["-o", f"uat:esp_sa:{record}"]
    command += _decode_as(configs)
    command += ["-T", "fields", "-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a"]
    for field in _FIELDS:
        command += ["-e", field]
    return command


def tshark_decrypt(path, configs: Sequence[SaConfig], *, tshark: str | None = None,
                   timeout: float = 120) -> list[TsharkEsp]:
    """Decrypt the ESP packets of the pcap file ``path`` with tshark; one result per frame.

    ``configs`` is the SA table (the direction does not matter: tshark only
    needs keys, SPIs and endpoints). tshark runs with a configuration
    directory of its own, so nothing from the user's Wireshark profile changes
    the result, and with only the link, IP, UDP and ESP dissectors enabled.
    Raises :class:`TsharkError` when tshark is missing or fails.
    """
    command = tshark_command(path, configs, tshark=tshark)
    esn_spis = frozenset(c.spi for c in configs if c.esn)
    with tempfile.TemporaryDirectory(prefix="espnic-tshark-") as config_dir:
        # A command line per protocol would be thousands of options; the profile file is one.
        disabled = _disabled_protocols(command[0])
        Path(config_dir, "disabled_protos").write_text("".join(f"{name}\n" for name in disabled))
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=config_dir)
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise TsharkError(f"tshark exited with {result.returncode}: {result.stderr.strip()}")
    return [_parse_frame(line, esn_spis) for line in result.stdout.splitlines() if line]
