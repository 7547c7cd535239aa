# SPDX-License-Identifier: BSD-2-Clause
"""Reference ESP model (sim/model) against scapy's independent ESP, plus SA record checks."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.ipsec import ESP, SecurityAssociation, _ESPPlain
from scapy.packet import Raw

from espnic.hdl.engine import SA_RECORD, SaConfig, SaState, sa_layout
from espnic.sim.interop import scapy_sa
from espnic.sim.model import OUTER_TTL, EspModel, ReplayWindow, internet_checksum

from .esp_cases import (
    ENDPOINTS, HOSTS, INNER_TTL, KEY128, KEY256, SALT, SPI, config, ip_class, plain_packet,
)


def pair(**kw):
    """A model with the outbound SA in slot 0 and the matching inbound SA in slot 1."""
    model = EspModel()
    model.install(0, config("out", **kw))
    model.install(1, config("in", **kw))
    return model


MATRIX = list(itertools.product([4, 6], ["tunnel", "transport"], [False, True], [False, True]))
MATRIX_IDS = [f"ipv{v}-{m}-{'esn' if e else 'noesn'}-{'natt' if n else 'esp'}" for v, m, e, n in MATRIX]
# With ESN, start just below 2^32 so the packets cross into seq_hi = 1.
START = {False: 10, True: 2**32 - 2}


@pytest.mark.parametrize("version,mode,esn,natt", MATRIX, ids=MATRIX_IDS)
def test_model_encrypts_scapy_decrypts(version, mode, esn, natt):
    model = EspModel()
    model.install(0, config("out", version=version, mode=mode, esn=esn, natt=natt, seq=START[esn]))
    sa = scapy_sa(config("out", version=version, mode=mode, esn=esn, natt=natt))
    for n, size in enumerate([0, 1, 2, 3, 200]):
        seq = START[esn] + 1 + n
        packet = plain_packet(version, size)
        out, reason = model.process(0, packet)
        assert reason == "ok"
        parsed = ip_class(out)(out)
        esp = parsed[ESP]
        assert (esp.spi, esp.seq) == (SPI, seq & 0xffffffff)
        assert bytes(esp.data[:8]) == seq.to_bytes(8, "big")   # IV = sequence number
        if natt:
            assert parsed[UDP].sport == parsed[UDP].dport == 4500
            if version == 4:
                assert parsed[UDP].chksum == 0
        # RFC 4301 5.1.2.1: the tunnel header's TTL is constructed, not copied; transport
        # mode keeps the original header's. Either way the inner one is unchanged (below).
        outer_ttl = parsed.ttl if version == 4 else parsed.hlim
        if mode == "tunnel":
            assert (parsed.src, parsed.dst) == ENDPOINTS[version]
            assert outer_ttl == OUTER_TTL != INNER_TTL
        else:
            assert outer_ttl == INNER_TTL
        decrypted = sa.decrypt(parsed, esn=seq >> 32)
        assert bytes(decrypted) == packet
    assert model.counters(0)["packets"] == 5


@pytest.mark.parametrize("version,mode,esn,natt", MATRIX, ids=MATRIX_IDS)
def test_scapy_encrypts_model_decrypts(version, mode, esn, natt):
    model = pair(version=version, mode=mode, esn=esn, natt=natt, seq=START[esn])
    for n, size in enumerate([0, 5, 333]):
        seq = START[esn] + 1 + n
        packet = plain_packet(version, size, tos=0x2a)
        expected, reason = model.process(0, packet)
        assert reason == "ok"
        # Build scapy's tunnel header exactly as the model documents its outer header.
        src, dst = ENDPOINTS[version]
        header = (IP(src=src, dst=dst, tos=0x2a, id=seq & 0xffff, flags="DF", ttl=OUTER_TTL)
                  if version == 4 else IPv6(src=src, dst=dst, tc=0x2a, hlim=OUTER_TTL))
        sa = scapy_sa(config("in", version=version, mode=mode, esn=esn, natt=natt), tunnel_header=header)
        # scapy treats seq_num=0 / esn=0 arguments as "not given": set the SA's own state.
        sa.seq_num, sa.esn = seq & 0xffffffff, seq >> 32
        encrypted = bytes(sa.encrypt(ip_class(packet)(packet), iv=seq.to_bytes(8, "big")))
        if not (natt and version == 6):   # scapy writes UDP checksum 0 over IPv6, the model a real one
            assert encrypted == expected, "model output differs from scapy's byte for byte"
        out, reason = model.process(1, encrypted)
        assert reason == "ok"
        assert out == packet
    counters = model.counters(1)
    assert counters["packets"] == 3 and counters["bytes"] == sum(
        len(plain_packet(version, s)) for s in [0, 5, 333])


def test_aes256_and_ipv6_extension_headers_transport():
    model = pair(version=6, mode="transport", key=KEY256)
    src, dst = HOSTS[6]
    packet = bytes(IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / UDP() / Raw(b"x" * 40))
    out, reason = model.process(0, packet)
    assert reason == "ok"
    parsed = IPv6(out)
    assert parsed[IPv6ExtHdrHopByHop].nh == 50   # ESP goes after hop-by-hop
    assert bytes(scapy_sa(config("in", version=6, mode="transport", key=KEY256)).decrypt(parsed)) == packet
    assert model.process(1, out) == (packet, "ok")


def test_replay_duplicate_and_left_of_window():
    model = pair(window=64)
    sent = [model.process(0, plain_packet(4, 10))[0] for _ in range(70)]
    assert model.process(1, sent[5]) == (plain_packet(4, 10), "ok")
    assert model.process(1, sent[5]) == (None, "replay")
    assert model.process(1, sent[69])[1] == "ok"          # seq 70: window now 7..70
    assert model.process(1, sent[5])[1] == "replay"       # seq 6: left of the window
    assert model.process(1, sent[6])[1] == "ok"           # seq 7: inside, not seen yet
    assert model.process(1, sent[6])[1] == "replay"
    counters = model.counters(1)
    assert (counters["packets"], counters["replay_drop"], counters["auth_fail"]) == (3, 3, 0)


def test_window_moves_only_after_authentication():
    model = pair()
    sent = [model.process(0, plain_packet(4, 10))[0] for _ in range(3)]
    # A forged packet with a far-ahead sequence number must not move the window.
    forged = bytearray(sent[0])
    forged[24:28] = (2000).to_bytes(4, "big")
    assert model.process(1, bytes(forged)) == (None, "auth_fail")
    assert model.read_record(1).seq == 0
    for packet in sent:
        assert model.process(1, packet)[1] == "ok"
    assert model.read_record(1).seq == 3
    assert model.counters(1)["auth_fail"] == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_flipped_bit_is_dropped_and_next_packet_passes(data):
    natt = data.draw(st.booleans())
    model = pair(natt=natt)
    packets = [model.process(0, plain_packet(4, 40))[0] for _ in range(2)]
    bit = data.draw(st.integers(0, len(packets[0]) * 8 - 1))
    damaged = bytearray(packets[0])
    damaged[bit // 8] ^= 1 << (bit % 8)
    out, reason = model.process(1, bytes(damaged))
    if natt and bit // 8 in (20, 21, 22, 23, 26, 27):
        # UDP ports and checksum are not covered by the ICV; the model ignores them (documented).
        assert (out, reason) == (plain_packet(4, 40), "ok")
        return
    assert out is None
    assert reason in ("auth_fail", "malformed", "unknown_spi", "replay")
    if bit // 8 >= 20 + 8 * model.read_record(1).natt.encap.value + 8:   # past SPI and sequence number
        assert reason == "auth_fail"
    assert model.process(1, packets[1]) == (plain_packet(4, 40), "ok")
    assert model.counters(1)["packets"] == 1


def test_truncated_packets_are_dropped_then_full_packet_passes():
    model = pair(version=6, mode="transport", natt=True)
    out, _ = model.process(0, plain_packet(6, 30))
    for length in range(len(out)):
        assert model.process(1, out[:length])[0] is None
    assert model.process(1, out) == (plain_packet(6, 30), "ok")
    counters = model.counters(1)
    assert counters["malformed_drop"] + counters["auth_fail"] == len(out)


def test_wrong_padding_is_malformed():
    model = pair(mode="transport")
    sa = scapy_sa(config("in", mode="transport"))
    packet = IP(plain_packet(4, 3))   # UDP 11 bytes: 1 pad byte
    esp_plain = sa.crypt_algo.pad(_ESPPlain(spi=SPI, seq=1, iv=(1).to_bytes(8, "big"),
                                            data=bytes(packet[UDP]), nh=17))
    esp_plain.padding = b"\x07"
    encrypted = sa.crypt_algo.encrypt(sa, esp_plain, sa.crypt_key)
    header = IP(bytes(packet))
    header.remove_payload()
    header.proto, header.len, header.chksum = 50, None, None
    wire = bytes(header / encrypted)
    assert model.process(1, wire) == (None, "malformed")
    assert model.counters(1)["malformed_drop"] == 1
    assert model.process(1, wire) == (None, "replay")   # authentic: the window did move


def test_sequence_number_zero_and_unknown_spi():
    model = pair(mode="transport")
    sa = scapy_sa(config("in", mode="transport"))
    packet = IP(plain_packet(4, 8))
    sa.seq_num = 0   # scapy reads a seq_num=0 argument as "not given"
    zero = sa.encrypt(packet, iv=bytes(8))
    assert zero[ESP].seq == 0
    assert model.process(1, bytes(zero)) == (None, "replay")
    other = SecurityAssociation(ESP, spi=SPI + 1, crypt_algo="AES-GCM",
                                crypt_key=bytes.fromhex(KEY128 + SALT))
    assert model.process(1, bytes(other.encrypt(packet, seq_num=1))) == (None, "unknown_spi")
    assert model.engine_counters["unknown_spi"] == 1


def test_bad_ipv4_header_is_malformed():
    model = pair()
    packet = bytearray(plain_packet(4, 20))
    packet[10] ^= 1                                    # checksum
    assert model.process(0, bytes(packet)) == (None, "malformed")
    packet = bytearray(plain_packet(4, 20))
    packet[2:4] = (len(packet) + 1).to_bytes(2, "big")  # length beyond the buffer
    assert model.process(0, bytes(packet)) == (None, "malformed")
    assert model.counters(0)["malformed_drop"] == 2
    assert model.process(0, plain_packet(4, 20))[1] == "ok"


@pytest.mark.parametrize("esn", [False, True])
def test_sequence_exhaustion_never_wraps(esn):
    last = 2**64 - 1 if esn else 2**32 - 1
    model = EspModel()
    model.install(0, config("out", esn=esn, seq=last - 1))
    out, reason = model.process(0, plain_packet(4, 1))
    assert reason == "ok" and IP(out)[ESP].seq == last & 0xffffffff
    for _ in range(2):
        assert model.process(0, plain_packet(4, 1)) == (None, "seq_overflow")
    assert model.read_record(0).seq == last
    assert model.counters(0)["seq_overflow_drop"] == 2
    assert model.events == [(0, "hard_expired")]


def test_esn_crosses_32_bits():
    model = pair(esn=True, seq=2**32 - 3)
    sent = [model.process(0, plain_packet(4, 10))[0] for _ in range(5)]   # 2^32-2 .. 2^32+2
    for packet in reversed(sent):   # out of order across the boundary
        assert model.process(1, packet)[1] == "ok"
    assert model.read_record(1).seq == 2**32 + 2


def test_replay_window_esn_reconstruction():
    # RFC 4303 Appendix A, case B: window straddles a 2^32 boundary.
    window = ReplayWindow(64, (1 << 32) | 10, 0, esn=True)
    assert window.reconstruct(5) == (1 << 32) | 5
    assert window.reconstruct(2**32 - 20) == 2**32 - 20      # below the boundary, inside the window
    assert window.reconstruct(2**31) == (1 << 32) | 2**31    # far ahead
    # Case A.
    window = ReplayWindow(64, (3 << 32) | 1000, 0, esn=True)
    assert window.reconstruct(990) == (3 << 32) | 990
    assert window.reconstruct(5) == (4 << 32) | 5
    assert ReplayWindow(64, 5, 0, esn=True).reconstruct(2**32 - 1) is None


def test_lifetimes_soft_event_once_and_hard_drop():
    model = EspModel()
    model.install(0, config("out", lifetime={"packets_soft": 2, "packets_hard": 4}))
    results = [model.process(0, plain_packet(4, 10))[1] for _ in range(6)]
    assert results == ["ok"] * 4 + ["hard_expired"] * 2
    assert model.events == [(0, "soft_expired"), (0, "hard_expired")]
    counters = model.counters(0)
    assert (counters["packets"], counters["expired_drop"], counters["soft_expired"]) == (4, 2, 1)


def test_bytes_lifetime_and_draining():
    model = EspModel()
    size = len(plain_packet(4, 10))
    model.install(0, config("out", lifetime={"bytes_soft": size + 1, "bytes_hard": 10 * size}))
    assert model.process(0, plain_packet(4, 10))[1] == "ok" and model.events == []
    assert model.process(0, plain_packet(4, 10))[1] == "ok" and model.events == [(0, "soft_expired")]
    model.set_state(0, SaState.DRAINING)
    assert model.process(0, plain_packet(4, 10)) == (None, "hard_expired")


def test_record_round_trip_key_hygiene_and_delete():
    cfg = config("in", version=6, esn=True, natt=True, key=KEY256, window=128, seq=99,
                 lifetime={"bytes_hard": 10**9})
    record = cfg.to_record()
    assert record.key == int.from_bytes(bytes.fromhex(KEY256), "little")
    assert record.salt == int.from_bytes(bytes.fromhex(SALT), "little")
    assert SaConfig.from_record(int(record.as_bits())) == cfg
    small = config("out", version=4, window=64)
    assert SaConfig.from_record(small.to_record(sa_layout(64)), sa_layout(64)) == small
    model = EspModel()
    model.install(3, cfg)
    read = model.read_record(3)
    assert (read.key, read.salt, read.spi, read.seq) == (0, 0, SPI, 99)
    model.delete(3)
    assert model._records[3] == 0 and model.counters(3)["packets"] == 0
    assert model.process(3, plain_packet(4, 1)) == (None, "no_sa")
    with pytest.raises(ValueError, match="state is INVALID"):
        SaConfig.from_record(model.read_record(3))
    assert SA_RECORD["replay_bitmap"].width == 1024


@pytest.mark.parametrize("field,value,reason", [
    ("spi", 255, "out of range"),
    ("spi", 2**32, "out of range"),
    ("key", "0011", "16 or 32 bytes"),
    ("key", "zz" * 16, "not a hex string"),
    ("salt", "0102030405", "4 bytes"),
    ("direction", "both", "must be one of"),
    ("mode", "bridge", "must be one of"),
    ("encap", "tcp", "must be one of"),
    ("esn", "yes", "true or false"),
    ("window", 32, "out of range"),
    ("seq", 2**32, "out of range"),
    ("src", "192.0.2.300", "not an IPv4 or IPv6 address"),
    ("dst", "2001:db8::2", "IPv6 address with an IPv4 src"),
    ("lifetime", {"packets": 1}, "unknown key"),
    ("lifetime.packets_soft", {"packets_soft": 5, "packets_hard": 4}, "larger than"),
    ("engine", -1, "out of range"),
])
def test_bad_config_field_is_named(field, value, reason):
    fields = dict(spi=SPI, direction="out", key=KEY128, salt=SALT, src="192.0.2.1", dst="192.0.2.2")
    fields[field.split(".")[0]] = value
    with pytest.raises(ValueError, match=rf"'{field}'.*{reason}"):
        SaConfig(**fields)


def test_config_from_mapping_and_tunnel_needs_endpoints():
    with pytest.raises(ValueError, match="'src'.*required in tunnel mode"):
        SaConfig(spi=SPI, direction="out", key=KEY128, salt=SALT)
    with pytest.raises(ValueError, match="'tunnel_src'.*unknown field"):
        SaConfig.from_mapping({"spi": SPI, "tunnel_src": "1.2.3.4"})
    with pytest.raises(ValueError, match="'salt'.*missing"):
        SaConfig.from_mapping({"spi": SPI, "direction": "in", "key": KEY128})
    with pytest.raises(ValueError, match="'window'.*maximum window 64"):
        config("in", window=128).to_record(sa_layout(64))
    cfg = SaConfig.from_mapping({"spi": "0x1000", "direction": "IN", "mode": "transport",
                                 "key": "0x" + KEY128.upper(), "salt": SALT})
    assert (cfg.spi, cfg.direction, cfg.key) == (0x1000, "in", KEY128)


@settings(max_examples=30, deadline=None)
@given(version=st.sampled_from([4, 6]), mode=st.sampled_from(["tunnel", "transport"]),
       esn=st.booleans(), natt=st.booleans(), size=st.integers(0, 1400))
def test_property_round_trip(version, mode, esn, natt, size):
    model = pair(version=version, mode=mode, esn=esn, natt=natt)
    packet = plain_packet(version, size)
    out, reason = model.process(0, packet)
    assert reason == "ok"
    esp_len = len(out) - (len(packet) if mode == "tunnel" else 0) - (8 if natt else 0)
    assert 0 < esp_len
    assert model.process(1, out) == (packet, "ok")


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=120), slot=st.sampled_from([0, 1]))
def test_property_garbage_never_raises(garbage, slot):
    model = pair(natt=True)
    out, reason = model.process(slot, garbage)
    assert out is None or reason == "ok"
    if slot == 1:
        assert out is None


def test_internet_checksum():
    header = bytes(IP(src="1.2.3.4", dst="5.6.7.8"))[:20]
    assert internet_checksum(header) == 0


def test_ipv4_in_ipv6_tunnel_ecn_and_dummy():
    model = pair(version=6)
    packet = plain_packet(4, 50, tos=0x01)             # ECT(1)
    out, reason = model.process(0, packet)
    assert reason == "ok" and IPv6(out).nh == 50 and IPv6(out).tc == 0x01
    congested = bytearray(out)
    congested[1] |= 0x30                               # outer CE (traffic class bits 0-1)
    released, reason = model.process(1, bytes(congested))
    assert reason == "ok" and IP(released).tos == 0x03
    assert internet_checksum(released[:20]) == 0
    assert released[2:] != packet[2:] and IP(released)[UDP] == IP(packet)[UDP]
    # A dummy packet (next header 59) is authenticated and consumed, nothing released.
    sa = scapy_sa(config("in", version=6))
    esp_plain = sa.crypt_algo.pad(_ESPPlain(spi=SPI, seq=2, iv=(2).to_bytes(8, "big"), data=b"", nh=59))
    src, dst = ENDPOINTS[6]
    dummy = bytes(IPv6(src=src, dst=dst, nh=50) / sa.crypt_algo.encrypt(sa, esp_plain, sa.crypt_key))
    assert model.process(1, dummy) == (None, "dummy")
    assert model.read_record(1).seq == 2
