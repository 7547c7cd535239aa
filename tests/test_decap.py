# SPDX-License-Identifier: BSD-2-Clause
"""ESP tunnel-mode decapsulation gateware (Amaranth simulator).

Oracle: the reference model (``EspModel._inbound``) byte for byte and verdict
for verdict. Inputs: ESP packets sealed by the model's outbound SA, by scapy's
``SecurityAssociation`` (its own IVs), and by ``cryptography``'s ``AESGCM``
directly for what neither would send (wrong padding, dummy packets, TFC
padding, bad inner headers).
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

from espnic.hdl.engine.decap import DecapStatus, EspDecap
from espnic.hdl.engine.protocol import PROTO_ESP, PROTO_IPV4, PROTO_IPV6, PROTO_NONE
from espnic.hdl.gcm.layouts import BLOCK_BYTES
from espnic.hdl.packet import bytes_from_beats
from espnic.sim.esp_job import esp_offset, run_decap
from espnic.sim.interop import scapy_sa
from espnic.sim.model import EspModel
from espnic.sim.model.esp import internet_checksum
from tests.esp_cases import KEY256, config, esp_trailer, ip_class, plain_packet, seal_tunnel

STATUS = {"ok": DecapStatus.OK, "auth_fail": DecapStatus.AUTH_FAIL,
          "malformed": DecapStatus.MALFORMED, "dummy": DecapStatus.DUMMY}


def _decapsulate(sa_config, packets, *, profile="compact", banks=1, stall=0.0, gap=0.0, seed=0):
    """Run ``packets`` through the gateware and the model; check that they agree."""
    run = run_decap(sa_config, packets, profile=profile, banks=banks, stall=stall, gap=gap,
                    seed=seed)
    expected, verdicts, beats = run.expected, run.verdicts, run.beats

    for (_output, reason), verdict, packet in zip(expected, verdicts, packets, strict=True):
        assert verdict.status == STATUS[reason], f"model: {reason}, gateware: {verdict.status}"
    for index, ((output, reason), verdict, packet) in enumerate(zip(expected, verdicts, packets)):
        if reason in ("ok", "dummy", "auth_fail"):
            offset = esp_offset(packet)
            assert (verdict.spi, verdict.seq) == struct.unpack_from("!II", packet, offset), index
        assert verdict.length == (len(output) if output is not None else 0), index
    # Nothing at all leaves for a packet that is not accepted.
    for _beat, owner in beats:
        assert expected[owner][1] == "ok", f"bytes released for packet {owner} ({expected[owner][1]})"
    released = bytes_from_beats([beat for beat, _owner in beats], BLOCK_BYTES)
    assert released == [output for output, reason in expected if reason == "ok"]
    return expected


def _sealed_by_model(sa_kwargs, inner_packets, *, start=0):
    """ESP packets of ``inner_packets`` sealed by the model's outbound SA."""
    model = EspModel(slots=1)
    model.install(0, config("out", seq=start, **sa_kwargs))
    sealed = []
    for packet in inner_packets:
        output, reason = model.process(0, packet)
        assert reason == "ok"
        sealed.append(output)
    return sealed


def _sealed_by_scapy(sa_kwargs, inner_packets, *, start=0):
    """The same, by scapy's ``SecurityAssociation`` (its own, random IVs)."""
    sa = scapy_sa(config("out", **sa_kwargs))
    sealed = []
    for seq, packet in enumerate(inner_packets, start=start + 1):
        sa.seq_num, sa.esn = seq & 0xffffffff, seq >> 32
        sealed.append(bytes(sa.encrypt(ip_class(packet)(packet))))
    return sealed


def _with_ipv4(packet, **fields):
    """``packet`` with outer IPv4 header bytes replaced (offset: value), checksum redone."""
    header = bytearray(packet[:(packet[0] & 0xf) * 4])
    for offset, value in fields.items():
        header[int(offset[1:])] = value
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header) + packet[len(header):]


# ---- good traffic --------------------------------------------------------------------------

CASES = [
    pytest.param({"version": 4}, 0, id="v4"),
    pytest.param({"version": 6}, 0, id="v6"),
    pytest.param({"version": 4, "esn": True, "key": KEY256}, 2**32 - 2, id="v4-esn-aes256"),
    pytest.param({"version": 6, "esn": True}, 2**32 - 2, id="v6-esn"),
    pytest.param({"version": 4, "natt": True}, 0, id="v4-natt"),
    pytest.param({"mode": "transport"}, 0, id="transport"),
    pytest.param({"mode": "transport", "esn": True, "natt": True}, 2**32 - 2,
                 id="transport-esn-natt"),
]


