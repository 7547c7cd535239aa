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
import subprocess
import sys
import time

import pytest

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether

from espnic.hdl.engine.sa import SaConfig
from espnic.host.controller import Controller
from espnic.host.device import Device
from espnic.host.run import default_routes, push

from .strongswan import (REPO, Capture, Charon, CharonConfig, ModelServerProcess, Topology,
                         finish_ping, log_tail, logged_sas, missing_tools, ping, start_ping,
                         terminate)

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


# -- espnic ike against charon --------------------------------------------------------------

TUN = "espnic0"
#: How ``espnic`` is run (the console script's module, from this checkout).
ESPNIC = [sys.executable, "-m", "espnic.host.cli"]


class EspnicIke:
    """``espnic ike --config C --device socket://... --tun espnic0`` in the right
    namespace of ``net`` (its device a reference model served there), against the
    charon in the left one; its output in ``workdir/espnic-ike.log``."""

    def __init__(self, net, workdir, *, esp: str, start: str, child_rekey_time: float = 3600,
                 rekey_time: float = 3600):
        self.net, self.workdir = net, workdir
        self.esp, self.start, self.child_rekey_time = esp, start, child_rekey_time
        self.rekey_time = rekey_time
        self.log = workdir / "espnic-ike.log"
        self.server = ModelServerProcess(net.right.ns)
        self.process = None

    def config(self) -> str:
        right, left = self.net.right, self.net.left
        return f"""[ike]
listen = ["{right.outer}"]
port = 500
port_natt = 4500

[[peer]]
name = "charon"
address = "{left.outer}"
local_id = "{right.outer}"
remote_id = "{left.outer}"
psk = "file:psk.txt"
ike_proposals = ["aes128gcm16-prfsha256-x25519", "aes128gcm16-prfsha256-ecp256"]
esp_proposals = ["{self.esp}"]
local_ts = ["{right.inner}/32"]
remote_ts = ["{left.inner}/32"]
start = "{self.start}"
dpd_delay = 0
rekey_time = {self.rekey_time}
life_time = {max(self.rekey_time * 4, 60)}
child_rekey_time = {self.child_rekey_time}
child_life_time = {max(self.child_rekey_time * 4, 60)}
"""

    def __enter__(self) -> "EspnicIke":
        (self.workdir / "psk.txt").write_text(PSK + "\n")
        (self.workdir / "espnic-ike.toml").write_text(self.config())
        self.server.__enter__()
        try:
            with open(self.log, "w") as out:
                self.process = subprocess.Popen(
                    ["ip", "netns", "exec", self.net.right.ns, *ESPNIC,
                     "ike", "--config", self.workdir / "espnic-ike.toml",
                     "--device", self.server.url, "--db", self.workdir / "espnic-sa.db",
                     "--tun", TUN, "-v"],
                    cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.wait_tun()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_tun(self, timeout: float = 20.0):
        """The TUN device is up (espnic logs "listening on" once its gateway has
        started: the device exists a moment before it is up, and a route into a device
        that is down is refused): route the peer's inner address into it."""
        deadline = time.monotonic() + timeout
        while "espnic.ike: listening on " not in self.log_text():
            if self.process.poll() is not None:
                raise RuntimeError(f"espnic ike exited ({self.process.returncode}): "
                                   f"{log_tail(self.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"espnic ike was not listening (TUN {TUN} up) in {timeout:g} s")
            time.sleep(0.05)
        subprocess.run(["ip", "-n", self.net.right.ns, "route", "replace",
                        f"{self.net.left.inner}/32", "dev", TUN, "src", self.net.right.inner],
                       check=True)

    def wait_installed(self, count: int = 1, timeout: float = 20.0):
        """Until ``count`` CHILD_SAs are in espnic's device (its log says so at -v):
        charon holding a CHILD_SA does not mean that espnic does yet (as the IKE_AUTH
        initiator it installs after charon's response), and a packet routed into the
        TUN device before then meets no policy."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(" installed in the device") < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"espnic installed no CHILD_SA within {timeout:g} s: "
                                     f"{log_tail(self.log)}")
            time.sleep(0.05)

    def __exit__(self, *exc):
        if self.process is not None:
            terminate(self.process, 10)
        self.server.__exit__(None, None, None)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def initiate_until_up(charon: Charon, timeout: float = 20.0):
    """charon initiates until espnic ike answers (it may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            charon.initiate(timeout=3)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def espnic_pair(net, logs, esp, start, **options):
    charon = Charon(CharonConfig(net.left, net.right, psk=PSK, esp_proposals=esp),
                    logs / "left", keys=True)
    return charon, EspnicIke(net, logs, esp=esp, start=start, **options)


def check_no_key_in(text: str, sas):
    """No key or salt charon logged appears in espnic's output (as hex either case)."""
    for sa in sas:
        for secret in (sa.key, sa.key + sa.salt):
            assert secret.hex() not in text.lower() and secret.hex(" ") not in text.lower()
    assert PSK not in text


@pytest.mark.parametrize("esp", list(PROPOSALS))
@pytest.mark.parametrize("initiator", ["charon", "espnic"])
def test_espnic_ike_with_strongswan(strongswan, logs, initiator, esp):
    """The CHILD_SA is negotiated and installed both sides (charon lists it; pings go
    through espnic's device both ways); charon's ESP captured on the veth goes
    through an espnic device as the inner packets; espnic's ESP opens with the key
    charon holds (scapy); espnic logs no key."""
    with Topology(right_inner_on_lo=True) as net:
        charon, espnic = espnic_pair(net, logs, esp,
                                     "initiate" if initiator == "espnic" else "wait")
        with charon, espnic:
            if initiator == "charon":
                initiate_until_up(charon)
            children = charon.wait_children(timeout=20)
            assert len(children) == 1, log_tail(espnic.log)
            espnic.wait_installed()
            (child,) = children
            assert (child.encryption, child.key_size) == PROPOSALS[esp]
            assert child.encap and child.mode == "TUNNEL"
            assert (child.local_ts, child.remote_ts) == ([f"{net.left.inner}/32"],
                                                         [f"{net.right.inner}/32"])
            with Capture(net.left.ns, net.left.veth, logs / "veth.pcap") as wire, \
                    Capture(net.left.ns, "ipsec0", logs / "ipsec0.pcap") as plain:
                there = ping(net.left.ns, net.left.inner, net.right.inner, count=8,
                             interval=0.02)
                back = ping(net.right.ns, net.right.inner, net.left.inner, count=4,
                            interval=0.02)
            assert there["answered"] == list(range(8)), log_tail(espnic.log)
            assert back["answered"] == list(range(4)), log_tail(espnic.log)
            sas = logged_sas(charon.log_text())
            out_sa, in_sa = sas[child.spi_out], sas[child.spi_in]
        check_no_key_in(espnic.log_text(), [out_sa, in_sa])
    inner = echo_requests(plain.frames, net.left.inner, net.right.inner)
    # charon -> espnic: 8 requests, and the replies to espnic's 4 pings.
    encrypted = esp_from(wire.frames, net.left.outer, child.spi_out)
    assert (len(inner), len(encrypted)) == (8, 12)
    assert echo_requests(decrypt_on_device(encrypted, out_sa),
                         net.left.inner, net.right.inner) == inner
    # espnic -> charon: scapy opens it with charon's inbound key.
    theirs = SecurityAssociation(ESP, spi=in_sa.spi, crypt_algo="AES-GCM",
                                 crypt_key=in_sa.key + in_sa.salt,
                                 tunnel_header=IP(src=in_sa.src, dst=in_sa.dst),
                                 nat_t_header=UDP(sport=4500, dport=4500))
    from_espnic = [theirs.decrypt(IP(p)) for p in esp_from(wire.frames, net.right.outer,
                                                           child.spi_in)]
    replies = [p for p in from_espnic if p[ICMP].type == 0]
    requests = [p for p in from_espnic if p[ICMP].type == 8]
    assert sorted(p[ICMP].seq for p in replies) == list(range(8))
    assert len(requests) == 4


@pytest.mark.parametrize("rekeyer,what", [("charon", "child"), ("espnic", "child"),
                                          ("charon", "ike"), ("espnic", "ike")])
def test_espnic_rekey_under_ping(strongswan, logs, rekeyer, what):
    """A rekey by either side while pings flow both ways through espnic: none lost,
    new SPIs, the old CHILD_SA gone."""
    with Topology() as net:
        # espnic initiates: the CHILD_SA's ports then are right from the start (see
        # test_espnic_ike_with_strongswan for charon initiating).
        # espnic rekeys by its clock: 4 s after the SA was made, inside the ping flow.
        by_espnic = {what: 4} if rekeyer == "espnic" else {}
        charon, espnic = espnic_pair(net, logs, "aes128gcm16", "initiate",
                                     child_rekey_time=by_espnic.get("child", 3600),
                                     rekey_time=by_espnic.get("ike", 3600))
        with charon, espnic:
            (before,) = charon.wait_children(timeout=20)
            espnic.wait_installed()
            (ike_before,) = [ike["uniqueid"] for ike in charon.list_sas()]
            count = 150 if rekeyer == "espnic" else 60
            flow = start_ping(net.left.ns, net.left.inner, net.right.inner, count=count,
                              interval=0.04)
            try:
                assert ping(net.right.ns, net.right.inner, net.left.inner,
                            count=1)["answered"] == [0]
                if rekeyer == "charon":
                    charon.rekey_child() if what == "child" else charon.rekey_ike()
            finally:
                result = finish_ping(flow)
            assert result["answered"] == list(range(count)), log_tail(espnic.log)
            after = charon.wait_children()
            assert len(after) == 1
            if what == "child":
                assert (after[0].spi_in, after[0].spi_out) != (before.spi_in, before.spi_out)
            else:
                ikes = [ike["uniqueid"] for ike in charon.list_sas()]
                assert len(ikes) == 1 and ikes != [ike_before]
            if rekeyer == "espnic":
                assert "parsed CREATE_CHILD_SA request" in charon.log_text()
            assert ping(net.left.ns, net.left.inner, net.right.inner,
                        count=3)["answered"] == [0, 1, 2]
