# SPDX-License-Identifier: BSD-2-Clause
"""IpParser (Amaranth simulator) against the reference parser, and the reference
parser against scapy's dissection: IPv4 with 0..40 bytes of options and IPv6; ESP,
UDP-encapsulated ESP (port 4500 either end, the non-ESP marker), UDP, TCP, ICMP;
fragments; bad checksums, bad lengths, streams cut anywhere, not-IP bytes; input
gaps and back-pressure on both outputs. Every packet leaves unchanged and in order,
its record before its first beat."""

import ipaddress
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.ipsec import ESP
from scapy.packet import Raw

from espnic.hdl.forwarder import IpParser, PacketKind
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_put_all
from espnic.sim.model.esp import internet_checksum
from espnic.sim.model.forwarder import parse

WIDTH = 16


def _with_options(packet, options):
    """IPv4 `packet` with `options` bytes of NOP options, length and checksum redone."""
    header = bytearray(packet[:20] + b"\x01" * options)
    header[0] = 0x45 + options // 4
    header[2:4] = struct.pack("!H", len(packet) + options)
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header) + packet[20:]


def _packet(kind, version, options, size, spi):
    upper = {
        "esp": lambda: ESP(spi=spi, seq=7) / Raw(bytes(size)),
        "udp_esp": lambda: UDP(sport=4500, dport=4500) / Raw(struct.pack("!I", spi) + bytes(size)),
        "udp_esp_d": lambda: UDP(sport=1234, dport=4500) / Raw(struct.pack("!I", spi) + bytes(size)),
        "ike": lambda: UDP(sport=4500, dport=4500) / Raw(bytes(4 + size)),   # non-ESP marker
        "udp": lambda: UDP(sport=53, dport=5353) / Raw(bytes(size)),
        "tcp": lambda: TCP(sport=80, dport=443) / Raw(bytes(size)),
        "icmp": lambda: ICMP() / Raw(bytes(size)),
    }[kind]()
    if version == 6:
        return bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / upper)
    return _with_options(bytes(IP(src="192.0.2.1", dst="198.51.100.2") / upper), options)


def _records(packets, *, gap=0.0, stall=0.0, seed=0):
    dut = IpParser(width=WIDTH)
    beats = [beat for packet in packets for beat in beats_from_bytes(packet, WIDTH)]
    out, records, order = [], [], []

    async def feed(ctx):
        await stream_put_all(ctx, dut.i, beats, rng=random.Random(seed), gap_prob=gap,
                             timeout=10_000)

    async def collect(ctx):
        rng = random.Random(seed + 1)
        while len(out) < len(beats):
            ctx.set(dut.o.ready, not (stall and rng.random() < stall))
            ctx.set(dut.parsed.ready, not (stall and rng.random() < stall))
            _clk, _rst, o_valid, o_ready, beat, p_valid, p_ready, record = \
                await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload,
                                        dut.parsed.valid, dut.parsed.ready, dut.parsed.payload)
            if p_valid and p_ready:
                records.append(record)
                order.append("record")
            if o_valid and o_ready:
                out.append(beat)
                if beat.first:
                    order.append("first")

    run_sim(dut, feed, collect)
    assert order == ["record", "first"] * len(packets)
    assert bytes_from_beats(out, WIDTH) == packets
    return records


def _check(record, packet):
    expected = parse(packet)
    assert bool(record.malformed) == expected.malformed, packet.hex()
    if expected.malformed:
        return
    address = len(expected.src)
    assert record.kind == expected.kind
    assert (bool(record.ipv6), bool(record.fragment), record.proto) == \
        (expected.ipv6, expected.fragment, expected.proto)
    assert (record.src.to_bytes(16, "little")[:address],
            record.dst.to_bytes(16, "little")[:address]) == (expected.src, expected.dst)
    assert (record.sport, record.dport, record.spi, record.length) == \
        (expected.sport, expected.dport, expected.spi, expected.length)


KINDS = ["esp", "udp_esp", "udp_esp_d", "ike", "udp", "tcp", "icmp"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([4, 6]),
                                st.integers(0, 10), st.integers(0, 80),
                                st.integers(1, 2**32 - 1),
                                st.sampled_from(["whole", "cut", "flip", "fragment", "junk"]),
                                st.integers(0, 2**16)),
                      min_size=1, max_size=8),
       gap=st.sampled_from([0.0, 0.3]), stall=st.sampled_from([0.0, 0.4]),
       seed=st.integers(0, 2**16))
def test_parser_against_the_model(cases, gap, stall, seed):
    packets = []
    for kind, version, options, size, spi, damage, where in cases:
        packet = _packet(kind, version, 4 * options, size, spi)
        if damage == "cut":
            packet = packet[:1 + where % len(packet)]
        elif damage == "flip":
            position = where % min(len(packet), 80)
            packet = packet[:position] + bytes([packet[position] ^ 0x10]) + packet[position + 1:]
        elif damage == "fragment" and version == 4:
            packet = _with_options(packet[:6] + b"\x20\x00" + packet[8:20] + packet[20 + 4 * options:],
                                   4 * options)
        elif damage == "fragment":
            packet = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment()
                           / Raw(packet[40:]))
        elif damage == "junk":
            packet = bytes([0x20 | where & 0xf]) + packet[1:]
        packets.append(packet)
    records = _records(packets, gap=gap, stall=stall, seed=seed)
    for record, packet in zip(records, packets, strict=True):
        _check(record, packet)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version,options", [(4, 0), (4, 40), (6, 0)])
def test_reference_parser_against_scapy(kind, version, options):
    """The model's record of well-formed packets, as scapy dissects them."""
    spi = 0x89abcdef
    packet = _packet(kind, version, options, 30, spi)
    parsed = parse(packet)
    dissected = (IPv6 if version == 6 else IP)(packet)
    assert not parsed.malformed
    assert (parsed.src, parsed.dst) == (ipaddress.ip_address(dissected.src).packed,
                                        ipaddress.ip_address(dissected.dst).packed)
    assert (parsed.proto, parsed.length) == \
        ((dissected.nh, dissected.plen + 40) if version == 6 else (dissected.proto, dissected.len))
    layer = dissected.payload
    if kind == "esp":
        assert (parsed.kind, parsed.spi) == (PacketKind.ESP, layer.spi)
    elif kind in ("udp_esp", "udp_esp_d"):
        assert (parsed.kind, parsed.spi, parsed.dport) == \
            (PacketKind.UDP_ESP, struct.unpack("!I", bytes(layer.payload)[:4])[0], layer.dport)
    else:
        assert (parsed.kind, parsed.spi) == (PacketKind.IP, 0)
        if kind != "icmp":
            assert (parsed.sport, parsed.dport) == (layer.sport, layer.dport)


def test_parser_parameters():
    with pytest.raises(ValueError, match="depth"):
        IpParser(depth=5)
    with pytest.raises(ValueError, match="width"):
        IpParser(width=4)
