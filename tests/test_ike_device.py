# SPDX-License-Identifier: BSD-2-Clause
"""CHILD_SAs negotiated by two IKE daemons land in two devices through their
security controllers, and traffic goes through them: a packet protected by side
A's device (the outbound policy made from the negotiated traffic selectors) is
decrypted by side B's device into the original inner packet, both ways, and again
after a CHILD_SA rekey and after an IKE SA rekey; ESP sent under the old CHILD_SA
that arrives after the rekey is still decrypted, until the old inbound SA is retired;
a deleted CHILD_SA leaves both devices and their packets are discarded, never sent in
the clear."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from espnic.host.controller import Controller
from espnic.host.device import Device
from espnic.host.ike import ChildRekeyed, ChildRetired
from espnic.sim.model.forwarder import parse
from tests.test_ike_exchange import Pair, wait_for

INSIDE, OUTSIDE = 0, 1


def _addr(text: str) -> bytes:
    packed = ipaddress.ip_address(text).packed
    return packed + bytes(16 - len(packed))


def model_device() -> Device:
    device = Device.open("model://?engines=2&ports=2&slots=16")
    # inner networks inside, the IKE peers (127.0.0.1) outside
    assert device.write_route(0, valid=True, ipv6=False, dst=_addr("10.0.0.0"), length=8,
                              port=INSIDE)
    assert device.write_route(1, valid=True, ipv6=False, dst=_addr("127.0.0.0"), length=8,
                              port=OUTSIDE)
    return device


def inner(src: str, dst: str, number: int) -> bytes:
    return bytes(IP(src=src, dst=dst, ttl=64) / UDP(sport=1000 + number, dport=53)
                 / Raw(number.to_bytes(4, "big") * 10))


def through(daemon, device, port: int, packet: bytes) -> list:
    """What ``device`` sends out after ``packet`` came in on ``port`` (in the daemon's
    thread: the device is not thread-safe, and the daemon's controller uses it)."""
    def job():
        device.packets()
        device.inject(port, packet)
        out = device.packets(wait=0.5)
        while more := device.packets(wait=0.05):
            out += more
        return out
    return [(p, data) for _source, p, data, aborted in daemon.call(job) if not aborted]


def protect(daemon, device, src: str, dst: str, number: int) -> bytes:
    """The ESP packet ``device`` makes of an inner packet from ``src`` to ``dst``."""
    (sent,) = through(daemon, device, INSIDE, inner(src, dst, number))
    assert sent[0] == OUTSIDE and sent[1][9] == 50, "not protected"
    return sent[1]


def tunnel(pair, devices, src_a="10.1.0.5", dst_b="10.2.0.9", number=1):
    """A packet from A's inside to B's inside and one back: the ESP packets on the
    wire (checked to be ESP of the expected SPIs) and what each side delivered."""
    (child_a,) = pair.a.children()
    dev_a, dev_b = devices
    results = []
    for (d_send, dev_send, d_recv, dev_recv, src, dst, spi) in (
            (pair.a, dev_a, pair.b, dev_b, src_a, dst_b, child_a.spi_out),
            (pair.b, dev_b, pair.a, dev_a, dst_b, src_a, child_a.spi_in)):
        packet = inner(src, dst, number)
        (sent,) = through(d_send, dev_send, INSIDE, packet)
        assert sent[0] == OUTSIDE and sent[1][9] == 50, "not protected"
        assert parse(sent[1]).spi == spi
        assert packet[20:] not in sent[1]                 # the inner packet is not in clear
        (delivered,) = through(d_recv, dev_recv, OUTSIDE, sent[1])
        assert delivered == (INSIDE, packet)
        results.append(sent[1])
    return results


@pytest.fixture
def devices():
    made = [model_device(), model_device()]
    yield made
    for device in made:
        device.close()


def test_negotiated_child_sas_carry_traffic_through_the_devices(devices):
    # Each controller is made in its daemon's thread (its SQLite database lives there).
    pair = Pair(natt="detect", esp=["aes256gcm16-esn"], settings="delete_rekeyed_delay = 0",
                a_daemon={"controller": lambda: Controller([devices[0]])},
                b_daemon={"controller": lambda: Controller([devices[1]])})
    controllers = [pair.a.controller, pair.b.controller]
    try:
        pair.up()
        (child,) = pair.a.children()
        sas = pair.a.call(controllers[0].sas)
        assert {(i.spi, i.direction) for i in sas} == {(child.spi_in, "in"), (child.spi_out, "out")}
        assert sas[0].config["esn"] is True
        assert len(pair.a.call(controllers[0].policies)) == 1
        tunnel(pair, devices, number=1)

        pair.b.rekey_child(child.spi_out)
        wait_for(lambda: [len(pair.of(s, ChildRekeyed)) for s in "ab"] == [1, 1])
        # the old inbound SAs go once the DELETE exchange is over (no delay here)
        wait_for(lambda: [len(pair.of(s, ChildRetired)) for s in "ab"] == [1, 1],
                 what="the old inbound SAs retired")
        (new,) = pair.a.children()
        assert {(i.spi, i.direction) for i in pair.a.call(controllers[0].sas)} == \
            {(new.spi_in, "in"), (new.spi_out, "out")}
        tunnel(pair, devices, number=2)

        pair.a.rekey_ike("b")
        wait_for(lambda: len(pair.a.ike_sas()) == 1 and pair.a.ike_sas()[0]["spi_i"] != 0
                 and len(pair.b.ike_sas()) == 1)
        tunnel(pair, devices, number=3)

        pair.a.delete_child(new.spi_in)
        wait_for(lambda: pair.b.children() == [])
        for daemon, controller in zip((pair.a, pair.b), controllers):
            assert daemon.call(controller.sas) == [] and daemon.call(controller.policies) == []
        # no policy any more: the packet is not sent out protected, and not in the clear
        out = through(pair.a, devices[0], INSIDE, inner("10.1.0.5", "10.2.0.9", 4))
        assert not [data for port, data in out if port == OUTSIDE]
    finally:
        pair.close()


def test_soft_lifetime_in_the_device_makes_the_daemon_rekey(devices):
    """child_rekey_packets = 2: after two packets A's engine reports the soft limit, the
    controller asks the daemon, the daemon rekeys the CHILD_SA with the peer, and the
    new SAs carry traffic."""
    pair = Pair(natt="detect", a_kw={"peer": "child_rekey_packets = 2\nchild_life_packets = 100"},
                a_daemon={"controller": lambda: Controller([devices[0]])},
                b_daemon={"controller": lambda: Controller([devices[1]])})
    try:
        pair.up()
        (child,) = pair.a.children()
        assert pair.a.call(pair.a.controller.sas)[0].config["lifetime"]["packets_soft"] == 2
        tunnel(pair, devices, number=1)           # one packet out of A, one into A
        tunnel(pair, devices, number=2)
        wait_for(lambda: len(pair.of("a", ChildRekeyed)) == 1, what="the rekey")
        (new,) = pair.a.children()
        assert new.spi_in != child.spi_in
        tunnel(pair, devices, number=3)
    finally:
        pair.close()


def exchanging(daemon) -> bool:
    """Whether an IKE SA of ``daemon`` has a request out or queued."""
    return daemon.call(lambda: any(s._pending or s._queue for s in daemon._unique_sessions()))


@pytest.mark.parametrize("rekeyer", ["a", "b"])
def test_esp_under_the_old_child_sa_after_a_rekey_is_not_lost(devices, rekeyer):
    """ESP each side sent under the old CHILD_SA just before a rekey, arriving after it
    (in flight, or queued in the gateway, while the peer had not yet handled the
    DELETE): decrypted by the other side's device, whichever side rekeyed. Once the
    IKE SA goes, the old inbound SAs go with it, and such packets are dropped."""
    pair = Pair(natt="detect", settings="delete_rekeyed_delay = 600",
                a_daemon={"controller": lambda: Controller([devices[0]])},
                b_daemon={"controller": lambda: Controller([devices[1]])})
    try:
        pair.up()
        (child,) = pair.a.children()
        late_to_a = [protect(pair.b, devices[1], "10.2.0.9", "10.1.0.5", n) for n in (1, 2)]
        late_to_b = [protect(pair.a, devices[0], "10.1.0.5", "10.2.0.9", n) for n in (3, 4)]
        assert {parse(p).spi for p in late_to_a} == {child.spi_in}
        getattr(pair, rekeyer).rekey_child(child.spi_in if rekeyer == "a" else child.spi_out)
        wait_for(lambda: [len(pair.of(s, ChildRekeyed)) for s in "ab"] == [1, 1])
        (new,) = pair.a.children()
        # the DELETE exchange of the old CHILD_SA is over: the peers send under the new
        wait_for(lambda: not exchanging(pair.a) and not exchanging(pair.b),
                 what="the DELETE exchange over")
        tunnel(pair, devices, number=5)             # the new SAs carry the traffic
        assert through(pair.a, devices[0], OUTSIDE, late_to_a[0]) == \
            [(INSIDE, inner("10.2.0.9", "10.1.0.5", 1))]
        assert through(pair.b, devices[1], OUTSIDE, late_to_b[0]) == \
            [(INSIDE, inner("10.1.0.5", "10.2.0.9", 3))]
        assert {(i.spi, i.direction) for i in pair.a.call(pair.a.controller.sas)} == \
            {(new.spi_in, "in"), (new.spi_out, "out"), (child.spi_in, "in")}
        assert pair.of("a", ChildRetired) == pair.of("b", ChildRetired) == []
        pair.a.delete_ike("b")
        wait_for(lambda: [len(pair.of(s, ChildRetired)) for s in "ab"] == [1, 1],
                 what="the old inbound SAs retired with the IKE SA")
        assert pair.of("a", ChildRetired)[0].child.spi_in == child.spi_in
        assert pair.of("b", ChildRetired)[0].child.spi_in == child.spi_out
        for daemon, device, late in ((pair.a, devices[0], late_to_a[1]),
                                     (pair.b, devices[1], late_to_b[1])):
            assert daemon.call(daemon.controller.sas) == []
            assert through(daemon, device, OUTSIDE, late) == []
    finally:
        pair.close()
