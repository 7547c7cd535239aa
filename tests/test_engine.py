# SPDX-License-Identifier: BSD-2-Clause
"""The ESP engine end to end (Amaranth simulator): host writes SAs, packets with
their slot go in, ESP packets and decapsulated packets come out; the reference
model is the oracle for every output byte, every drop, every counter and every
event. Inbound traffic is sealed by a peer model (the mirrored outbound SA) or
by ``AESGCM`` directly for what no sender would send."""

import dataclasses
import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.packet import Raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.hdl.engine.engine import EspEngine
from espnic.hdl.engine.protocol import PROTO_ESP, PROTO_IPV4
from espnic.hdl.engine.sa_table import HostOp, control_record
from espnic.hdl.engine.udp6 import udp6_fill_limit
from espnic.sim.amaranth_sim import run_sim, stream_put
from espnic.sim.esp_job import esp_offset, run_engine
from espnic.sim.model import EspModel
from espnic.sim.model.esp import internet_checksum
from tests.esp_cases import HOSTS, config, esp_trailer, plain_packet, seal_tunnel
from tests.test_replay_hw import read_storage

SLOTS = 4
_NO_LIMITS = {"packets_soft": 0, "packets_hard": 0, "bytes_soft": 0, "bytes_hard": 0}


def check_engine_run(run):
    """Everything the engine did must be what the model did (also for the Verilator
    runs of ``test_engine_cocotb.py``)."""
    for inbound in (False, True):
        assert run.outputs[inbound] == run.expected[inbound], "inbound" if inbound else "outbound"
    for slot in run.counters:
        assert run.counters[slot] == run.model.counters(slot), f"slot {slot}"
        # Inbound: the record's seq follows the window's top.
        assert run.seqs[slot] == run.model.read_record(slot).seq, f"slot {slot} seq"
    for name in ("no_sa", "unknown_spi"):
        assert run.engine_counters[name] == run.model.engine_counters[name], name
    assert run.engine_counters["unsupported"] == run.reasons.count("unsupported")
    assert run.engine_counters["truncated"] == run.reasons.count("aborted")
    # Outbound packets are accounted when their number is allocated, inbound ones
    # after their ICV: the order of events across slots may differ, not per slot.
    for slot in run.counters:
        assert [name for event_slot, name in run.events if event_slot == slot] == \
            [name for event_slot, name in run.model.events if event_slot == slot], f"slot {slot}"


def _run(sa_configs, traffic, *, profile="compact", stall=0.0, gap=0.0, seed=0, run_out=None):
    """Run `traffic` through the engine and the model; everything must agree.
    Returns the model's reasons, one per packet (the whole run in `run_out`)."""
    run = run_engine(sa_configs, traffic, profile=profile, slots=SLOTS, stall=stall, gap=gap,
                     seed=seed)
    check_engine_run(run)
    if run_out is not None:
        run_out.append(run)
    return run.reasons


def _peer(sa_configs):
    """A model holding the outbound twin of every inbound SA, at the same slot."""
    peer = EspModel(slots=SLOTS)
    for slot, cfg in sa_configs.items():
        if cfg.direction == "in":
            peer.install(slot, _twin(cfg))
    return peer


def _twin(cfg):
    return dataclasses.replace(cfg, direction="out", lifetime={})


def _seal(peer, slot, packet):
    output, reason = peer.process(slot, packet)
    assert reason == "ok"
    return output


def test_engine_counts_and_drops_like_the_model():
    """Interleaved SAs; one runs out of sequence numbers, one reaches its packet
    lifetime, one slot is empty: outputs, drops, counters and events as the model."""
    sa_configs = {
        0: config("out", version=4, seq=2**32 - 3, lifetime=_NO_LIMITS),
        1: config("out", version=6, mode="transport", esn=True, spi=0x2000,
                  lifetime={**_NO_LIMITS, "packets_soft": 2, "packets_hard": 4}),
        2: config("out", version=4, natt=True, spi=0x3000, lifetime=_NO_LIMITS),
    }
    traffic = [(slot, plain_packet(4 if slot != 1 else 6, size))
               for size in (0, 40, 100) for slot in (0, 1, 2, 3)]
    traffic += [(1, plain_packet(6, 10)), (0, plain_packet(4, 1)), (1, plain_packet(6, 2))]
    _run(sa_configs, traffic, stall=0.3)


