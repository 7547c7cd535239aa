# SPDX-License-Identifier: BSD-2-Clause
"""Shared ESP test traffic: SA configurations and cleartext packets built with scapy.

Used by the reference-model tests and the interop tests (and later by the
engine's benches), so that every test speaks about the same SAs and packets.
"""

import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from espnic.hdl.engine import SaConfig
from espnic.hdl.engine.protocol import PROTO_ESP

KEY128 = "00112233445566778899aabbccddeeff"
KEY256 = KEY128 + "f0e0d0c0b0a090807060504030201000"
SALT = "a1b2c3d4"
SPI = 0x1234
ENDPOINTS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
HOSTS = {4: ("10.1.0.1", "10.2.0.1"), 6: ("2001:db8:1::1", "2001:db8:2::1")}
#: Inner TTL / hop limit: not the constructed outer value (64), so a copied one shows.
INNER_TTL = 17


def config(direction, *, version=4, mode="tunnel", esn=False, natt=False, key=KEY128, spi=SPI, **kw):
    """An SA between :data:`ENDPOINTS` in tunnel mode (the outer header), between
    :data:`HOSTS` in transport mode (the packets' own addresses)."""
    src, dst = (ENDPOINTS if mode == "tunnel" else HOSTS)[version]
    return SaConfig(spi=spi, direction=direction, mode=mode, key=key, salt=SALT, src=src, dst=dst,
                    esn=esn, encap="udp" if natt else "none", **kw)


def plain_packet(version, size, *, tos=0, ttl=INNER_TTL):
    """A cleartext packet between :data:`HOSTS`: UDP over IPv4, TCP over IPv6, ``size`` payload bytes."""
    src, dst = HOSTS[version]
    payload = Raw(bytes((i * 7) & 0xff for i in range(size)))
    if version == 4:
        return bytes(IP(src=src, dst=dst, tos=tos, ttl=ttl, id=77, flags="DF")
                     / UDP(sport=1000, dport=2000) / payload)
    return bytes(IPv6(src=src, dst=dst, tc=tos, hlim=ttl) / TCP(sport=1000, dport=2000) / payload)


def ip_class(octets):
    """scapy's class for a raw IP packet (by the version nibble)."""
    return IP if octets[0] >> 4 == 4 else IPv6


def seal_tunnel(sa_kwargs, seq, plaintext, *, tos=0, iv=None, spi=SPI):
    """An ESP tunnel packet carrying ``plaintext`` (trailer included) as it is, sealed
    with ``AESGCM`` under ``config("in", **sa_kwargs)``'s key: for padding, next
    headers, sequence numbers and inner packets nobody else sends."""
    sa_config = config("in", **sa_kwargs)
    iv = seq.to_bytes(8, "big") if iv is None else iv
    aad = struct.pack("!IQ", spi, seq) if sa_config.esn else struct.pack("!II", spi, seq & 0xffffffff)
    esp = struct.pack("!II", spi, seq & 0xffffffff) + iv + \
        AESGCM(sa_config.key_bytes).encrypt(sa_config.salt_bytes + iv, plaintext, aad)
    src, dst = ENDPOINTS[sa_kwargs.get("version", 4)]
    if sa_kwargs.get("version", 4) == 6:
        return bytes(IPv6(src=src, dst=dst, nh=PROTO_ESP, tc=tos) / Raw(esp))
    return bytes(IP(src=src, dst=dst, proto=PROTO_ESP, tos=tos) / Raw(esp))


def esp_trailer(data, next_header, pad=None):
    """``data`` with an ESP trailer: ``pad`` (default: the monotonic minimum), its
    length and ``next_header``."""
    pad = bytes(range(1, -(len(data) + 2) % 4 + 1)) if pad is None else pad
    return data + pad + bytes([len(pad), next_header])
