# SPDX-License-Identifier: BSD-2-Clause
"""The security controller (``host/controller/``) against the reference model of the
device (``model://``, and the same model behind a TCP socket for the crash test):
allocation, the install order of the method claim, errors that leave nothing
behind, traffic through what it installed, live moves and rebalancing under
traffic, lifetimes, rekeying, the SA database and reconciliation after a crash."""

import dataclasses
import ipaddress
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
from amaranth.lib import data
from scapy.layers.inet import IP

from espnic.hdl.engine import SaConfig
from espnic.hdl.engine.sa import SaState
from espnic.hdl.forwarder.spi_table import SPI_KEY, SpiOp, SpiStatus
from espnic.host.config import load_config
from espnic.host.controller import Controller, ControllerError, Placement, inbound_key
from espnic.host.device import Device
from espnic.sim.interop import scapy_sa
from espnic.sim.model.forwarder import parse
from tests.esp_cases import KEY128, KEY256, SALT, plain_packet
from tests.model_server import ModelServer

ROOT = Path(__file__).resolve().parent.parent
OUR, PEER = "192.0.2.1", "192.0.2.2"


def model(engines=4, ports=1, slots=16, **more) -> Device:
    query = "&".join(f"{k}={v}" for k, v in dict(engines=engines, ports=ports, slots=slots,
                                                  **more).items())
    device = Device.open(f"model://?{query}")
    _routes(device)
    return device


def _addr(text: str) -> bytes:
    packed = ipaddress.ip_address(text).packed
    return packed + bytes(16 - len(packed))


def _routes(device: Device):
    """Inner networks out of port 0, the tunnel peers out of the last port."""
    last = device.params["ports"] - 1
    assert device.write_route(0, valid=True, ipv6=False, dst=_addr("10.0.0.0"), length=8, port=0)
    assert device.write_route(1, valid=True, ipv6=False, dst=_addr("192.0.2.0"), length=24,
                              port=last)


def sa(direction: str, spi: int, *, key=KEY128, **more) -> SaConfig:
    """An SA between :data:`OUR` and :data:`PEER` (inbound: from the peer to us)."""
    src, dst = (OUR, PEER) if direction == "out" else (PEER, OUR)
    return SaConfig(spi=spi, direction=direction, mode="tunnel", key=key, salt=SALT,
                    src=src, dst=dst, **more)


def inner(number: int, net: int = 2) -> bytes:
    """A cleartext packet to 10.<net>.0.1 whose payload starts with ``number``."""
    packet = IP(plain_packet(4, 40))
    packet.dst = f"10.{net}.0.1"
    packet.load = number.to_bytes(4, "big") + bytes(36)
    del packet.chksum
    del packet.len
    return bytes(packet)


def sealed(config: SaConfig, seq: int, packet: bytes) -> bytes:
    """``packet`` as the peer of inbound SA ``config`` sends it, with sequence ``seq``."""
    peer = scapy_sa(dataclasses.replace(config, src=config.src, dst=config.dst))
    peer.seq_num = seq
    return bytes(peer.encrypt(IP(packet), iv=seq.to_bytes(8, "big")))


def opened(config: SaConfig, packet: bytes) -> bytes:
    """What scapy decrypts from outbound SA ``config``'s ESP ``packet``."""
    return bytes(scapy_sa(config).decrypt(IP(packet)))


def esp_seq(packet: bytes) -> int:
    return int.from_bytes(packet[24:28], "big")


def esp_spi(packet: bytes) -> int:
    return parse(packet).spi


def all_packets(device: Device, wait: float = 0.0) -> list:
    """Every packet the device has sent (``packets()`` may hand them over in parts)."""
    got = device.packets(wait=wait)
    while more := device.packets():
        got += more
    return got


def out_packets(device: Device, wait: float = 0.0) -> list:
    return [packet for _source, _port, packet, _aborted in all_packets(device, wait)]


def protect(net: int = 2, priority: int = 5) -> dict:
    return {"action": "protect", "dst": f"10.{net}.0.0", "dst_len": 16, "priority": priority}


def snapshot(device: Device) -> tuple:
    """Every slot (record and counters) and every device counter."""
    slots = {}
    for engine in range(device.params["engines"]):
        for slot in range(device.params["slots"]):
            reply = device.read_sa(engine, slot)
            slots[engine, slot] = (reply.record.as_bits(), reply.counters.as_bits())
    return slots, device.counters()


