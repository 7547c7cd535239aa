# SPDX-License-Identifier: BSD-2-Clause
"""The packet stream: one layout for every packet-carrying stream of the data path.

A packet travels as beats of ``width`` bytes (4 on iCE40, 16 on ECP5). Byte
``i`` of a beat sits in bits ``[8*i, 8*i+8)`` of ``data`` and is the ``i``-th
byte on the wire, the project's byte order for wide signals (see
``docs/architecture.md``). ``count`` says how many leading bytes are valid;
the bytes past it are zero. ``first`` and ``last`` mark a packet's first and
last beat (one beat can be both). Every beat but the last of a packet is full,
except where a component's docstring says otherwise (a :class:`Repacker` input
accepts partial beats anywhere), and only an empty packet has a beat with
``count == 0``.

:func:`beats_from_bytes` and :func:`bytes_from_beats` are the same rules in
Python, for benches, the model and the host.
"""

from amaranth.hdl import Cat, Const, Mux
from amaranth.lib import data, stream

__all__ = ["BEAT_WIDTHS", "packet_beat", "beats_as", "check_width", "big_endian", "ip_length",
           "octets", "words16", "ones_fold", "beats_from_bytes", "bytes_from_beats"]

#: Beat widths the data path is built for, in bytes.
BEAT_WIDTHS = (4, 8, 16)


def check_width(name: str, width) -> int:
    """`width` if it is one of :data:`BEAT_WIDTHS`, else a ValueError naming `name`."""
    if type(width) is not int or width not in BEAT_WIDTHS:
        raise ValueError(f"{name} must be one of {BEAT_WIDTHS} (bytes), not {width!r}")
    return width


def packet_beat(width: int) -> data.StructLayout:
    """Layout of one beat of a packet stream ``width`` bytes wide."""
    check_width("width", width)
    return data.StructLayout({
        "data":  8 * width,
        "count": range(width + 1),
        "first": 1,
        "last":  1,
    })


def beats_as(m, source, layout, **extra):
    """`source`'s packet beats as a stream of beats of `layout` (a packet beat with
    fields of its own, or a plain one): the packet beat's fields copied, `extra` fields
    set to the values given, any other field of `source` left behind. Combinational."""
    out = stream.Signature(layout).create()
    for name in packet_beat(len(source.payload.data) // 8).members:
        m.d.comb += out.payload[name].eq(source.payload[name])
    m.d.comb += [out.payload[name].eq(value) for name, value in extra.items()]
    m.d.comb += [out.valid.eq(source.valid), source.ready.eq(out.ready)]
    return out


def big_endian(value, nbytes):
    """`value` as `nbytes` big-endian (network order) bytes, in wire byte order:
    its most significant byte is byte 0. Narrow values are zero-extended."""
    value = Cat(value, Const(0, 8 * nbytes))
    return Cat(*(value[8 * (nbytes - 1 - i):8 * (nbytes - i)] for i in range(nbytes)))


def octets(value):
    """The bytes of a wide signal, in wire order (byte ``i`` at bits ``8i``)."""
    return [value[8 * k:8 * (k + 1)] for k in range(len(value) // 8)]


def words16(value):
    """The big-endian 16-bit words of a wide signal, in wire order (what the Internet
    checksum adds up)."""
    parts = octets(value)
    return [Cat(parts[2 * w + 1], parts[2 * w]) for w in range(len(parts) // 2)]


def ones_fold(total):
    """RFC 1071: a plain sum of 16-bit words (below 2**32) folded to 16 bits with
    end-around carry. Two folds are enough: the first leaves at most 0x1fffe."""
    once = total[:16] + total[16:32]
    return (once[:16] + once[16:])[:16]


def ip_length(data):
    """The length an IP packet's header announces, from its first 6 bytes (wire order):
    IPv4 total length, or 40 + payload length for IPv6."""
    octets = [data[8 * k:8 * (k + 1)] for k in range(6)]
    return Mux(octets[0][4:] == 6, Cat(octets[5], octets[4]) + 40, Cat(octets[3], octets[2]))


def beats_from_bytes(packet: bytes, width: int) -> list[dict]:
    """The beats of one packet, full except the last, as field dicts."""
    check_width("width", width)
    chunks = [packet[i:i + width] for i in range(0, len(packet), width)] or [b""]
    return [{"data": int.from_bytes(chunk, "little"), "count": len(chunk),
             "first": int(index == 0), "last": int(index == len(chunks) - 1)}
            for index, chunk in enumerate(chunks)]


def bytes_from_beats(beats, width: int) -> list[bytes]:
    """The packets carried by `beats` (dicts or layout views with the beat's fields).

    Checks the framing: ``first`` exactly on the beat after a ``last``, no
    byte set past ``count``. Raises ValueError on a violation.
    """
    check_width("width", width)
    packets, current = [], None
    for index, beat in enumerate(beats):
        get = beat.__getitem__ if isinstance(beat, dict) else lambda name: getattr(beat, name)
        value, count, first, last = (int(get(name)) for name in ("data", "count", "first", "last"))
        if bool(first) != (current is None):
            raise ValueError(f"beat {index}: first={first} but a packet "
                             f"{'is' if current is not None else 'is not'} in progress")
        if not 0 <= count <= width or value >> (8 * count):
            raise ValueError(f"beat {index}: data has bytes past count={count}")
        current = (current or b"") + value.to_bytes(width, "little")[:count]
        if last:
            packets.append(current)
            current = None
    if current is not None:
        raise ValueError("the last packet has no beat with last=1")
    return packets
