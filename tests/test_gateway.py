# SPDX-License-Identifier: BSD-2-Clause
"""host/gateway.py without IKE: SAs installed by hand through the controller on a
``model://`` device, ESP made and opened by scapy's ``SecurityAssociation``, the
TUN device a ``SOCK_SEQPACKET`` socket pair (one packet per read and write, as a
TUN device) and the peer a ``send`` callback; then a real TUN device in a
network namespace, in a subprocess (root only)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, UDP, ICMP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

from espnic.hdl.engine.sa import SaConfig
from espnic.hdl.forwarder.policy import PolicyAction
from espnic.host.config import PolicySpec
from espnic.host.controller import Controller
from espnic.host.device import Device
from espnic.host.gateway import Gateway, GatewayError, esp_in_udp_peer, ipv4_udp_packet

LOCAL, PEER = "198.51.100.2", "198.51.100.1"          # outer: this gateway, the peer
LOCAL_NET, PEER_NET = "203.0.113.0/24", "192.0.2.0/24"
KEY_IN, SALT_IN = bytes(range(16)), bytes.fromhex("0a0b0c0d")
KEY_OUT, SALT_OUT = bytes(range(32, 64)), bytes.fromhex("01020304")
SPI_IN, SPI_OUT = 0x1000_0001, 0x2000_0002


def sa_configs():
    inbound = SaConfig(spi=SPI_IN, direction="in", mode="tunnel", key=KEY_IN, salt=SALT_IN,
                       src=PEER, dst=LOCAL, encap="udp")
    outbound = SaConfig(spi=SPI_OUT, direction="out", mode="tunnel", key=KEY_OUT, salt=SALT_OUT,
                        src=LOCAL, dst=PEER, encap="udp")
    return inbound, outbound


def protect_policy() -> PolicySpec:
    """LOCAL_NET -> PEER_NET protected by the outbound SA."""
    return PolicySpec(src=ipaddress.ip_network(LOCAL_NET), dst=ipaddress.ip_network(PEER_NET),
                      action=PolicyAction.PROTECT, sa=SPI_OUT, priority=100)


def peer_sas():
    """scapy's SAs as the peer holds them: it encrypts with our inbound SA and
    decrypts with our outbound one."""
    to_us = SecurityAssociation(ESP, spi=SPI_IN, crypt_algo="AES-GCM",
                                crypt_key=KEY_IN + SALT_IN,
                                tunnel_header=IP(src=PEER, dst=LOCAL),
                                nat_t_header=UDP(sport=4500, dport=4500))
    from_us = SecurityAssociation(ESP, spi=SPI_OUT, crypt_algo="AES-GCM",
                                  crypt_key=KEY_OUT + SALT_OUT,
                                  tunnel_header=IP(src=LOCAL, dst=PEER),
                                  nat_t_header=UDP(sport=4500, dport=4500))
    return to_us, from_us


class Peer:
    """The ``send`` callback: what the gateway sent to the peer."""

    def __init__(self):
        self.sent = []

    def __call__(self, datagram, address):
        self.sent.append((bytes(datagram), address))


@pytest.fixture
def gateway():
    """A running gateway on a model:// device with one SA each way and a policy
    protecting LOCAL_NET -> PEER_NET; yields (gateway, device, tun socket, peer,
    controller)."""
    yield from running_gateway("model://")


@pytest.fixture
def served_gateway():
    """:func:`gateway` on the reference model behind TCP (``socket://``): the link's
    reads and writes let other threads run, as a board's serial port does."""
    from .model_server import ModelServer

    server = ModelServer()
    try:
        yield from running_gateway(server.url)
    finally:
        server.close()


def running_gateway(url):
    device = Device.open(url)
    controller = Controller([device])
    inbound, outbound = sa_configs()
    controller.add_sa(inbound)
    controller.add_sa(outbound)
    controller.add_policy(protect_policy())
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(5)
    peer = Peer()
    gw = Gateway(device, tun="espnic-test", tun_fd=ours.fileno(), send=peer)
    gw.start()
    try:
        yield gw, device, theirs, peer, controller
    finally:
        gw.stop()
        controller.close()
        device.close()
        ours.close()
        theirs.close()


def inner(src="192.0.2.1", dst="203.0.113.1", size=64, seq=1) -> bytes:
    return bytes(IP(src=src, dst=dst, ttl=31, id=seq) / ICMP(id=7, seq=seq)
                 / Raw(bytes((seq + i) & 0xff for i in range(size))))


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def udp_payload(packet: IP) -> bytes:
    return bytes(packet[UDP].payload)


def test_ipv4_udp_packet_is_what_scapy_parses():
    packet = IP(ipv4_udp_packet(b"\x00\x00\x10\x01abcdefgh", ("192.0.2.9", 4500),
                                ("198.51.100.2", 4501), ident=5))
    assert (packet.src, packet.dst, packet.id, packet.ttl) == ("192.0.2.9", "198.51.100.2", 5, 64)
    assert (packet[UDP].sport, packet[UDP].dport) == (4500, 4501)
    assert bytes(packet[UDP].payload) == b"\x00\x00\x10\x01abcdefgh"
    # scapy recomputes both checksums: ours must be what it writes (UDP: 0, none)
    packet.chksum = None
    assert IP(bytes(packet)).chksum == IP(ipv4_udp_packet(b"\x00\x00\x10\x01abcdefgh",
                                                          ("192.0.2.9", 4500),
                                                          ("198.51.100.2", 4501), 5)).chksum


def test_esp_in_udp_peer_tells_esp_from_ike():
    esp = ipv4_udp_packet(b"\x00\x00\x10\x01" + bytes(12), ("198.51.100.2", 4500),
                          ("198.51.100.1", 4500))
    assert esp_in_udp_peer(esp) == ("198.51.100.1", 4500, b"\x00\x00\x10\x01" + bytes(12))
    ike = ipv4_udp_packet(bytes(4) + bytes(28), ("198.51.100.2", 4500), ("198.51.100.1", 4500))
    assert esp_in_udp_peer(ike) is None
    other = ipv4_udp_packet(b"\x00\x00\x10\x01" + bytes(12), ("198.51.100.2", 53),
                            ("198.51.100.1", 53))
    assert esp_in_udp_peer(other) is None


def test_peer_esp_comes_out_of_the_tun_as_the_inner_packet(gateway):
    gw, _, tun, _, _ = gateway
    to_us, _ = peer_sas()
    packets = [inner(size=size, seq=n + 1) for n, size in enumerate([0, 1, 100, 1300])]
    for packet in packets:
        esp = to_us.encrypt(IP(packet))
        gw.esp_in(udp_payload(esp), (PEER, 4500), (LOCAL, 4500))
    got = [tun.recv(65535) for _ in packets]
    # The oracle: scapy's own decryption of what it encrypted is the packet itself.
    assert got == packets
    assert wait_for(lambda: gw.counters()["tun_out"] == 4)     # counted just after the write
    counts = gw.counters()
    assert counts["esp_in"] == counts["esp_injected"] == counts["tun_out"] == 4
    assert sum(v for k, v in counts.items() if k.startswith("drop_")) == 0


def test_tun_traffic_goes_to_the_peer_as_esp_it_decrypts(gateway):
    gw, _, tun, peer, _ = gateway
    _, from_us = peer_sas()
    packets = [inner(src="203.0.113.1", dst="192.0.2.1", size=size, seq=n + 1)
               for n, size in enumerate([0, 17, 1300])]
    for packet in packets:
        tun.send(packet)
    assert wait_for(lambda: gw.counters()["esp_out"] == len(packets)), gw.counters()
    for n, ((datagram, address), packet) in enumerate(zip(peer.sent, packets), start=1):
        assert address == (PEER, 4500)
        assert int.from_bytes(datagram[:4], "big") == SPI_OUT
        assert int.from_bytes(datagram[4:8], "big") == n        # sequence numbers 1, 2, 3
        wire = IP(src=LOCAL, dst=PEER) / UDP(sport=4500, dport=4500) / Raw(datagram)
        assert bytes(from_us.decrypt(IP(bytes(wire)))) == packet
    counts = gw.counters()
    assert counts["tun_in"] == counts["tun_injected"] == counts["esp_out"] == 3


def test_drops_are_counted_and_nothing_passes(gateway):
    gw, device, tun, peer, controller = gateway
    to_us, _ = peer_sas()
    gw.esp_in(bytes(4) + b"IKE message", (PEER, 4500), (LOCAL, 4500))   # non-ESP marker
    gw.esp_in(b"\xff", (PEER, 4500), (LOCAL, 4500))                      # NAT keepalive
    gw.esp_in(bytes(range(1, 40)), ("2001:db8::1", 4500), (LOCAL, 4500))
    tampered = bytearray(udp_payload(to_us.encrypt(IP(inner(seq=9)))))
    tampered[-1] ^= 1                                                    # the ICV
    gw.esp_in(bytes(tampered), (PEER, 4500), (LOCAL, 4500))
    replayed = udp_payload(to_us.encrypt(IP(inner(seq=10))))
    gw.esp_in(replayed, (PEER, 4500), (LOCAL, 4500))
    gw.esp_in(replayed, (PEER, 4500), (LOCAL, 4500))
    tun.send(bytes(40))                                                  # not IPv4
    tun.send(inner(src="203.0.113.1", dst="198.18.0.1"))                 # no policy
    assert wait_for(lambda: gw.counters()["tun_in"] == 2 and gw.counters()["esp_injected"] == 3)
    assert tun.recv(65535) == inner(seq=10)                              # once
    time.sleep(0.2)
    tun.setblocking(False)
    with pytest.raises(BlockingIOError):
        tun.recv(65535)
    assert peer.sent == []
    counts = gw.counters()
    assert (counts["drop_esp_not_esp"], counts["drop_esp_address"], counts["drop_tun_not_ipv4"]) \
        == (2, 1, 1)
    state = controller.sa_state(SPI_IN, dst=LOCAL, direction="in")
    assert state.counters.packets == 1
    assert state.counters.auth_fail == 1 and state.counters.replay_drop == 1


def test_constructor_refuses_bad_options():
    # The model takes IP packets only: a device with an Ethernet port, by its parameters.
    with pytest.raises(GatewayError, match="not supported: .* Ethernet"):
        Gateway(SimpleNamespace(params={"ports": 1, "ethernet": (True,)}), tun="x")
    device = Device.open("model://")
    try:
        with pytest.raises(GatewayError, match="port"):
            Gateway(device, tun="x", port=3)
        with pytest.raises(GatewayError, match="local_address"):
            Gateway(device, tun="x", local_address="example")
    finally:
        device.close()


REAL_TUN = r"""
import socket, sys, time
from scapy.layers.inet import IP, ICMP, UDP
from scapy.packet import Raw
from espnic.host.controller import Controller
from espnic.host.device import Device
from espnic.host.gateway import Gateway
from tests.test_gateway import sa_configs, peer_sas, protect_policy, LOCAL, PEER, PEER_NET

device = Device.open("model://")
controller = Controller([device])
for sa in sa_configs():
    controller.add_sa(sa)
controller.add_policy(protect_policy())
sent = []
with Gateway(device, tun="esptun0", routes=[PEER_NET], send=lambda d, a: sent.append((d, a))) as gw:
    to_us, from_us = peer_sas()
    # The peer pings 203.0.113.1 (on lo): the kernel answers through the TUN device.
    request = IP(src="192.0.2.1", dst="203.0.113.1") / ICMP(id=5, seq=1) / Raw(b"espnic" * 8)
    gw.esp_in(bytes(to_us.encrypt(request)[UDP].payload), (PEER, 4500), (LOCAL, 4500))
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    datagram, address = sent[0]
    reply = from_us.decrypt(IP(bytes(IP(src=LOCAL, dst=PEER) / UDP(sport=4500, dport=4500)
                                     / Raw(datagram))))
    assert address == (PEER, 4500), address
    assert (reply.src, reply.dst, reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == \
        ("203.0.113.1", "192.0.2.1", 0, 5, 1), reply.summary()
    assert bytes(reply[ICMP].payload) == b"espnic" * 8
    print(gw.counters())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a TUN device in a network namespace needs root")
def test_real_tun_in_a_namespace_answers_a_ping(tmp_path):
    """The peer's ESP ping goes in, the kernel's echo reply comes out of the TUN device
    and leaves as ESP that scapy decrypts: TUN made, brought up and routed."""
    ns = f"espnic-gw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for command in (["ip", "link", "set", "lo", "up"],
                        ["ip", "addr", "add", "203.0.113.1/32", "dev", "lo"]):
            subprocess.run(["ip", "netns", "exec", ns, *command], check=True)
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", REAL_TUN],
                              capture_output=True, text=True, timeout=60,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "'tun_out': 1" in done.stdout and "'esp_out': 1" in done.stdout, done.stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_wildcard_local_address_is_the_route_source(gateway):
    """A daemon bound to 0.0.0.0 tells esp_in so: the gateway takes the address it
    would send to the peer from (here, toward 127.0.0.1, 127.0.0.1), or local_address."""
    gw, *_ = gateway
    assert gw._source_for("127.0.0.1") == "127.0.0.1"
    gw.local_address = LOCAL
    to_us, _ = peer_sas()
    gw.esp_in(udp_payload(to_us.encrypt(IP(inner(seq=3)))), (PEER, 4500), ("0.0.0.0", 4500))
    tun = gateway[2]
    assert tun.recv(65535) == inner(seq=3)


def test_device_requests_work_while_traffic_flows(served_gateway):
    """Another thread reads SAs back (request and reply, as the daemon's controller
    does) while the gateway's pump moves packets: the shared link stays whole (every
    reply found and right, every packet through)."""
    import threading

    gw, device, tun, _, controller = served_gateway
    placement = controller.sa(SPI_IN, dst=LOCAL, direction="in").placement
    to_us, _ = peer_sas()
    errors, spis = [], []

    def read_back():
        try:
            for _ in range(30):
                reply = device.read_sa(placement.engine, placement.slot)
                spis.append(int(reply.record.spi))
        except Exception as error:        # reported below, in the test's thread
            errors.append(error)

    resends = device.link.resends
    worker = threading.Thread(target=read_back)
    worker.start()
    packets = [inner(seq=n, size=40) for n in range(1, 41)]
    for packet in packets:
        gw.esp_in(udp_payload(to_us.encrypt(IP(packet))), (PEER, 4500), (LOCAL, 4500))
        time.sleep(0.005)
    got = [tun.recv(65535) for _ in packets]
    worker.join()
    assert errors == []
    assert spis == [SPI_IN] * 30
    assert got == packets
    # Interleaved frames would take each other's answers: resends (or worse, a tag
    # used twice and a frame taken for a resend and not executed).
    assert device.link.resends == resends
