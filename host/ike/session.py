# SPDX-License-Identifier: BSD-2-Clause
"""One IKE SA and its CHILD_SAs as a sans-IO state machine (RFC 7296).

:class:`IkeSession` takes parsed messages (:meth:`~IkeSession.handle`), commands
(:meth:`~IkeSession.initiate`, :meth:`~IkeSession.rekey_child`, ...) and the
time (:meth:`~IkeSession.tick`), and leaves what to send in ``outbox`` (IKE
messages, without the NAT-T marker) and what happened in ``events``
(:class:`ChildUp`, :class:`ChildRekeyed`, :class:`ChildSwitched`, :class:`ChildRetired`,
:class:`ChildDown`, :class:`IkeUp`, :class:`IkeRekeyed`, :class:`IkeDown`). No sockets,
no threads; the clock and the random source are injected.

Window size 1 both ways: one request of ours outstanding at a time (the others
queue), and the peer's last response kept for its retransmissions. Child SAs are
tunnel mode ESP with ENCR_AES_GCM_16, without PFS.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass, field

from ...hdl.engine.sa import NATT_PORT, SPI_MIN, SaConfig
from . import crypto
from .message import (
    AUTH_SHARED_KEY_MIC, CREATE_CHILD_SA, ERROR_NOTIFY_MAX, EXCHANGES, FLAG_INITIATOR,
    FLAG_RESPONSE, IKE_AUTH, IKE_SA_INIT, INFORMATIONAL, N_AUTHENTICATION_FAILED,
    N_CHILD_SA_NOT_FOUND, N_COOKIE, N_INVALID_KE_PAYLOAD, N_INVALID_SYNTAX,
    N_NAT_DETECTION_DESTINATION_IP, N_NAT_DETECTION_SOURCE_IP, N_NO_PROPOSAL_CHOSEN,
    N_REKEY_SA, N_TEMPORARY_FAILURE, N_TS_UNACCEPTABLE, N_UNSUPPORTED_CRITICAL_PAYLOAD,
    PROTO_ESP, PROTO_IKE, PT_AUTH, PT_DELETE, PT_IDI, PT_IDR, PT_KE, PT_NONCE, PT_NOTIFY,
    PT_SA, PT_TSI, PT_TSR, IkeParseError, Message, Payload, UnsupportedCriticalPayload,
    encode_auth, encode_chain, encode_delete, encode_id, encode_ke, encode_plain, encode_sa,
    encode_ts, identity, identity_text, notify, parse_auth, parse_chain, parse_delete,
    parse_id, parse_ke, parse_nonce, parse_notify, parse_sa, parse_ts,
)
from .proposals import Suite, accepted, choose

log = logging.getLogger("espnic.ike")

NONCE_LEN = 32
#: Seconds a rekey's responder sends under the old CHILD_SA waiting for the
#: initiator's DELETE of it (which it sends at once) before it switches anyway.
SWITCH_WITHOUT_DELETE = 10.0


# -- what a session reports -----------------------------------------------------------------

@dataclass(frozen=True)
class ChildInfo:
    """An established CHILD_SA as anyone may see it (no keys)."""
    peer: str
    spi_in: int
    spi_out: int
    proposal: str
    local_ts: tuple
    remote_ts: tuple
    esn: bool
    encap: str
    ports: tuple | None          # (local, remote) UDP ports when encap is "udp"


@dataclass
class ChildUp:
    peer: str
    child: ChildInfo
    inbound: SaConfig
    outbound: SaConfig


@dataclass
class ChildRekeyed:
    """``child`` replaces ``old``. ``outbound_switched``: traffic goes out under the new
    outbound SA from now on (we initiated the rekey); False for the rekey's
    responder, which sends under the old one until :class:`ChildSwitched`."""
    peer: str
    old: ChildInfo
    child: ChildInfo
    inbound: SaConfig
    outbound: SaConfig
    outbound_switched: bool = True


@dataclass
class ChildSwitched:
    """The responder of a rekey sends under ``child``'s outbound SA from now on, and
    ``old``'s goes: the initiator has sent the DELETE of ``old``, so it holds the new
    SAs (before our response reached it, it may not have: what we sent under the new
    SA then would be lost). Also when no DELETE came within
    :data:`SWITCH_WITHOUT_DELETE` seconds, or before ``child`` is rekeyed again."""
    peer: str
    old: ChildInfo
    child: ChildInfo


@dataclass
class ChildRetired:
    """The inbound SA of ``child``, a CHILD_SA replaced by a rekey, may go now.

    A rekey replaces the outbound SA at once but keeps the old inbound one: the peer
    sends under it until it has handled the DELETE exchange (RFC 7296 section 2.8),
    and what it sent before may still be on its way. It is retired
    ``delete_rekeyed_delay`` seconds after the peer's side of that exchange (its
    response to our DELETE, or its own DELETE), at the old SA's lifetime if no DELETE
    comes, or at once when the IKE SA goes."""
    peer: str
    child: ChildInfo
    reason: str


@dataclass
class ChildDown:
    peer: str
    child: ChildInfo
    reason: str
    inbound: SaConfig | None = None
    outbound: SaConfig | None = None


@dataclass
class IkeUp:
    session: "IkeSession"


@dataclass
class IkeRekeyed:
    old: "IkeSession"
    new: "IkeSession"


@dataclass
class IkeDown:
    session: "IkeSession"
    reason: str


@dataclass
class ChildSa:
    spi_in: int
    spi_out: int
    suite: Suite
    local_ts: list
    remote_ts: list
    key_in: bytes = field(repr=False)
    salt_in: bytes = field(repr=False)
    key_out: bytes = field(repr=False)
    salt_out: bytes = field(repr=False)
    rekey_at: float = 0.0
    expire_at: float = 0.0
    rekeying: bool = False


@dataclass
class _Request:
    msg_id: int
    exchange: int
    payloads: list
    on_reply: object
    data: bytes = b""
    tries: int = 0
    deadline: float = 0.0


class SessionFailed(Exception):
    """The exchange cannot go on; the IKE SA is closed with this reason."""


class IkeSession:
    """One IKE SA with ``peer`` (a :class:`~espnic.host.ike.config.PeerConfig`).

    ``local``/``remote``: (host, port) of the path; ``natt``: the path carries the
    non-ESP marker (the ESP SAs get UDP encapsulation); ``natt_port``: our NAT-T
    port to float to when a NAT is detected. ``settings``: the daemon's
    :class:`~espnic.host.ike.config.IkeConfig` (retransmission, half-open timeout).
    ``new_spi()``: a fresh inbound ESP SPI."""

    def __init__(self, peer, settings, *, initiator: bool, local, remote, natt: bool = False,
                 natt_port: int | None = None, rng=os.urandom, clock=time.monotonic,
                 new_spi=None):
        self.peer, self.settings = peer, settings
        self.initiator = initiator            # original initiator of this IKE SA
        self.local, self.remote, self.natt = tuple(local), tuple(remote), natt
        self.natt_port = natt_port
        self.nat_detected = False
        self.marker = natt                    # the daemon's: IKE messages carry the marker
        self.arrived = None                   # the daemon's: (local, remote, marker) of a message
        self.rng, self.clock = rng, clock
        self._new_spi = new_spi or self._random_spi
        self.spi_i = self._random_ike_spi() if initiator else 0
        self.spi_r = 0
        self.state = "new"                    # new, init, auth, established, closed
        self.outbox: list[bytes] = []
        self.events: list = []
        self.children: list[ChildSa] = []
        self._rekeyed_out: dict[int, int] = {}  # old spi_out -> old spi_in, until deleted
        # Old spi_in -> [when, ChildInfo, why]: inbound SAs of rekeyed CHILD_SAs kept for
        # the peer's late ESP (see ChildRetired). Shared with the IKE SA a rekey makes.
        self._retiring: dict[int, list] = {}
        # Old spi_out -> [when, old ChildInfo, new ChildInfo]: rekeys we answered whose
        # outbound switch waits for the initiator's DELETE (see ChildSwitched). Shared too.
        self._switching: dict[int, list] = {}
        self._next_id = 0
        self._peer_id = 0
        self._last_response: tuple[int, bytes] | None = None
        self._pending: _Request | None = None
        self._queue: list[_Request] = []
        now = clock()
        self.created = now
        self._half_open_until = now + settings.half_open_timeout
        self._last_heard = now
        self.rekey_at = self.expire_at = float("inf")
        self._dying_at = float("inf")         # an old SA after a rekey waits this long
        self._silent = False                  # closed after a rekey: no ChildDown
        self.keys = None
        self._cookie = b""
        self._dh = None
        self._ni = self._nr = b""
        self._msg1 = self._msg2 = b""
        self._suite: Suite | None = None
        self._send_cipher = self._recv_cipher = None

    def __repr__(self):
        return (f"IkeSession(peer={self.peer.name!r}, spis={self.spi_i:016x}/{self.spi_r:016x}, "
                f"state={self.state})")

    # -- ids ------------------------------------------------------------------------------

    def _random_ike_spi(self) -> int:
        return int.from_bytes(self.rng(8), "big") | 1 << 63

    def _random_spi(self) -> int:
        return (int.from_bytes(self.rng(4), "big") & 0x7FFFFFFF) | 0x40000000

    @property
    def our_spi(self) -> int:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def name(self) -> str:
        return f"{self.peer.name}[{self.spi_i:016x}]"

    @property
    def established(self) -> bool:
        return self.state == "established"

    @property
    def half_open(self) -> bool:
        return self.state in ("new", "init", "auth")

    # -- commands -------------------------------------------------------------------------

    def initiate(self):
        """Start IKE_SA_INIT (initiator)."""
        self.state = "init"
        self._ni = self.rng(NONCE_LEN)
        self._dh = crypto.DhKey(self.peer.ike_proposals[0].dh_group)
        self._send_init()

    def rekey_child(self, spi_in: int) -> bool:
        child = self._child(spi_in=spi_in)
        if child is None or child.rekeying or not self.established:
            return False
        self._switch("rekeyed again", new_in=child.spi_in)
        child.rekeying = True
        new_in = self._new_spi()
        ni = self.rng(NONCE_LEN)
        payloads = [notify(N_REKEY_SA, protocol=PROTO_ESP, spi=struct.pack("!I", spi_in)),
                    Payload(PT_SA, self._esp_sa(new_in)), Payload(PT_NONCE, ni),
                    Payload(PT_TSI, encode_ts(child.local_ts)),
                    Payload(PT_TSR, encode_ts(child.remote_ts))]

        def reply(msg, inner):
            child.rekeying = False
            if self._child(spi_in=spi_in) is not child:
                return
            new = self._child_from_response(inner, new_in, ni, child.local_ts, child.remote_ts)
            if new is None:
                child.rekey_at = self.clock() + 5 + self.rng(1)[0] / 32
                return
            self._replace_child(child, new)
            self._request(INFORMATIONAL, [Payload(PT_DELETE, encode_delete(
                PROTO_ESP, [struct.pack("!I", child.spi_in)]))],
                lambda m, i: self._peer_done_with(child.spi_in))
        self._request(CREATE_CHILD_SA, payloads, reply)
        return True

    def create_child(self):
        """A further CHILD_SA with the configured selectors (CREATE_CHILD_SA)."""
        new_in, ni = self._new_spi(), self.rng(NONCE_LEN)
        payloads = [Payload(PT_SA, self._esp_sa(new_in)), Payload(PT_NONCE, ni),
                    Payload(PT_TSI, encode_ts(self.peer.local_ts)),
                    Payload(PT_TSR, encode_ts(self.peer.remote_ts))]

        def reply(msg, inner):
            child = self._child_from_response(inner, new_in, ni, self.peer.local_ts,
                                              self.peer.remote_ts)
            if child is not None:
                self._add_child(child)
        self._request(CREATE_CHILD_SA, payloads, reply)

    def rekey_ike(self) -> bool:
        if not self.established or self._dying_at != float("inf"):
            return False
        self.rekey_at = float("inf")
        new_spi = self._random_ike_spi()
        ni = self.rng(NONCE_LEN)
        dh = crypto.DhKey(self._suite.dh_group)
        props = [s.proposal(i + 1, struct.pack("!Q", new_spi))
                 for i, s in enumerate(self.peer.ike_proposals)]
        payloads = [Payload(PT_SA, encode_sa(props)), Payload(PT_NONCE, ni),
                    Payload(PT_KE, encode_ke(dh.group, dh.public))]

        def reply(msg, inner):
            sa, nonce, ke = (_find(inner, t) for t in (PT_SA, PT_NONCE, PT_KE))
            if sa is None or nonce is None or ke is None:
                log.warning("%s: IKE_SA rekey refused (%s)", self.name, _errors(inner))
                self.rekey_at = self.clock() + 10
                return
            chosen = parse_sa(sa.body)
            suite = accepted(chosen[0], self.peer.ike_proposals) if len(chosen) == 1 else None
            group, public = parse_ke(ke.body)
            if suite is None or len(chosen[0].spi) != 8 or group != dh.group:
                raise SessionFailed("IKE_SA rekey answered with a proposal we did not make")
            nr = parse_nonce(nonce.body)
            spi_r, = struct.unpack("!Q", chosen[0].spi)
            shared = dh.exchange(public)
            self._rekeyed(suite, True, new_spi, spi_r, ni, nr, shared)
        self._request(CREATE_CHILD_SA, payloads, reply)
        return True

    def delete_child(self, spi_in: int) -> bool:
        child = self._child(spi_in=spi_in)
        if child is None:
            return False
        self._remove_child(child, "deleted")
        self._request(INFORMATIONAL, [Payload(PT_DELETE, encode_delete(
            PROTO_ESP, [struct.pack("!I", spi_in)]))], lambda m, i: None)
        return True

    def delete(self, reason: str = "deleted"):
        """Delete the IKE SA (and so its CHILD_SAs)."""
        if self.state == "closed":
            return
        if not self.established:
            self._close(reason)
            return
        for child in list(self.children):
            self._remove_child(child, reason)
        self._retire_all(reason)
        self.state = "deleting"
        self._queue.clear()
        self._pending = None
        self._request(INFORMATIONAL, [Payload(PT_DELETE, encode_delete(PROTO_IKE, []))],
                      lambda m, i: self._close(reason))

    def liveness(self):
        """An empty INFORMATIONAL request (dead peer detection)."""
        if self.established and self._pending is None and not self._queue:
            self._request(INFORMATIONAL, [], lambda m, i: None)

    # -- time -----------------------------------------------------------------------------

    def next_deadline(self) -> float:
        times = [self.rekey_at, self.expire_at, self._dying_at]
        if not self._silent:
            times += [when for when, _, _ in self._retiring.values()]
            times += [when for when, _, _ in self._switching.values()]
        if self._pending is not None:
            times.append(self._pending.deadline)
        if self.half_open:
            times.append(self._half_open_until)
        if self.established:
            if self.peer.dpd_delay:
                times.append(self._last_heard + self.peer.dpd_delay)
            for child in self.children:
                times += [child.rekey_at, child.expire_at]
        return min(times)

    def tick(self):
        now = self.clock()
        if self.state == "closed":
            return
        try:
            self._tick(now)
        except SessionFailed as error:
            self._fail(str(error))

    def _tick(self, now):
        p = self._pending
        if p is not None and now >= p.deadline:
            if p.tries >= self.settings.retransmit_tries:
                raise SessionFailed(f"no answer to {EXCHANGES.get(p.exchange)} after "
                                    f"{p.tries} tries")
            p.tries += 1
            p.deadline = now + self.settings.retransmit_timeout * 2 ** p.tries
            log.debug("%s: retransmitting %s request %d (try %d)", self.name,
                      EXCHANGES.get(p.exchange), p.msg_id, p.tries + 1)
            self.outbox.append(p.data)
        self._retire_due(now)
        self._switch_due(now)
        if self.half_open and now >= self._half_open_until:
            raise SessionFailed("half-open IKE SA timed out")
        if now >= self._dying_at:
            self._silent = True
            self._close("replaced by a rekeyed IKE SA")
            return
        if not self.established:
            return
        if now >= self.expire_at:
            self.delete("IKE SA lifetime expired")
            return
        if now >= self.rekey_at:
            self.rekey_ike()
        for child in list(self.children):
            if now >= child.expire_at:
                self.delete_child(child.spi_in)
            elif now >= child.rekey_at and not child.rekeying:
                child.rekey_at = float("inf")
                self.rekey_child(child.spi_in)
        if self.peer.dpd_delay and now >= self._last_heard + self.peer.dpd_delay:
            self._last_heard = now
            self.liveness()

    # -- input ----------------------------------------------------------------------------

    def handle(self, msg: Message) -> bool:
        """Take one message addressed to this IKE SA; True if it was authentic and
        in sequence (the daemon may then update the path)."""
        if self.state == "closed":
            return False
        try:
            if msg.header.is_response:
                ok = self._on_response(msg)
            else:
                ok = self._on_request(msg)
        except SessionFailed as error:
            self._fail(str(error))
            return False
        except (IkeParseError, crypto.DhError, ValueError) as error:
            log.info("%s: dropped %s: %s", self.name, _what(msg), error)
            return False
        if ok:
            self._last_heard = self.clock()
        return ok

    def _open(self, msg: Message) -> list:
        if msg.sk_offset is None:
            raise IkeParseError("no SK payload")
        plain = self._recv_cipher.open(msg.raw, msg.sk_offset)
        payloads, _, _ = parse_chain(msg.sk_first, plain, stop_at_sk=False)
        return payloads

    def _follow_path(self):
        """Take the path the authentic message just opened came by, when it came with
        the marker and differs: the peer floated to port 4500 or its NAT mapping
        changed (RFC 7296 section 2.23)."""
        arrived, self.arrived = self.arrived, None
        if arrived is None:
            return
        local, remote, marker = arrived
        if marker and (local, remote) != (self.local, self.remote):
            log.info("%s: path now %s:%d -> %s:%d", self.name, *local, *remote)
            self.local, self.remote = local, remote
            self.natt = self.marker = True

    def _on_response(self, msg: Message) -> bool:
        p = self._pending
        h = msg.header
        if p is None or h.msg_id != p.msg_id or h.exchange != p.exchange:
            log.debug("%s: dropped unexpected response %s", self.name, _what(msg))
            return False
        if h.from_initiator == self.initiator:
            return False
        if h.exchange == IKE_SA_INIT:
            self._on_init_response(msg)
            return True
        inner = self._open(msg)
        self._follow_path()
        self._pending = None
        p.on_reply(msg, inner)
        self._send_next()
        return True

    def _on_request(self, msg: Message) -> bool:
        h = msg.header
        if h.from_initiator == self.initiator and h.exchange != IKE_SA_INIT:
            return False
        last = self._last_response
        if last and h.msg_id == last[0] and h.msg_id + 1 == self._peer_id:
            if h.exchange == IKE_SA_INIT and msg.raw != self._msg1:
                return False
            if h.exchange != IKE_SA_INIT:
                self._open(msg)     # only an authentic retransmission is answered
            log.debug("%s: request %d again: same response", self.name, h.msg_id)
            self.outbox.append(self._last_response[1])
            return True
        if h.msg_id != self._peer_id:
            log.debug("%s: dropped request %d (expected %d)", self.name, h.msg_id, self._peer_id)
            return False
        if h.exchange == IKE_SA_INIT:
            if self.state != "new":
                return False
            self._on_init_request(msg)
            return True
        if self.state in ("new", "init") or self._recv_cipher is None:
            return False
        try:
            inner = self._open(msg)
            self._follow_path()
        except UnsupportedCriticalPayload as error:
            self._respond(h, [notify(N_UNSUPPORTED_CRITICAL_PAYLOAD, bytes([error.payload_type]))])
            return True
        if h.exchange == IKE_AUTH and self.state == "auth" and not self.initiator:
            self._on_auth_request(h, inner)
        elif h.exchange == CREATE_CHILD_SA and self.established:
            self._on_create_child_request(h, inner)
        elif h.exchange == INFORMATIONAL and self.state in ("established", "deleting"):
            self._on_informational_request(h, inner)
        else:
            self._respond(h, [notify(N_INVALID_SYNTAX)])
        return True

    # -- sending --------------------------------------------------------------------------

    def _flags(self, response: bool) -> int:
        return (FLAG_INITIATOR if self.initiator else 0) | (FLAG_RESPONSE if response else 0)

    def _seal(self, exchange, msg_id, payloads, response) -> bytes:
        first, body = encode_chain(payloads)
        return self._send_cipher.seal(self.spi_i, self.spi_r, exchange, self._flags(response),
                                      msg_id, first, body)

    def _request(self, exchange, payloads, on_reply):
        self._queue.append(_Request(0, exchange, payloads, on_reply))
        self._send_next()

    def _send_next(self):
        if self._pending is not None or not self._queue or self.state == "closed":
            return
        req = self._queue.pop(0)
        req.msg_id = self._next_id
        self._next_id += 1
        req.data = self._seal(req.exchange, req.msg_id, req.payloads, False)
        req.deadline = self.clock() + self.settings.retransmit_timeout
        self._pending = req
        log.debug("%s: sending %s request %d", self.name, EXCHANGES.get(req.exchange),
                  req.msg_id)
        self.outbox.append(req.data)

    def _respond(self, h, payloads, *, plain: bool = False):
        if plain:
            data = encode_plain(self.spi_i, self.spi_r, h.exchange, self._flags(True), h.msg_id,
                                payloads)
        else:
            data = self._seal(h.exchange, h.msg_id, payloads, True)
        self._last_response = (h.msg_id, data)
        self._peer_id = h.msg_id + 1
        self.outbox.append(data)

    # -- IKE_SA_INIT ------------------------------------------------------------------------

    def _nat_payloads(self, spi_r: int) -> list:
        return [notify(N_NAT_DETECTION_SOURCE_IP, crypto.nat_hash(self.spi_i, spi_r, *self.local)),
                notify(N_NAT_DETECTION_DESTINATION_IP,
                       crypto.nat_hash(self.spi_i, spi_r, *self.remote))]

    def _detect_nat(self, notifies, spi_r: int) -> bool:
        src = [n.data for n in notifies if n.type == N_NAT_DETECTION_SOURCE_IP]
        dst = [n.data for n in notifies if n.type == N_NAT_DETECTION_DESTINATION_IP]
        if not src or not dst:
            return False
        peer_nat = crypto.nat_hash(self.spi_i, spi_r, *self.remote) not in src
        our_nat = crypto.nat_hash(self.spi_i, spi_r, *self.local) not in dst
        return peer_nat or our_nat

    def _send_init(self):
        props = [s.proposal(i + 1, b"") for i, s in enumerate(self.peer.ike_proposals)]
        payloads = ([notify(N_COOKIE, self._cookie)] if self._cookie else []) + [
            Payload(PT_SA, encode_sa(props)),
            Payload(PT_KE, encode_ke(self._dh.group, self._dh.public)),
            Payload(PT_NONCE, self._ni)] + self._nat_payloads(0)
        data = encode_plain(self.spi_i, 0, IKE_SA_INIT, FLAG_INITIATOR, 0, payloads)
        self._msg1 = data
        self._next_id = 1
        self._pending = _Request(0, IKE_SA_INIT, payloads, None, data,
                                 deadline=self.clock() + self.settings.retransmit_timeout)
        log.info("%s: initiating IKE_SA_INIT to %s:%d", self.name, *self.remote)
        self.outbox.append(data)

    def _on_init_response(self, msg: Message):
        # Nothing protects an IKE_SA_INIT response (RFC 7296 section 2.4): one that
        # cannot be used is dropped and the request stays in flight, so a forged
        # answer cannot end the exchange; only running out of retransmissions does.
        notifies = msg.notifies()
        cookie = next((n for n in notifies if n.type == N_COOKIE), None)
        if cookie is not None:
            if not 1 <= len(cookie.data) <= 64:
                raise IkeParseError("COOKIE of a bad length")
            self._cookie = cookie.data
            log.info("%s: responder asked for a COOKIE; sending IKE_SA_INIT again", self.name)
            self._send_init()
            return
        bad_ke = next((n for n in notifies if n.type == N_INVALID_KE_PAYLOAD), None)
        if bad_ke is not None and len(bad_ke.data) == 2:
            group, = struct.unpack("!H", bad_ke.data)
            groups = {s.dh_group for s in self.peer.ike_proposals}
            if group not in groups or group == self._dh.group:
                raise IkeParseError(f"responder wants DH group {group}, not proposed")
            log.info("%s: responder wants DH group %d", self.name, group)
            self._dh = crypto.DhKey(group)
            self._send_init()
            return
        errors = [n.type for n in notifies if n.type <= ERROR_NOTIFY_MAX]
        if errors:
            log.warning("%s: IKE_SA_INIT refused: %s", self.name, _notify_names(errors))
            raise IkeParseError("IKE_SA_INIT answered with an error")
        sa, ke, nonce = (msg.find(t) for t in (PT_SA, PT_KE, PT_NONCE))
        if sa is None or ke is None or nonce is None or msg.header.spi_r == 0:
            raise IkeParseError("IKE_SA_INIT response without SA, KE or Nonce")
        chosen = parse_sa(sa.body)
        suite = accepted(chosen[0], self.peer.ike_proposals) if len(chosen) == 1 else None
        if suite is None:
            raise IkeParseError("IKE_SA_INIT response chose a proposal we did not make")
        group, public = parse_ke(ke.body)
        if group != suite.dh_group or group != self._dh.group:
            raise IkeParseError(f"IKE_SA_INIT response KE of group {group}")
        nr = parse_nonce(nonce.body)
        shared = self._dh.exchange(public)
        self._pending = None
        self._nr = nr
        self.spi_r = msg.header.spi_r
        self._set_keys(suite, crypto.skeyseed(self._ni, self._nr, shared))
        self._msg2 = msg.raw
        if self._detect_nat(notifies, self.spi_r):
            self.nat_detected = True
            if not self.natt and self.natt_port is not None:
                # RFC 7296 section 2.23: float to port 4500 from IKE_AUTH on.
                self.local = (self.local[0], self.natt_port)
                self.remote = (self.remote[0], self.peer.port_natt)
            self.natt = True
            log.info("%s: NAT detected; IKE and ESP over UDP %d -> %d", self.name,
                     self.local[1], self.remote[1])
        self.state = "auth"
        self._send_auth()

    def _set_keys(self, suite: Suite, seed: bytes):
        self._suite = suite
        self.keys = crypto.derive_ike_keys(suite, seed, self._ni, self._nr, self.spi_i,
                                           self.spi_r)
        k = self.keys
        mine = (k.sk_ei, k.sk_ai) if self.initiator else (k.sk_er, k.sk_ar)
        theirs = (k.sk_er, k.sk_ar) if self.initiator else (k.sk_ei, k.sk_ai)
        self._send_cipher = crypto.SkCipher(suite, *mine, self.rng)
        self._recv_cipher = crypto.SkCipher(suite, *theirs, self.rng)

    def on_init_request(self, msg: Message):
        """The daemon's entry for a new responder session (cookie checked already)."""
        self.spi_i = msg.header.spi_i
        self.handle(msg)

    def _on_init_request(self, msg: Message):
        h = msg.header
        sa, ke, nonce = (msg.find(t) for t in (PT_SA, PT_KE, PT_NONCE))
        if sa is None or ke is None or nonce is None:
            raise SessionFailed("IKE_SA_INIT request without SA, KE or Nonce")
        offered = parse_sa(sa.body)
        group, public = parse_ke(ke.body)
        self._ni = parse_nonce(nonce.body)
        same_group = [s for s in self.peer.ike_proposals if s.dh_group == group]
        pick = choose(offered, same_group) or choose(offered, self.peer.ike_proposals)
        self.spi_r = 0
        if pick is None:
            self._respond(h, [notify(N_NO_PROPOSAL_CHOSEN)], plain=True)
            raise SessionFailed("no acceptable IKE proposal offered")
        prop, suite = pick
        if suite.dh_group != group:
            self._respond(h, [notify(N_INVALID_KE_PAYLOAD, struct.pack("!H", suite.dh_group))],
                          plain=True)
            raise SessionFailed(f"initiator's KE is group {group}; asked for "
                                f"{suite.dh_group}")
        self.spi_r = self._random_ike_spi()
        self._dh = crypto.DhKey(group)
        shared = self._dh.exchange(public)
        self._nr = self.rng(NONCE_LEN)
        self._set_keys(suite, crypto.skeyseed(self._ni, self._nr, shared))
        self._msg1 = msg.raw
        notifies = msg.notifies()
        if self._detect_nat(notifies, 0):
            self.nat_detected = True
            self.natt = True
            log.info("%s: NAT detected", self.name)
        answer = suite.proposal(prop.num, b"")
        payloads = [Payload(PT_SA, encode_sa([answer])),
                    Payload(PT_KE, encode_ke(group, self._dh.public)),
                    Payload(PT_NONCE, self._nr)] + self._nat_payloads(self.spi_r)
        self._respond(h, payloads, plain=True)
        self._msg2 = self._last_response[1]
        self.state = "auth"
        log.info("%s: IKE_SA_INIT from %s:%d answered (%s)", self.name, *self.remote,
                 suite.describe())

    # -- IKE_AUTH ---------------------------------------------------------------------------

    def _id_body(self, text: str) -> bytes:
        return encode_id(*identity(text or self.local[0]))

    def _send_auth(self):
        id_body = self._id_body(self.peer.local_id)
        auth = crypto.psk_auth(self.peer.psk, self._msg1, self._nr, self.keys.sk_pi, id_body)
        spi_in = self._new_spi()
        payloads = [Payload(PT_IDI, id_body)]
        if self.peer.remote_id:
            payloads.append(Payload(PT_IDR, self._id_body(self.peer.remote_id)))
        payloads += [Payload(PT_AUTH, encode_auth(AUTH_SHARED_KEY_MIC, auth)),
                     Payload(PT_SA, self._esp_sa(spi_in)),
                     Payload(PT_TSI, encode_ts(self.peer.local_ts)),
                     Payload(PT_TSR, encode_ts(self.peer.remote_ts))]

        def reply(msg, inner):
            self._on_auth_response(inner, spi_in)
        self._request(IKE_AUTH, payloads, reply)

    def _check_peer_auth(self, inner, id_type, message, nonce, sk_p):
        id_p = _find(inner, id_type)
        auth_p = _find(inner, PT_AUTH)
        if id_p is None or auth_p is None:
            return "no ID or AUTH payload"
        kind, data = parse_id(id_p.body)
        if self.peer.remote_id and identity(self.peer.remote_id) != (kind, data):
            return f"peer identity {identity_text(kind, data)!r} is not {self.peer.remote_id!r}"
        method, value = parse_auth(auth_p.body)
        if method != AUTH_SHARED_KEY_MIC:
            return f"not supported: AUTH method {method} (pre-shared keys only)"
        expected = crypto.psk_auth(self.peer.psk, message, nonce, sk_p, id_p.body)
        import hmac
        if not hmac.compare_digest(expected, value):
            return "AUTH does not verify (pre-shared key differs)"
        return None

    def _on_auth_response(self, inner, spi_in):
        errors = _error_types(inner)
        if N_AUTHENTICATION_FAILED in errors:
            raise SessionFailed("peer says AUTHENTICATION_FAILED")
        problem = self._check_peer_auth(inner, PT_IDR, self._msg2, self._ni, self.keys.sk_pr)
        if problem:
            raise SessionFailed(f"IKE_AUTH: {problem}")
        self._up()
        child = self._child_from_response(inner, spi_in, self._ni, self.peer.local_ts,
                                          self.peer.remote_ts, nr=self._nr)
        if child is not None:
            self._add_child(child)

    def _on_auth_request(self, h, inner):
        problem = self._check_peer_auth(inner, PT_IDI, self._msg1, self._nr, self.keys.sk_pi)
        if problem:
            self._respond(h, [notify(N_AUTHENTICATION_FAILED)])
            raise SessionFailed(f"IKE_AUTH: {problem}")
        id_body = self._id_body(self.peer.local_id)
        auth = crypto.psk_auth(self.peer.psk, self._msg2, self._ni, self.keys.sk_pr, id_body)
        payloads = [Payload(PT_IDR, id_body),
                    Payload(PT_AUTH, encode_auth(AUTH_SHARED_KEY_MIC, auth))]
        child, answer = self._child_from_request(inner, self._ni, self._nr)
        self._respond(h, payloads + answer)
        self._up()
        if child is not None:
            self._add_child(child)

    def _up(self):
        self.state = "established"
        now = self.clock()
        factor = 1.0 if self.initiator else 1.1   # the initiator rekeys first
        self.rekey_at = now + self.peer.rekey_time * factor
        self.expire_at = now + self.peer.life_time
        log.info("%s: IKE SA established with %s:%d (%s%s)", self.name, *self.remote,
                 self._suite.describe(), ", NAT-T" if self.natt else "")
        self.events.append(IkeUp(self))

    # -- CHILD_SAs ----------------------------------------------------------------------------

    def _esp_sa(self, spi_in: int) -> bytes:
        return encode_sa([s.proposal(i + 1, struct.pack("!I", spi_in))
                          for i, s in enumerate(self.peer.esp_proposals)])

    def _child_from_response(self, inner, spi_in, ni, local_ts, remote_ts, nr=None):
        errors = _error_types(inner)
        if errors:
            log.warning("%s: CHILD_SA refused: %s", self.name, _notify_names(errors))
            return None
        sa, tsi, tsr = (_find(inner, t) for t in (PT_SA, PT_TSI, PT_TSR))
        if nr is None:
            nonce = _find(inner, PT_NONCE)
            if nonce is None:
                raise SessionFailed("CREATE_CHILD_SA response without Nonce")
            nr = parse_nonce(nonce.body)
        if sa is None or tsi is None or tsr is None:
            log.warning("%s: no CHILD_SA in the response", self.name)
            return None
        chosen = parse_sa(sa.body)
        suite = accepted(chosen[0], self.peer.esp_proposals) if len(chosen) == 1 else None
        if suite is None or len(chosen[0].spi) != 4:
            raise SessionFailed("CHILD_SA answered with a proposal we did not make")
        spi_out, = struct.unpack("!I", chosen[0].spi)
        ts_l = _narrow(parse_ts(tsi.body), local_ts)
        ts_r = _narrow(parse_ts(tsr.body), remote_ts)
        if not ts_l or not ts_r:
            log.warning("%s: CHILD_SA selectors outside what we proposed", self.name)
            return None
        keys = crypto.child_keys(self.keys.sk_d, ni, nr, suite.key_bytes)
        return self._make_child(spi_in, spi_out, suite, ts_l, ts_r, keys, we_initiated=True)

    def _child_from_request(self, inner, ni, nr):
        """(child or None, the response's CHILD_SA payloads)."""
        sa, tsi, tsr = (_find(inner, t) for t in (PT_SA, PT_TSI, PT_TSR))
        if sa is None or tsi is None or tsr is None:
            return None, []
        pick = choose(parse_sa(sa.body), self.peer.esp_proposals)
        if pick is None:
            return None, [notify(N_NO_PROPOSAL_CHOSEN)]
        prop, suite = pick
        if len(prop.spi) != 4 or struct.unpack("!I", prop.spi)[0] < SPI_MIN:
            return None, [notify(N_NO_PROPOSAL_CHOSEN)]
        ts_r = _narrow(parse_ts(tsi.body), self.peer.remote_ts)
        ts_l = _narrow(parse_ts(tsr.body), self.peer.local_ts)
        if not ts_l or not ts_r:
            return None, [notify(N_TS_UNACCEPTABLE)]
        spi_in = self._new_spi()
        spi_out, = struct.unpack("!I", prop.spi)
        keys = crypto.child_keys(self.keys.sk_d, ni, nr, suite.key_bytes)
        child = self._make_child(spi_in, spi_out, suite, ts_l, ts_r, keys, we_initiated=False)
        answer = [Payload(PT_SA, encode_sa([suite.proposal(prop.num, struct.pack("!I", spi_in))])),
                  Payload(PT_TSI, encode_ts(ts_r)), Payload(PT_TSR, encode_ts(ts_l))]
        return child, answer

    def _make_child(self, spi_in, spi_out, suite, ts_l, ts_r, keys, *, we_initiated):
        ir, ri = (keys.key_ir, keys.salt_ir), (keys.key_ri, keys.salt_ri)
        (key_out, salt_out), (key_in, salt_in) = (ir, ri) if we_initiated else (ri, ir)
        now = self.clock()
        factor = 1.0 if we_initiated else 1.1    # the creator rekeys first
        return ChildSa(spi_in, spi_out, suite, ts_l, ts_r, key_in, salt_in, key_out, salt_out,
                       rekey_at=now + self.peer.child_rekey_time * factor,
                       expire_at=now + self.peer.child_life_time)

    def child_info(self, child: ChildSa) -> ChildInfo:
        return ChildInfo(self.peer.name, child.spi_in, child.spi_out, child.suite.describe(),
                         tuple(str(t) for t in child.local_ts),
                         tuple(str(t) for t in child.remote_ts), child.suite.esn,
                         "udp" if self.natt else "none",
                         (self.local[1], self.remote[1]) if self.natt else None)

    def sa_configs(self, child: ChildSa) -> tuple[SaConfig, SaConfig]:
        """(inbound, outbound) :class:`SaConfig` of ``child`` (tunnel mode between the
        IKE endpoints; UDP-encapsulated with the IKE ports under NAT-T)."""
        local, remote = self.local_address(), self.remote[0]
        encap = "udp" if self.natt else "none"
        lp, rp = (self.local[1], self.remote[1]) if self.natt else (NATT_PORT, NATT_PORT)
        p = self.peer
        lifetime = {"packets_soft": p.child_rekey_packets, "packets_hard": p.child_life_packets,
                    "bytes_soft": p.child_rekey_bytes, "bytes_hard": p.child_life_bytes}
        inbound = SaConfig(spi=child.spi_in, direction="in", key=child.key_in,
                           salt=child.salt_in, mode="tunnel", src=remote, dst=local,
                           esn=child.suite.esn, encap=encap, sport=rp, dport=lp,
                           lifetime=lifetime)
        outbound = SaConfig(spi=child.spi_out, direction="out", key=child.key_out,
                            salt=child.salt_out, mode="tunnel", src=local, dst=remote,
                            esn=child.suite.esn, encap=encap, sport=lp, dport=rp,
                            lifetime=lifetime)
        return inbound, outbound

    def local_address(self) -> str:
        return self.peer.local_address or self.local[0]

    def _add_child(self, child: ChildSa):
        try:
            inbound, outbound = self.sa_configs(child)
        except ValueError as error:
            log.warning("%s: CHILD_SA not usable: %s", self.name, error)
            return
        self.children.append(child)
        info = self.child_info(child)
        log.info("%s: CHILD_SA %08x/%08x up (%s, %s === %s)", self.name, child.spi_in,
                 child.spi_out, info.proposal, ",".join(info.local_ts), ",".join(info.remote_ts))
        self.events.append(ChildUp(self.peer.name, info, inbound, outbound))

    def _replace_child(self, old: ChildSa, new: ChildSa, *, we_initiated: bool = True):
        try:
            inbound, outbound = self.sa_configs(new)
        except ValueError as error:
            log.warning("%s: rekeyed CHILD_SA not usable: %s", self.name, error)
            return
        self._switch("rekeyed again", new_in=old.spi_in)
        self.children[self.children.index(old)] = new
        self._rekeyed_out[old.spi_out] = old.spi_in
        # Until the peer has answered or sent the DELETE of the old CHILD_SA; its
        # lifetime if that never happens.
        self._retiring[old.spi_in] = [old.expire_at, self.child_info(old), "its lifetime ended"]
        log.info("%s: CHILD_SA %08x/%08x rekeyed to %08x/%08x", self.name, old.spi_in,
                 old.spi_out, new.spi_in, new.spi_out)
        self.events.append(ChildRekeyed(self.peer.name, self.child_info(old),
                                        self.child_info(new), inbound, outbound,
                                        outbound_switched=we_initiated))
        if not we_initiated:
            self._switching[old.spi_out] = [
                min(self.clock() + SWITCH_WITHOUT_DELETE, old.expire_at),
                self.child_info(old), self.child_info(new)]

    def _remove_child(self, child: ChildSa, reason: str):
        self.children.remove(child)
        for old_out, (_, _, new) in list(self._switching.items()):
            if new.spi_in == child.spi_in:     # its SAs all go with ChildDown
                del self._switching[old_out]
        log.info("%s: CHILD_SA %08x/%08x down (%s)", self.name, child.spi_in, child.spi_out,
                 reason)
        if not self._silent:
            try:
                inbound, outbound = self.sa_configs(child)
            except ValueError:
                inbound = outbound = None
            self.events.append(ChildDown(self.peer.name, self.child_info(child), reason,
                                         inbound, outbound))

    def retiring_spis(self) -> set:
        """Inbound SPIs of rekeyed CHILD_SAs whose SAs are kept still (ChildRetired)."""
        return set(self._retiring)

    def _peer_done_with(self, spi_in: int):
        """The peer has stopped sending under the old CHILD_SA ``spi_in``: its inbound
        SA goes after ``delete_rekeyed_delay`` (what it sent before may be in flight)."""
        entry = self._retiring.get(spi_in)
        if entry is not None:
            when = self.clock() + self.settings.delete_rekeyed_delay
            if when < entry[0]:
                entry[0], entry[2] = when, "the peer stopped using it"

    def _switch(self, why: str, *, new_in: int | None = None, old_out: int | None = None):
        """Send under the new outbound SA of the rekey we answered that made CHILD_SA
        ``new_in`` (or replaced outbound SA ``old_out``), if that waits still."""
        for key, (_, old, new) in list(self._switching.items()):
            if new.spi_in == new_in or key == old_out:
                del self._switching[key]
                log.info("%s: CHILD_SA %08x/%08x: outbound now %08x (%s)", self.name,
                         new.spi_in, new.spi_out, new.spi_out, why)
                self.events.append(ChildSwitched(self.peer.name, old, new))

    def _switch_due(self, now: float):
        if self._silent:
            return
        for old_out, (when, _, new) in list(self._switching.items()):
            if now >= when:
                self._switch("no DELETE of the old CHILD_SA came", new_in=new.spi_in)

    def _retire_due(self, now: float):
        if self._silent:        # a rekeyed IKE SA's successor has them
            return
        for spi_in, (when, info, why) in list(self._retiring.items()):
            if now >= when:
                del self._retiring[spi_in]
                self._retired(info, why)

    def _retire_all(self, reason: str):
        for spi_in, (_, info, _) in list(self._retiring.items()):
            del self._retiring[spi_in]
            self._retired(info, reason)

    def _retired(self, info: ChildInfo, why: str):
        log.info("%s: inbound SA %08x of the rekeyed CHILD_SA retired (%s)", self.name,
                 info.spi_in, why)
        self.events.append(ChildRetired(self.peer.name, info, why))

    def _child(self, *, spi_in=None, spi_out=None):
        for child in self.children:
            if child.spi_in == spi_in or child.spi_out == spi_out:
                return child
        return None

    # -- CREATE_CHILD_SA and INFORMATIONAL as responder ------------------------------------

    def _on_create_child_request(self, h, inner):
        rekey = next((parse_notify(p.body) for p in inner if p.type == PT_NOTIFY
                      and parse_notify(p.body).type == N_REKEY_SA), None)
        sa = _find(inner, PT_SA)
        nonce = _find(inner, PT_NONCE)
        if sa is None or nonce is None:
            self._respond(h, [notify(N_INVALID_SYNTAX)])
            return
        ni = parse_nonce(nonce.body)
        offered = parse_sa(sa.body)
        if rekey is None and offered and offered[0].protocol == PROTO_IKE:
            self._on_ike_rekey_request(h, inner, offered, ni)
            return
        old = None
        if rekey is not None:
            if rekey.protocol != PROTO_ESP or len(rekey.spi) != 4:
                self._respond(h, [notify(N_INVALID_SYNTAX)])
                return
            old = self._child(spi_out=struct.unpack("!I", rekey.spi)[0])
            if old is None:
                self._respond(h, [notify(N_CHILD_SA_NOT_FOUND, protocol=PROTO_ESP,
                                         spi=rekey.spi)])
                return
            if old.rekeying:
                # Both sides rekeying at once: refuse; ours goes on (RFC 7296 2.25).
                self._respond(h, [notify(N_TEMPORARY_FAILURE)])
                return
        nr = self.rng(NONCE_LEN)
        child, answer = self._child_from_request(inner, ni, nr)
        if child is None:
            self._respond(h, answer or [notify(N_NO_PROPOSAL_CHOSEN)])
            return
        self._respond(h, [answer[0], Payload(PT_NONCE, nr)] + answer[1:])
        if old is not None and old in self.children:
            self._replace_child(old, child, we_initiated=False)
        else:
            self._add_child(child)

    def _on_ike_rekey_request(self, h, inner, offered, ni):
        ke = _find(inner, PT_KE)
        if ke is None:
            self._respond(h, [notify(N_INVALID_SYNTAX)])
            return
        group, public = parse_ke(ke.body)
        same = [s for s in self.peer.ike_proposals if s.dh_group == group]
        pick = choose(offered, same) or choose(offered, self.peer.ike_proposals)
        if pick is None or len(pick[0].spi) != 8:
            self._respond(h, [notify(N_NO_PROPOSAL_CHOSEN)])
            return
        prop, suite = pick
        if suite.dh_group != group:
            self._respond(h, [notify(N_INVALID_KE_PAYLOAD, struct.pack("!H", suite.dh_group))])
            return
        if self._pending is not None and self._pending.exchange == CREATE_CHILD_SA and \
                self.rekey_at == float("inf"):
            self._respond(h, [notify(N_TEMPORARY_FAILURE)])
            return
        dh = crypto.DhKey(group)
        shared = dh.exchange(public)
        nr = self.rng(NONCE_LEN)
        new_spi = self._random_ike_spi()
        spi_i, = struct.unpack("!Q", prop.spi)
        answer = suite.proposal(prop.num, struct.pack("!Q", new_spi))
        self._respond(h, [Payload(PT_SA, encode_sa([answer])), Payload(PT_NONCE, nr),
                          Payload(PT_KE, encode_ke(group, dh.public))])
        self._rekeyed(suite, False, spi_i, new_spi, ni, nr, shared)

    def _rekeyed(self, suite, we_initiate, spi_i, spi_r, ni, nr, shared):
        new = IkeSession(self.peer, self.settings, initiator=we_initiate, local=self.local,
                         remote=self.remote, natt=self.natt, natt_port=self.natt_port,
                         rng=self.rng, clock=self.clock, new_spi=self._new_spi)
        new.spi_i, new.spi_r, new._ni, new._nr = spi_i, spi_r, ni, nr
        new.nat_detected = self.nat_detected
        new._set_keys(suite, crypto.rekey_skeyseed(self.keys.sk_d, shared, ni, nr))
        new.children, self.children = self.children, []
        new._rekeyed_out = self._rekeyed_out
        new._retiring = self._retiring
        new._switching = self._switching
        new._next_id = new._peer_id = 0
        new.state = "established"
        now = self.clock()
        new.rekey_at = now + self.peer.rekey_time * (1.0 if we_initiate else 1.1)
        new.expire_at = now + self.peer.life_time
        self._silent = True
        self.rekey_at = self.expire_at = float("inf")
        self._dying_at = now + self.settings.half_open_timeout
        log.info("%s: IKE SA rekeyed to %s", self.name, new.name)
        self.events.append(IkeRekeyed(self, new))
        if we_initiate:
            self.state = "deleting"
            self._request(INFORMATIONAL, [Payload(PT_DELETE, encode_delete(PROTO_IKE, []))],
                          lambda m, i: self._close("rekeyed"))

    def _on_informational_request(self, h, inner):
        answer = []
        for p in inner:
            if p.type != PT_DELETE:
                continue
            proto, spis = parse_delete(p.body)
            if proto == PROTO_IKE:
                self._respond(h, [])
                if not self._silent:
                    for child in list(self.children):
                        self._remove_child(child, "peer deleted the IKE SA")
                self._close("peer deleted the IKE SA")
                return
            if proto != PROTO_ESP:
                continue
            ours = []
            for raw in spis:
                spi, = struct.unpack("!I", raw)
                if spi in self._rekeyed_out:
                    ours.append(self._rekeyed_out.pop(spi))
                    self._switch("the peer deleted the old CHILD_SA", old_out=spi)
                    self._peer_done_with(ours[-1])
                    continue
                child = self._child(spi_out=spi)
                if child is not None:
                    ours.append(child.spi_in)
                    self._remove_child(child, "peer deleted it")
            if ours:
                answer.append(Payload(PT_DELETE, encode_delete(
                    PROTO_ESP, [struct.pack("!I", s) for s in ours])))
        self._respond(h, answer)

    # -- the end ------------------------------------------------------------------------------

    def _fail(self, reason: str):
        log.warning("%s: %s", self.name, reason)
        for child in list(self.children):
            self._remove_child(child, reason)
        self._close(reason)

    def _close(self, reason: str):
        if self.state == "closed":
            return
        was_up = self.state in ("established", "deleting")
        self.state = "closed"
        self._pending = None
        self._queue.clear()
        if not self._silent:
            for child in list(self.children):
                self._remove_child(child, reason)
            self._retire_all(reason)
        if was_up or self._silent:
            log.info("%s: IKE SA closed (%s)", self.name, reason)
        self.events.append(IkeDown(self, reason))