def spi_probe(device: Device, forwarder: int, key: int) -> SpiStatus:
    """Whether the forwarder has an entry for ``key``: inserting a probe value says
    COLLISION if so (the probe is taken out again if not)."""
    status = device.spi_entry(forwarder, SpiOp.INSERT, SPI_KEY.from_bits(key), 0, 0)
    if status is SpiStatus.OK:
        device.spi_entry(forwarder, SpiOp.REMOVE, SPI_KEY.from_bits(key))
        return SpiStatus.NOT_FOUND
    return status


def check_agree(controller: Controller):
    """Device and database agree: every recorded SA active and in its slot, every
    valid slot recorded, every inbound SA's entry in every forwarder of its device."""
    recorded = {}
    for info in controller.sas():
        assert info.state == "active", info
        recorded[info.placement] = info
    for d, device in enumerate(controller.devices):
        for engine in range(device.params["engines"]):
            for slot in range(device.params["slots"]):
                record = device.read_sa(engine, slot).record
                placement = Placement(d, engine, slot)
                if record.state == SaState.VALID:
                    assert placement in recorded, f"{placement} holds SA {record.spi:#x}"
                    assert record.spi == recorded[placement].spi
                else:
                    assert placement not in recorded, f"{recorded[placement]} not in device"
    for info in recorded.values():
        if info.direction == "in":
            key = inbound_key(SaConfig(**info.config, key=KEY128, salt=SALT))
            device = controller.devices[info.placement.device]
            forwarders = device.params["ports"] + device.params["nested"]
            for f in range(forwarders):
                assert spi_probe(device, f, key) is SpiStatus.COLLISION, (info, f)
    for policy in controller.policies():
        assert policy.state == "active"


class Recorder:
    """A Device that records the operations the controller asks of it, in order."""

    def __init__(self, device: Device):
        self._device = device
        self.ops = []

    def __getattr__(self, name):
        attribute = getattr(self._device, name)
        if name not in ("write_sa", "read_sa", "delete_sa", "spi_entry", "write_policy",
                        "send", "write"):
            return attribute

        def recorded(*args, **kwargs):
            if name == "spi_entry":
                self.ops.append((name, SpiOp(args[1]).name, args[0]))
            elif name in ("send", "write"):
                self.ops.append((name, args[0], args[1]))
            else:
                self.ops.append((name, *args[:2]))
            return attribute(*args, **kwargs)
        return recorded


# -- allocation ------------------------------------------------------------------------------

def test_allocation_round_robin_and_pinned():
    controller = Controller([model(engines=4)])
    places = [controller.add_sa(sa("out", 0x100 + n)) for n in range(6)]
    assert [p.engine for p in places] == [0, 1, 2, 3, 0, 1]
    assert [p.slot for p in places] == [0, 0, 0, 0, 1, 1]
    assert controller.add_sa(sa("out", 0x200), engine=3) == Placement(0, 3, 1)
    assert controller.add_sa(sa("out", 0x201), engine=(0, 3)) == Placement(0, 3, 2)
    assert controller.add_sa(sa("out", 0x202, engine=1)) == Placement(0, 1, 2)  # config's


def test_allocation_least_sas():
    controller = Controller([model(engines=3)], allocation="least-sas")
    for n in range(3):
        controller.add_sa(sa("out", 0x100 + n), engine=0)
    controller.add_sa(sa("out", 0x110), engine=1)
    places = [controller.add_sa(sa("out", 0x120 + n)).engine for n in range(4)]
    assert places == [2, 1, 2, 1]         # then 3, 3, 3 SAs: ties go to the lowest


def test_allocation_least_bytes():
    device = model(engines=2)
    controller = Controller([device], allocation="least-bytes")
    controller.add_sa(sa("out", 0x100), engine=0)
    controller.add_sa(sa("out", 0x101), engine=1)
    controller.add_policy(protect(2), sa=0x100)
    controller.add_policy(protect(3), sa=0x101)
    for n in range(5):
        device.inject(0, inner(n, 2))
    device.inject(0, inner(9, 3))
    assert controller.engine_loads("bytes")[0, 0] > controller.engine_loads("bytes")[0, 1] > 0
    assert controller.add_sa(sa("out", 0x102)).engine == 1
    assert controller.add_sa(sa("out", 0x103)).engine == 1   # bytes first, SA count later


