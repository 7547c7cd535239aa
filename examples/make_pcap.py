# SPDX-License-Identifier: BSD-2-Clause
"""Write a small pcap of traffic that exercises an espnic config.

    python examples/make_pcap.py OUT.pcap [--config examples/espnic.toml] [--count N]

For every ``[[policy]]`` of the config, N cleartext packets that this policy (and
no other of higher rank) matches: protected, bypassed or discarded, as the
policy says; for every inbound ``[[sa]]``, N ESP packets sealed by the peer (the
reference model with the SA's direction turned round), carrying traffic back to
the networks of the protect policies that use the same peer. The groups are
interleaved: packet k of each group, then packet k + 1.

The file is classic pcap, little-endian, with link type 101 (raw IP: each
record is an IPv4 or IPv6 packet, no Ethernet header), the first packet at
2026-01-01 00:00:00 UTC and one every millisecond. Addresses, ports and
payloads come from a fixed seed, so the same config and count give the same
bytes every time (``examples/example.pcap`` is the default's output, and a test
checks that it still is).
"""

import argparse
import dataclasses
import ipaddress
import random
import sys
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest
from scapy.packet import Raw
from scapy.utils import PcapWriter

from espnic.hdl.forwarder.policy import PolicyAction
from espnic.host.config import ConfigError, load_config, policy_rule
from espnic.sim.model import EspModel
from espnic.sim.model.forwarder import PolicyTableModel, parse

#: pcap link type of raw IPv4/IPv6 packets (LINKTYPE_RAW).
LINKTYPE_RAW = 101
#: 2026-01-01 00:00:00 UTC: fixed timestamps, so the file does not depend on when it is made.
EPOCH = 1_767_225_600
SEED = 6
DEFAULT_CONFIG = Path(__file__).with_name("espnic.toml")


def _host(rng, network, known=()):
    """An address of `network`, often one of a `known` network inside it (a catch-all
    policy's traffic then looks like the site's, not like random addresses)."""
    inside = [n for n in known if n.version == network.version and n.subnet_of(network)]
    if inside and rng.random() < 0.8:
        network = rng.choice(inside)
    return network.network_address + rng.randrange(network.num_addresses)


def _packet(src, dst, proto, sport, dport, payload, ident):
    """A cleartext IPv4 or IPv6 packet of protocol `proto` (6, 17, 1/58 or another)."""
    ipv6 = src.version == 6
    outer = IPv6(src=str(src), dst=str(dst)) if ipv6 else IP(src=str(src), dst=str(dst), id=ident)
    if proto == 6:
        return bytes(outer / TCP(sport=sport, dport=dport, seq=ident) / Raw(payload))
    if proto == 17:
        return bytes(outer / UDP(sport=sport, dport=dport) / Raw(payload))
    if proto == (58 if ipv6 else 1):
        echo = ICMPv6EchoRequest(id=ident, seq=1) if ipv6 else ICMP(id=ident, seq=1)
        return bytes(outer / echo / Raw(payload))
    if ipv6:
        outer.nh = proto
    else:
        outer.proto = proto
    return bytes(outer / Raw(payload))


def _selector(packet: bytes) -> dict:
    """What the forwarder's policy table is looked up by (as in the model's classify)."""
    parsed = parse(packet)
    pad = bytes(16 - len(parsed.src))
    return {"ipv6": parsed.ipv6, "src": parsed.src + pad, "dst": parsed.dst + pad,
            "proto": parsed.proto, "sport": parsed.sport, "dport": parsed.dport}


def _policy_traffic(config, index, count, rng, table):
    """`count` packets that policy `index` is the winning match of."""
    policy = config.policies[index]
    sources = [p.src for p in config.policies]
    destinations = [p.dst for p in config.policies]
    packets = []
    for number in range(count):
        for _attempt in range(1000):
            if policy.proto is not None:
                proto = policy.proto
            elif (policy.sport, policy.dport) != ((0, 65535), (0, 65535)):
                proto = rng.choice([6, 17])   # port selectors: a protocol with ports
            else:
                proto = rng.choice([6, 17, 58 if policy.src.version == 6 else 1])
            sport = rng.randint(max(policy.sport[0], 1), policy.sport[1])
            dport = rng.randint(max(policy.dport[0], 1), policy.dport[1])
            if proto == 17 and dport == 53:
                payload = bytes(DNS(id=number + 1, rd=1,
                                    qd=DNSQR(qname=f"host{number}.example.com")))
            else:
                payload = (f"espnic example: policy[{index}] {policy.action.name.lower()} "
                           f"packet {number} ").encode() + rng.randbytes(rng.randrange(8, 64))
            packet = _packet(_host(rng, policy.src, sources), _host(rng, policy.dst, destinations),
                             proto, sport, dport, payload, ident=number + 1)
            found = table.lookup(_selector(packet))
            if found is not None and found[0] == index:
                packets.append(packet)
                break
        else:
            raise SystemExit(f"make_pcap: {config.source}: policy[{index}] is shadowed by "
                             f"policies of higher priority: no packet reaches it")
    return packets


