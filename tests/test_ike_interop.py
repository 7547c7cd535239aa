# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 interop with strongSwan, in network namespaces this test makes.

First the harness against itself: charon <-> charon (CHILD_SA installed both
sides, ping across the tunnel, rekey from either side under a ping flow with no
loss), which proves the namespaces, the configs and the ping before espnic is
in the picture. Then ``espnic ike`` against charon (see the tests below).

Skipped where namespaces or strongSwan are missing; in CI (``CI`` set) that is a
failure instead, as with tshark: ``.ci/run`` installs the packages.
"""

from __future__ import annotations

import os

import pytest

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from espnic.hdl.engine.sa import SaConfig
from espnic.host.controller import Controller
from espnic.host.device import Device
from espnic.host.run import default_routes, push

from .strongswan import (Capture, Charon, CharonConfig, Topology, finish_ping, log_tail,
                         logged_sas, missing_tools, ping, start_ping)

pytestmark = pytest.mark.slow

PROPOSALS = {"aes128gcm16": ("AES_GCM_16", 128), "aes256gcm16": ("AES_GCM_16", 256)}
PSK = "espnic interop test key, not a secret"


@pytest.fixture(scope="module")
def strongswan():
    """Skip (fail in CI) where strongSwan or network namespaces are missing."""
    reason = missing_tools()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the strongSwan interop tests")
        pytest.skip(reason)


@pytest.fixture
def logs(tmp_path):
    """The test's directory; charon's logs there are printed when the test ends (pytest
    shows them for a failure)."""
    yield tmp_path
    print(log_tail(*sorted(tmp_path.glob("*/charon.log")), *sorted(tmp_path.glob("*.log"))))


def charon_pair(topology, logs, esp: str, **options):
    """Charon configs for both sides of ``topology``, the same proposals and PSK."""
    left = CharonConfig(topology.left, topology.right, psk=PSK, esp_proposals=esp, **options)
    right = CharonConfig(topology.right, topology.left, psk=PSK, esp_proposals=esp, **options)
    return Charon(left, logs / "left"), Charon(right, logs / "right")


def check_pair(left_children, right_children, esp: str):
    """One CHILD_SA each side, the negotiated algorithm, each side's inbound SPI the
    other's outbound, UDP-encapsulated (kernel-libipsec)."""
    assert len(left_children) == 1 and len(right_children) == 1, (left_children, right_children)
    (a,), (b,) = left_children, right_children
    assert (a.encryption, a.key_size) == PROPOSALS[esp]
    assert (b.encryption, b.key_size) == PROPOSALS[esp]
    assert (a.spi_in, a.spi_out) == (b.spi_out, b.spi_in)
    assert a.mode == b.mode == "TUNNEL" and a.encap and b.encap


# -- the harness against itself -------------------------------------------------------------

@pytest.mark.parametrize("esp", list(PROPOSALS))
def test_charon_to_charon(strongswan, logs, esp):
    with Topology() as net:
        left, right = charon_pair(net, logs, esp)
        with left, right:
            left.initiate()
            check_pair(left.children(), right.wait_children(), esp)
            result = ping(net.left.ns, net.left.inner, net.right.inner, count=5, interval=0.05)
            assert result["answered"] == list(range(5))
            (child,) = right.children()
            assert child.packets_in == child.packets_out == 5


@pytest.mark.parametrize("rekeyer,what", [("left", "child"), ("right", "child"),
                                          ("right", "ike")])
def test_charon_rekey_under_ping(strongswan, logs, rekeyer, what):
    """Rekey by either side while pings flow: every ping answered, new SPIs."""
    with Topology() as net:
        left, right = charon_pair(net, logs, "aes128gcm16")
        with left, right:
            left.initiate()
            (before,) = right.wait_children()
            flow = start_ping(net.left.ns, net.left.inner, net.right.inner, count=60,
                              interval=0.02)
            try:
                ping_started = ping(net.right.ns, net.right.inner, net.left.inner, count=1)
                assert ping_started["answered"] == [0]
                side = left if rekeyer == "left" else right
                if what == "child":
                    side.rekey_child()
                else:
                    side.rekey_ike()
            finally:
                result = finish_ping(flow)
            assert result["answered"] == list(range(60))
            after = right.wait_children()
            if what == "child":
                assert len(after) == 1 and after[0].spi_in != before.spi_in
            else:
                assert [ike["uniqueid"] for ike in right.list_sas()] != ["1"]
            check_pair(left.children(), after, "aes128gcm16")


def decrypt_on_device(captured_ip: list[bytes], sa) -> list[bytes]:
    """``captured_ip`` (IPv4 packets as on the wire) pushed through a ``model://``
    device holding ``sa`` (a :class:`LoggedSa`) as its inbound UDP-encapsulated
    SA: what the device released."""
    device = Device.open("model://")
    controller = Controller([device])
    try:
        controller.add_sa(SaConfig(spi=sa.spi, direction="in", mode="tunnel", key=sa.key,
                                   salt=sa.salt, src=sa.src, dst=sa.dst, encap="udp"))
        default_routes(device)
        pushed = push(device, [(0.0, packet) for packet in captured_ip])
        assert pushed.exceptions == [] and pushed.aborted == 0
        return [packet for _, _, packet in pushed.outputs]
    finally:
        controller.close()
        device.close()


def esp_from(frames: list[bytes], src: str, spi: int) -> list[bytes]:
    """The IPv4 packets of Ethernet ``frames`` that carry ESP in UDP from ``src``
    with ``spi``."""
    found = []
    for frame in frames:
        packet = Ether(frame)
        if IP in packet and UDP in packet and packet[IP].src == src:
            payload = bytes(packet[UDP].payload)
            if payload[:4] == spi.to_bytes(4, "big"):
                found.append(bytes(packet[IP]))
    return found


def echo_requests(packets: list[bytes], src: str, dst: str) -> list[bytes]:
    return [p for p in packets if p[:1] == b"\x45" and IP(p).src == src and IP(p).dst == dst
            and ICMP in IP(p) and IP(p)[ICMP].type == 8]


@pytest.mark.parametrize("esp", list(PROPOSALS))
def test_strongswan_esp_through_espnic_device(strongswan, logs, esp):
    """strongSwan's ESP, captured on the veth, goes through an espnic device (the
    reference model) holding the SA charon logged, and comes out as the inner
    packets charon's TUN device took in, byte for byte."""
    with Topology() as net:
        left = Charon(CharonConfig(net.left, net.right, psk=PSK, esp_proposals=esp),
                      logs / "left", keys=True)
        right = Charon(CharonConfig(net.right, net.left, psk=PSK, esp_proposals=esp),
                       logs / "right")
        with left, right:
            left.initiate()
            (child,) = left.children()
            with Capture(net.left.ns, net.left.veth, logs / "veth.pcap") as wire, \
                    Capture(net.left.ns, "ipsec0", logs / "ipsec0.pcap") as plain:
                result = ping(net.left.ns, net.left.inner, net.right.inner, count=8,
                              interval=0.02)
            assert result["answered"] == list(range(8))
            sa = logged_sas(left.log_text())[child.spi_out]
            assert (sa.src, sa.dst, len(sa.key) * 8) == (net.left.outer, net.right.outer,
                                                         PROPOSALS[esp][1])
    inner = echo_requests(plain.frames, net.left.inner, net.right.inner)
    encrypted = esp_from(wire.frames, net.left.outer, child.spi_out)
    assert len(inner) == len(encrypted) == 8
    assert decrypt_on_device(encrypted, sa) == inner