def test_two_devices_share_the_engines_and_keep_their_forwarders():
    first, second = model(engines=2, ports=2), model(engines=2, ports=2)
    controller = Controller([first, second])
    places = [controller.add_sa(sa("in", 0x300 + n)) for n in range(4)]
    assert [(p.device, p.engine) for p in places] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    config = sa("in", 0x302)                         # on device 1
    key = inbound_key(config)
    assert [spi_probe(second, f, key) for f in range(2)] == [SpiStatus.COLLISION] * 2
    assert [spi_probe(first, f, key) for f in range(2)] == [SpiStatus.NOT_FOUND] * 2
    # Traffic for it decrypts on device 1, whichever port it comes in by.
    for port in range(2):
        second.inject(port, sealed(config, 1 + port, inner(port)))
    assert out_packets(second) == [inner(0), inner(1)]
    assert controller.add_sa(sa("out", 0x400), engine=3) == Placement(1, 1, 1)
    with pytest.raises(ControllerError, match="not supported: moving .* to device 0"):
        controller.move_sa(0x302, 0)


def test_the_example_config_through_the_controller():
    """``examples/espnic.toml``'s SaSpecs and PolicySpecs (``host/config.py``) as they
    are: the pinned SA where it is pinned, every policy written to every port, a
    packet to peer B's network out under its SA."""
    config = load_config(ROOT / "examples" / "espnic.toml")
    device = model(engines=2, ports=2)
    controller = Controller([device])
    placed = {spec.config.spi: controller.add_sa(spec) for spec in config.sas}
    assert placed[0x1000].engine == 0
    ids = [controller.add_policy(spec) for spec in config.policies]
    assert [p.index for p in controller.policies()] == list(range(len(ids)))
    to_b = next(spec.config for spec in config.sas if spec.config.spi == 0x2000)
    packet = inner(1)
    packet = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / IP(packet).payload)
    device.inject(0, packet)
    (out,) = out_packets(device)
    assert esp_spi(out) == 0x2000 and opened(to_b, out) == packet


# -- the install order ----------------------------------------------------------------------

def test_install_and_delete_order():
    """SA written and verified before any forwarder points at it; deleted in reverse:
    filters, drain (a fence through every forwarder), DELETE."""
    device = Recorder(model(engines=2, ports=2))
    controller = Controller([device])
    controller.add_sa(sa("in", 0x1000))
    assert device.ops == [("write_sa", 0, 0), ("read_sa", 0, 0), ("spi_entry", "INSERT", 0),
                          ("spi_entry", "INSERT", 1)]
    device.ops.clear()
    controller.add_sa(sa("out", 0x2000))
    controller.add_policy(protect(), sa=0x2000)
    assert device.ops == [("write_sa", 1, 0), ("read_sa", 1, 0), ("write_policy", 0, 0),
                          ("write_policy", 1, 0)]
    for spi, engine, unfilter in ((0x1000, 0, [("spi_entry", "REMOVE", 0),
                                                ("spi_entry", "REMOVE", 1)]),
                                  (0x2000, 1, [("write_policy", 0, 0), ("write_policy", 1, 0)])):
        device.ops.clear()
        controller.delete_sa(spi)
        assert device.ops == [*unfilter,
                              ("send", "fence_host", 0), ("send", "fence_host", 1),
                              ("delete_sa", engine, 0)]
    # The outbound SA's policy now discards what it protected (fail closed).
    (policy,) = controller.policies()
    assert policy.rule["action"] == 0 and policy.sa is None


def test_move_order_is_the_devices_migration():
    device = Recorder(model(engines=2, ports=2))
    controller = Controller([device])
    controller.add_sa(sa("in", 0x1000))
    device.ops.clear()
    assert controller.move_sa(0x1000, 1) == Placement(0, 1, 0)
    assert device.ops == [
        ("send", "engine_hold", 1), ("send", "engine_arm", 0),
        ("write", "pause", 3),
        ("spi_entry", "REPLACE", 0), ("spi_entry", "REPLACE", 1),
        ("send", "fence_host", 0), ("send", "fence_host", 1),
        ("write", "pause", 0)]


# -- errors leave nothing behind -------------------------------------------------------------

