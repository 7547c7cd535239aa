# SPDX-License-Identifier: BSD-2-Clause
"""Whole-device traffic: SAs spread over engines and ports, the tables that steer
them, and a random mix of the packets a device sees (protected, ESP for our SAs,
bypass, discard, unknown SPIs, no policy, no route, malformed, replays and
forgeries). Shared by the Amaranth-simulator and Verilator tests of ``EspNic``."""

import dataclasses
import ipaddress
import random

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from espnic.hdl.engine import SaConfig
from espnic.hdl.forwarder.policy import PolicyAction
from espnic.hdl.forwarder.spi_table import SpiOp, bucket_of
from espnic.sim.model import EspModel
from espnic.sim.model.forwarder import parse, spi_key
from espnic.sim.nic_job import Migration, NicSetup, policy_op, route_op, spi_op

OUR = "192.0.2.1"             # the device's tunnel address
PEER = "192.0.2.200"          # every peer's (inbound SAs' source)
BYPASS_DST = "198.51.100.7"   # routed; UDP 5353 to it is bypassed
NOWHERE = "203.0.113.9"       # no route
KEY = "00112233445566778899aabbccddeeff"


def _address(text: str) -> bytes:
    packed = ipaddress.ip_address(text).packed
    return packed + bytes(16 - len(packed))


def policy_rule(priority, action, *, dst="0.0.0.0", dst_len=0, proto=None, dport=(0, 65535),
          engine=0, slot=0, ipv6=False):
    return {"valid": True, "ipv6": ipv6, "priority": priority, "src": bytes(16), "src_len": 0,
            "dst": _address(dst), "dst_len": dst_len, "any_proto": proto is None,
            "proto": proto or 0, "sport_lo": 0, "sport_hi": 65535, "dport_lo": dport[0],
            "dport_hi": dport[1], "action": action.value,
            "value": {"engine": engine, "slot": slot}}


def route_write(index, dst, length, port, ipv6=False):
    return {"index": index, "valid": True, "ipv6": ipv6, "dst": _address(dst), "length": length,
            "port": port}


