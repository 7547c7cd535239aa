# SPDX-License-Identifier: BSD-2-Clause
"""Own initiator against own responder over real UDP on 127.0.0.1 (host/ike/):
IKE SA and CHILD_SA with every DH group, both IKE ciphers and every ESP proposal;
CHILD_SA rekey from either side, IKE SA rekey (children survive), deletes,
liveness, retransmission (a relay drops the first reply), cookies, NAT-T (the
marker on every message; a NAT made by a relay that rewrites the source port).

Both sides' CHILD_SAs are checked against each other: the keys one side sends
with are the keys the other receives with (KEYMAT derived independently by each
daemon from its own exchange)."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time

import pytest

from espnic.host.ike import (
    ChildDown, ChildRekeyed, ChildRetired, ChildSwitched, ChildUp, IkeDaemon,
)
from espnic.host.ike.config import parse_ike_config

PSK = "correct horse battery staple"


def ike_config(name: str, other: str, *, ike=None, esp=None, natt="detect", port_natt=0,
               settings="", peer="") -> object:
    """The config of daemon ``name`` (inner net 10.1 for "a", 10.2 for "b") with one
    peer ``other`` on 127.0.0.1."""
    mine, theirs = ("1", "2") if name == "a" else ("2", "1")
    lines = [
        "[ike]", 'listen = ["127.0.0.1"]', "port = 0", f"port_natt = {port_natt}",
        "retransmit_timeout = 0.3", "half_open_timeout = 5", settings,
        "[[peer]]", f'name = "{other}"', 'address = "127.0.0.1"', 'psk_env = "PSK"',
        f'local_id = "gw-{name}.example"', f'remote_id = "gw-{other}.example"',
        f'local_ts = ["10.{mine}.0.0/16"]', f'remote_ts = ["10.{theirs}.0.0/16"]',
        f'natt = "{natt}"', peer]
    if ike:
        lines.append(f"ike_proposals = {list(ike)!r}".replace("'", '"'))
    if esp:
        lines.append(f"esp_proposals = {list(esp)!r}".replace("'", '"'))
    return parse_ike_config("\n".join(lines), environ={"PSK": PSK})


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Pair:
    """Daemon ``a`` (initiator of peer "b") and daemon ``b`` (responder), started, with
    the events each one reported."""

    def __init__(self, *, a_kw=None, b_kw=None, a_daemon=None, b_daemon=None, **config):
        self.events = {"a": [], "b": []}
        b_conf = ike_config("b", "a", **{**config, **(b_kw or {})})
        a_conf = ike_config("a", "b", **{**config, **(a_kw or {})})
        self.b = IkeDaemon(b_conf, on_child=self.events["b"].append, **(b_daemon or {}))
        self.a = IkeDaemon(a_conf, on_child=self.events["a"].append, **(a_daemon or {}))
        peer = a_conf.peer("b")
        peer.port = self.b.port
        peer.port_natt = self.b.port_natt
        self.a.config.peer("b")
        self.b.start()
        self.a.start()

    def up(self, timeout=10.0):
        self.a.initiate("b")
        wait_for(lambda: len(self.a.children()) == 1 and len(self.b.children()) == 1, timeout,
                 "the first CHILD_SA on both sides")
        return self

    def of(self, side, kind):
        return [e for e in self.events[side] if isinstance(e, kind)]

    def close(self):
        self.a.stop()
        self.b.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def assert_children_match(pair):
    """Each side's CHILD_SA: SPIs crossed, keys of one direction equal on both sides."""
    (ca,), (cb,) = pair.a.children(), pair.b.children()
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    up_a = _last_config(pair, "a", ca.spi_in)
    up_b = _last_config(pair, "b", cb.spi_in)
    assert up_a[1].key == up_b[0].key and up_a[1].salt == up_b[0].salt     # a -> b
    assert up_b[1].key == up_a[0].key and up_b[1].salt == up_a[0].salt     # b -> a
    assert up_a[0].key != up_a[1].key
    return ca, cb, up_a, up_b


def _last_config(pair, side, spi_in):
    for event in reversed(pair.events[side]):
        if isinstance(event, (ChildUp, ChildRekeyed)) and event.inbound.spi == spi_in:
            return event.inbound, event.outbound
    raise AssertionError(f"no event for SPI {spi_in:#x}")


IKE_SUITES = [f"{encr}-{group}" for group in ("modp2048", "ecp256", "x25519")
              for encr in ("aes128gcm16-prfsha256", "aes256-sha256")]


