# SPDX-License-Identifier: BSD-2-Clause
"""RouteTable and Egress (Amaranth simulator) against sim/model/forwarder.py:
RouteTableModel and egress, and RouteTableModel against a brute-force oracle
(prefixes compared as integers, every length from the longest down).

Hypothesis route sets with overlapping IPv4 and IPv6 prefixes of every length
around a few addresses (ties, refused lengths and ports, cleared routes) and
scapy traffic to destinations near them (IPv4 with options, IPv6, ESP,
UDP-ESP, UDP, TCP, ICMP; bad checksums, cut streams, not-IP bytes, IPv6
payload length 0; some packets aborted upstream), with input gaps and a stall
rate per port: every packet leaves on the model's port byte for byte, in order
per port, with its abort flag, and the counters are the model's. Route writes
while traffic flows: each packet sees one version of the table, no older than
its predecessor's and with every write answered before its first beat went
in. The throughput and latency the docstring promises; argument errors."""

import copy
import ipaddress
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP
from scapy.packet import Raw

from espnic.hdl.forwarder.egress import (EGRESS_BEAT, MAX_PORTS, ROUTE_KEY, Egress, RouteTable,
                                         route_layouts)
from espnic.hdl.forwarder.parser import IpParser
from espnic.hdl.packet import beats_from_bytes, bytes_from_beats
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_put, stream_put_all
from espnic.sim.model.forwarder import RouteTableModel, egress, parse
from tests.test_parser import _with_options

WIDTH = 16
BASES = {False: [ipaddress.ip_address("10.1.2.3").packed,
                 ipaddress.ip_address("192.0.2.128").packed],
         True: [ipaddress.ip_address("2001:db8::1").packed,
                ipaddress.ip_address("fe80::8:0:0:1").packed]}


def _address(ipv6, base, noise):
    """An address near base `base`: one bit flipped (noise 0: none), so that some
    prefixes of the base still cover it and the longer ones do not."""
    raw = bytearray(BASES[ipv6][base])
    if noise:
        raw[-1 - noise % len(raw)] ^= 1 << (noise % 8)
    return bytes(raw)


def _number(octets):
    return int.from_bytes(octets, "little")


def _route_fields(index, route):
    valid, ipv6, dst, length, port = route
    return {"index": index, "valid": valid, "ipv6": ipv6, "dst": _number(dst), "length": length,
            "port": port}


@st.composite
def _route(draw, ports):
    """(valid, ipv6, dst, length, port): lengths to one past the address (refused), ports
    to what the port field holds (past the last refused)."""
    ipv6 = draw(st.booleans())
    limit = 128 if ipv6 else 32
    dst = _address(ipv6, draw(st.integers(0, 1)), draw(st.integers(0, 40)))
    if not ipv6 and draw(st.booleans()):
        dst += bytes(range(1, 13))      # the bits past an IPv4 address count for nothing
    length = draw(st.one_of(st.integers(0, limit), st.sampled_from([0, limit, limit + 1])))
    return (draw(st.sampled_from([True, True, True, False])), ipv6, dst, length,
            draw(st.integers(0, (1 << (max(ports, 2) - 1).bit_length()) - 1)))


def _fits(route, ports):
    """Whether the route table takes `route`: a prefix inside the address, a port that is."""
    _valid, ipv6, _dst, length, port = route
    return length <= (128 if ipv6 else 32) and port < ports


# ---- the model against a brute-force oracle -------------------------------------------