@pytest.mark.parametrize("sa_kwargs,start", CASES)
def test_decap_model_and_scapy_traffic(sa_kwargs, start):
    inner = [plain_packet(version, size) for version, size in
             ((4, 0), (6, 1), (4, 13), (4, 14), (6, 77), (4, 300))]
    packets = _sealed_by_model(sa_kwargs, inner[:3], start=start) + \
        _sealed_by_scapy(sa_kwargs, inner[3:], start=start + 3)
    expected = _decapsulate(config("in", seq=start, **sa_kwargs), packets, stall=0.3, seed=1)
    assert [output for output, _ in expected] == inner


@pytest.mark.parametrize("banks", [1, 3])
def test_decap_fast_profile(banks):
    inner = [plain_packet(4, 1400), plain_packet(6, 0), plain_packet(4, 31), plain_packet(4, 600)]
    packets = _sealed_by_model({"version": 6}, inner)
    _decapsulate(config("in", version=6), packets, profile="fast", banks=banks, stall=0.2)


@pytest.mark.parametrize("profile", ["compact", "fast"])
def test_decap_transport_every_header_alignment(profile):
    """Transport mode: the outer IPv4 header kept with 0..40 bytes of options (every
    header length mod 16: the payload joined to it 4, 8, 12 or 0 bytes into a beat)
    and IPv6, payloads of every length mod 16, the header rebuilt (next header,
    length, checksum) as the model does."""
    packets, inner = [], []
    for options in range(0, 44, 4):
        for size in (0, 1, 2, 3, 13, 14, 15, 16, 17, 100):
            packet = plain_packet(4, size)
            header = bytearray(packet[:20])
            header[0] = 0x45 + options // 4
            header[2:4] = struct.pack("!H", len(packet) + options)
            inner.append(_with_ipv4(bytes(header) + b"\x01" * options + packet[20:]))
    inner += [plain_packet(6, size) for size in (0, 5, 30, 700)]
    packets = _sealed_by_model({"mode": "transport"}, inner)
    # Fast with packets overlapping in three banks, each with its header rows.
    expected = _decapsulate(config("in", mode="transport"), packets, profile=profile,
                            banks=3 if profile == "fast" else 1, stall=0.3, seed=2)
    assert [output for output, _ in expected] == inner