@pytest.mark.parametrize("ike", IKE_SUITES)
def test_ike_and_child_sa_with_each_group_and_cipher(ike):
    with Pair(ike=[ike]).up() as pair:
        (sa_a,), (sa_b,) = pair.a.ike_sas(), pair.b.ike_sas()
        assert sa_a["proposal"] == sa_b["proposal"] == ike
        assert (sa_a["spi_i"], sa_a["spi_r"]) == (sa_b["spi_i"], sa_b["spi_r"])
        ca, cb, up_a, up_b = assert_children_match(pair)
        assert ca.local_ts == ("10.1.0.0/16",) and ca.remote_ts == ("10.2.0.0/16",)
        assert ca.encap == "none" and up_a[0].encap == "none"     # no NAT, no marker
        assert up_a[1].src == "127.0.0.1" and up_a[1].dst == "127.0.0.1"


@pytest.mark.parametrize("esp", ["aes128gcm16", "aes256gcm16", "aes128gcm16-esn",
                                 "aes256gcm16-esn"])
def test_child_sa_with_each_esp_proposal(esp):
    # The responder prefers another proposal first: the initiator's only one is chosen.
    with Pair(a_kw={"esp": [esp]},
              b_kw={"esp": ["aes256gcm16", "aes128gcm16-esn", "aes128gcm16",
                            "aes256gcm16-esn"]}).up() as pair:
        ca, cb, up_a, up_b = assert_children_match(pair)
        assert ca.proposal == esp and cb.proposal == esp
        assert ca.esn == ("esn" in esp) and up_a[1].esn == up_b[0].esn == ca.esn
        assert len(bytes.fromhex(up_a[1].key)) == (32 if "256" in esp else 16)


def test_no_common_esp_proposal_leaves_ike_up_without_child():
    with Pair(a_kw={"esp": ["aes128gcm16"]}, b_kw={"esp": ["aes256gcm16"]}) as pair:
        pair.a.initiate("b")
        wait_for(lambda: [s["state"] for s in pair.a.ike_sas()] == ["established"])
        assert pair.a.children() == [] and pair.b.children() == []


def test_wrong_psk_fails_authentication():
    with Pair(b_kw={"peer": ""}) as pair:
        pair.b.config.peer("a").psk = b"another key"
        pair.a.initiate("b")
        wait_for(lambda: pair.a.ike_sas() == [] and pair.b.ike_sas() == [], what="both closed")
        assert pair.a.children() == [] and pair.events["a"] == []


@pytest.mark.parametrize("side", ["a", "b"])
def test_child_rekey_from_either_side(side):
    with Pair().up() as pair:
        before = assert_children_match(pair)[0]
        getattr(pair, side).rekey_child(before.spi_in if side == "a" else before.spi_out)
        wait_for(lambda: [len(pair.of(s, ChildRekeyed)) for s in "ab"] == [1, 1])
        after = assert_children_match(pair)[0]
        assert {after.spi_in, after.spi_out}.isdisjoint({before.spi_in, before.spi_out})
        event = pair.of("a", ChildRekeyed)[0]
        assert event.old.spi_in == before.spi_in and event.child.spi_in == after.spi_in
        assert pair.of("a", ChildDown) == [] and pair.of("b", ChildDown) == []
        # the old pair's delete exchange is answered and leaves one CHILD_SA a side
        time.sleep(0.1)
        assert len(pair.a.children()) == len(pair.b.children()) == 1


@pytest.mark.parametrize("side", ["a", "b"])
def test_old_inbound_sa_retired_after_the_delete_exchange(side):
    """After a CHILD_SA rekey each side keeps the old inbound SA (the peer may still
    send under it) until the peer's side of the DELETE exchange, then
    ``delete_rekeyed_delay`` (0 here): one ChildRetired a side, its old inbound SPI."""
    with Pair(settings="delete_rekeyed_delay = 0").up() as pair:
        before = pair.a.children()[0]
        getattr(pair, side).rekey_child(before.spi_in if side == "a" else before.spi_out)
        wait_for(lambda: [len(pair.of(s, ChildRetired)) for s in "ab"] == [1, 1],
                 what="the old inbound SAs retired")
        for s, old_in in (("a", before.spi_in), ("b", before.spi_out)):
            kinds = [type(event) for event in pair.events[s]]
            assert kinds.index(ChildRekeyed) < kinds.index(ChildRetired)
            (retired,) = pair.of(s, ChildRetired)
            assert retired.child.spi_in == old_in
            assert retired.reason == "the peer stopped using it"
        assert pair.of("a", ChildDown) == pair.of("b", ChildDown) == []
        assert len(pair.a.children()) == len(pair.b.children()) == 1