def _oracle(routes, ipv6, dst):
    """The port of the longest matching prefix (the lowest index among equals), by
    trying every length from the longest down and the routes in index order."""
    bits = 128 if ipv6 else 32
    address = int.from_bytes(dst[:bits // 8], "big")
    for length in range(bits, -1, -1):
        for route in routes:
            if route is None:
                continue
            r_ipv6, r_dst, r_length, port = route
            if (r_ipv6 == ipv6 and r_length == length
                    and int.from_bytes(r_dst[:bits // 8], "big") >> (bits - length)
                    == address >> (bits - length)):
                return port
    return None


@settings(max_examples=200, deadline=None)
@given(writes=st.lists(st.tuples(st.integers(0, 7), _route(3)), max_size=16),
       keys=st.lists(st.tuples(st.booleans(), st.integers(0, 1), st.integers(0, 40)),
                     min_size=1, max_size=16))
def test_route_model_against_brute_force(writes, keys):
    model = RouteTableModel(routes=8, ports=3)
    table = [None] * 8
    for index, (valid, ipv6, dst, length, port) in writes:
        ok = _fits((valid, ipv6, dst, length, port), 3)
        assert model.write(index, valid, ipv6, dst, length, port) == ok
        if ok:
            table[index] = (ipv6, dst, length, port) if valid else None
    for ipv6, base, noise in keys:
        dst = _address(ipv6, base, noise)
        assert model.lookup(ipv6, dst) == _oracle(table, ipv6, dst)


def test_egress_model_drops_malformed():
    model = RouteTableModel(routes=2, ports=2)
    assert model.write(0, True, False, bytes(4), 0, 1)
    packet = bytes(IP(src="192.0.2.1", dst="198.51.100.2") / UDP())
    assert egress(model, packet) == 1
    assert egress(model, packet[:10]) is None
    assert egress(model, b"\x20" + packet[1:]) is None


# ---- the route table against the model ------------------------------------------------

@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(st.tuples(st.integers(0, 7), _route(3)), max_size=12),
       keys=st.lists(st.tuples(st.booleans(), st.integers(0, 1), st.integers(0, 40)),
                     min_size=1, max_size=12),
       stages=st.sampled_from([1, 2, 4]), stall=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_route_table_against_the_model(writes, keys, stages, stall, seed):
    dut = RouteTable(routes=8, stages=stages, ports=3)
    model = RouteTableModel(routes=8, ports=3)
    rng = random.Random(seed)
    seen = []

    async def bench(ctx):
        for index, route in writes:
            await stream_put(ctx, dut.host, _route_fields(index, route), timeout=50)
            reply = await stream_get(ctx, dut.host_reply, timeout=50)
            assert bool(reply.ok) == model.write(index, *route)
        # Back to back, results taken with back-pressure.
        sent = 0
        while len(seen) < len(keys):
            if sent < len(keys):
                ipv6, base, noise = keys[sent]
                ctx.set(dut.lookup.payload, ROUTE_KEY.const(
                    {"ipv6": ipv6, "dst": _number(_address(ipv6, base, noise))}))
            ctx.set(dut.lookup.valid, sent < len(keys))
            ready = not (stall and rng.random() < stall)
            ctx.set(dut.result.ready, ready)
            _clk, _rst, l_ready, r_valid, result = await ctx.tick().sample(
                dut.lookup.ready, dut.result.valid, dut.result.payload)
            sent += sent < len(keys) and l_ready
            if r_valid and ready:
                seen.append(result.port if result.hit else None)

    run_sim(dut, bench)
    assert seen == [model.lookup(ipv6, _address(ipv6, base, noise)) for ipv6, base, noise in keys]


# ---- the egress -----------------------------------------------------------------------

def _packet(kind, ipv6, dst, *, ident, options=0, size=8, damage="whole", where=0):
    """A packet to `dst` (bytes) from scapy, made unique by `ident` (IPv4 ID / IPv6 flow
    label), damaged as asked."""
    upper = {
        "esp": lambda: ESP(spi=0x1234, seq=7) / Raw(bytes(size)),
        "udp_esp": lambda: UDP(sport=4500, dport=4500) / Raw(struct.pack("!I", 9) + bytes(size)),
        "udp": lambda: UDP(sport=53, dport=5353) / Raw(bytes(size)),
        "tcp": lambda: TCP(sport=80, dport=443) / Raw(bytes(size)),
        "icmp": lambda: ICMP() / Raw(bytes(size)),
    }[kind]()
    if ipv6:
        packet = bytes(IPv6(src="2001:db8::99", dst=str(ipaddress.IPv6Address(dst)), fl=ident)
                       / upper)
    else:
        packet = _with_options(bytes(IP(src="192.0.2.1", dst=str(ipaddress.IPv4Address(dst[:4])),
                                        id=ident) / upper), options)
    if damage == "checksum" and not ipv6:
        packet = packet[:10] + bytes([packet[10] ^ 0x40]) + packet[11:]
    elif damage == "cut":
        packet = packet[:1 + where % len(packet)]
    elif damage == "junk":
        packet = bytes([0x20 | where & 0xf]) + packet[1:]
    elif damage == "plen0" and ipv6:
        packet = packet[:4] + b"\0\0" + packet[6:]
    return packet


def _beats(packet, abort):
    beats = beats_from_bytes(packet, WIDTH)
    return [{**beat, "abort": int(abort and beat["last"])} for beat in beats]


def _as_dict(beat):
    return {name: int(getattr(beat, name)) for name in EGRESS_BEAT.members}


def _run_egress(dut, packets, aborts, *, ports, writes=(), gap=0.0, stalls=None, seed=0,
                during=()):
    """Routes `writes` over the host port, then `packets` (with their abort flags) through
    `dut` while the route writes `during` go in at random times. Returns the beats each
    port took, the counters, the replies to `writes` and to `during`, and per packet how
    many writes of `during` had been answered when its first beat was offered."""
    rng = random.Random(seed)
    stalls = stalls or [0.0] * ports
    received = [[] for _ in range(ports)]
    counters = {}
    host, replies, floors = [], [], []
    started = []

    async def setup_and_feed(ctx):
        for fields in writes:
            await stream_put(ctx, dut.host, fields, timeout=50)
            host.append(bool((await stream_get(ctx, dut.host_reply, timeout=50)).ok))
        started.append(True)
        for packet, abort in zip(packets, aborts):
            floors.append(len(replies))
            await stream_put_all(ctx, dut.i, _beats(packet, abort), rng=rng, gap_prob=gap,
                                 timeout=5000)
        # Until every packet has been counted somewhere (sent, malformed or no route).
        for _ in range(20_000):
            total = (ctx.get(dut.malformed) + ctx.get(dut.no_route)
                     + sum(ctx.get(dut.sent[p]) for p in range(ports)))
            if total == len(packets):
                break
            await ctx.tick()
        else:
            raise TimeoutError(f"{total} of {len(packets)} packets accounted for")
        await ctx.tick().repeat(3)      # the collectors' last beats are recorded
        counters.update(malformed=ctx.get(dut.malformed), no_route=ctx.get(dut.no_route),
                        sent=[ctx.get(dut.sent[p]) for p in range(ports)])

    async def write_during(ctx):
        while not started:
            await ctx.tick()
        local = random.Random(seed + 7)
        for fields in during:
            await ctx.tick().repeat(local.randrange(1, 40))
            await stream_put(ctx, dut.host, fields, timeout=50)
            replies.append(bool((await stream_get(ctx, dut.host_reply, timeout=50)).ok))

    def collector(port):
        local = random.Random(seed * 31 + port)

        async def collect(ctx):
            while True:
                ready = not (stalls[port] and local.random() < stalls[port])
                ctx.set(dut.o[port].ready, ready)
                _clk, _rst, valid, beat = await ctx.tick().sample(dut.o[port].valid,
                                                                   dut.o[port].payload)
                if valid and ready:
                    received[port].append(_as_dict(beat))
        return collect

    benches = [setup_and_feed] + ([write_during] if during else [])
    run_sim(dut, *benches, background=[collector(p) for p in range(ports)])
    return received, counters, host, replies, floors


def _expected(model, packets, aborts, ports):
    per_port = [[] for _ in range(ports)]
    counters = {"malformed": 0, "no_route": 0, "sent": [0] * ports}
    for packet, abort in zip(packets, aborts):
        port = egress(model, packet)
        if port is not None:
            per_port[port] += _beats(packet, abort)
            counters["sent"][port] += 1
        else:
            counters["malformed" if parse(packet).malformed else "no_route"] += 1
    return per_port, counters


KINDS = ["esp", "udp_esp", "udp", "tcp", "icmp"]
DAMAGE = ["whole", "whole", "whole", "whole", "checksum", "cut", "junk", "plen0"]


@st.composite
def _traffic(draw, count, minimum=1):
    cases = draw(st.lists(st.tuples(st.sampled_from(KINDS), st.booleans(), st.integers(0, 1),
                                    st.integers(0, 40), st.integers(0, 10), st.integers(0, 60),
                                    st.sampled_from(DAMAGE), st.integers(0, 2**16),
                                    st.sampled_from([False, False, False, True])),
                          min_size=minimum, max_size=count))
    packets, aborts = [], []
    for ident, (kind, ipv6, base, noise, options, size, damage, where, abort) in enumerate(cases):
        packets.append(_packet(kind, ipv6, _address(ipv6, base, noise), ident=ident + 1,
                               options=4 * options, size=size, damage=damage, where=where))
        aborts.append(abort)
    return packets, aborts


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ports=st.sampled_from([1, 3, 4]), stages=st.sampled_from([1, 2, 4]),
       gap=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2**16))
def test_egress_against_the_model(data, ports, stages, gap, seed):
    routes = data.draw(st.lists(st.tuples(st.integers(0, 7), _route(ports)), max_size=10))
    packets, aborts = data.draw(_traffic(12))
    stalls = data.draw(st.lists(st.sampled_from([0.0, 0.3, 0.7]), min_size=ports,
                                max_size=ports))
    model = RouteTableModel(routes=8, ports=ports)
    wanted_replies = [model.write(index, *route) for index, route in routes]
    dut = Egress(ports=ports, routes=8, stages=stages)
    received, counters, host, _, _ = _run_egress(
        dut, packets, aborts, ports=ports, writes=[_route_fields(i, r) for i, r in routes],
        gap=gap, stalls=stalls, seed=seed)
    per_port, expected_counters = _expected(model, packets, aborts, ports)
    assert host == wanted_replies
    for port in range(ports):
        assert received[port] == per_port[port], f"port {port}"
    assert counters == expected_counters


def test_egress_directed():
    """Longest prefix over shorter ones, a tie to the lower index, a version's routes
    not matching the other version, no route, malformed, aborted packets sent with
    their flag (and dropped when malformed), refused writes."""
    v4, v6 = ipaddress.IPv4Address, ipaddress.IPv6Address
    writes = [
        (0, (True, False, v4("10.0.0.0").packed + b"\xff" * 12, 8, 1)),
        (1, (True, False, v4("10.1.0.0").packed, 16, 2)),
        (2, (True, False, v4("10.1.0.0").packed, 16, 0)),       # a tie: index 1 wins
        (3, (True, False, bytes(4), 0, 0)),                      # the IPv4 default
        (4, (True, True, v6("2001:db8::").packed, 32, 2)),
        (5, (True, True, v6("2001:db9::").packed, 129, 1)),      # refused: too long
        (6, (True, True, v6("2001:db9::").packed, 32, 3)),       # refused: no port 3
        (7, (False, True, bytes(16), 0, 1)),                     # cleared: no IPv6 default
    ]
    cases = [
        ("udp", False, "10.1.2.3", "whole", False, 2),
        ("esp", False, "10.2.0.1", "whole", True, 1),
        ("tcp", False, "192.0.2.1", "whole", False, 0),
        ("udp", True, "2001:db8::5", "whole", False, 2),
        ("esp", True, "2001:db9::1", "whole", False, None),      # no route
        ("udp", False, "10.1.2.3", "checksum", False, None),     # malformed
        ("udp", False, "10.1.2.3", "cut", True, None),           # cut in the header
        ("udp_esp", False, "10.1.9.9", "cut", True, 2),          # cut later: forwarded
        ("tcp", True, "a01:203::1", "whole", False, None),      # IPv4 routes: not for IPv6
    ]
    packets, aborts, ports_wanted = [], [], []
    for ident, (kind, ipv6, dst, damage, abort, port) in enumerate(cases):
        address = ipaddress.ip_address(dst).packed
        where = 11 if damage == "cut" and kind == "udp" else 40
        packets.append(_packet(kind, ipv6, address, ident=ident + 1, options=8, size=40,
                               damage=damage, where=where))
        aborts.append(abort)
        ports_wanted.append(port)
    model = RouteTableModel(routes=8, ports=3)
    accepted = [True] * 5 + [False] * 2 + [True]
    assert [model.write(index, *route) for index, route in writes] == accepted
    assert [egress(model, packet) for packet in packets] == ports_wanted
    received, counters, host, _, _ = _run_egress(
        Egress(ports=3, routes=8, stages=2), packets, aborts, ports=3,
        writes=[_route_fields(i, r) for i, r in writes], stalls=[0.5, 0.0, 0.5])
    per_port, expected_counters = _expected(model, packets, aborts, 3)
    assert host == accepted
    assert received == per_port
    assert counters == expected_counters == {"malformed": 2, "no_route": 2, "sent": [1, 1, 3]}
    assert [beat["abort"] for beat in received[1]][-1] == 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), stages=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_route_writes_while_traffic_flows(data, stages, seed):
    """Each packet sees one table version (old or new routes, never a stale one after
    the reply): versions never go back from one packet to the next, and a packet whose
    first beat came after a write's reply sees that write."""
    ports = 3
    initial = [(index, route) for index, route in enumerate(
        data.draw(st.lists(_route(ports), min_size=4, max_size=4)))]
    during = data.draw(st.lists(st.tuples(st.integers(0, 7), _route(ports)), min_size=3,
                                max_size=6))
    packets, aborts = data.draw(_traffic(24, 12))
    model = RouteTableModel(routes=8, ports=ports)
    for index, route in initial:
        model.write(index, *route)
    versions = [copy.deepcopy(model)]
    for index, route in during:
        model.write(index, *route)
        versions.append(copy.deepcopy(model))
    dut = Egress(ports=ports, routes=8, stages=stages)
    received, counters, _, replies, floors = _run_egress(
        dut, packets, aborts, ports=ports, writes=[_route_fields(i, r) for i, r in initial],
        during=[_route_fields(i, r) for i, r in during], gap=0.2, stalls=[0.2, 0.0, 0.4],
        seed=seed)
    assert replies == [_fits(route, ports) for _index, route in during]
    # Which packet went where: each is unique (IPv4 ID / IPv6 flow label).
    where = {}
    for port, beats in enumerate(received):
        for packet in bytes_from_beats(beats, WIDTH):
            where[packet] = port
    version = 0
    for packet, abort, floor in zip(packets, aborts, floors, strict=True):
        if parse(packet).malformed:
            assert packet not in where
            continue
        seen = where.get(packet)
        version = max(version, floor)
        while version < len(versions) and egress(versions[version], packet) != seen:
            version += 1
        assert version < len(versions), f"{packet.hex()} went to {seen}"
    # In order per port, the abort flags with their packets, and the counters.
    for port, beats in enumerate(received):
        sent = [(packet, abort) for packet, abort in zip(packets, aborts)
                if where.get(packet) == port]
        assert beats == [beat for packet, abort in sent for beat in _beats(packet, abort)]
    malformed = sum(parse(packet).malformed for packet in packets)
    assert counters == {"malformed": malformed,
                        "no_route": len(packets) - malformed - len(where),
                        "sent": [sum(port == p for port in where.values()) for p in range(ports)]}


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_egress_throughput_and_latency(stages):
    """Back-to-back packets of two beats (the shortest IPv4), every port ready: one
    beat out per cycle, and the first beat offered stages + 8 cycles after the beat
    that completed its record (the second) came in: the parser's record 4 cycles
    after that beat, then the route table's stages + 4 (its result queue's 2
    included)."""
    ports = 2
    dut = Egress(ports=ports, routes=8, stages=stages)
    packets = [_packet("udp", False, _address(False, k % 2, 0), ident=k + 1, size=4)
               for k in range(12)]
    assert all(len(beats_from_bytes(packet, WIDTH)) == 2 for packet in packets)
    beats = [beat for packet in packets for beat in _beats(packet, False)]
    taken_in, offered = [], []

    async def bench(ctx):
        for index in range(2):
            await stream_put(ctx, dut.host, _route_fields(index, (True, False, BASES[False][index],
                                                                  32, index)), timeout=50)
            assert (await stream_get(ctx, dut.host_reply, timeout=50)).ok
        for port in range(ports):
            ctx.set(dut.o[port].ready, 1)
        cycle = sent = 0
        while len(offered) < len(beats):
            if sent < len(beats):
                ctx.set(dut.i.payload, EGRESS_BEAT.const(beats[sent]))
            ctx.set(dut.i.valid, sent < len(beats))
            _clk, _rst, ready, *valid = await ctx.tick().sample(
                dut.i.ready, *(dut.o[port].valid for port in range(ports)))
            if sent < len(beats) and ready:
                taken_in.append(cycle)
                sent += 1
            if any(valid):
                offered.append(cycle)
            cycle += 1
            assert cycle < 500

    run_sim(dut, bench)
    assert taken_in == list(range(taken_in[0], taken_in[0] + len(beats)))
    assert offered == list(range(offered[0], offered[0] + len(beats)))
    assert offered[0] - taken_in[1] == stages + 8


def test_parser_extra_fields():
    """The parser's `extra` fields are checked; without them its beats are plain."""
    assert IpParser(extra={"abort": 1}).i.payload.shape() == EGRESS_BEAT
    with pytest.raises(ValueError, match="extra"):
        IpParser(extra={"last": 1})
    with pytest.raises(TypeError, match="extra"):
        IpParser(extra=[("abort", 1)])


def test_egress_parameters():
    with pytest.raises(ValueError, match="ports"):
        Egress(ports=0)
    with pytest.raises(ValueError, match="ports"):
        Egress(ports=MAX_PORTS + 1)
    with pytest.raises(ValueError, match="ports"):
        RouteTable(ports="2")
    with pytest.raises(ValueError, match="routes"):
        RouteTable(routes=6, stages=4, ports=2)
    with pytest.raises(ValueError, match="routes"):
        Egress(ports=2, routes=2048, stages=2)
    with pytest.raises(ValueError, match="stages"):
        Egress(ports=2, stages=0)
    with pytest.raises(TypeError):
        RouteTable(routes=8)                        # ports has no default
    layouts = route_layouts(8, 3)
    assert list(layouts["WRITE"].members) == ["index", "valid", "ipv6", "dst", "length", "port"]
    assert list(layouts["RESULT"].members) == ["hit", "port"]
    assert list(EGRESS_BEAT.members) == ["data", "count", "first", "last", "abort"]