def test_errors_leave_nothing_installed():
    device = model(engines=2, ports=2, slots=4)
    controller = Controller([device])
    controller.add_sa(sa("in", 0x1000))
    controller.add_sa(sa("out", 0x1000))       # another direction: not a duplicate
    before, sas_before = snapshot(device), controller.sas()

    reserved = sa("in", 0x1001)
    reserved.spi = 7
    stray = sa("in", 0x5000)
    device.spi_entry(1, SpiOp.INSERT, SPI_KEY.from_bits(inbound_key(stray)), 1, 3)
    after_stray = snapshot(device)
    cases = [
        (sa("in", 0x1000), {}, "duplicate SPI: SA 0x1000 to 192.0.2.1 \\(in\\)"),
        (reserved, {}, "'spi': 7 is reserved"),
        (sa("in", 0x1002), {"engine": 9}, "unknown engine 9"),
        (sa("in", 0x1002), {"engine": (1, 0)}, "unknown engine \\(1, 0\\)"),
        (sa("in", 0x1002, window=2048), {}, "larger than the engine's maximum window"),
        (stray, {}, "forwarder 1 of device 0 refused the SPI entry: it has an entry"),
    ]
    for config, kwargs, message in cases:
        with pytest.raises(ControllerError, match=message):
            controller.add_sa(config, **kwargs)
        assert controller.sas() == sas_before
    assert snapshot(device) == after_stray
    device.spi_entry(1, SpiOp.REMOVE, SPI_KEY.from_bits(inbound_key(stray)))
    assert snapshot(device)[0] == before[0]
    with pytest.raises(ControllerError, match="policy field 'sa': required"):
        controller.add_policy({"action": "protect"})
    with pytest.raises(ControllerError, match="is inbound|no SA with SPI 0x1001"):
        controller.add_policy(protect(), sa=0x1001)
    with pytest.raises(ControllerError, match="unknown port 5"):
        controller.add_policy({"action": "bypass"}, port=5)
    with pytest.raises(ControllerError, match="policy field 'colour': unknown field"):
        controller.add_policy({"action": "bypass", "colour": 1})
    assert controller.policies() == []
    # A full engine, pinned.
    for n in range(3):
        controller.add_sa(sa("out", 0x2000 + n), engine=1)
    with pytest.raises(ControllerError, match="engine 1 \\(device 0 engine 1\\) has no free slot"):
        controller.add_sa(sa("out", 0x2100), engine=1)


def test_a_bad_read_back_zeroizes_the_slot():
    device = model(engines=1)

    class Corrupting(Recorder):
        """Reads back a window other than the one written."""
        def __getattr__(self, name):
            if name != "read_sa":
                return super().__getattr__(name)

            def read_sa(engine, slot):
                reply = device.read_sa(engine, slot)
                layout = reply.record.shape()
                bits = reply.record.as_bits() ^ 1 << layout["window"].offset
                return types.SimpleNamespace(record=data.Const(layout, bits),
                                             counters=reply.counters)
            return read_sa

    controller = Controller([Corrupting(device)])
    with pytest.raises(ControllerError, match=r"reads back differently .*\(window\).*zeroized"):
        controller.add_sa(sa("in", 0x1000))
    assert device.read_sa(0, 0).record.as_bits() == 0 and controller.sas() == []
    assert spi_probe(device, 0, inbound_key(sa("in", 0x1000))) is SpiStatus.NOT_FOUND


# -- traffic ---------------------------------------------------------------------------------

def test_traffic_through_what_the_controller_installed():
    device = model(engines=2, ports=2)
    controller = Controller([device])
    inbound, outbound = sa("in", 0x1000, key=KEY256), sa("out", 0x2000)
    controller.add_sa(inbound)
    controller.add_sa(outbound)
    controller.add_policy(protect(2), sa=0x2000)
    controller.add_policy({"action": "bypass", "dst": "10.9.0.0", "dst_len": 16,
                           "priority": 9})
    device.inject(1, sealed(inbound, 1, inner(1)))
    device.inject(0, inner(2))
    device.inject(1, inner(3, 9))                     # bypassed
    device.inject(0, inner(4, 7))                     # no policy: dropped
    (decrypted, encrypted, bypassed) = all_packets(device)
    assert (decrypted[1], decrypted[2]) == (0, inner(1))
    assert (encrypted[1], esp_spi(encrypted[2])) == (1, 0x2000)
    assert opened(outbound, encrypted[2]) == inner(2)
    assert bypassed[2] == inner(3, 9)
    assert device.counters()["policy_miss[0]"] == 1