@pytest.mark.parametrize("profile", ["compact", "fast"])
def test_engine_both_directions(profile):
    """Outbound and inbound SAs side by side, inbound IPv4 / IPv6 / ESN / NAT-T, an
    inbound lifetime that runs out, back-pressure on the output (*fast*: inbound
    packets overlap, but not those of the ESN SA, nor those near the hard lifetime)."""
    sa_configs = {
        0: config("out", version=4, lifetime=_NO_LIMITS),
        1: config("in", version=4, spi=0x1111, lifetime={**_NO_LIMITS, "packets_soft": 2,
                                                         "packets_hard": 3}),
        2: config("in", version=6, spi=0x2222, esn=True, seq=2**32 - 2, window=64,
                  lifetime=_NO_LIMITS),
        3: config("in", version=4, spi=0x3333, natt=True, lifetime=_NO_LIMITS),
    }
    peer = _peer(sa_configs)
    traffic = []
    for size in (0, 33, 200):
        traffic.append((0, plain_packet(4, size)))
        traffic.append((1, _seal(peer, 1, plain_packet(4, size))))
        traffic.append((2, _seal(peer, 2, plain_packet(6, size + 1))))
        traffic.append((3, _seal(peer, 3, plain_packet(6, size + 2))))
    traffic.append((1, _seal(peer, 1, plain_packet(4, 5))))    # past the hard lifetime
    reasons = _run(sa_configs, traffic, profile=profile, stall=0.3)
    assert reasons.count("ok") == len(traffic) - 1
    assert reasons[-1] == "hard_expired"


def _flip(packet, offset, bit=0):
    return packet[:offset] + bytes([packet[offset] ^ (1 << bit)]) + packet[offset + 1:]


class _Sender:
    """Packets of one inbound SA (slot 0: IPv4 tunnel, window 64), sealed with
    ``AESGCM``, numbered in the order they are made."""

    SA = {"version": 4, "spi": 0x4444}

    def __init__(self):
        self.config = config("in", window=64, lifetime=_NO_LIMITS, **self.SA)
        self.inner = plain_packet(4, 37)
        self.top = 0

    def good(self, number=None):
        return self.seal(number, esp_trailer(self.inner, PROTO_IPV4))

    def seal(self, number, plaintext):
        if number is None:
            number = self.top + 1
        self.top = max(self.top, number)
        return seal_tunnel(self.SA, number, plaintext, spi=self.SA["spi"])


def _bad_inputs(sender):
    """(description, packet, the model's reason) for every bad input of the issue,
    in sending order, each followed by a good packet (made after it)."""
    first = sender.good()
    esp = esp_offset(first)
    yield "first", first, "ok"
    yield "ciphertext bit", _flip(sender.good(), esp + 20), "auth_fail"
    yield "ICV bit", _flip(sender.good(), len(first) - 1, 7), "auth_fail"
    yield "AAD bit (sequence number)", _flip(sender.good(), esp + 4, 7), "auth_fail"
    yield "SPI bit", _flip(sender.good(), esp + 3), "unknown_spi"
    yield "wrong pad bytes", sender.seal(None, esp_trailer(
        sender.inner + b"\0", PROTO_IPV4, pad=b"\1\1\1")), "malformed"
    yield "sequence number 0", sender.good(0), "replay"
    yield "IPv4 checksum", _flip(sender.good(), 10), "malformed"
    yield "IPv4 length too long", _with_total(sender.good(), len(first) + 1), "malformed"
    yield "IPv4 length too short", _with_total(sender.good(), 19), "malformed"
    replayed = sender.good()
    yield "original", replayed, "ok"
    yield "replayed", replayed, "replay"
    # A replay is a replay before its ICV is looked at (also when it was admitted on
    # a window without its original, *fast*, and fails its ICV).
    yield "replayed, ICV bit", _flip(replayed, len(replayed) - 1), "replay"
    # Jump ahead, then a number that has fallen out of the 64-packet window.
    yield "far ahead", sender.good(sender.top + 500), "ok"
    yield "left of the window", sender.good(sender.top - 100), "replay"


def _with_total(packet, total):
    header = bytearray(packet[:20])
    header[2:4] = struct.pack("!H", total)
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header) + packet[20:]