def test_rekey_responder_switches_outbound_at_the_initiators_delete():
    """b rekeys: b (initiator) sends under the new CHILD_SA at once; a (responder) only
    once b's DELETE of the old one came (before our response reached b, b may not
    have held the new SAs): ChildRekeyed, then ChildSwitched, on a only."""
    with Pair(settings="delete_rekeyed_delay = 0").up() as pair:
        before = pair.a.children()[0]
        pair.b.rekey_child(before.spi_out)
        wait_for(lambda: [len(pair.of(s, ChildRetired)) for s in "ab"] == [1, 1],
                 what="the DELETE exchange over")
        (rekeyed_a,), (rekeyed_b,) = pair.of("a", ChildRekeyed), pair.of("b", ChildRekeyed)
        assert (rekeyed_a.outbound_switched, rekeyed_b.outbound_switched) == (False, True)
        (switched,) = pair.of("a", ChildSwitched)
        assert (switched.old.spi_out, switched.child.spi_out) == (before.spi_out,
                                                                  rekeyed_a.child.spi_out)
        kinds = [type(event) for event in pair.events["a"]]
        assert kinds.index(ChildRekeyed) < kinds.index(ChildSwitched)
        assert pair.of("b", ChildSwitched) == []


def test_old_inbound_sa_kept_across_an_ike_rekey_until_the_ike_sa_goes():
    """A long ``delete_rekeyed_delay``: the old inbound SA is still kept after an IKE SA
    rekey (the new IKE SA has it), and retired when the IKE SA is deleted."""
    with Pair(settings="delete_rekeyed_delay = 600").up() as pair:
        before = pair.a.children()[0]
        pair.a.rekey_child(before.spi_in)
        wait_for(lambda: [len(pair.of(s, ChildRekeyed)) for s in "ab"] == [1, 1])
        old_ike = pair.a.ike_sas()[0]["spi_i"]
        pair.b.rekey_ike("a")
        wait_for(lambda: [s["spi_i"] for s in pair.a.ike_sas()] not in ([], [old_ike])
                 and len(pair.b.ike_sas()) == 1 and len(pair.a.ike_sas()) == 1,
                 what="one new IKE SA a side")
        assert pair.of("a", ChildRetired) == pair.of("b", ChildRetired) == []
        pair.a.delete_ike("b")
        wait_for(lambda: [len(pair.of(s, ChildRetired)) for s in "ab"] == [1, 1],
                 what="the old inbound SAs retired with the IKE SA")
        assert pair.of("a", ChildRetired)[0].child.spi_in == before.spi_in
        assert pair.of("b", ChildRetired)[0].child.spi_in == before.spi_out


@pytest.mark.parametrize("side", ["a", "b"])
def test_ike_rekey_keeps_the_children(side):
    with Pair().up() as pair:
        child = assert_children_match(pair)[0]
        old = pair.a.ike_sas()[0]
        getattr(pair, side).rekey_ike("b" if side == "a" else "a")
        wait_for(lambda: [s["spi_i"] for s in pair.a.ike_sas()] not in ([], [old["spi_i"]])
                 and len(pair.b.ike_sas()) == 1 and len(pair.a.ike_sas()) == 1,
                 what="one new IKE SA a side")
        new_a, new_b = pair.a.ike_sas()[0], pair.b.ike_sas()[0]
        assert (new_a["spi_i"], new_a["spi_r"]) == (new_b["spi_i"], new_b["spi_r"])
        assert new_a["initiator"] == (side == "a") and new_a["children"] == 1
        assert pair.a.children() == [child]
        # the new IKE SA works: a CHILD_SA rekey and a liveness check through it
        pair.b.rekey_child(child.spi_out)
        # both sides: b (the initiator) takes the new CHILD_SA after a (the responder)
        wait_for(lambda: [len(pair.of(s, ChildRekeyed)) for s in "ab"] == [1, 1])
        assert_children_match(pair)
        assert pair.of("a", ChildDown) == []