# -- moves and rebalancing ---------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["out", "in"])
def test_move_under_traffic_loses_nothing(direction):
    """Packets go in at every step of each move (through the step hook); every one
    comes out, an outbound SA uses each sequence number once, and the sequence
    number and counters move with the SA."""
    device = model(engines=3, ports=2)
    controller = Controller([device])
    config = sa(direction, 0x1000)
    controller.add_sa(config)
    if direction == "out":
        controller.add_policy(protect(), sa=0x1000)
    sent = []

    def packet():
        number = len(sent) + 1
        sent.append(inner(number))
        port = number % 2
        device.inject(port, inner(number) if direction == "out" else
                      sealed(config, number, inner(number)))

    controller.step_hook = lambda name: packet()
    places = [0]
    for target in (1, 2, 0, 2, 1):
        packet()
        placement = controller.move_sa(0x1000, target)
        places.append(placement.engine)
        packet()
    assert places == [0, 1, 2, 0, 2, 1]
    out = out_packets(device)
    assert len(out) == len(sent) > 30
    if direction == "out":
        assert sorted(esp_seq(p) for p in out) == list(range(1, len(sent) + 1))
        assert sorted(opened(config, p) for p in out) == sorted(sent)
    else:
        assert sorted(out) == sorted(sent)
    state = controller.sa_state(0x1000)
    assert (state.counters.packets, state.record.seq) == (len(sent), len(sent))
    for engine in (0, 2):
        assert device.read_sa(engine, 0).record.as_bits() == 0      # nothing left behind


def test_rebalance_shrinks_the_spread_and_loses_nothing():
    device = model(engines=4)
    controller = Controller([device])
    # Eight outbound SAs, the busy ones all on engine 0.
    pins = [0, 0, 0, 0, 1, 1, 2, 3]
    configs = []
    for n, engine in enumerate(pins):
        configs.append(sa("out", 0x1000 + n))
        controller.add_sa(configs[-1], engine=engine)
        controller.add_policy(protect(20 + n), sa=0x1000 + n)
    weights = [8, 6, 5, 5, 1, 1, 1, 1]
    sent = 0

    def traffic(rounds=1):
        nonlocal sent
        for _ in range(rounds):
            for n, weight in enumerate(weights):
                for _ in range(weight):
                    device.inject(0, inner(sent, 20 + n))
                    sent += 1

    traffic(2)
    before = controller.engine_loads("bytes")
    moves = controller.rebalance(by="bytes")
    after = controller.engine_loads("bytes")
    assert moves
    spread = max(before.values()) - min(before.values())
    assert max(after.values()) - min(after.values()) < spread / 3
    assert sum(after.values()) == sum(before.values())
    traffic(2)
    assert len(out_packets(device)) == sent
    for n, config in enumerate(configs):
        state = controller.sa_state(config.spi)
        assert state.counters.packets == state.record.seq == 4 * weights[n]
    # By SA count: 8 SAs on 4 engines, 2 each.
    controller.rebalance(by="sas")
    assert set(controller.engine_loads("sas").values()) == {2}


# -- lifetimes and rekeying --------------------------------------------------------------------

def test_lifetime_events_rekey_then_delete():
    device = model(engines=2)
    requests = []
    controller = Controller([device], on_rekey=lambda info, why: requests.append((info.spi, why)))
    controller.add_sa(sa("out", 0x1000, lifetime={"packets_soft": 2, "packets_hard": 4}))
    controller.add_policy(protect(), sa=0x1000)
    for n in range(2):
        device.inject(0, inner(n))
    events = controller.poll_events()
    assert [(e.kind, e.action, e.sa.spi) for e in events] == [("soft", "rekey requested",
                                                               0x1000)]
    assert requests == [(0x1000, "soft")]
    for n in range(2, 4):
        device.inject(0, inner(n))
    events = controller.poll_events()
    assert [(e.kind, e.action) for e in events] == [("hard", "deleted")]
    assert controller.sas() == [] and device.read_sa(0, 0).record.as_bits() == 0
    all_packets(device)
    device.inject(0, inner(5))
    assert out_packets(device) == []                   # discarded, not sent in clear


def _child_sa_pair():
    """A recorded two-engine device whose controller holds a CHILD_SA pair (inbound
    0x1000, outbound 0x2000 with a protect policy)."""
    device = Recorder(model(engines=2, ports=1))
    controller = Controller([device])
    old_in, old_out = sa("in", 0x1000), sa("out", 0x2000)
    controller.add_sa(old_in)
    controller.add_sa(old_out)
    controller.add_policy(protect(), sa=0x2000)
    return device, controller, old_in, old_out