@pytest.mark.parametrize("profile", ["compact", "fast"])
def test_engine_bad_input_each_dropped_and_counted(profile):
    """*fast* overlaps three inbound packets: a replay right behind its original is
    admitted before the original's commit and found out at its own."""
    sender = _Sender()
    traffic, cases = [], []
    for description, packet, reason in _bad_inputs(sender):
        traffic += [(0, packet), (0, sender.good())]
        cases.append((description, reason))
    runs = []
    reasons = _run({0: sender.config}, traffic, profile=profile, run_out=runs)
    for index, (description, reason) in enumerate(cases):
        assert reasons[2 * index] == reason, description
        assert reasons[2 * index + 1] == "ok", f"the good packet after: {description}"
    if profile == "fast":
        # The overlap did happen, and the replay was caught by its commit.
        assert runs[0].inbound_overlap >= 2
        assert runs[0].late_replays >= 1


@pytest.mark.parametrize("profile", ["compact", "fast"])
def test_engine_truncated_at_every_length(profile):
    """A packet cut at every length from 0 to its full size, each followed by a
    good one: every cut one a counted malformed drop, every good one through."""
    sender = _Sender()
    full = len(sender.good())
    traffic = [(0, sender.good()[:full])]
    for length in range(full):
        traffic += [(0, sender.good()[:length]), (0, sender.good())]
    reasons = _run({0: sender.config}, traffic, profile=profile)
    assert reasons[1::2] == ["malformed"] * full
    assert set(reasons[0::2]) == {"ok"}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.tuples(st.integers(0, SLOTS - 1), st.integers(0, 700)),
                      min_size=1, max_size=10),
       stall=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_engine_random_traffic(sizes, stall, seed):
    sa_configs = {slot: config("out", version=4, spi=0x100 * (slot + 1), esn=bool(slot & 1),
                               mode="transport" if slot == 2 else "tunnel",
                               lifetime={**_NO_LIMITS, "bytes_soft": 300, "bytes_hard": 2000})
                  for slot in range(SLOTS - 1)}
    traffic = [(slot, plain_packet(4, size)) for slot, size in sizes]
    _run(sa_configs, traffic, stall=stall, seed=seed)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(st.tuples(st.integers(0, SLOTS - 1), st.integers(0, 1440),
                                  st.sampled_from(["good", "replay", "flip"])),
                        min_size=1, max_size=8),
       stall=st.sampled_from([0.0, 0.5]), gap=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 2**16), mode=st.sampled_from(["tunnel", "transport"]),
       profile=st.sampled_from(["compact", "fast"]))
def test_engine_random_mixed_traffic(packets, stall, gap, seed, mode, profile):
    """Both directions, both modes, both IP versions, ESN and NAT-T on some SAs,
    replays and forgeries mixed in, hypothesis-chosen sizes and order, both profiles."""
    sa_configs = {
        0: config("out", version=6, esn=True, natt=True, lifetime=_NO_LIMITS),
        1: config("in", version=4, spi=0x1001, esn=True, seq=2**32 - 3, lifetime=_NO_LIMITS),
        2: config("in", version=6, spi=0x1002, natt=True, mode=mode, lifetime=_NO_LIMITS),
        3: config("out", version=4, mode="transport", natt=True, lifetime=_NO_LIMITS),
    }
    peer = _peer(sa_configs)
    last = {}
    traffic = []
    for slot, size, kind in packets:
        version = 4 if slot in (1, 3) else 6
        plain = plain_packet(version, size)
        if sa_configs[slot].direction == "out":
            traffic.append((slot, plain))
            continue
        if kind == "replay" and slot in last:
            traffic.append((slot, last[slot]))
            continue
        sealed = _seal(peer, slot, plain)
        last[slot] = sealed
        traffic.append((slot, _flip(sealed, len(sealed) - 3) if kind == "flip" else sealed))
    _run(sa_configs, traffic, profile=profile, stall=stall, gap=gap, seed=seed)


@pytest.mark.parametrize("profile", ["compact", "fast"])
def test_engine_outbound_ipv4_header_checksum(profile):
    """An outbound IPv4 packet whose header checksum is wrong (a bit flipped anywhere
    in a header of 20 to 60 bytes) is a malformed drop before a sequence number is
    allocated, as the model; the good packet after each goes out with the next number."""
    sa_configs = {0: config("out", version=4, lifetime=_NO_LIMITS),
                  1: config("out", version=6, mode="transport", spi=0x2000, lifetime=_NO_LIMITS)}
    traffic = []
    for options in range(0, 44, 8):
        packet = plain_packet(4, 30)
        header = bytearray(packet[:20])
        header[0] = 0x45 + options // 4
        header[2:4] = struct.pack("!H", len(packet) + options)
        header[10:12] = b"\0\0"
        header[10:12] = struct.pack("!H", internet_checksum(bytes(header) + b"\x01" * options))
        good = bytes(header) + b"\x01" * options + packet[20:]
        bad = _flip(good, (7 * options + 3) % (20 + options), options % 8)
        traffic += [(0, bad), (0, good), (1, _flip(plain_packet(4, 5), 10)), (1, good)]
    reasons = _run(sa_configs, traffic, profile=profile, stall=0.2)
    assert reasons == ["malformed", "ok"] * (2 * 6)


