# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 wire format (host/ike/message.py) and proposal names (proposals.py): round
trips, strict lengths, unknown critical payloads, the responder's choice."""

import ipaddress
import struct

import pytest

from espnic.host.ike.message import (
    IKE_SA_INIT, PT_NONCE, PT_NOTIFY, PT_SA, IkeParseError, Payload, TrafficSelector,
    UnsupportedCriticalPayload, encode_delete, encode_plain, encode_sa, encode_ts,
    notify, parse_delete, parse_message, parse_notify, parse_sa, parse_ts,
)
from espnic.host.ike.proposals import (
    ProposalError, accepted, choose, parse_esp_proposal, parse_ike_proposal,
)


def _init(payloads):
    return encode_plain(0x0102030405060708, 0, IKE_SA_INIT, 0x08, 0, payloads)


def test_round_trip_of_a_message_and_its_payloads():
    suites = [parse_ike_proposal("aes128gcm16-prfsha256-ecp256"),
              parse_ike_proposal("aes256-sha256-modp2048")]
    props = [s.proposal(i + 1, b"") for i, s in enumerate(suites)]
    nonce = bytes(range(32))
    data = _init([Payload(PT_SA, encode_sa(props)), Payload(PT_NONCE, nonce),
                  notify(16388, b"x" * 20)])
    msg = parse_message(data)
    assert msg.header.spi_i == 0x0102030405060708 and msg.header.exchange == IKE_SA_INIT
    assert msg.header.length == len(data) and msg.sk_offset is None
    assert [p.type for p in msg.payloads] == [PT_SA, PT_NONCE, PT_NOTIFY]
    back = parse_sa(msg.payloads[0].body)
    assert [(p.num, p.transforms) for p in back] == [(p.num, p.transforms) for p in props]
    assert msg.find(PT_NONCE).body == nonce
    assert parse_notify(msg.payloads[2].body).data == b"x" * 20


def test_wrong_lengths_are_refused():
    good = _init([Payload(PT_NONCE, bytes(32))])
    for bad in (good[:27], good[:-1], good + b"\0",
                good[:24] + struct.pack("!I", len(good) + 4) + good[28:],
                good[:28] + good[28:30] + struct.pack("!H", 3) + good[32:],
                good[:28] + good[28:30] + struct.pack("!H", 40) + good[32:]):
        with pytest.raises(IkeParseError):
            parse_message(bad)
    with pytest.raises(IkeParseError):
        parse_message(bytes(8) + good[8:])                 # SPIi zero
    with pytest.raises(IkeParseError):
        parse_message(good[:17] + b"\x10" + good[18:])     # IKEv1


def test_unknown_payloads_skipped_unless_critical():
    for critical, expect in ((False, [PT_NONCE]), (True, None)):
        data = _init([Payload(200, b"abc", critical), Payload(PT_NONCE, bytes(32))])
        if expect is None:
            with pytest.raises(UnsupportedCriticalPayload) as error:
                parse_message(data)
            assert error.value.payload_type == 200
        else:
            assert [p.type for p in parse_message(data).payloads] == expect


def test_sa_payload_lengths_checked():
    body = encode_sa([parse_esp_proposal("aes128gcm16").proposal(1, b"\0\0\1\0")])
    for cut in range(1, len(body)):
        with pytest.raises(IkeParseError):
            parse_sa(body[:cut])


def test_traffic_selectors_and_deletes():
    ts = [TrafficSelector.from_network("10.1.0.0/16"),
          TrafficSelector(ipaddress.ip_address("2001:db8::"), ipaddress.ip_address("2001:db8::ff"),
                          17, 500, 4500)]
    assert parse_ts(encode_ts(ts)) == ts
    assert str(ts[0]) == "10.1.0.0/16"
    both = ts[0].intersect(TrafficSelector.from_network("10.1.2.0/24"))
    assert str(both) == "10.1.2.0/24"
    assert ts[0].intersect(TrafficSelector.from_network("10.2.0.0/16")) is None
    spis = [struct.pack("!I", 0x1000), struct.pack("!I", 0x2000)]
    assert parse_delete(encode_delete(3, spis)) == (3, spis)
    with pytest.raises(IkeParseError):
        parse_delete(encode_delete(3, spis)[:-1])


def test_proposal_names_and_choice():
    ours = [parse_esp_proposal("aes256gcm16-esn"), parse_esp_proposal("aes128gcm16")]
    # strongSwan-like offer: one proposal, several key sizes, no ESN transform.
    offer = parse_sa(encode_sa([parse_esp_proposal("aes128gcm16").proposal(1, b"\1\2\3\4")]))
    prop, suite = choose(offer, ours)
    assert suite.name == "aes128gcm16" and not suite.esn
    assert accepted(suite.proposal(1, b"\1\2\3\4"), ours) is suite
    assert choose(offer, [parse_esp_proposal("aes256gcm16")]) is None
    ike = parse_ike_proposal("aes256-sha256-modp2048")
    assert [t.type for t in ike.transforms] == [1, 2, 3, 4]
    for bad in ("aes128gcm16-sha1-modp1024", "3des-sha256-modp2048", "aes128gcm16"):
        with pytest.raises(ProposalError):
            parse_ike_proposal(bad)
    with pytest.raises(ProposalError, match="PFS"):
        parse_esp_proposal("aes128gcm16-ecp256")