class NicScenario:
    """`engines` engines with two SAs each (slot 0 outbound, slot 1 inbound, both
    tunnel mode over IPv4; AES-256 on odd engines), each SA's traffic on port
    ``(engine + slot) % ports``; a bypass and a discard rule on every port; routes
    for the inner networks (port 0), the tunnel peers (the last port) and the
    bypass destination, none for :data:`NOWHERE`.

    `nested`: the device's local forwarder too, an inner inbound SA in slot 2 of the
    last engine (its entry in the local forwarder's SPI table) and a route of our
    tunnel address to the device itself; traffic kinds ``nested*`` carry that SA's
    ESP packets inside engine 0's inbound SA."""

    INNER_SLOT = 2

    def __init__(self, *, engines: int, ports: int, slots: int = 4, miss_to_host=False,
                 nested=False):
        self.setup = NicSetup(engines=engines, ports=ports, slots=slots, nested=nested,
                              miss_to_host=(miss_to_host,) * (ports + nested))
        self.peers = {}        # (engine, slot) -> a peer model sealing its inbound traffic
        self.sa_ports = {}
        setup = self.setup
        for port in range(ports):
            setup.policy += [(port, 0, policy_rule(9, PolicyAction.BYPASS, proto=17, dport=(5353, 5353))),
                             (port, 1, policy_rule(8, PolicyAction.DISCARD, proto=6))]
        setup.route_writes += [route_write(0, "10.0.0.0", 8, 0), route_write(1, "192.0.2.0", 24, ports - 1),
                               route_write(2, BYPASS_DST, 32, ports - 1)]
        for engine in range(engines):
            key = KEY * 2 if engine % 2 else KEY
            for slot, direction in ((0, "out"), (1, "in")):
                spi = 0x1000 + 16 * engine + slot
                port = (engine + slot) % ports
                self.sa_ports[engine, slot] = port
                src, dst = (OUR, PEER) if direction == "out" else (PEER, OUR)
                config = SaConfig(spi=spi, direction=direction, mode="tunnel", key=key,
                                  salt="a1b2c3d4", src=src, dst=dst)
                setup.sas.append((engine, slot, config))
                if direction == "out":
                    # Traffic to 10.<engine>.0.0/16 is this SA's.
                    setup.policy.append((port, 2 + engine, policy_rule(
                        5, PolicyAction.PROTECT, dst=f"10.{engine}.0.0", dst_len=16,
                        engine=engine, slot=slot)))
                else:
                    self._inbound_entry(port, engine, slot, config)
        if nested:
            engine, slot = engines - 1, self.INNER_SLOT
            config = SaConfig(spi=0x2000, direction="in", mode="tunnel", key=KEY,
                              salt="0badcafe", src=PEER, dst=OUR)
            setup.sas.append((engine, slot, config))
            self._inbound_entry(ports, engine, slot, config)   # the local forwarder's
            setup.route_writes.append(route_write(3, OUR, 32, ports))

    def _inbound_entry(self, port, engine, slot, config):
        """A peer sealing inbound SA `config`'s traffic (in :attr:`peers`), and the SA's
        entry in forwarder `port`'s SPI table."""
        def peer():
            model = EspModel(slots=1)
            model.install(0, dataclasses.replace(config, direction="out"))
            return model
        self.peers[engine, slot] = peer()
        # The SPI table's key, from a packet of the SA (sealed by a throwaway peer).
        probe = self._sealed(engine, b"\x00", peer())
        self.setup.spi_entries.append((port, spi_key(parse(probe)), engine, slot))

    @staticmethod
    def _sealed(engine, payload, peer):
        """An inner packet to engine `engine`'s network, sealed by `peer`."""
        inner = bytes(IP(src="10.200.0.1", dst=f"10.{engine}.1.1") / UDP(sport=7, dport=9)
                      / Raw(payload))
        output, reason = peer.process(0, inner)
        assert reason == "ok"
        return output

    KINDS = ("protect", "protect", "inbound", "inbound", "bypass", "discard", "unknown_spi",
             "no_policy", "no_route", "malformed", "replay", "forged")
    NESTED_KINDS = ("nested", "nested", "nested", "nested_forged", "nested_unknown",
                    "nested_plain")

    def _nested(self, kind, payload, number):
        """Engine 0's inbound SA carrying: the inner SA's ESP packet (``nested``), the
        same with a bad inner ICV (``nested_forged``), an ESP packet of an SPI the
        local forwarder does not know (``nested_unknown``), or a plain packet for
        the device (``nested_plain``: no policy on the local forwarder)."""
        inner_engine = self.setup.engines - 1
        if kind == "nested_unknown":
            inner = bytes(IP(src=PEER, dst=OUR, proto=50) / Raw(
                (0x6000 + number).to_bytes(4, "big") + payload + bytes(24)))
        elif kind == "nested_plain":
            inner = bytes(IP(src=PEER, dst=OUR) / UDP(sport=7, dport=9) / Raw(payload))
        else:
            inner = self._sealed(inner_engine, payload,
                                 self.peers[inner_engine, self.INNER_SLOT])
            if kind == "nested_forged":
                inner = inner[:-1] + bytes([inner[-1] ^ 0x01])
        output, reason = self.peers[0, 1].process(0, inner)
        assert reason == "ok"
        return self.sa_ports[0, 1], output

    def traffic(self, count: int, rng: random.Random, *, max_payload: int = 120,
                kinds=KINDS, engines=None, first: int = 0) -> list:
        """`count` packets ``(port, packet)`` of `kinds` (every kind by default), for
        the SAs of `engines` (all by default), each payload unique (numbered from
        `first`: traffic made by several calls stays unique)."""
        setup, out = self.setup, []
        sealed = []
        engines = range(setup.engines) if engines is None else engines
        for number in range(count):
            kind = rng.choice(kinds)
            engine = rng.choice(engines)
            payload = (first + number).to_bytes(2, "big") + bytes(rng.randrange(256) for _ in
                                                        range(rng.randrange(max_payload)))
            port = rng.randrange(setup.ports)
            if kind == "protect":
                port = self.sa_ports[engine, 0]
                packet = IP(src="10.200.0.1", dst=f"10.{engine}.3.{number % 250}") / \
                    UDP(sport=1000, dport=2000) / Raw(payload)
            elif kind in ("inbound", "replay", "forged"):
                port = self.sa_ports[engine, 1]
                if kind == "replay" and sealed:
                    port, packet = rng.choice(sealed)
                else:
                    packet = self._sealed(engine, payload, self.peers[engine, 1])
                    if kind == "forged":
                        packet = packet[:-1] + bytes([packet[-1] ^ 0x10])
                    else:
                        sealed.append((port, packet))
                out.append((port, bytes(packet)))
                continue
            elif kind.startswith("nested"):
                out.append(self._nested(kind, payload, first + number))
                continue
            elif kind == "bypass":
                packet = IP(src="10.200.0.1", dst=BYPASS_DST) / UDP(sport=5353, dport=5353) / \
                    Raw(payload)
            elif kind == "discard":
                packet = IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP() / Raw(payload) \
                    if rng.random() < 0.3 else IP(dst=f"10.{engine}.3.3") / TCP() / Raw(payload)
            elif kind == "unknown_spi":
                packet = IP(src=PEER, dst=OUR, proto=50) / Raw(
                    (0x7000 + number).to_bytes(4, "big") + payload + bytes(24))
            elif kind == "no_policy":
                packet = IP(dst="172.16.0.1") / UDP(dport=53) / Raw(payload)
            elif kind == "no_route":
                packet = IP(dst=NOWHERE) / UDP(sport=5353, dport=5353) / Raw(payload)
            else:
                packet = bytearray(bytes(IP(dst=f"10.{engine}.3.3") / UDP() / Raw(payload)))
                packet[10] ^= 0x40
            out.append((port, bytes(packet)))
        return out