@pytest.mark.parametrize("profile", ["compact", "fast"])
def test_engine_udp_encapsulation_over_ipv6(profile):
    """Outbound NAT-T over IPv6 (tunnel and transport) gets a real UDP checksum: the
    engine holds the ESP packet until it is whole; packets of other SAs behind it stay
    in order. One too long for the fill stage is refused (``unsupported``) with no
    sequence number used and no SA counter moved."""
    sa_configs = {
        0: config("out", version=6, natt=True, lifetime=_NO_LIMITS),
        1: config("out", version=4, mode="transport", natt=True, spi=0x2000, lifetime=_NO_LIMITS),
        2: config("in", version=4, mode="transport", spi=0x3000, lifetime=_NO_LIMITS),
        3: config("out", version=4, lifetime=_NO_LIMITS),
    }
    peer = _peer(sa_configs)
    limit = udp6_fill_limit()
    traffic = [(0, plain_packet(4, 10)), (3, plain_packet(4, 0)), (1, plain_packet(6, 10)),
               (1, plain_packet(4, 10)), (0, plain_packet(6, 1400)), (3, plain_packet(6, 3)),
               (2, _seal(peer, 2, plain_packet(6, 10))), (1, plain_packet(6, 0)),
               # IPv4 / UDP (28 header bytes), IPv6 / TCP (60): exactly at the limit, one over.
               (0, plain_packet(4, limit - 28)), (0, plain_packet(4, limit - 27)),
               (1, plain_packet(6, limit - 60 + 1)), (0, plain_packet(6, 77))]
    runs = []
    reasons = _run(sa_configs, traffic, profile=profile, stall=0.2, run_out=runs)
    assert reasons == ["ok"] * 9 + ["unsupported"] * 2 + ["ok"]
    # The checksums are the model's; check them against scapy too.
    for packet in runs[0].outputs[False]:
        ip = IPv6(packet) if packet[0] >> 4 == 6 else IP(packet)
        if packet[0] >> 4 == 6 and UDP in ip:
            checksum = ip[UDP].chksum
            del ip[UDP].chksum
            assert IPv6(bytes(ip))[UDP].chksum == checksum


def test_engine_fast_profile():
    sa_configs = {0: config("out", version=4, lifetime=_NO_LIMITS),
                  2: config("in", version=4, spi=0x777, lifetime=_NO_LIMITS)}
    peer = _peer(sa_configs)
    traffic = [(0, plain_packet(4, size)) for size in (0, 64, 1400, 5)] + [(1, plain_packet(4, 3))]
    traffic += [(2, _seal(peer, 2, plain_packet(4, size))) for size in (0, 64, 1400)]
    _run(sa_configs, traffic, profile="fast")


def test_engine_host_write_and_delete_load_the_replay_window():
    """A host write of an inbound SA installs the window `SaConfig.to_record` describes
    (every number up to `seq` received), a delete zeroizes it, and a write of an
    outbound SA leaves it empty: read back from the replay unit's storage with the
    pure-Python inverse of its layout."""
    dut = EspEngine(slots=SLOTS)
    model = EspModel(slots=SLOTS)
    cases = [config("in", seq=1000, window=64), config("in", esn=True, seq=2**32 + 5, window=1024),
             config("in", seq=0, window=100), config("out", seq=77)]
    seen = []

    def host_write(slot, cfg):
        return {"op": HostOp.WRITE, "slot": slot,
                "record": control_record(cfg.to_record(model.layout))}

    async def bench(ctx):
        for slot, cfg in enumerate(cases):
            await stream_put(ctx, dut.host, host_write(slot, cfg), timeout=200)
        await ctx.tick().repeat(200)
        for slot, cfg in enumerate(cases):
            record = cfg.to_record(model.layout)
            seen.append((await read_storage(ctx, dut.inbound.replay, slot, record.window),
                         (record.seq if cfg.direction == "in" else 0, record.replay_bitmap)))
        await stream_put(ctx, dut.host, {"op": HostOp.DELETE, "slot": 1}, timeout=200)
        await ctx.tick().repeat(200)
        seen.append((await read_storage(ctx, dut.inbound.replay, 1, 1024), (0, 0)))

    run_sim(dut, bench)
    assert len(seen) == len(cases) + 1
    for got, want in seen:
        assert got == want