def test_delete_child_then_ike():
    with Pair().up() as pair:
        child = pair.a.children()[0]
        pair.b.delete_child(child.spi_out)
        wait_for(lambda: pair.a.children() == [] and pair.b.children() == [])
        (down_a,), (down_b,) = pair.of("a", ChildDown), pair.of("b", ChildDown)
        assert down_a.child.spi_in == child.spi_in and down_b.child.spi_in == child.spi_out
        assert len(pair.a.ike_sas()) == 1
        pair.a.delete_ike("b")
        wait_for(lambda: pair.a.ike_sas() == [] and pair.b.ike_sas() == [])


def test_delete_ike_takes_the_children_down():
    with Pair().up() as pair:
        pair.b.delete_ike("a")
        wait_for(lambda: pair.a.ike_sas() == [] and pair.b.ike_sas() == [])
        assert len(pair.of("a", ChildDown)) == len(pair.of("b", ChildDown)) == 1


class UdpRelay:
    """A UDP relay in front of ``target``: what a client sends to ``port`` goes on
    from a socket of the relay's own (a NAT: the target sees another source port),
    and the answers come back. ``drop(direction, data)`` may drop a datagram
    (direction "out": client to target, "back"); ``seen`` records every datagram."""

    def __init__(self, target, drop=None):
        self.target, self.drop, self.seen = target, drop, []
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.client = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ, "out")
        sel.register(self.back, selectors.EVENT_READ, "back")
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                data, source = key.fileobj.recvfrom(65535)
                self.seen.append((key.data, data))
                if self.drop and self.drop(key.data, data):
                    continue
                if key.data == "out":
                    self.client = source
                    self.back.sendto(data, self.target)
                elif self.client is not None:
                    self.front.sendto(data, self.client)
        sel.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.front.close()
        self.back.close()


def _exchange(data: bytes) -> int:
    return (data[4:] if data[:4] == bytes(4) else data)[18]


def test_retransmission_after_a_lost_reply():
    """The first IKE_SA_INIT and IKE_AUTH replies are lost (the relays are a NAT too:
    IKE_AUTH goes to the NAT-T port): the initiator sends again, the responder
    answers the repeat from its cache, one CHILD_SA comes up."""
    dropped = []

    def drop_first_replies(direction, data):
        kind = _exchange(data)
        if direction == "back" and kind in (34, 35) and kind not in dropped:
            dropped.append(kind)
            return True
        return False

    with Pair() as pair:
        plain = UdpRelay(("127.0.0.1", pair.b.port), drop_first_replies)
        natt = UdpRelay(("127.0.0.1", pair.b.port_natt), drop_first_replies)
        try:
            peer = pair.a.config.peer("b")
            peer.port, peer.port_natt = plain.port, natt.port
            pair.up()
            assert dropped == [34, 35]
            requests = [_exchange(d) for relay in (plain, natt)
                        for direction, d in relay.seen if direction == "out"]
            # each went at least twice (more when this machine is slow to answer)
            assert requests.count(34) >= 2 and requests.count(35) >= 2
            assert_children_match(pair)
            assert len(pair.of("b", ChildUp)) == 1       # one CHILD_SA, not two
        finally:
            plain.close()
            natt.close()


def test_liveness_check_is_answered_and_a_dead_peer_is_noticed(caplog):
    caplog.set_level(logging.DEBUG, "espnic.ike")
    with Pair(a_kw={"settings": "retransmit_tries = 2"}).up() as pair:
        pair.a.liveness("b")
        wait_for(lambda: pair.a._established("b")._pending is None, what="the answer")
        assert "sending INFORMATIONAL request 2" in caplog.text and len(pair.a.ike_sas()) == 1
        caplog.clear()
        pair.b.stop(delete=False)                     # the peer vanishes silently
        pair.a.liveness("b")
        # 0.3 s, then 0.6 s and 1.2 s after the two retransmissions
        wait_for(lambda: pair.a.ike_sas() == [], timeout=10, what="dead peer noticed")
        assert caplog.text.count("retransmitting INFORMATIONAL") == 2
        assert pair.a.children() == [] and len(pair.of("a", ChildDown)) == 1


def test_cookies_when_half_open_limit_is_zero(caplog):
    caplog.set_level(logging.INFO, "espnic.ike")
    with Pair(b_kw={"settings": "half_open_limit = 0"}).up() as pair:
        assert "asking for a COOKIE" in caplog.text
        assert "responder asked for a COOKIE" in caplog.text
        assert_children_match(pair)