def test_rekey_make_before_break():
    device, controller, old_in, old_out = _child_sa_pair()
    device.inject(0, inner(1))
    device.inject(0, sealed(old_in, 1, inner(2)))
    new_in, new_out = sa("in", 0x1001, key=KEY256), sa("out", 0x2001, key=KEY256)
    device.ops.clear()
    controller.rekey_child(0x1000, new_in, 0x2000, new_out)
    names = [op for op in device.ops if op[0] in ("write_sa", "delete_sa", "write_policy")]
    assert names == [("write_sa", 0, 1), ("write_sa", 1, 1), ("write_policy", 0, 0),
                     ("delete_sa", 1, 0), ("delete_sa", 0, 0)]
    device.inject(0, inner(3))
    device.inject(0, sealed(new_in, 1, inner(4)))
    device.inject(0, sealed(old_in, 2, inner(5)))       # the old SA is gone
    out = out_packets(device)
    assert [esp_spi(p) if p[9] == 50 else p for p in out] == [0x2000, inner(2), 0x2001,
                                                             inner(4)]
    assert opened(new_out, out[2]) == inner(3)
    # A single SA: the new outbound takes the policy, the old one goes.
    controller.rekey(0x2001, sa("out", 0x2002))
    device.inject(0, inner(6))
    (packet,) = out_packets(device)
    assert esp_spi(packet) == 0x2002 and esp_seq(packet) == 1
    assert sorted(info.spi for info in controller.sas()) == [0x1001, 0x2002]


def test_rekey_child_keeping_the_old_inbound_sa():
    """``keep_old_inbound``: the peer's packets under the old inbound SA that arrive
    after the rekey (sent before it switched) are decrypted, not lost; the outbound
    side is swapped at once; the old inbound SA goes when the caller deletes it."""
    device, controller, old_in, old_out = _child_sa_pair()
    device.inject(0, sealed(old_in, 1, inner(1)))
    new_in, new_out = sa("in", 0x1001, key=KEY256), sa("out", 0x2001, key=KEY256)
    device.ops.clear()
    controller.rekey_child(0x1000, new_in, 0x2000, new_out, keep_old_inbound=True)
    names = [op for op in device.ops if op[0] in ("write_sa", "delete_sa", "write_policy")]
    assert names == [("write_sa", 0, 1), ("write_sa", 1, 1), ("write_policy", 0, 0),
                     ("delete_sa", 1, 0)]
    assert sorted(info.spi for info in controller.sas()) == [0x1000, 0x1001, 0x2001]
    device.inject(0, inner(2))
    device.inject(0, sealed(new_in, 1, inner(3)))
    device.inject(0, sealed(old_in, 2, inner(4)))       # in flight during the rekey
    out = out_packets(device)
    assert [esp_spi(p) if p[9] == 50 else p for p in out] == [inner(1), 0x2001, inner(3),
                                                             inner(4)]
    controller.delete_sa(0x1000, direction="in")
    device.inject(0, sealed(old_in, 3, inner(5)))       # retired: dropped (SPI miss)
    assert out_packets(device) == []
    assert sorted(info.spi for info in controller.sas()) == [0x1001, 0x2001]


def test_rekey_child_switching_outbound_later():
    """``switch_outbound=False`` (a rekey's responder): the new SAs go in, traffic still
    leaves under the old outbound SA; :meth:`switch_outbound` moves the policies to the
    new one and deletes the old one."""
    device = Recorder(model(engines=2, ports=1))
    controller = Controller([device])
    controller.add_sa(sa("in", 0x1000))
    controller.add_sa(sa("out", 0x2000))
    controller.add_policy(protect(), sa=0x2000)
    new_in, new_out = sa("in", 0x1001, key=KEY256), sa("out", 0x2001, key=KEY256)
    controller.rekey_child(0x1000, new_in, 0x2000, new_out, keep_old_inbound=True,
                           switch_outbound=False)
    assert sorted(info.spi for info in controller.sas()) == [0x1000, 0x1001, 0x2000, 0x2001]
    device.inject(0, inner(1))
    device.inject(0, sealed(new_in, 1, inner(2)))
    out = out_packets(device)
    assert [esp_spi(p) if p[9] == 50 else p for p in out] == [0x2000, inner(2)]
    device.ops.clear()
    controller.switch_outbound(0x2000, 0x2001)
    names = [op for op in device.ops if op[0] in ("write_sa", "delete_sa", "write_policy")]
    assert names == [("write_policy", 0, 0), ("delete_sa", 1, 0)]
    device.inject(0, inner(3))
    (packet,) = out_packets(device)
    assert esp_spi(packet) == 0x2001 and opened(new_out, packet) == inner(3)
    assert sorted(info.spi for info in controller.sas()) == [0x1000, 0x1001, 0x2001]


# -- the database ------------------------------------------------------------------------------

