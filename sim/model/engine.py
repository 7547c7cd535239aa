# SPDX-License-Identifier: BSD-2-Clause
"""What one engine does with a packet, beside what ESP says: the packets its data
path refuses and the streams it aborts (``hdl/engine/engine.py``'s docstring).
:func:`engine_outcome` is :meth:`EspModel.process` with those rules around it;
the engine tests and the whole-device model (:mod:`.nic`) both use it."""

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from ...hdl.engine.protocol import IPV6_EXT_WALKED
from ...hdl.engine.sa import Direction, SaConfig
from ...hdl.engine.udp6 import udp6_fill_limit
from ...hdl.gcm.layouts import BLOCK_BYTES
from ..interop import ip_packet_length
from .esp import EspModel, internet_checksum

__all__ = ["engine_supports", "engine_outcome"]


def engine_supports(config: SaConfig | None, packet: bytes) -> bool:
    """Whether the engine's data path handles `packet` on `config` (the SA table
    refuses the rest as ``UNSUPPORTED``, with no side effect): not outbound UDP
    encapsulation with an IPv6 outer header of a packet longer than
    :func:`udp6_fill_limit`, not IPv6 extension headers in front of ESP (outbound
    transport mode, inbound)."""
    if config is None:
        return True
    ipv6 = len(packet) > 6 and packet[0] >> 4 == 6
    v6_ext = ipv6 and packet[6] in IPV6_EXT_WALKED
    if config.direction == "in":
        return not v6_ext
    if config.mode == "transport" and v6_ext:
        return False
    outer_v6 = ":" in config.src if config.mode == "tunnel" else ipv6
    if config.encap != "udp" or not outer_v6:
        return True
    return (ip_packet_length(packet) or 0) <= udp6_fill_limit()


def _header_checksum_right(packet: bytes) -> bool:
    """Not IPv4, or an IPv4 header that is all there with a right checksum (the
    engine's :class:`Ipv4HeaderCheck` drops the others before anything is allocated)."""
    if packet[0] >> 4 != 4:
        return True
    ihl = (packet[0] & 15) * 4
    return 20 <= ihl <= len(packet) and internet_checksum(packet[:ihl]) == 0


def _stand_in(packet: bytes, length: int) -> bytes:
    """A well-formed packet of `packet`'s IP version and `length` bytes."""
    if packet[0] >> 4 == 6:
        return bytes(IPv6(src="::1", dst="::2", nh=59) / Raw(bytes(length - 40)))
    return bytes(IP(src="0.0.0.1", dst="0.0.0.2", proto=59) / Raw(bytes(length - 20)))


def engine_outcome(model: EspModel, config: SaConfig | None, slot: int,
                   packet: bytes) -> tuple[bytes | None, str]:
    """What an engine holding `model` does with `packet` for `slot` (whose SA is
    `config`): ``(output, reason)``. A packet the engine refuses is ``"unsupported"``
    and kept from the model (the engine refuses it with no side effect); an
    outbound packet whose stream ends after its first beat but before its IP length
    is ``"aborted"`` if its IPv4 header checksum is right: the model processes a
    well-formed stand-in of that length (a sequence number used, the packet
    accounted), and there is no output."""
    if not engine_supports(config, packet):
        return None, "unsupported"
    inbound = model.read_record(slot).direction == Direction.IN
    length = ip_packet_length(packet)
    if not inbound and length is not None and BLOCK_BYTES < len(packet) < length \
            and _header_checksum_right(packet):
        # Cut-through: the engine pads a stream that ends short and aborts it, its
        # header already taken as it was; a well-formed stand-in of that length
        # has the same effect on the SA (a sequence number, the accounting).
        _output, reason = model.process(slot, _stand_in(packet, length))
        return None, "aborted" if reason == "ok" else reason
    return model.process(slot, packet)
