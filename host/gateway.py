# SPDX-License-Identifier: BSD-2-Clause
"""espnic as a (lookaside) IPsec gateway on a Linux host: the ESP data path glue
between the IKE daemon's NAT-T socket, a TUN device and an espnic device.

Inbound: the IKE daemon receives ESP-in-UDP datagrams (RFC 3948) on its NAT-T
socket and hands each to :meth:`Gateway.esp_in` (its ``esp_handler``). The
gateway rebuilds the outer IPv4/UDP packet the kernel took apart (the peer's
address and port as source, the local ones as destination) and injects it into
the device, whose inbound SA (matched on SPI and destination) authenticates and
decrypts it; the inner packet the device releases is written to the TUN device,
and the kernel delivers or forwards it from there.

Outbound: every packet the kernel routes into the TUN device is injected into
the device, whose outbound policy protects it (or bypasses or discards it); the
ESP packets the device emits go to the peer: by default through a raw socket
with ``IP_HDRINCL`` (the packet as the device made it), or through a ``send``
callback (``send(datagram, (host, port))``, e.g. the daemon's NAT-T socket).

Routing is the caller's, with help: ``routes=`` (prefixes) are routed into the
TUN device by :meth:`start`, and :meth:`route` adds one later (say, a CHILD_SA's
remote traffic selector); the gateway never removes routes the caller made. The
device's egress route table is set to send everything out of ``port`` (as
``espnic run`` does) unless ``device_routes=False``.

Every packet the gateway does not pass on is counted in :meth:`counters` under a
name that says why. The device's own drops (SPI miss, replay, bad ICV, policy
miss) are in its counters (``espnic stats``).

The gateway shares the device with the controller (the IKE daemon installs SAs
while traffic flows): from :meth:`start` to :meth:`stop` every call on the
device's link is made under one lock, so the two never interleave frames. The
gateway takes only packets from the link (``Device.packets``), never items, so
the controller's replies and events stay where it looks for them.

Not supported: IPv6 outer addresses (ESP-in-UDP over IPv6), raw ESP (protocol 50)
from the peer (the daemon's socket only sees UDP), devices with Ethernet ports.
"""

from __future__ import annotations

import collections
import fcntl
import ipaddress
import os
import select
import socket
import struct
import subprocess
import threading
import time

from ..hdl.bridge.regmap import MAX_INJECT, PacketSource
from ..hdl.engine.sa import NATT_PORT
from ..sim.model.esp import internet_checksum
from .ike.message import NON_ESP_MARKER

__all__ = ["Gateway", "GatewayError", "open_tun", "ipv4_udp_packet", "esp_in_udp_peer"]

#: linux/if_tun.h
TUNSETIFF = 0x400454ca
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

_COUNTERS = (
    "esp_in",                  # datagrams handed to esp_in
    "esp_injected",            # of those, injected into the device
    "tun_in",                  # packets read from the TUN device
    "tun_injected",            # of those, injected into the device
    "tun_out",                 # device's inner packets written to the TUN device
    "esp_out",                 # device's ESP packets sent to the peer
    # drops
    "drop_esp_not_esp",        # a non-ESP marker, a keepalive, or shorter than SPI + sequence
    "drop_esp_address",        # not IPv4, or no local address to rebuild the packet with
    "drop_esp_too_large",      # the rebuilt packet is more than the device takes
    "drop_esp_queue_full",     # the pump was behind by `queue` datagrams
    "drop_tun_not_ipv4",       # from the TUN device: IPv6 or not IP (not supported)
    "drop_tun_too_large",      # from the TUN device: more than the device takes
    "drop_inject_error",       # the device refused or did not answer an INJECT
    "drop_device_exception",   # the device sent the packet to its exception queue
    "drop_device_aborted",     # the device cut the packet off
    "drop_device_unknown",     # neither ESP to send nor an IP packet for the TUN device
    "drop_send_error",         # the raw socket or `send` failed
    "drop_tun_write_error",    # the TUN device refused the packet
)


class GatewayError(RuntimeError):
    """The gateway cannot start: one line naming the reason."""


def open_tun(name: str) -> int:
    """A file descriptor of TUN device ``name`` (made if missing): IP packets, no
    packet information header."""
    if not name or len(name.encode()) > 15:
        raise GatewayError(f"tun: {name!r} is not an interface name (1..15 bytes)")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as error:
        raise GatewayError(f"tun: cannot open /dev/net/tun ({error.strerror})") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as error:
        os.close(fd)
        raise GatewayError(f"tun: cannot make TUN device {name!r} ({error.strerror})") from None
    return fd


def ipv4_udp_packet(payload: bytes, src: tuple[str, int], dst: tuple[str, int],
                    ident: int = 0) -> bytes:
    """``payload`` in UDP from ``src`` to ``dst`` (``(address, port)``) in IPv4: the
    packet as it was on the wire before the kernel gave its payload to a socket.
    UDP checksum zero (allowed over IPv4, RFC 768; RFC 3948 section 2.1 for ESP)."""
    length = 28 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, ident & 0xffff, 0, 64, 17, 0,
                         socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload


def esp_in_udp_peer(packet: bytes) -> tuple[str, int, bytes] | None:
    """``(destination address, destination port, UDP payload)`` of an IPv4 packet
    carrying ESP in UDP (a port 4500, a non-zero SPI), or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    header = (packet[0] & 15) * 4
    if len(packet) < header + 16 or int.from_bytes(packet[6:8], "big") & 0x3fff:
        return None
    sport, dport = struct.unpack_from("!HH", packet, header)
    payload = packet[header + 8:int.from_bytes(packet[2:4], "big")]
    if NATT_PORT not in (sport, dport) or payload[:4] == NON_ESP_MARKER:
        return None
    return socket.inet_ntoa(packet[16:20]), dport, payload


class _SerializedLink:
    """``link`` with every method call made under ``lock``."""

    def __init__(self, link, lock):
        self._link, self._lock = link, lock

    def __getattr__(self, name):
        value = getattr(self._link, name)
        if not callable(value):
            return value

        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)
        return locked


class Gateway:
    """The ESP data path of one device on this host (see the module docstring).

    Parameters
    ----------
    device : the :class:`~espnic.host.device.Device` the IKE daemon's controller
        installs SAs in.
    tun : the TUN device's name (made by :meth:`start` if missing).
    port : the device's ingress port packets go in by (and, with
        ``device_routes``, the egress port everything leaves by).
    local_address : the local IPv4 address ESP arrives at, when the daemon's socket
        is bound to the wildcard address (``esp_in`` is then told ``0.0.0.0``);
        default: the address the kernel's route to the peer has as source.
    routes : prefixes routed into the TUN device by :meth:`start`.
    mtu : the TUN device's MTU: room for the ESP, UDP and outer IP headers the
        device adds under the veth's 1500 bytes.
    send : ``send(datagram, (host, port))`` sends an ESP-in-UDP datagram to the
        peer; default: the whole packet through a raw socket (``IP_HDRINCL``).
    device_routes : set the device's egress routes 0 and 1 to ``port``.
    queue : datagrams ``esp_in`` may hold before the pump takes them.
    tun_fd : an open file descriptor that reads and writes one IP packet per call
        (a TUN device the caller made and brought up, or a ``SOCK_SEQPACKET``
        socket in tests): used instead of making ``tun``, and left open by
        :meth:`stop`.
    """

    def __init__(self, device, *, tun: str, port: int = 0, local_address: str | None = None,
                 routes=(), mtu: int = 1400, send=None, device_routes: bool = True,
                 queue: int = 1024, poll: float = 0.002, tun_fd: int | None = None):
        params = device.params
        if type(port) is not int or not 0 <= port < params["ports"]:
            raise GatewayError(f"port must be 0..{params['ports'] - 1} on this device, "
                               f"not {port!r}")
        if any(params.get("ethernet", ())):
            raise GatewayError("not supported: a gateway on a device with Ethernet ports")
        if local_address is not None:
            try:
                ipaddress.IPv4Address(local_address)
            except ValueError:
                raise GatewayError(f"local_address: {local_address!r} is not an IPv4 "
                                   f"address") from None
        if type(mtu) is not int or not 576 <= mtu <= MAX_INJECT:
            raise GatewayError(f"mtu must be 576..{MAX_INJECT}, not {mtu!r}")
        self.device = device
        self.tun = tun
        self.port = port
        self.local_address = local_address
        self.routes = [str(ipaddress.ip_network(r, strict=False)) for r in routes]
        self.mtu = mtu
        self._send = send
        self._device_routes = device_routes
        self._poll = poll
        self._inbound = collections.deque()
        self._queue_limit = queue
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._count_lock = threading.Lock()
        self._lock = threading.RLock()
        self._link = None
        self._given_fd = tun_fd
        self._fd = None
        self._raw = None
        self._thread = None
        self._stop = threading.Event()
        self._ident = 0
        self._sources: dict[str, str] = {}     # remote host -> local address toward it

    # -- life ---------------------------------------------------------------------------

    def start(self) -> "Gateway":
        """Make the TUN device, bring it up, route ``routes`` into it, and start
        moving packets."""
        if self._thread is not None:
            raise GatewayError("the gateway is running already")
        self._fd = open_tun(self.tun) if self._given_fd is None else self._given_fd
        try:
            if self._given_fd is None:
                self._ip("link", "set", "dev", self.tun, "mtu", str(self.mtu), "up")
            for prefix in self.routes:
                self.route(prefix)
            if self._send is None:
                self._raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                self._raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            self._link = self.device.link
            self.device.link = _SerializedLink(self._link, self._lock)
            if self._device_routes:
                from .run import default_routes
                default_routes(self.device, self.port)
        except BaseException:
            self._close()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._pump, name=f"gateway {self.tun}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop moving packets, close the TUN device (the kernel removes it and its
        routes) and give the device its link back."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self):
        if self._link is not None:
            self.device.link = self._link
            self._link = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._fd is not None and self._given_fd is None:
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def route(self, prefix: str):
        """Route ``prefix`` (IPv4) into the TUN device (replacing a route there was)."""
        network = ipaddress.ip_network(prefix, strict=False)
        if network.version != 4:
            raise GatewayError(f"route {prefix}: not supported: IPv6 through the gateway")
        self._ip("route", "replace", str(network), "dev", self.tun)

    def _ip(self, *args):
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if done.returncode:
            raise GatewayError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def counters(self) -> dict:
        """Packets moved and dropped, by name (see ``_COUNTERS`` in the source)."""
        with self._count_lock:
            return dict(self._counts)

    def _count(self, name: str, n: int = 1):
        with self._count_lock:
            self._counts[name] += n

    # -- inbound ------------------------------------------------------------------------

    def esp_in(self, data: bytes, remote: tuple, local: tuple):
        """An ESP-in-UDP datagram's payload ``data`` that came from ``remote`` to
        ``local`` (``(host, port)`` each): queued for the device. The IKE daemon's
        ``esp_handler``; never raises for a bad datagram, it counts it."""
        self._count("esp_in")
        if len(data) < 8 or data[:4] == NON_ESP_MARKER:
            self._count("drop_esp_not_esp")
            return
        local_host = local[0]
        if local_host in ("0.0.0.0", "", None):
            local_host = self.local_address or self._source_for(remote[0])
        try:
            src = (str(ipaddress.IPv4Address(remote[0])), int(remote[1]))
            dst = (str(ipaddress.IPv4Address(local_host)), int(local[1]))
        except (ValueError, TypeError, IndexError):
            self._count("drop_esp_address")
            return
        self._ident = (self._ident + 1) & 0xffff
        packet = ipv4_udp_packet(bytes(data), src, dst, self._ident)
        if len(packet) > MAX_INJECT:
            self._count("drop_esp_too_large")
            return
        if len(self._inbound) >= self._queue_limit:
            self._count("drop_esp_queue_full")
            return
        self._inbound.append(packet)

    def _source_for(self, remote_host) -> str | None:
        """The address this host sends to ``remote_host`` from (the kernel's route
        lookup, through a UDP socket that is connected but sends nothing): where the
        peer's ESP came to when the daemon's socket is bound to the wildcard."""
        if remote_host not in self._sources:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect((remote_host, NATT_PORT))
                    self._sources[remote_host] = probe.getsockname()[0]
            except (OSError, TypeError, UnicodeError):
                return None
        return self._sources[remote_host]

    # -- the pump -----------------------------------------------------------------------

    def _pump(self):
        """Inject what came from the peer and from the TUN device, pass on what the
        device sent, until :meth:`stop`."""
        while not self._stop.is_set():
            moved = self._inject_inbound()
            moved += self._inject_tun()
            moved += self._take_device()
            if not moved:
                self._stop.wait(self._poll)
        self._take_device()

    def _inject(self, packet: bytes, done: str) -> int:
        try:
            self.device.inject(self.port, packet)
        except Exception:           # the device refused it or went away: counted
            self._count("drop_inject_error")
            return 0
        self._count(done)
        return 1

    def _inject_inbound(self) -> int:
        moved = 0
        while self._inbound:
            moved += self._inject(self._inbound.popleft(), "esp_injected")
        return moved

    def _inject_tun(self) -> int:
        moved = 0
        while moved < 64 and select.select([self._fd], [], [], 0)[0]:
            try:
                packet = os.read(self._fd, 65535)
            except BlockingIOError:
                break
            self._count("tun_in")
            moved += 1
            if not packet or packet[0] >> 4 != 4:
                self._count("drop_tun_not_ipv4")
            elif len(packet) > MAX_INJECT:
                self._count("drop_tun_too_large")
            else:
                self._inject(packet, "tun_injected")
        return moved

    def _take_device(self) -> int:
        try:
            packets = self.device.packets()
        except Exception:
            # A link that stopped answering: the next round tries again.
            time.sleep(self._poll)
            return 0
        for source, _port, packet, aborted in packets:
            if aborted:
                self._count("drop_device_aborted")
            elif source is PacketSource.EXCEPTION:
                self._count("drop_device_exception")
            elif (peer := esp_in_udp_peer(packet)) is not None:
                self._send_peer(packet, peer)
            elif packet and packet[0] >> 4 in (4, 6):
                self._write_tun(packet)
            else:
                self._count("drop_device_unknown")
        return len(packets)

    def _send_peer(self, packet: bytes, peer: tuple):
        host, port, datagram = peer
        try:
            if self._send is not None:
                self._send(datagram, (host, port))
            else:
                self._raw.sendto(packet, (host, 0))
        except OSError:
            self._count("drop_send_error")
            return
        self._count("esp_out")

    def _write_tun(self, packet: bytes):
        try:
            os.write(self._fd, packet)
        except OSError:
            self._count("drop_tun_write_error")
            return
        self._count("tun_out")