def test_database_is_private_and_keeps_keys_only_when_asked(tmp_path):
    path = tmp_path / "sa.db"
    device = model(engines=1)
    controller = Controller([device], db=path)
    controller.add_sa(sa("in", 0x1000, key=KEY256))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in tmp_path.glob("sa.db-*"):
        assert stat.S_IMODE(extra.stat().st_mode) == 0o600
    controller.close()

    def files():
        return b"".join(p.read_bytes() for p in tmp_path.glob("sa.db*"))
    assert KEY256.encode() not in files()
    controller = Controller([device], db=path, store_keys=True)
    controller.add_sa(sa("in", 0x1001, key=KEY256))
    assert KEY256.encode() in files()
    controller.close()
    controller = Controller([device], db=path)           # not any more: wiped
    assert KEY256.encode() not in files()
    assert [info.spi for info in controller.sas()] == [0x1000, 0x1001]
    controller.close()
    with pytest.raises(Exception, match="is for 1 device\\(s\\), not 2"):
        Controller([device, model(engines=1)], db=path)


def test_a_device_reset_puts_inbound_sas_back_from_stored_keys(tmp_path):
    device = model(engines=2)
    lost = []
    controller = Controller([device], db=tmp_path / "sa.db", store_keys=True,
                            on_rekey=lambda info, why: lost.append((info.spi, why)))
    inbound, outbound = sa("in", 0x1000), sa("out", 0x2000)
    controller.add_sa(inbound)
    controller.add_sa(outbound)
    controller.add_policy(protect(), sa=0x2000)
    bypass = controller.add_policy({"action": "bypass", "dst": "10.9.0.0", "dst_len": 16})
    for engine in range(2):                     # the device loses its SA memories ...
        device.delete_sa(engine, 0)
    index = next(p.index for p in controller.policies() if p.id == bypass)
    assert device.write_policy(0, index, {"valid": False})     # ... and a rule
    report = controller.reconcile()
    assert len(report.reinstalled) == 1 and "0x1000" in report.reinstalled[0]
    assert len(report.lost) == 1 and "0x2000" in report.lost[0]
    assert lost == [(0x2000, "lost")]           # outbound: never again under that key
    check_agree(controller)
    device.inject(0, sealed(inbound, 5, inner(1)))
    device.inject(0, inner(2))                  # discarded: its SA is gone
    device.inject(0, inner(3, 9))               # bypassed again
    assert out_packets(device) == [inner(1), inner(3, 9)]


# -- crashes -----------------------------------------------------------------------------------

class Crash(BaseException):
    """Stands for a SIGKILL at a step: no handler of the controller's runs."""


def _crash_at(controller, step, count=1):
    seen = []

    def hook(name):
        if name == step:
            seen.append(name)
            if len(seen) == count:
                raise Crash(step)
    controller.step_hook = hook


OPERATIONS = {
    "add_in": ["sa_recorded", "sa_written", "sa_verified", "spi_inserted"],
    "add_out": ["sa_recorded", "sa_written", "sa_verified"],
    "delete_in": ["delete_recorded", "delete_unfiltered", "delete_zeroized"],
    "delete_out": ["delete_recorded", "delete_unfiltered", "delete_zeroized"],
    "move_in": ["move_recorded", "move_held", "move_armed", "move_paused", "move_repointed",
                "move_fenced"],
    "move_out": ["move_recorded", "move_held", "move_armed", "move_paused", "move_repointed",
                 "move_fenced"],
    "policy": ["policy_recorded", "policy_deleting"],
}


@pytest.mark.parametrize("operation,step,store_keys", [
    (op, step, keys) for op, steps in OPERATIONS.items() for step in steps
    # Stored keys change what becomes of a cut install only.
    for keys in ((False, True) if op.startswith("add") else (False,))])