def _find(payloads, ptype):
    return next((p for p in payloads if p.type == ptype), None)


def _error_types(payloads) -> list:
    return [n.type for n in (parse_notify(p.body) for p in payloads if p.type == PT_NOTIFY)
            if n.type <= ERROR_NOTIFY_MAX]


def _errors(payloads) -> str:
    return _notify_names(_error_types(payloads)) or "no reason given"


_NOTIFY_NAMES = {N_NO_PROPOSAL_CHOSEN: "NO_PROPOSAL_CHOSEN", N_TS_UNACCEPTABLE: "TS_UNACCEPTABLE",
                 N_AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
                 N_INVALID_KE_PAYLOAD: "INVALID_KE_PAYLOAD", N_INVALID_SYNTAX: "INVALID_SYNTAX",
                 N_TEMPORARY_FAILURE: "TEMPORARY_FAILURE",
                 N_CHILD_SA_NOT_FOUND: "CHILD_SA_NOT_FOUND",
                 N_UNSUPPORTED_CRITICAL_PAYLOAD: "UNSUPPORTED_CRITICAL_PAYLOAD"}


def _notify_names(types) -> str:
    return ", ".join(_NOTIFY_NAMES.get(t, str(t)) for t in types)


def _what(msg: Message) -> str:
    h = msg.header
    return (f"{EXCHANGES.get(h.exchange, h.exchange)} {'response' if h.is_response else 'request'}"
            f" {h.msg_id}")


def _narrow(offered, config) -> list:
    out = []
    for ts in offered:
        for mine in config:
            both = ts.intersect(mine)
            if both is not None and both not in out:
                out.append(both)
    return out
