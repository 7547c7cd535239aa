# SPDX-License-Identifier: BSD-2-Clause
"""Malformed IKE messages (hypothesis): random bytes, valid messages truncated,
mutated, with wrong lengths, with unknown critical payloads, with a broken ICV, at a
responder and at an initiator in the middle of IKE_SA_INIT. Nothing escapes the
daemon (no internal error logged), it answers a valid exchange afterwards, and the
half-open IKE SAs the garbage made are gone after their timeout."""

from __future__ import annotations

import logging
import socket
import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from espnic.host.ike import IkeDaemon
from espnic.host.ike.message import HEADER_LEN, parse_message
from espnic.host.ike.session import IkeSession
from tests.test_ike_exchange import Pair, ike_config, wait_for

HALF_OPEN_TIMEOUT = 5.0


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _mutations(valid: list[bytes]):
    """Strategies of malformed messages made from ``valid`` ones."""
    base = st.sampled_from(valid)

    def truncate(data, n):
        return data[:n % len(data)]

    def flip(data, i, bit):
        out = bytearray(data)
        out[i % len(out)] ^= 1 << bit
        return bytes(out)

    def length(data, i, value):
        # a payload's (or the header's) length field set to something else
        out = bytearray(data)
        pos = min(HEADER_LEN + 2 + 4 * (i % 8), len(out) - 2) if i % 3 else 24
        if pos == 24:
            out[24:28] = struct.pack("!I", value)
        else:
            out[pos:pos + 2] = struct.pack("!H", value & 0xFFFF)
        return bytes(out)

    def critical(data, ptype, body):
        # an unknown payload, marked critical, first in the chain
        out = bytearray(data)
        first = out[16]
        out[16] = ptype
        out[HEADER_LEN:HEADER_LEN] = bytes([first, 0x80]) + struct.pack("!H", 4 + len(body)) + body
        out[24:28] = struct.pack("!I", len(out))
        return bytes(out)

    # A length field set to the value it had, say, gives the valid message back: that is
    # not a malformed one (it was taken, and the run failed, 1 in 10 times).
    return st.one_of(
        st.binary(max_size=300),
        st.builds(truncate, base, st.integers(0, 4096)),
        st.builds(flip, base, st.integers(0, 4096), st.integers(0, 7)),
        st.builds(length, base, st.integers(0, 64), st.integers(0, 0xFFFFFFFF)),
        st.builds(critical, base, st.integers(49, 52) | st.integers(54, 255),
                  st.binary(max_size=8)),
        st.builds(lambda d, tail: d + tail, base, st.binary(min_size=1, max_size=16)),
    ).filter(lambda data: data not in valid)


def _capture_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def _no_internal_errors(caplog):
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_responder_survives_malformed_messages(caplog):
    caplog.set_level(logging.INFO, "espnic.ike")
    clock = FakeClock()
    with Pair(b_kw={"settings": ""}, b_daemon={"clock": clock}) as pair:
        b = pair.b
        # Valid messages from a sans-IO initiator at a port of ours: its IKE_SA_INIT
        # request, b's answer to it, and the IKE_AUTH request that follows.
        own = _capture_socket()
        here = own.getsockname()
        peer = ike_config("a", "b").peer("b")
        session = IkeSession(peer, b.config, initiator=True, local=here,
                             remote=("127.0.0.1", b.port))
        session.initiate()
        init = session.outbox.pop()
        b.receive(init, here)
        reply = own.recv(65535)
        session.handle(parse_message(reply))
        auth = session.outbox.pop()
        baseline = b.half_open()
        assert baseline == 1

        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(_mutations([init, auth]), st.booleans())
        def throw(data, natt):
            b.receive(b"\0\0\0\0" + data if natt else data, here, natt=natt)

        throw()
        _no_internal_errors(caplog)
        # The half-open IKE SA whose IKE_AUTH the garbage tried to break answers the
        # real one (or, if a mutation happened to leave it valid, answers it again).
        b.receive(auth, here)
        while True:           # replies to the garbage may still be on their way
            data = own.recv(65535)
            data = data[4:] if data[:4] == bytes(4) else data
            if data[:16] == auth[:16] and data[18] == 35 and data[19] & 0x20:  # its response
                break
        session.handle(parse_message(data))
        assert session.established and len(session.children) == 1
        # a real exchange still works, and every half-open IKE SA goes at its timeout
        pair.a.initiate("b")
        wait_for(lambda: len(pair.a.children()) == 1 and len(b.children()) == 2)
        clock.now += HALF_OPEN_TIMEOUT + 1
        b.call(b.poll)
        assert b.half_open() == 0
        assert len(b.children()) == 2
        own.close()
    _no_internal_errors(caplog)


def _drain(sock):
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65535)
    except BlockingIOError:
        pass
    sock.setblocking(True)


def _recv_exchange(sock, exchange: int, spi_i: int) -> bytes:
    """The next datagram on ``sock`` of ``exchange`` for the IKE SA of ``spi_i`` (older
    ones, answers to garbage, may still arrive)."""
    while True:
        data = sock.recv(65535)
        if data[:8] == spi_i.to_bytes(8, "big") and data[18] == exchange:
            return data


def _answer(a, there, init):
    """A sans-IO responder with b's config, and its answer to ``init``."""
    responder = IkeSession(ike_config("b", "a").peer("a"), a.config, initiator=False,
                           local=there, remote=("127.0.0.1", a.port))
    responder.on_init_request(parse_message(init))
    return responder, responder.outbox.pop()


def test_initiator_mid_exchange_survives_malformed_replies(caplog):
    """IKE_SA_INIT replies are not integrity-protected (RFC 7296 section 2.4): a mutated
    one may be taken, and the IKE SA then dies at IKE_AUTH or at its half-open timeout.
    IKE_AUTH replies are: no mutation of one gets through."""
    caplog.set_level(logging.INFO, "espnic.ike")
    clock = FakeClock()
    responder_side = _capture_socket()
    there = responder_side.getsockname()
    conf = ike_config("a", "b")
    conf.peer("b").port = there[1]
    a = IkeDaemon(conf, clock=clock)
    a.start()
    try:
        a.initiate("b")
        _, valid_init = _answer(a, there, responder_side.recv(65535))

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(_mutations([valid_init]))
        def throw_init(data):
            a.receive(data, there)

        throw_init()
        _no_internal_errors(caplog)
        assert [s["state"] for s in a.ike_sas()] in (["init"], ["auth"])
        clock.now += HALF_OPEN_TIMEOUT + 1
        a.call(a.poll)
        assert a.ike_sas() == []                          # gone at its half-open timeout

        _drain(responder_side)
        spi_i = a.initiate("b").spi_i
        responder, valid_init = _answer(a, there, _recv_exchange(responder_side, 34, spi_i))
        a.receive(valid_init, there)
        auth = parse_message(_recv_exchange(responder_side, 35, spi_i))
        assert auth.header.exchange == 35 and auth.header.msg_id == 1
        responder.handle(auth)
        valid_auth = responder.outbox.pop()

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(_mutations([valid_auth]))
        def throw_auth(data):
            a.receive(data, there)
            assert [s["state"] for s in a.ike_sas()] == ["auth"]

        throw_auth()
        _no_internal_errors(caplog)
        a.receive(valid_auth, there)
        assert len(a.children()) == 1 and a.ike_sas()[0]["state"] == "established"
    finally:
        a.stop(delete=False)
        responder_side.close()
    _no_internal_errors(caplog)