def test_natt_marker_on_every_message_when_a_port_is_not_500():
    """natt = "auto" and ports other than 500: the NAT-T socket and the non-ESP marker
    from IKE_SA_INIT on, and the SAs UDP-encapsulated with the IKE ports."""
    with Pair(natt="auto") as pair:
        relay = UdpRelay(("127.0.0.1", pair.b.port_natt))
        try:
            pair.a.config.peer("b").port = relay.port
            pair.up()
            assert relay.seen and all(data[:4] == bytes(4) for _, data in relay.seen)
            assert {data[4 + 18] for _, data in relay.seen} >= {34, 35}
            ca, cb, up_a, up_b = assert_children_match(pair)
            assert ca.encap == cb.encap == "udp"
            assert up_a[1].encap == "udp" and up_a[1].sport == pair.a.port_natt
            assert up_a[1].dport == relay.port and up_b[0].dport == pair.b.port_natt
        finally:
            relay.close()


def test_nat_detected_floats_to_the_natt_port():
    """A NAT between the peers (relays rewrite the source port): both detect it from the
    NAT_DETECTION payloads, IKE_AUTH and later go over the NAT-T ports with the
    marker, and the CHILD_SAs are UDP-encapsulated."""
    with Pair(natt="detect") as pair:
        plain = UdpRelay(("127.0.0.1", pair.b.port))
        natt = UdpRelay(("127.0.0.1", pair.b.port_natt))
        try:
            peer = pair.a.config.peer("b")
            peer.port, peer.port_natt = plain.port, natt.port
            pair.up()
            assert {d[18] for _, d in plain.seen} == {34}           # IKE_SA_INIT only
            assert natt.seen and all(d[:4] == bytes(4) for _, d in natt.seen)
            assert pair.a.ike_sas()[0]["nat_detected"] and pair.b.ike_sas()[0]["nat_detected"]
            ca, cb, up_a, up_b = assert_children_match(pair)
            assert ca.encap == cb.encap == "udp"
            assert up_a[1].sport == pair.a.port_natt and up_a[1].dport == natt.port
            assert up_b[1].sport == pair.b.port_natt and up_b[1].dport == natt.back.getsockname()[1]
            # rekey over the floated path
            pair.b.rekey_child(cb.spi_in)
            wait_for(lambda: len(pair.of("a", ChildRekeyed)) == 1)
        finally:
            plain.close()
            natt.close()


def test_keys_never_in_the_log(caplog):
    caplog.set_level(logging.DEBUG, "espnic.ike")
    secrets = []
    with Pair(ike=["aes256-sha256-ecp256"]).up() as pair:
        pair.a.rekey_child(pair.a.children()[0].spi_in)
        wait_for(lambda: len(pair.of("b", ChildRekeyed)) == 1)
        pair.a.rekey_ike("b")
        wait_for(lambda: len(pair.a.ike_sas()) == 1 and pair.a.ike_sas()[0]["spi_i"] != 0)
        for daemon in (pair.a, pair.b):
            for session in daemon._unique_sessions():
                secrets += [k for k in session.keys.secrets() if k]
        for side in "ab":
            for event in pair.events[side]:
                if not isinstance(event, (ChildUp, ChildRekeyed)):
                    continue
                for config in (event.inbound, event.outbound):
                    secrets += [bytes.fromhex(config.key), bytes.fromhex(config.salt)]
        secrets.append(PSK.encode())
        text = caplog.text + "".join(repr(e) for side in "ab" for e in pair.events[side])
        text += repr(pair.a.children()) + repr(pair.a.ike_sas())
    assert len(secrets) > 20
    raw = "".join(r.getMessage() for r in caplog.records).encode("latin-1", "replace")
    for secret in secrets:
        assert secret.hex() not in text.lower() and secret.hex().upper() not in text
        assert secret not in raw
        assert secret.decode("latin-1") not in text


def test_unknown_critical_payload_in_a_request_is_refused():
    from espnic.host.ike.message import INFORMATIONAL, Payload, parse_notify
    with Pair().up() as pair:
        answers = []

        def send():
            session = pair.a._established("b")
            session._request(INFORMATIONAL, [Payload(200, b"??", critical=True)],
                             lambda msg, inner: answers.append(
                                 [parse_notify(p.body) for p in inner if p.type == 41]))
            pair.a._flush(session)
        pair.a.call(send)
        wait_for(lambda: answers, what="the answer")
        (notifies,) = answers
        assert [(n.type, n.data) for n in notifies] == [(1, bytes([200]))]
        assert len(pair.b.children()) == 1            # nothing else changed
