# SPDX-License-Identifier: BSD-2-Clause
"""Whole-device traffic: SAs spread over engines and ports, the tables that steer
them, and a random mix of the packets a device sees (protected, ESP for our SAs,
bypass, discard, unknown SPIs, no policy, no route, malformed, replays and
forgeries). Shared by the Amaranth-simulator and Verilator tests of ``EspNic``."""

import ipaddress
import random

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from espnic.hdl.engine import SaConfig
from espnic.hdl.forwarder.policy import PolicyAction
from espnic.sim.model import EspModel
from espnic.sim.model.forwarder import parse, spi_key
from espnic.sim.nic_job import NicSetup

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
    bypass destination, none for :data:`NOWHERE`."""

    def __init__(self, *, engines: int, ports: int, slots: int = 4, miss_to_host=False):
        self.setup = NicSetup(engines=engines, ports=ports, slots=slots,
                              miss_to_host=(miss_to_host,) * ports)
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
                    def peer():
                        model = EspModel(slots=1)
                        model.install(0, SaConfig(spi=spi, direction="out", mode="tunnel",
                                                  key=key, salt="a1b2c3d4", src=PEER, dst=OUR))
                        return model
                    self.peers[engine, slot] = peer()
                    # The SPI table's key, from a packet of the SA (sealed by a throwaway peer).
                    probe = self._sealed(engine, b"\x00", peer())
                    setup.spi_entries.append((port, spi_key(parse(probe)), engine, slot))

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

    def traffic(self, count: int, rng: random.Random, *, max_payload: int = 120,
                kinds=KINDS, engines=None) -> list:
        """`count` packets ``(port, packet)`` of `kinds` (every kind by default), for
        the SAs of `engines` (all by default), each payload unique."""
        setup, out = self.setup, []
        sealed = []
        engines = range(setup.engines) if engines is None else engines
        for number in range(count):
            kind = rng.choice(kinds)
            engine = rng.choice(engines)
            payload = number.to_bytes(2, "big") + bytes(rng.randrange(256) for _ in
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
