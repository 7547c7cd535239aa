# SPDX-License-Identifier: BSD-2-Clause
"""Protocol numbers and sizes of ESP with AES-GCM, shared by the gateware, the
reference model and the host."""

__all__ = ["PROTO_IPV4", "PROTO_IPV6", "PROTO_UDP", "PROTO_ESP", "PROTO_NONE",
           "ICV_BYTES", "IV_BYTES", "ESP_HEADER_BYTES", "ESP_TRAILER_BYTES", "ESP_MIN_BYTES",
           "UDP_HEADER_BYTES", "ECN_CE", "OUTER_TTL", "PROTO_FRAGMENT", "IPV6_EXT_WALKED"]

#: IP protocol / next header numbers (IANA).
PROTO_IPV4, PROTO_IPV6, PROTO_UDP, PROTO_ESP, PROTO_NONE = 4, 41, 17, 50, 59
#: IPv6 fragment header.
PROTO_FRAGMENT = 44
#: IPv6 extension headers that come before ESP: hop-by-hop options, routing,
#: destination options (RFC 8200 4.1).
IPV6_EXT_WALKED = (0, 43, 60)
#: RFC 4106: a 16-byte ICV and an 8-byte explicit IV.
ICV_BYTES = 16
IV_BYTES = 8
#: SPI, sequence number and IV: what precedes the ciphertext in an ESP packet.
ESP_HEADER_BYTES = 8 + IV_BYTES
#: Pad length and next header, the end of every ESP plaintext.
ESP_TRAILER_BYTES = 2
#: The shortest ESP packet an inbound SA accepts: header, trailer, ICV.
ESP_MIN_BYTES = ESP_HEADER_BYTES + ESP_TRAILER_BYTES + ICV_BYTES
#: RFC 3948 UDP encapsulation header.
UDP_HEADER_BYTES = 8
#: ECN codepoint "congestion experienced" (RFC 3168); RFC 6040 copies it from the
#: outer to an ECN-capable (ECT(0) = 2, ECT(1) = 1) inner header on decapsulation.
ECN_CE = 3
#: TTL / hop limit of a constructed tunnel header (RFC 4301 5.1.2.1: "constructed",
#: not copied). 64 is the IANA default TTL and the usual IPv6 default hop limit.
OUTER_TTL = 64