def table_storm(scenario, rounds, rng):
    """Host operations no packet can tell, `rounds` times over: entries inserted into
    and removed from the bucket of engine 0's inbound SA, that SA's entry and
    engine 0's PROTECT rule and the inner networks' route rewritten with what they
    hold, a rule and a route that match nothing written and cleared."""
    setup = scenario.setup
    port, key, engine, slot = next(entry for entry in setup.spi_entries if entry[2] == 0)
    buckets = 64 // 4
    neighbours = []
    while len(neighbours) < 3:
        candidate = rng.getrandbits(161) | 0x100   # SPIs above the reserved 0..255
        if bucket_of(candidate, buckets) == bucket_of(key, buckets) and candidate != key:
            neighbours.append(candidate)
    protect = next((p, i, r) for p, i, r in setup.policy if r["action"] == PolicyAction.PROTECT.value
                   and r["value"]["engine"] == 0)
    nowhere_rule = policy_rule(15, PolicyAction.PROTECT, dst="100.64.0.0", dst_len=10,
                               engine=1 % setup.engines, slot=0)
    ops = []
    for number in range(rounds):
        neighbour = neighbours[number % len(neighbours)]
        ops += [
            spi_op(port, SpiOp.INSERT, neighbour, 0, 3),
            spi_op(port, SpiOp.REPLACE, key, engine, slot),
            policy_op(protect[0], 7, nowhere_rule),
            policy_op(*protect),
            route_op(route_write(7, "100.64.0.0", 10, 0)),
            spi_op(port, SpiOp.REMOVE, neighbour),
            policy_op(protect[0], 7, {**nowhere_rule, "valid": False}),
            route_op(setup.route_writes[0]),
            route_op({**route_write(7, "100.64.0.0", 10, 0), "valid": False}),
        ]
    return ops


