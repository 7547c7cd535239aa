# SPDX-License-Identifier: BSD-2-Clause
"""The IKE daemon: UDP sockets (IKE port and NAT-T port), the timers of every IKE SA,
cookies under load, datagrams dispatched to :class:`~.session.IkeSession` by SPI,
and the CHILD_SAs handed to the security controller.

One thread runs a selector loop; the public methods may be called from any
thread (one lock guards the sessions). Nothing a peer sends can raise out of the
loop: a malformed datagram is logged in one line and dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import queue
import selectors
import socket
import threading
import time

from .message import (
    FLAG_RESPONSE, IKE_SA_INIT, N_COOKIE, N_UNSUPPORTED_CRITICAL_PAYLOAD, NON_ESP_MARKER,
    PT_NONCE, PT_NOTIFY, IkeParseError, TrafficSelector, UnsupportedCriticalPayload,
    encode_plain, notify, parse_header, parse_message, parse_notify,
)
from .session import (
    ChildDown, ChildRekeyed, ChildRetired, ChildSwitched, ChildUp, IkeDown, IkeRekeyed,
    IkeSession, IkeUp,
)

log = logging.getLogger("espnic.ike")

STANDARD_PORT = 500
_POLL = 0.05           # seconds: the loop looks at the clock at least this often
_CONTROLLER_POLL = 1.0


class _Socket:
    def __init__(self, host: str, port: int, natt: bool):
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.natt = natt

    def close(self):
        self.sock.close()


class IkeDaemon:
    """IKEv2 for the peers of ``config`` (:class:`~.config.IkeConfig`).

    ``controller``: a :class:`~espnic.host.controller.Controller`; CHILD_SAs are
    installed, rekeyed (make-before-break: the old inbound SA stays until
    :class:`ChildRetired`; a rekey we answered keeps sending under the old outbound
    SA until :class:`ChildSwitched`) and deleted through it, with an outbound policy
    per pair of negotiated selectors. ``on_child(event)``: told every
    :class:`ChildUp`, :class:`ChildRekeyed`, :class:`ChildSwitched`,
    :class:`ChildRetired`, :class:`ChildDown`.
    ``esp_handler(data, remote, local)``: every ESP-in-UDP datagram (RFC 3948) that
    reaches the NAT-T socket. ``clock``: seconds, for every timer.

    ``controller`` may also be a function that makes one: it is then called in the
    daemon's thread, which is where a controller with an SQLite database (usable
    only in the thread that opened it) must live; the daemon closes it at the end.
    Every command runs in the daemon's thread (:meth:`call`), so the controller
    and the ``on_child`` hook are only ever used from there.
    """

    def __init__(self, config, *, controller=None, on_child=None, esp_handler=None,
                 clock=time.monotonic, rng=os.urandom):
        self.config = config
        self._controller_factory = None
        if controller is not None and not hasattr(controller, "add_sa") and callable(controller):
            self._controller_factory, controller = controller, None
        self.controller = controller
        self._calls: queue.Queue = queue.Queue()
        self.on_child = on_child
        self.esp_handler = esp_handler
        self.clock, self.rng = clock, rng
        self._lock = threading.RLock()     # the sessions, for the inspection methods
        self._sessions: dict[int, IkeSession] = {}
        self._init_index: dict[tuple, IkeSession] = {}
        self._policies: dict[int, list] = {}        # child's spi_in -> policy ids
        self._unswitched: dict[int, int] = {}       # child's spi_in -> old spi_out in use
        self._cookie_secret = rng(32)
        self._sockets: list[_Socket] = []
        # A byte on this pair wakes the loop for a call() from another thread.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = None
        self._stop = threading.Event()
        self._next_controller_poll = 0.0
        try:
            for host in config.listen:
                plain = _Socket(host, config.port, natt=False)
                self._sockets.append(plain)
                self._sockets.append(_Socket(host, config.port_natt, natt=True))
        except OSError:
            self.close()
            raise
        self._hook_controller()

    def _hook_controller(self):
        if self.controller is not None and self.controller.on_rekey is None:
            self.controller.on_rekey = self._on_controller_rekey

    # -- life -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The IKE port bound (useful when the config said 0)."""
        return self._sockets[0].port

    @property
    def port_natt(self) -> int:
        return self._sockets[1].port

    def start(self):
        """Run the loop in a thread; peers with ``start = "initiate"`` are initiated."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name="espnic-ike", daemon=True)
        self._loop_thread = self._thread
        self._thread.start()
        self.call(lambda: None)          # the controller is made before start() returns

    def stop(self, *, delete: bool = True):
        """Stop the loop; with ``delete``, every IKE SA is deleted first (its
        CHILD_SAs leave the controller) and the peers are told (best effort)."""
        if delete:
            try:
                self.call(self._delete_all)
            except RuntimeError:
                pass
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            self._thread = None
        self.close()

    def _delete_all(self):
        for session in list(self._unique_sessions()):
            session.delete("daemon stopping")
            self._flush(session)

    def call(self, fn, timeout: float = 30.0):
        """``fn()`` run in the daemon's thread (at once when called from there, or
        when no loop runs); its result, or its exception raised here."""
        if self._loop_thread in (None, threading.current_thread()):
            with self._lock:
                return fn()
        if self._stop.is_set():
            raise RuntimeError("the IKE daemon is stopped")
        done = threading.Event()
        box = {}

        def job():
            try:
                box["value"] = fn()
            except BaseException as error:
                box["error"] = error
            done.set()
        self._calls.put(job)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if not done.wait(timeout):
            raise RuntimeError("the IKE daemon did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def close(self):
        for s in self._sockets:
            s.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    _loop_thread = None

    def run(self):
        """The loop, in the calling thread, until :meth:`stop` (``espnic ike`` runs it
        so; :meth:`start` runs it in a thread)."""
        self._loop_thread = threading.current_thread()
        made = None
        if self._controller_factory is not None:
            self.controller = made = self._controller_factory()
            self._hook_controller()
        selector = selectors.DefaultSelector()
        for s in self._sockets:
            selector.register(s.sock, selectors.EVENT_READ, s)
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        for peer in self.config.peers:
            if peer.start == "initiate":
                try:
                    self.initiate(peer.name)
                except OSError as error:
                    log.warning("%s: cannot initiate: %s", peer.name, error)
        try:
            while not self._stop.is_set():
                self._run_calls()
                timeout = max(0.0, min(self._next_deadline() - self.clock(), _POLL))
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._receive(key.data)
                self.poll()
            self._run_calls()
        finally:
            selector.close()
            if made is not None:
                made.close()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _run_calls(self):
        while True:
            try:
                job = self._calls.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                job()

    # -- commands ---------------------------------------------------------------------------

    def initiate(self, peer_name: str) -> IkeSession:
        """Start an IKE SA (and its first CHILD_SA) with the peer named ``peer_name``."""
        return self.call(lambda: self._initiate(peer_name))

    def _initiate(self, peer_name: str) -> IkeSession:
        peer = self.config.peer(peer_name)
        # Either port not the standard one: the NAT-T socket with the marker from
        # IKE_SA_INIT on, as strongSwan does (RFC 7296 section 2.23).
        natt = peer.natt == "auto" and (peer.port != STANDARD_PORT or self.port != STANDARD_PORT)
        sock = self._socket_for(peer.address, natt=natt)
        local = (self._local_host(sock, peer.address), sock.port)
        session = IkeSession(peer, self.config, initiator=True, local=local,
                             remote=(peer.address, peer.port), natt=natt,
                             natt_port=self._socket_for(peer.address, natt=True).port,
                             rng=self.rng, clock=self.clock, new_spi=self._new_spi)
        session.marker = natt
        self._sessions[session.spi_i] = session
        session.initiate()
        self._flush(session)
        return session

    def _established(self, peer_name: str) -> IkeSession:
        for session in self._unique_sessions():
            if session.peer.name == peer_name and session.established and \
                    session._dying_at == float("inf"):
                return session
        raise KeyError(f"no established IKE SA with {peer_name!r}")

    def _with_child(self, spi: int):
        for session in self._unique_sessions():
            for child in session.children:
                if spi in (child.spi_in, child.spi_out):
                    return session, child
        raise KeyError(f"no CHILD_SA with SPI {spi:#x}")

    def _command(self, find, act):
        def job():
            session, arg = find()
            act(session, *arg)
            self._flush(session)
        self.call(job)

    def rekey_child(self, spi: int):
        """Rekey the CHILD_SA whose inbound or outbound SPI is ``spi``."""
        self._command(lambda: self._child_arg(spi), IkeSession.rekey_child)

    def delete_child(self, spi: int):
        """Delete the CHILD_SA whose inbound or outbound SPI is ``spi``."""
        self._command(lambda: self._child_arg(spi), IkeSession.delete_child)

    def rekey_ike(self, peer_name: str):
        self._command(lambda: (self._established(peer_name), ()), IkeSession.rekey_ike)

    def delete_ike(self, peer_name: str):
        self._command(lambda: (self._established(peer_name), ()), IkeSession.delete)

    def liveness(self, peer_name: str):
        """Send an empty INFORMATIONAL (dead peer detection) now."""
        self._command(lambda: (self._established(peer_name), ()), IkeSession.liveness)

    def _child_arg(self, spi: int):
        session, child = self._with_child(spi)
        return session, (child.spi_in,)

    # -- inspection --------------------------------------------------------------------------

    def children(self) -> list:
        """Every established CHILD_SA as a :class:`~.session.ChildInfo` (no keys)."""
        with self._lock:
            return [s.child_info(c) for s in self._unique_sessions() for c in s.children]

    def ike_sas(self) -> list:
        with self._lock:
            return [{"peer": s.peer.name, "spi_i": s.spi_i, "spi_r": s.spi_r, "state": s.state,
                     "initiator": s.initiator, "local": s.local, "remote": s.remote,
                     "natt": s.natt, "nat_detected": s.nat_detected,
                     "proposal": s._suite.describe() if s._suite else None,
                     "children": len(s.children)}
                    for s in self._unique_sessions()]

    def half_open(self) -> int:
        """Half-open IKE SAs this daemon answers (what cookies protect)."""
        with self._lock:
            return sum(1 for s in self._unique_sessions() if not s.initiator and s.half_open)

    def _unique_sessions(self):
        seen = []
        for s in list(self._sessions.values()) + list(self._init_index.values()):
            if s not in seen and s.state != "closed":
                seen.append(s)
        return seen

    # -- timers -------------------------------------------------------------------------------

    def _next_deadline(self) -> float:
        with self._lock:
            times = [s.next_deadline() for s in self._unique_sessions()]
        return min(times, default=float("inf"))

    def poll(self):
        """Run the timers that are due (the loop calls it; tests with a fake clock may)."""
        with self._lock:
            now = self.clock()
            for session in self._unique_sessions():
                if session.next_deadline() <= now:
                    session.tick()
                    self._flush(session)
            if self.controller is not None and now >= self._next_controller_poll:
                self._next_controller_poll = now + _CONTROLLER_POLL
                try:
                    for event in self.controller.poll_events():
                        if event.kind == "hard" and event.sa is not None:
                            self._child_expired(event.sa.spi)
                except Exception as error:     # a device gone must not stop IKE
                    log.warning("controller events: %s", error)

    def _child_expired(self, spi: int):
        try:
            session, child = self._with_child(spi)
        except KeyError:
            return
        session.delete_child(child.spi_in)
        self._flush(session)

    def _on_controller_rekey(self, info, reason):
        with self._lock:
            try:
                session, child = self._with_child(info.spi)
            except KeyError:
                log.info("controller asks to rekey SPI %#x, which IKE does not know", info.spi)
                return
            log.info("%s: controller asks for a rekey of CHILD_SA %08x (%s)", session.name,
                     child.spi_in, reason)
            session.rekey_child(child.spi_in)
            self._flush(session)

    # -- datagrams ------------------------------------------------------------------------------

    def _receive(self, sock: _Socket):
        try:
            data, remote = sock.sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            log.debug("receive on port %d: %s", sock.port, error)
            return
        self._guarded(sock, data, (remote[0], remote[1]))

    def _guarded(self, sock: _Socket, data: bytes, remote):
        try:
            with self._lock:
                self._datagram(sock, data, remote)
        except Exception as error:     # nothing a peer sends may stop the daemon
            log.error("internal error on a datagram from %s:%d (dropped): %s: %s", *remote,
                      type(error).__name__, error)

    def receive(self, data: bytes, remote, *, natt: bool = False):
        """Take ``data`` as if it had arrived from ``remote`` on the IKE (or NAT-T)
        socket: the path of every datagram, for tests that make their own."""
        sock = self._socket_for(remote[0], natt=natt)
        self.call(lambda: self._guarded(sock, bytes(data), tuple(remote)))

    def _datagram(self, sock: _Socket, data: bytes, remote):
        marker = False
        if sock.natt:
            if data == b"\xff":                    # NAT-keepalive (RFC 3948 section 2.3)
                return
            if data[:4] != NON_ESP_MARKER:
                if self.esp_handler is not None:
                    self.esp_handler(data, remote, (sock.host, sock.port))
                return
            data, marker = data[4:], True
        elif data[:4] == NON_ESP_MARKER:
            data, marker = data[4:], True
        try:
            msg = parse_message(data)
        except UnsupportedCriticalPayload as error:
            self._refuse_critical(sock, data, remote, marker, error)
            return
        except IkeParseError as error:
            log.info("dropped datagram from %s:%d: %s", *remote, error)
            return
        h = msg.header
        if h.exchange == IKE_SA_INIT and not h.is_response:
            if h.spi_r != 0 or h.msg_id != 0:
                log.info("dropped IKE_SA_INIT request from %s:%d with a responder SPI or "
                         "message ID", *remote)
                return
            session = self._init_index.get((h.spi_i, remote))
            if session is not None:
                session.handle(msg)
                self._flush(session)
                return
            self._new_responder(sock, msg, remote, marker)
            return
        ours = h.spi_r if h.from_initiator else h.spi_i
        session = self._sessions.get(ours)
        if session is None or (h.from_initiator and session.spi_i != h.spi_i) or \
                (not h.from_initiator and h.exchange != IKE_SA_INIT and session.spi_r != h.spi_r):
            log.info("dropped message for an unknown IKE SA from %s:%d", *remote)
            return
        session.arrived = ((self._local_host(sock, remote[0]), sock.port), remote,
                           marker or sock.natt)
        session.handle(msg)
        self._flush(session)

    def _refuse_critical(self, sock, data, remote, marker, error):
        try:
            h = parse_header(data)
        except IkeParseError:
            return
        log.info("dropped message from %s:%d: %s", *remote, error)
        if h.exchange == IKE_SA_INIT and not h.is_response:
            reply = encode_plain(h.spi_i, 0, IKE_SA_INIT, FLAG_RESPONSE, h.msg_id,
                                 [notify(N_UNSUPPORTED_CRITICAL_PAYLOAD,
                                         bytes([error.payload_type]))])
            self._sendto(sock, reply, remote, marker)

    def _peer_for(self, host: str):
        for peer in self.config.peers:
            if peer.address == host:
                return peer
        return None

    def _cookie(self, nonce: bytes, host: str, spi_i: int) -> bytes:
        # RFC 7296 section 2.6: Hash(Ni | IPi | SPIi | secret), with a version byte.
        digest = hmac.new(self._cookie_secret, nonce + ipaddress.ip_address(host).packed
                          + spi_i.to_bytes(8, "big"), hashlib.sha256).digest()
        return b"\x01" + digest[:16]

    def _new_responder(self, sock, msg, remote, marker):
        peer = self._peer_for(remote[0])
        if peer is None:
            log.info("dropped IKE_SA_INIT from %s:%d: no peer with that address", *remote)
            return
        nonce = msg.find(PT_NONCE)
        if nonce is None:
            log.info("dropped IKE_SA_INIT from %s:%d: no Nonce", *remote)
            return
        h = msg.header
        if self.half_open() >= self.config.half_open_limit:
            expected = self._cookie(nonce.body, remote[0], h.spi_i)
            first = msg.payloads[0] if msg.payloads else None
            given = parse_notify(first.body) if first is not None and first.type == PT_NOTIFY \
                else None
            if given is None or given.type != N_COOKIE or \
                    not hmac.compare_digest(given.data, expected):
                log.info("IKE_SA_INIT from %s:%d: %d half-open IKE SAs, asking for a COOKIE",
                         *remote, self.half_open())
                reply = encode_plain(h.spi_i, 0, IKE_SA_INIT, FLAG_RESPONSE, 0,
                                     [notify(N_COOKIE, expected)])
                self._sendto(sock, reply, remote, marker)
                return
        local = (self._local_host(sock, remote[0]), sock.port)
        session = IkeSession(peer, self.config, initiator=False, local=local, remote=remote,
                             natt=marker, natt_port=self._socket_for(remote[0], natt=True).port,
                             rng=self.rng, clock=self.clock, new_spi=self._new_spi)
        session.marker = marker
        session.on_init_request(msg)
        if session.state != "closed" and session.spi_r:
            self._sessions[session.spi_r] = session
            self._init_index[(h.spi_i, remote)] = session
        self._flush(session)

    # -- sending and events ------------------------------------------------------------------

    def _socket_for(self, remote_host: str, *, natt: bool, port: int | None = None) -> _Socket:
        version = ipaddress.ip_address(remote_host).version
        for s in self._sockets:
            if s.natt == natt and ipaddress.ip_address(s.host).version == version and \
                    (port is None or s.port == port):
                return s
        for s in self._sockets:
            if s.natt == natt and (port is None or s.port == port):
                return s
        raise OSError(f"no {'NAT-T' if natt else 'IKE'} socket for {remote_host}")

    def _local_host(self, sock: _Socket, remote_host: str) -> str:
        if not ipaddress.ip_address(sock.host).is_unspecified:
            return sock.host
        # The address the kernel would send from towards the peer.
        family = socket.AF_INET6 if ipaddress.ip_address(remote_host).version == 6 \
            else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((remote_host, 9))
                return probe.getsockname()[0]
            except OSError:
                return sock.host

    def _sendto(self, sock: _Socket, data: bytes, remote, marker: bool):
        if sock.natt or marker:
            data = NON_ESP_MARKER + data
        try:
            sock.sock.sendto(data, remote)
        except OSError as error:
            log.info("send to %s:%d failed: %s", *remote, error)

    def _flush(self, session: IkeSession):
        while session.outbox:
            data = session.outbox.pop(0)
            port = session.local[1]
            try:
                sock = next(s for s in self._sockets if s.port == port)
            except StopIteration:
                sock = self._socket_for(session.remote[0], natt=session.natt)
            self._sendto(sock, data, session.remote, session.marker)
        while session.events:
            self._event(session, session.events.pop(0))

    def _event(self, session, event):
        if isinstance(event, IkeRekeyed):
            new = event.new
            new.marker = event.old.marker
            self._sessions[new.our_spi] = new
            self._flush(new)
        elif isinstance(event, IkeDown):
            for key, value in list(self._sessions.items()):
                if value is session:
                    del self._sessions[key]
            for key, value in list(self._init_index.items()):
                if value is session:
                    del self._init_index[key]
        elif isinstance(event, IkeUp):
            for key, value in list(self._init_index.items()):
                if value is session:
                    del self._init_index[key]
        elif isinstance(event, (ChildUp, ChildRekeyed, ChildSwitched, ChildRetired, ChildDown)):
            if self.controller is not None:
                try:
                    self._install(event)
                    if isinstance(event, (ChildUp, ChildRekeyed)):
                        log.debug("%s: CHILD_SA %08x/%08x installed in the device",
                                  session.name, event.child.spi_in, event.child.spi_out)
                except Exception as error:
                    log.warning("%s: controller refused CHILD_SA %08x: %s", session.name,
                                event.child.spi_in, error)
                    if isinstance(event, (ChildUp, ChildRekeyed, ChildSwitched)):
                        # Fail closed: a CHILD_SA the device does not hold is deleted.
                        session.delete_child(event.child.spi_in)
                        self._flush(session)
                        return
            if self.on_child is not None:
                try:
                    self.on_child(event)
                except Exception as error:
                    log.warning("on_child hook failed: %s: %s", type(error).__name__, error)

    # -- the controller ----------------------------------------------------------------------

    def _install(self, event):
        c = self.controller
        if isinstance(event, ChildUp):
            c.add_sa(event.inbound)
            try:
                c.add_sa(event.outbound)
                self._policies[event.child.spi_in] = self._add_policies(event)
            except Exception:
                _quietly(c.delete_sa, event.inbound.spi, direction="in")
                _quietly(c.delete_sa, event.outbound.spi, direction="out")
                raise
        elif isinstance(event, ChildRekeyed):
            # The old inbound SA stays: the peer may still send under it (ChildRetired);
            # so may the old outbound one, for a rekey we answered (ChildSwitched).
            c.rekey_child(event.old.spi_in, event.inbound, event.old.spi_out, event.outbound,
                          keep_old_inbound=True, switch_outbound=event.outbound_switched)
            self._policies[event.child.spi_in] = self._policies.pop(event.old.spi_in, [])
            if not event.outbound_switched:
                self._unswitched[event.child.spi_in] = event.old.spi_out
        elif isinstance(event, ChildSwitched):
            old_out = self._unswitched.pop(event.child.spi_in, event.old.spi_out)
            c.switch_outbound(old_out, event.child.spi_out)
        elif isinstance(event, ChildRetired):
            _quietly(c.delete_sa, event.child.spi_in, direction="in")
        else:
            for policy in self._policies.pop(event.child.spi_in, []):
                _quietly(c.delete_policy, policy)
            _quietly(c.delete_sa, event.child.spi_out, direction="out")
            _quietly(c.delete_sa, event.child.spi_in, direction="in")
            old_out = self._unswitched.pop(event.child.spi_in, None)
            if old_out is not None:         # a rekey we answered, not switched yet
                _quietly(c.delete_sa, old_out, direction="out")

    def _add_policies(self, event) -> list:
        ids = []
        try:
            for local in event.child.local_ts:
                for remote in event.child.remote_ts:
                    for rule in _rules(local, remote):
                        ids.append(self.controller.add_policy(rule, sa=event.outbound.spi))
        except Exception:
            for policy in ids:
                _quietly(self.controller.delete_policy, policy)
            raise
        return ids

    def _new_spi(self) -> int:
        taken = {c.spi_in for s in self._unique_sessions() for c in s.children}
        taken |= {spi for s in self._unique_sessions() for spi in s.retiring_spis()}
        while True:
            spi = (int.from_bytes(self.rng(4), "big") & 0x7FFFFFFF) | 0x40000000
            if spi not in taken:
                return spi


def _quietly(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as error:
        log.debug("%s: %s", getattr(fn, "__name__", "controller"), error)


def _rules(local_text: str, remote_text: str) -> list:
    """Outbound policy rules for one pair of selectors (as ChildInfo writes them)."""
    local, remote = _selector(local_text), _selector(remote_text)
    rules = []
    for src in local.networks():
        for dst in remote.networks():
            rule = {"src": str(src.network_address), "src_len": src.prefixlen,
                    "dst": str(dst.network_address), "dst_len": dst.prefixlen,
                    "ipv6": src.version == 6, "action": "protect", "priority": 100}
            proto = local.proto or remote.proto
            if proto:
                rule.update(any_proto=False, proto=proto, sport_lo=local.port_lo,
                            sport_hi=local.port_hi, dport_lo=remote.port_lo,
                            dport_hi=remote.port_hi)
            rules.append(rule)
    return rules


def _selector(text: str):
    """A :class:`TrafficSelector` back from its text (``str(ts)``)."""
    where, _, extra = text.partition("[")
    proto, lo, hi = 0, 0, 65535
    if extra:
        p, _, ports = extra.rstrip("]").partition("/")
        proto = int(p)
        lo, _, hi = ports.partition("-")
        lo, hi = int(lo), int(hi)
    if "/" in where:
        net = ipaddress.ip_network(where)
        return TrafficSelector(net[0], net[-1], proto, lo, hi)
    start, _, end = where.partition("-")
    return TrafficSelector(ipaddress.ip_address(start), ipaddress.ip_address(end), proto, lo, hi)