def test_engine_256_slots():
    """The ECP5 size: SAs in high slots of a 256-slot engine, both directions."""
    sa_configs = {255: config("out", version=6, esn=True, lifetime=_NO_LIMITS),
                  128: config("in", version=4, spi=0x5555, lifetime=_NO_LIMITS)}
    peer = EspModel(slots=256)
    peer.install(128, _twin(sa_configs[128]))
    traffic = [(255, plain_packet(6, 20)), (128, _seal(peer, 128, plain_packet(4, 30))),
               (7, plain_packet(4, 1)), (128, _seal(peer, 128, plain_packet(4, 31)))]
    run = run_engine(sa_configs, traffic, slots=256)
    assert run.reasons == ["ok", "ok", "no_sa", "ok"]
    assert run.outputs == run.expected
    assert run.counters[128] == run.model.counters(128)
    assert run.counters[255] == run.model.counters(255)


def test_engine_ipv6_extension_headers_and_fragments():
    """IPv6 extension headers in front of ESP are not built: refused and counted in
    `unsupported` (outbound transport, inbound); in tunnel mode outbound they are
    just inner bytes. A fragment on an outbound transport SA is malformed (as the
    model: transport mode needs the whole datagram), in tunnel mode it is carried."""
    v6 = plain_packet(6, 12)
    hop_by_hop = bytes(IPv6(src=HOSTS[6][0], dst=HOSTS[6][1]) / IPv6ExtHdrHopByHop()
                       / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2) / Raw(b"x" * 9))
    fragment = bytes(IP(src=HOSTS[4][0], dst=HOSTS[4][1], flags="MF") / UDP(sport=1, dport=2)
                     / Raw(b"y" * 20))
    sa_configs = {
        0: config("out", version=6, mode="transport", lifetime=_NO_LIMITS),
        1: config("out", version=6, spi=0x2000, lifetime=_NO_LIMITS),
        2: config("in", version=6, spi=0x3000, lifetime=_NO_LIMITS),
        3: config("out", version=4, mode="transport", spi=0x4000, lifetime=_NO_LIMITS),
    }
    peer = _peer(sa_configs)
    sealed = _seal(peer, 2, v6)
    # The same ESP packet behind a hop-by-hop header (next header ESP, PadN).
    outer = IPv6(sealed[:40])
    outer.nh, outer.plen = 0, None
    with_ext = bytes(outer / IPv6ExtHdrHopByHop(nh=PROTO_ESP) / Raw(sealed[40:]))
    traffic = [(0, hop_by_hop), (0, v6), (1, hop_by_hop), (2, with_ext), (2, sealed),
               (3, fragment), (3, plain_packet(4, 3)), (1, v6)]
    reasons = _run(sa_configs, traffic)
    assert reasons == ["unsupported", "ok", "ok", "unsupported", "ok", "malformed", "ok", "ok"]


def test_engine_outbound_streams_longer_or_shorter_than_the_ip_length():
    """Bytes past the IP length are dropped (the model ignores them); a stream that
    ends in its first beat or inside its IPv4 header is malformed; one that ends
    later, before its IP length, is padded, encrypted and aborted (`o_abort`,
    `truncated`), its sequence number used up; an IP header the model calls
    malformed is dropped before a number is used. The engine never hangs: the next
    packet goes through each time."""
    good = plain_packet(4, 60)
    v6 = plain_packet(6, 30)
    bad_ihl = bytes([0x44]) + good[1:]
    sa_configs = {0: config("out", version=4, lifetime=_NO_LIMITS),
                  1: config("out", version=6, mode="transport", spi=0x2000, lifetime=_NO_LIMITS)}
    traffic = [(0, good + b"\x01" * 7), (0, good), (0, good[:12]), (0, good),
               (0, good[:50]), (0, good), (1, v6[:41]), (1, v6), (0, bad_ihl), (0, good),
               (1, v6 + b"\x02" * 20), (0, good[:17]), (0, good), (0, good[:21])]
    reasons = _run(sa_configs, traffic, stall=0.3)
    assert reasons == ["ok", "ok", "malformed", "ok", "aborted", "ok", "aborted", "ok",
                       "malformed", "ok", "ok", "malformed", "ok", "aborted"]
