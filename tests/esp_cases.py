# SPDX-License-Identifier: BSD-2-Clause
"""Shared ESP test traffic: SA configurations and cleartext packets built with scapy.

Used by the reference-model tests and the interop tests (and later by the
engine's benches), so that every test speaks about the same SAs and packets.
"""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from espnic.hdl.engine import SaConfig

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