def test_crash_at_any_step_is_repaired(tmp_path, operation, step, store_keys):
    """A controller stopped at any step of any operation; a new one on the same
    database reconciles: device and database agree, nothing half-installed, the
    SAs that were live carry traffic on, and a second reconcile finds nothing."""
    device = model(engines=2, ports=2)
    db = tmp_path / "sa.db"
    controller = Controller([device], db=db, store_keys=store_keys)
    live_in, live_out = sa("in", 0x1000), sa("out", 0x2000)
    controller.add_sa(live_in)
    controller.add_sa(live_out)
    controller.add_policy(protect(), sa=0x2000)
    subject = {"in": sa("in", 0x3000), "out": sa("out", 0x4000)}
    kind, _, direction = operation.partition("_")
    if kind in ("delete", "move"):
        controller.add_sa(subject[direction], engine=0)
        if direction == "out":
            controller.add_policy(protect(3), sa=0x4000)
    _crash_at(controller, step)
    with pytest.raises(Crash):
        if kind == "add":
            controller.add_sa(subject[direction])
        elif kind == "delete":
            controller.delete_sa(subject[direction].spi)
        elif kind == "move":
            controller.move_sa(subject[direction].spi, 1)
        else:
            policy = controller.add_policy({"action": "bypass", "dst": "10.9.0.0",
                                            "dst_len": 16, "priority": 9})
            controller.delete_policy(policy)
    # Traffic meanwhile (held or paused packets wait; none may be lost).
    device.inject(0, sealed(live_in, 1, inner(1)))
    device.inject(1, inner(2))
    device.items()                                  # the dead controller's reports
    del controller

    restarted = Controller([device], db=db, store_keys=store_keys)
    report = restarted.reconcile()
    assert report.consistent >= 2
    check_agree(restarted)
    again = restarted.reconcile()
    assert again.differences == [], again
    device.inject(0, sealed(live_in, 2, inner(3)))
    device.inject(1, inner(4))
    out = out_packets(device)
    clear = sorted(p for p in out if p[9] != 50)
    assert clear == sorted([inner(1), inner(3)])
    assert sorted(esp_seq(p) for p in out if p[9] == 50 and esp_spi(p) == 0x2000) == [1, 2]
    spis = {info.spi for info in restarted.sas()}
    assert {0x1000, 0x2000} <= spis
    if kind == "move":
        assert subject[direction].spi in spis
        assert restarted.sa(subject[direction].spi).placement.engine == 1


def test_orphans_are_removed_or_kept():
    device = model(engines=2)
    controller = Controller([device])
    controller.add_sa(sa("in", 0x1000))
    stray = sa("in", 0x5000)
    device.write_sa(1, 3, stray)
    device.spi_entry(0, SpiOp.INSERT, SPI_KEY.from_bits(inbound_key(stray)), 1, 3)
    report = controller.reconcile(orphans="keep")
    assert report.consistent == 1 and "0x5000" in report.orphans[0] and "kept" in report.orphans[0]
    report = controller.reconcile()
    assert "removed" in report.orphans[0]
    check_agree(controller)
    assert spi_probe(device, 0, inbound_key(stray)) is SpiStatus.NOT_FOUND


def test_kept_orphans_are_never_written_over():
    """An SA the database does not know, kept by reconcile: its slot is not allocated."""
    device = model(engines=2)
    stray = sa("out", 0x5000)
    device.write_sa(1, 0, stray)
    controller = Controller([device])
    assert "kept" in controller.reconcile(orphans="keep").orphans[0]
    placement = controller.add_sa(sa("out", 0x2000), engine=1)
    assert (placement.engine, placement.slot) == (1, 1)
    assert device.read_sa(1, 0).record.spi == 0x5000
    controller.reconcile()                       # removed: the slot is free again
    assert controller.add_sa(sa("out", 0x2001), engine=1).slot == 0


# -- a real crash: SIGKILL while loading 1,000 SAs -----------------------------------------------

LOADER = textwrap.dedent("""
    import sys
    from espnic.hdl.engine import SaConfig
    from espnic.host.controller import Controller
    from espnic.host.device import Device

    url, db, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    controller = Controller([Device.open(url)], db=db)
    for n in range(count):
        direction = "in" if n % 2 else "out"
        src, dst = ("192.0.2.2", "192.0.2.1") if direction == "in" else ("192.0.2.1", "192.0.2.2")
        controller.add_sa(SaConfig(spi=0x10000 + n, direction=direction, mode="tunnel",
                                   key="00112233445566778899aabbccddeeff", salt="a1b2c3d4",
                                   src=src, dst=dst))
        print(n + 1, flush=True)
""")


def test_sigkill_while_loading_1000_sas(tmp_path):
    server = ModelServer(engines=4, ports=1, slots=256, spi_entries=4096, spi_ways=8)
    try:
        db = tmp_path / "sa.db"
        child = subprocess.Popen([sys.executable, "-c", LOADER, server.url, str(db), "1000"],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        loaded = 0
        deadline = time.monotonic() + 60
        while loaded < 200 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            loaded = int(line)
        time.sleep(0.013)                     # somewhere inside an add_sa
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert 200 <= loaded < 1000, "the load was not cut in the middle"
        device = Device.open(server.url)
        controller = Controller([device], db=db)
        report = controller.reconcile()
        # Every SA the loader had reported is live and was left alone.
        assert report.consistent >= loaded
        assert len(report.completed) + len(report.removed) <= 1, report
        assert report.lost == [] and report.orphans == []
        check_agree(controller)
        assert controller.reconcile().differences == []
        assert len(controller.sas()) in (report.consistent, report.consistent + 1)
    finally:
        server.close()