def migrations(scenario, count, slot, spacing):
    """`count` moves of engine 0's SA in `slot` between engine 0 and the last engine
    (its slot `slot + 2`), back and forth, one every `spacing` packets."""
    setup = scenario.setup
    engine, port = setup.engines - 1, scenario.sa_ports[0, slot]
    places = [(0, slot), (engine, slot + 2)]
    config = next(c for e, s, c in setup.sas if (e, s) == (0, slot))
    moves = []
    for number in range(count):
        source, dest = places[number % 2], places[(number + 1) % 2]
        if config.direction == "out":
            _port, index, rule = next(p for p in setup.policy if p[2]["value"] == {
                "engine": 0, "slot": slot} and p[2]["action"] == PolicyAction.PROTECT.value)
            repoint = [policy_op(port, index, {**rule, "value": {"engine": dest[0],
                                                                 "slot": dest[1]}})]
        else:
            key = next(k for p, k, e, s in setup.spi_entries if (e, s) == (0, slot))
            repoint = [spi_op(port, SpiOp.REPLACE, key, *dest)]
        moves.append(Migration(after=3 + spacing * number, source=source, dest=dest,
                               repoint=repoint))
    return moves


def esp_sequence_numbers(packets, spi):
    numbers = []
    for packet in packets:
        parsed = parse(packet)
        if parsed.spi == spi:
            offset = 20 if packet[0] >> 4 == 4 else 40
            numbers.append(int.from_bytes(packet[offset + 4:offset + 8], "big"))
    return numbers


def migration_case(direction: str, count: int, rng: random.Random, *, ports: int = 2,
                   background: int = 0):
    """A live-migration run on 2 engines: engine 0's outbound (slot 0) or inbound
    (slot 1) SA moved `count` times between engine 0 and engine 1 while its traffic
    flows (its own packets, replays among the inbound ones), with `background`
    packets of every kind for engine 1's SAs mixed in. Returns the scenario, the
    traffic and the moves; :func:`check_migration` checks the run."""
    scenario = NicScenario(engines=2, ports=ports)
    slot = 0 if direction == "out" else 1
    kinds = ("protect",) * 4 if direction == "out" else ("inbound", "inbound", "inbound", "replay")
    own = scenario.traffic(4 * count + 12, rng, max_payload=24, kinds=kinds, engines=[0])
    other = scenario.traffic(background, rng, max_payload=24, engines=[1], first=len(own))
    traffic = []
    while own or other:    # a random interleaving, each list's order kept
        pick = own if other == [] or (own and rng.random() < len(own) / (len(own) + len(other))) \
            else other
        traffic.append(pick.pop(0))
    spacing = 4 * (4 * count + 12 + background) // (4 * count + 12)
    return scenario, traffic, migrations(scenario, count, slot, spacing=spacing)


def check_migration(run, scenario, direction: str, count: int):
    """What a run of :func:`migration_case` must show beyond the model's outputs and
    counters: most of the SA's packets went through (not a run of drops), an
    outbound SA used each sequence number once and skipped none, an inbound SA's
    replays (of packets accepted before some of the moves) were caught."""
    slot = 0 if direction == "out" else 1
    config = next(c for e, s, c in scenario.setup.sas if (e, s) == (0, slot))
    reasons = [o.reason for o in run.outcomes if o.flow and o.flow[:3] == ("sa", 0, slot)]
    assert reasons.count("ok") >= 2 * count
    if direction == "out":
        numbers = esp_sequence_numbers([p for ps in run.outputs.values() for p in ps], config.spi)
        assert sorted(numbers) == list(range(1, len(numbers) + 1))   # each once, none skipped
    else:
        assert reasons.count("replay") >= count // 4
