# SPDX-License-Identifier: BSD-2-Clause
"""Packet files for ``espnic run``: pcap and pcapng in, pcap out, Ethernet or raw IP.

:func:`read_capture` reads every packet of a file (scapy's raw readers: no
dissection, so a malformed packet is passed on as it is, for the device to count)
and :func:`ip_packet` takes the IP packet out of each frame: raw-IP link types as
they are, Ethernet frames without their header (up to two VLAN tags) and without
the padding a short frame carries. :func:`write_capture` writes packets back with
the input's link type; an Ethernet frame out gets the header of :func:`ethernet_frame`
(the device sends IP packets: its egress has no L2 header yet).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaptureError", "Capture", "read_capture", "ip_packet", "ip_packet_length",
           "ethernet_frame",
           "write_capture", "LINKTYPE_ETHERNET", "LINKTYPE_RAW"]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
#: DLT_RAW as some systems number it in files (libpcap maps both to 101).
_RAW_ALIASES = (12, 14)
_LINKTYPES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP", LINKTYPE_IPV4: "raw IPv4",
              LINKTYPE_IPV6: "raw IPv6", 12: "raw IP", 14: "raw IP"}
_VLAN = (0x8100, 0x88a8)
_ETHERTYPES = {0x0800: 4, 0x86dd: 6}
#: The addresses of an Ethernet frame out (locally administered): the device's egress
#: port p sends from 02:e5:9e:00:00:p to 02:e5:9e:ff:ff:p.
_MAC_PREFIX = bytes.fromhex("02e59e")


class CaptureError(ValueError):
    """A packet file that cannot be read or written, in one line."""


@dataclass(frozen=True)
class Capture:
    linktype: int
    packets: list          # [(timestamp in seconds as a float, frame bytes)]

    @property
    def linktype_name(self) -> str:
        return _LINKTYPES[self.linktype]


def read_capture(path) -> Capture:
    """Every packet of the pcap or pcapng file at ``path``, and its link type."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    path = Path(path)
    try:
        reader = RawPcapReader(str(path))
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except (OSError, Scapy_Exception, EOFError, struct.error) as error:
        raise CaptureError(f"{path}: not a pcap or pcapng file ({_reason(error)})") from None
    packets, linktypes = [], set()
    # scapy only warns of a cut record (and hands the rest on): that is an error here.
    scapy_log = logging.getLogger("scapy.runtime")
    level = scapy_log.level
    scapy_log.setLevel(logging.ERROR)
    try:
        with reader:
            classic = type(reader) is RawPcapReader      # not pcapng
            end = reader.f.tell()                        # of the last whole record
            for data, meta in reader:
                if len(data) < getattr(meta, "caplen", len(data)):
                    raise CaptureError(f"{path}: corrupt: packet {len(packets) + 1} is cut "
                                       f"short ({len(data)} of {meta.caplen} bytes)")
                linktypes.add(getattr(meta, "linktype", None) or reader.linktype)
                packets.append((_timestamp(meta), bytes(data)))
                end = reader.f.tell()
            # A cut record header reads as the end of the file to scapy.
            left = path.stat().st_size - end
            if classic and left > 0:
                raise CaptureError(f"{path}: corrupt: {left} bytes after packet "
                                   f"{len(packets)} are not a whole record")
    except (OSError, Scapy_Exception, EOFError, struct.error) as error:
        raise CaptureError(f"{path}: corrupt after {len(packets)} packets "
                           f"({_reason(error)})") from None
    finally:
        scapy_log.setLevel(level)
    if not linktypes:
        linktypes.add(reader.linktype)
    if len(linktypes) > 1:
        raise CaptureError(f"{path}: packets of several link types "
                           f"({', '.join(map(str, sorted(linktypes)))}); give one")
    (linktype,) = linktypes
    if linktype not in _LINKTYPES:
        raise CaptureError(f"{path}: link type {linktype} is not supported "
                           f"(Ethernet or raw IP: 1, 101, 228, 229)")
    return Capture(linktype, packets)


def _reason(error) -> str:
    return str(error) or type(error).__name__


def _timestamp(meta) -> float:
    if hasattr(meta, "tshigh"):                     # pcapng
        return ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
    return meta.sec + meta.usec / 1e6


def ip_packet(frame: bytes, linktype: int) -> bytes | None:
    """The IP packet in ``frame``, or None (an Ethernet frame that carries no IP)."""
    if linktype != LINKTYPE_ETHERNET:
        return frame
    offset, ethertype = 12, None
    while len(frame) >= offset + 2:
        ethertype = int.from_bytes(frame[offset:offset + 2], "big")
        if ethertype not in _VLAN:
            break
        offset += 4
    if ethertype not in _ETHERTYPES:
        return None
    packet = frame[offset + 2:]
    # Short frames are padded to 60 bytes: keep what the IP header says is the packet.
    length = ip_packet_length(packet)
    return packet[:length] if length and length < len(packet) else packet


def ip_packet_length(packet: bytes) -> int | None:
    """The IP packet's own length, or None when the header does not say."""
    if len(packet) >= 4 and packet[0] >> 4 == 4:
        return int.from_bytes(packet[2:4], "big")
    if len(packet) >= 6 and packet[0] >> 4 == 6:
        return 40 + int.from_bytes(packet[4:6], "big")
    return None


def ethernet_frame(packet: bytes, port: int = 0) -> bytes:
    """``packet`` (IP) in an Ethernet frame from egress port ``port``."""
    ethertype = 0x86dd if packet and packet[0] >> 4 == 6 else 0x0800
    return (_MAC_PREFIX + bytes([0xff, 0xff, port]) + _MAC_PREFIX + bytes([0, 0, port])
            + ethertype.to_bytes(2, "big") + packet)


def write_capture(path, linktype: int, packets) -> None:
    """Write ``packets`` (``(timestamp, frame bytes)``) to a pcap file at ``path``."""
    from scapy.utils import RawPcapWriter

    try:
        with RawPcapWriter(str(path), linktype=linktype, sync=False) as writer:
            writer.write_header(None)
            for timestamp, frame in packets:
                seconds = int(timestamp)
                writer.write_packet(frame, sec=seconds,
                                    usec=int(round((timestamp - seconds) * 1e6)))
    except OSError as error:
        raise CaptureError(f"{path}: cannot write ({error.strerror})") from None