def _inbound_traffic(config, index, count, rng):
    """`count` ESP packets of inbound SA `index`, sealed by its peer."""
    sa = config.sas[index].config
    peer = EspModel(slots=1)
    peer.install(0, dataclasses.replace(sa, direction="out"))
    # The peer's traffic answers ours: the networks of protect policies to the same peer.
    answers = [p for p in config.policies if p.action == PolicyAction.PROTECT
               and config.outbound_sa(p.sa).config.dst == sa.src]
    packets = []
    for number in range(count):
        if sa.mode == "transport":
            src, dst = ipaddress.ip_address(sa.src), ipaddress.ip_address(sa.dst)
        elif answers:
            policy = answers[number % len(answers)]
            src, dst = _host(rng, policy.dst), _host(rng, policy.src)
        else:
            src, dst = ipaddress.ip_address(sa.src), ipaddress.ip_address(sa.dst)
        payload = (f"espnic example: sa[{index}] inbound packet {number} ").encode() \
            + rng.randbytes(rng.randrange(8, 64))
        inner = _packet(src, dst, 17, rng.randint(1024, 65535), rng.choice([53, 443, 5004]),
                        payload, ident=number + 1)
        sealed, reason = peer.process(0, inner)
        if reason != "ok":
            raise SystemExit(f"make_pcap: {config.source}: sa[{index}]: the peer could not "
                             f"seal a packet ({reason})")
        packets.append(sealed)
    return packets


def make_packets(config, count: int, *, seed: int = SEED) -> list[tuple[str, bytes]]:
    """The traffic for `config`: ``(what, packet)`` pairs, groups interleaved."""
    rng = random.Random(seed)
    table = PolicyTableModel(rules=max(len(config.policies), 1))
    for index, policy in enumerate(config.policies):
        table.write(index, policy_rule(policy, engine=0, slot=index))
    groups = []
    for index, policy in enumerate(config.policies):
        what = f"policy[{index}] {policy.action.name.lower()}"
        if policy.sa is not None:
            what += f" sa {policy.sa:#x}"
        groups.append((what, _policy_traffic(config, index, count, rng, table)))
    for index, spec in enumerate(config.sas):
        if spec.config.direction == "in":
            groups.append((f"sa[{index}] inbound ESP spi {spec.config.spi:#x}",
                           _inbound_traffic(config, index, count, rng)))
    return [(what, packets[number]) for number in range(count) for what, packets in groups]


def write_pcap(path, packets) -> None:
    """Raw-IP pcap of `packets` (bytes), one a millisecond from :data:`EPOCH`."""
    writer = PcapWriter(str(path), linktype=LINKTYPE_RAW, endianness="<")
    try:
        writer.write_header(None)    # write_packet does not (an empty file is a valid pcap too)
        for number, packet in enumerate(packets):
            writer.write_packet(packet, sec=EPOCH + number // 1000, usec=number % 1000 * 1000)
    finally:
        writer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT.pcap", help="the pcap to write")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="espnic TOML config (default: examples/espnic.toml)")
    parser.add_argument("--count", type=int, default=4,
                        help="packets per policy and per inbound SA (default 4)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, not {args.count}")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"make_pcap: {error}", file=sys.stderr)
        return 1
    packets = make_packets(config, args.count)
    try:
        write_pcap(args.out, [packet for _what, packet in packets])
    except OSError as error:
        print(f"make_pcap: {args.out}: cannot write: {error.strerror or error}", file=sys.stderr)
        return 1
    kinds = {}
    for what, _packet in packets:
        kinds[what] = kinds.get(what, 0) + 1
    print(f"wrote {len(packets)} packets to {args.out} (pcap, raw IP):")
    for what, number in kinds.items():
        print(f"  {number:4} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