def test_decap_outer_options_udp_over_ipv6_and_long_streams():
    """Every alignment of the ciphertext in the beats (ESP at 20, 24, 28, 32 bytes)
    with every packet length mod 16 (the last text block in one beat or two, the ICV
    in one beat or two), UDP-encapsulated ESP over IPv6, and streams longer than the
    IP length."""
    sizes = [0, 4, 8, 12, 1, 200]
    inner = [plain_packet(4, size) for size in sizes * 4]
    v4 = _sealed_by_model({"version": 4}, inner)
    packets = []
    for index, packet in enumerate(v4):
        options = b"\x01" * (4 * (index // len(sizes)))
        header = bytearray(packet[:20])
        header[0] = 0x45 + len(options) // 4
        header[2:4] = struct.pack("!H", len(packet) + len(options))
        packets.append(_with_ipv4(bytes(header) + options + packet[20:]))
    assert {len(packet) % 16 for packet in packets} == {0, 4, 8, 12}
    packets[4] += b"\xee" * 5          # past the IP length, same beat
    packets[5] += b"\xee" * 40         # past the IP length, more beats
    _decapsulate(config("in", version=4), packets, stall=0.2)
    natt6 = _sealed_by_model({"version": 6, "natt": True}, inner[:4])
    _decapsulate(config("in", version=6, natt=True), natt6)


def _flip(packet, offset, mask=0x01):
    flipped = bytearray(packet)
    flipped[offset] ^= mask
    return bytes(flipped)


@pytest.mark.parametrize("sa_kwargs", [
    pytest.param({"version": 4}, id="v4"),
    pytest.param({"version": 6, "esn": True}, id="v6-esn"),
    pytest.param({"version": 4, "natt": True}, id="v4-natt"),
])
def test_decap_bad_packets_dropped_next_one_released(sa_kwargs):
    """Each bad packet gets the model's verdict, nothing of it is released, and the
    good packet after it comes out right."""
    start = 2**32 - 3 if sa_kwargs.get("esn") else 0
    sizes = [40, 0, 33, 100, 7, 1, 64, 90, 15, 16, 300, 2, 3, 4, 5, 6, 8]
    good = _sealed_by_model(sa_kwargs, [plain_packet(4 + 2 * (n % 2), size)
                                        for n, size in enumerate(sizes)], start=start)
    version = sa_kwargs["version"]
    e = esp_offset(good[0])
    bad = [
        _flip(good[0], e + 16 + 5, 0x10),            # ciphertext
        _flip(good[0], len(good[0]) - 1),            # ICV
        _flip(good[0], e + 4, 0x80),                 # sequence number (AAD)
        _flip(good[0], e + 15),                      # IV (nonce)
        good[0][:-1],                                # one byte short
        good[0][:e + 20],                            # cut in the ciphertext
    ]
    if version == 4:
        total = len(good[0])
        bad += [
            _flip(good[0], 10),                                          # header checksum
            _with_ipv4(good[0], b2=(total + 1) >> 8, b3=(total + 1) & 0xff),  # longer than the stream
            _with_ipv4(good[0], b2=(total - 1) >> 8, b3=(total - 1) & 0xff),  # ICV moves: auth
            _with_ipv4(good[0], b6=0x20),                                # more fragments
            _with_ipv4(good[0], b9=51),                                  # AH
            _with_ipv4(good[0][:e + 33], b2=0, b3=e + 33),               # ESP 1 byte too short
        ]
    else:
        plen = len(good[0]) - 40
        bad += [
            good[0][:4] + b"\0\0" + good[0][6:],                         # payload length 0
            good[0][:4] + struct.pack("!H", plen + 1) + good[0][6:],     # longer than the stream
            good[0][:6] + bytes([51]) + good[0][7:],                     # AH
        ]
    if sa_kwargs.get("natt"):
        bad += [
            _flip(good[0], 25),                                          # UDP length
            good[0][:28] + bytes(4) + good[0][32:],                      # non-ESP marker
            _with_ipv4(good[0], b9=PROTO_ESP),                           # not UDP-encapsulated
        ]
    packets = [packet for pair in zip(bad, good[1:], strict=False) for packet in pair]
    assert len(packets) == 2 * len(bad)
    # IPv6 and NAT-T with two banks: a bad packet overlaps the good one after it.
    banks = 2 if version == 6 or sa_kwargs.get("natt") else 1
    expected = _decapsulate(config("in", seq=start, **sa_kwargs), packets, banks=banks, stall=0.3,
                            seed=2)
    assert all(reason != "ok" for _output, reason in expected[::2])
    assert all(reason == "ok" for _output, reason in expected[1::2])


def test_decap_truncated_at_every_length():
    """A short packet cut at every length (0 included), each followed by a good one."""
    inner = [plain_packet(4, size) for size in [0] * 86]
    sealed = _sealed_by_model({"version": 4}, inner)
    victim = sealed[0]
    assert len(victim) < len(sealed) - 1
    packets = []
    for length, follower in zip(range(len(victim)), sealed[1:]):
        packets += [victim[:length], follower]
    expected = _decapsulate(config("in"), packets, gap=0.1)
    assert [reason for _output, reason in expected[::2]] == ["malformed"] * len(victim)


@pytest.mark.parametrize("sa_kwargs", [
    pytest.param({"version": 6}, id="v6"),
    pytest.param({"version": 4, "natt": True, "esn": True}, id="v4-natt-esn"),
])
def test_decap_truncated_long_packet(sa_kwargs):
    inner = [plain_packet(4, 600)] + [plain_packet(6, 10)] * 16
    sealed = _sealed_by_model(sa_kwargs, inner)
    victim = sealed[0]
    e = esp_offset(victim)
    lengths = [1, 15, 16, 39, 40, e, e + 8, e + 16, e + 17, e + 18, len(victim) // 2,
               len(victim) - 17, len(victim) - 16, len(victim) - 15, len(victim) - 1]
    packets = []
    for length, follower in zip(lengths, sealed[1:]):
        packets += [victim[:length], follower]
    expected = _decapsulate(config("in", **sa_kwargs), packets)
    assert [reason for _output, reason in expected[::2]] == ["malformed"] * len(lengths)


def test_decap_padding_trailer_inner_header_and_ecn():
    """What only a hand-made packet carries: padding right and wrong (up to 255
    bytes, over many blocks), next header 59 / unknown / wrong version, bad inner
    headers, TFC padding, RFC 6040 ECN."""
    v4_inner = plain_packet(4, 21)            # 49 bytes
    v6_inner = plain_packet(6, 9)             # 69 bytes
    long_pad = bytes(range(1, 256))
    bad_long = bytearray(long_pad)
    bad_long[130] ^= 0x40
    bad_checksum = bytearray(v4_inner)
    bad_checksum[11] ^= 1
    too_long = bytearray(v4_inner)
    too_long[3] += 1
    too_long[10:12] = b"\0\0"
    too_long[10:12] = struct.pack("!H", internet_checksum(bytes(too_long[:20])))
    plaintexts = [
        (esp_trailer(v4_inner, PROTO_IPV4), 0),
        (esp_trailer(v4_inner, PROTO_IPV4, b"\x01\x02\x04"), 0),         # wrong pad byte
        (esp_trailer(v4_inner, PROTO_IPV4, long_pad), 0),                  # 255 bytes, right
        (esp_trailer(v4_inner, PROTO_IPV4, bytes(bad_long)), 0),           # 255 bytes, one wrong
        (v4_inner + b"\x01\x02\x05\x04", 0),                            # pad length 5 > 2 present
        (b"\x01" + bytes([200, PROTO_IPV4]), 0),                       # pad length past the text
        (esp_trailer(b"", PROTO_NONE), 0),                                 # dummy, 2 bytes of text
        (esp_trailer(bytes(30), PROTO_NONE), 0),                           # dummy with data
        (esp_trailer(b"", PROTO_IPV4), 0),                                 # empty inner packet
        (esp_trailer(v4_inner, 99), 0),                                    # unknown next header
        (esp_trailer(v4_inner, PROTO_IPV6), 0),                            # wrong version
        (esp_trailer(v6_inner, PROTO_IPV6), 0),
        (esp_trailer(bytes(bad_checksum), PROTO_IPV4), 0),                 # inner checksum
        (esp_trailer(bytes(too_long), PROTO_IPV4), 0),                     # inner longer than payload
        (esp_trailer(v4_inner + b"\xaa" * 37, PROTO_IPV4), 0),             # TFC padding
        (esp_trailer(v6_inner + b"\xbb" * 20, PROTO_IPV6, long_pad), 0),   # TFC and long padding
        (esp_trailer(plain_packet(4, 21, tos=0x02), PROTO_IPV4), 0x03),    # CE onto ECT(0)
        (esp_trailer(plain_packet(4, 21, tos=0xa9), PROTO_IPV4), 0x03),    # CE onto ECT(1)
        (esp_trailer(plain_packet(4, 21, tos=0x00), PROTO_IPV4), 0x03),    # not ECN-capable
        (esp_trailer(plain_packet(4, 21, tos=0x02), PROTO_IPV4), 0x02),    # ECT outside
        (esp_trailer(plain_packet(6, 9, tos=0x01), PROTO_IPV6), 0xff),     # v6 inner: CE
        (esp_trailer(plain_packet(6, 9, tos=0x03), PROTO_IPV6), 0x03),
    ]
    packets = []
    for seq, (plaintext, tos) in enumerate(plaintexts, start=1):
        packets.append(seal_tunnel({"version": 4}, seq, plaintext, tos=tos))
        packets.append(seal_tunnel({"version": 4}, 1000 + seq, esp_trailer(v6_inner, PROTO_IPV6)))
    expected = _decapsulate(config("in"), packets, stall=0.3)
    reasons = [reason for _output, reason in expected[::2]]
    assert reasons == ["ok", "malformed", "ok", "malformed", "malformed", "malformed",
                       "dummy", "dummy", "malformed", "malformed", "malformed", "ok",
                       "malformed", "malformed", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok"]
    assert IP(expected[32][0]).tos == 0x03 and IP(expected[34][0]).tos == 0xab
    assert IPv6(expected[40][0]).tc == 0x03


def test_decap_ipv6_outer_ecn():
    packets = [seal_tunnel({"version": 6}, 1, esp_trailer(plain_packet(4, 50, tos=0x01), PROTO_IPV4),
                       tos=0x03)]
    expected = _decapsulate(config("in", version=6), packets)
    assert IP(expected[0][0]).tos == 0x03


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 1460), min_size=1, max_size=3),
       versions=st.lists(st.sampled_from([4, 6]), min_size=3, max_size=3),
       kwargs=st.sampled_from([{"version": 4}, {"version": 6}, {"version": 4, "natt": True},
                               {"version": 4, "esn": True}, {"version": 6, "esn": True}]),
       by_scapy=st.booleans(), stall=st.sampled_from([0.0, 0.5]), banks=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_decap_random_traffic(sizes, versions, kwargs, by_scapy, stall, banks, seed):
    """Payloads 0..1460 bytes, inner IPv4/IPv6 mixed, sealed by the model or scapy,
    ESN at the 2^32 boundary, input gaps and output back-pressure, one or two banks."""
    start = 2**32 - 2 if kwargs.get("esn") else 0
    inner = [plain_packet(version, size) for version, size in zip(versions, sizes)]
    seal = _sealed_by_scapy if by_scapy else _sealed_by_model
    packets = seal(kwargs, inner, start=start)
    expected = _decapsulate(config("in", seq=start, **kwargs), packets, banks=banks, stall=stall,
                            gap=stall / 2, seed=seed)
    assert [output for output, _ in expected] == inner


def test_decap_parameters():
    with pytest.raises(ValueError, match="buffer_blocks"):
        EspDecap(buffer_blocks=2)
    with pytest.raises(ValueError, match="buffer_blocks"):
        EspDecap(buffer_blocks=12.5)
    with pytest.raises(ValueError, match="banks"):
        EspDecap(banks=0)
    with pytest.raises(ValueError, match="banks"):
        EspDecap(banks=5)
