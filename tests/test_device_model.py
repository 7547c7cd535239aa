# SPDX-License-Identifier: BSD-2-Clause
"""``model://``: the reference model behind the host link. The host driver gets
from it what it gets from the device: the same answers, frame for frame, on a
link full of faults (against the device in Amaranth's simulator here, in
Verilator in ``test_device_server.py``), and the same packets and counters for
the whole traffic mix (``test_device_link.py`` runs the device side)."""

import random

import pytest

from espnic.hdl.bridge.regmap import FrameKind, PacketSource, RegisterMap, Status
from espnic.hdl.device import EspNicDevice
from espnic.hdl.engine.sa import SaState
from espnic.hdl.engine.sa_table import HostOp
from espnic.host.device import Device
from espnic.host.transport import NotSupported, open_port
from espnic.host.transport.model import ModelPort, model_parameters, model_url
from espnic.sim.link_job import SimPort, run_host, traffic_over_link
from espnic.sim.model.device import DeviceModel
from tests.link_cases import wire_session
from tests.nic_cases import NicScenario

PARAMS = {"engines": 1, "ports": 1, "slots": 4, "window": 64}


def _words(said, regmap):
    """The register words of the session's last READs (the whole map, in bursts)."""
    data = [frame for frame in said["answers"] if frame[0] == FrameKind.DATA.value]
    words = b"".join(frame[4:] for frame in data)[-4 * regmap.words:]
    return {r.name: int.from_bytes(words[4 * r.address:4 * r.address + 4], "little")
            for r in regmap.registers}


def test_model_url_parameters():
    assert model_parameters("model://") == {}
    assert model_parameters("model://?engines=2&nested=1&profile=fast") == \
        {"engines": 2, "nested": True, "profile": "fast"}
    params = Device.open(model_url(RegisterMap(engines=3, slots=8).params)).params
    assert (params["engines"], params["slots"]) == (3, 8)
    with pytest.raises(ValueError, match="unknown parameter 'engine' in device URL"):
        open_port("model://?engine=2")
    with pytest.raises(ValueError, match="engines must be an integer"):
        open_port("model://?engines=two")
    with pytest.raises(ValueError, match="takes parameters as a query"):
        open_port("model://localhost")
    with pytest.raises(ValueError, match="not supported: the model of a device with Ethernet"):
        open_port("model://?ethernet=1")
    with pytest.raises(NotSupported, match="not supported: pcie://"):
        open_port("pcie://0000:01:00.0")


def test_model_answers_a_faulty_link_as_the_device_does():
    """Every answer, item, packet and register of :func:`wire_session` (bad CRC, cut
    frames, noise, too short, too long, resends, each refusal, an SA written and
    read back with its key as zero, a bad INJECT) equals the device's."""
    regmap = RegisterMap(**PARAMS)
    from_model = wire_session(ModelPort(model_url(regmap.params)), regmap)
    from_device = run_host(EspNicDevice(link="bytes", packets="link", **PARAMS),
                           lambda device: wire_session(device.link.port, regmap),
                           port=SimPort(), timeout=60.0)
    assert from_model == from_device
    statuses = [Status(frame[2]) for frame in from_model["answers"]
                if frame[0] == FrameKind.ACK.value]
    assert set(statuses) == set(Status)           # every refusal was tried
    words = _words(from_model, regmap)
    assert words["bad_crc"] >= 4 and words["too_short"] == 1 and words["too_long"] == 1
    assert (words["duplicates"], words["inject_aborted"]) == (3, 1)
    assert words["pause"] == 0 and words["miss_to_host"] == 1
    (written, emptied) = [regmap.channel("engine_reply").layout.from_bits(
        int.from_bytes(frame[4:], "little")) for frame in from_model["items"]]
    assert written.record.spi == 0x3003 and written.record.state == SaState.VALID
    assert (written.record.key, written.record.salt) == (0, 0)
    assert emptied.record.as_bits() == 0
    (packet,) = from_model["packets"]
    assert packet[3] == PacketSource.EXCEPTION.value


def test_model_runs_the_traffic_as_the_reference():
    """The driver over ``model://`` sees what :class:`NicModel` says, with every
    traffic kind, on 2 engines and ports with nesting (the device's side of the
    same run is ``test_device_link.py``'s)."""
    scenario = NicScenario(engines=2, ports=2, miss_to_host=True, nested=True)
    traffic = scenario.traffic(60, random.Random(11))
    setup = scenario.setup
    device = Device.open(model_url(RegisterMap(**setup.params("compact")).params))
    got, counters, sa_counters = traffic_over_link(device, setup, traffic, timeout=5.0)
    model = setup.model()
    outcomes = [model.process(port, packet) for port, packet in traffic]
    assert counters == model.counters()
    egress = [(o.port, o.packet) for o in outcomes if o.port is not None]
    exceptions = [(o.ingress, o.packet) for o in outcomes if o.exception]
    assert [(port, packet) for source, port, packet, _ in got
            if source is PacketSource.EGRESS] == egress
    assert [(port, packet) for source, port, packet, _ in got
            if source is PacketSource.EXCEPTION] == exceptions
    assert len(egress) > 10 and exceptions
    for (engine, slot, _config) in setup.sas:
        assert sa_counters[engine, slot] == model.engine[engine].counters(slot)


def test_model_moves_an_sa_between_engines():
    """A live move over the host link: hold the destination, arm the source, a fence
    through the port, the SA's state (sequence number, counters) moves and the
    next packet goes out of the new engine with the next sequence number."""
    scenario = NicScenario(engines=2, ports=1)
    setup = scenario.setup
    device = Device.open(model_url(RegisterMap(**setup.params("compact")).params))
    traffic = [(port, packet) for port, packet in scenario.traffic(40, random.Random(2))]
    got, _counters, before = traffic_over_link(device, setup, traffic, timeout=5.0)
    sent = before[0, 0]["packets"]
    assert sent > 0, "no packet of engine 0's outbound SA in the traffic"
    device.send("engine_hold", 1, {"slot": 3, "hold": 1})
    device.send("engine_arm", 0, {"slot": 0, "engine": 1, "dest_slot": 3, "fences": 1})
    device.send("fence_host", 0, {"engine": 0, "slot": 0})
    items = device.items()
    items += device.items(wait=1.0)
    assert [(name, index, item.slot) for name, index, item in items] == \
        [("engine_fenced", 0, 0), ("engine_migrated", 1, 3)]
    for engine, slot, packets in ((0, 0, 0), (1, 3, sent)):
        device.send("engine_host", engine, {"op": HostOp.READ_COUNTERS, "slot": slot})
        (_name, _index, reply), = device.items()
        assert reply.counters.packets == packets
        assert reply.record.seq == packets        # the next sequence number moved along
    assert device.counters()["arm_refused"] == 0
    device.send("engine_arm", 1, {"slot": 3, "engine": 1, "dest_slot": 0, "fences": 1})
    assert device.counters()["arm_refused"] == 1      # a move to itself is refused


def test_model_port_is_a_byte_port():
    port = ModelPort("model://", timeout=0.0)
    assert port.read(10) == b"" and port.in_waiting == 0
    DeviceModel()                                    # the defaults build
