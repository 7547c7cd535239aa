# SPDX-License-Identifier: BSD-2-Clause
"""strongSwan as a test peer: network namespaces, a veth pair, and charon driven
through swanctl.

:class:`Topology` makes two network namespaces joined by a veth pair, each with
an outer address on the veth and an inner address (its traffic selector) on
``lo``; names carry the process id and a counter, so pytest-xdist workers never
collide. :class:`Charon` runs strongSwan's IKE daemon in one namespace with a
private ``/run`` (charon's pid file is fixed at ``/var/run/charon.pid``) and a
generated ``strongswan.conf`` and ``swanctl.conf``, and drives it with
``swanctl`` over its own vici socket. This kernel has no ESP, so charon
loads ``kernel-libipsec``: ESP in user space behind a TUN device (``ipsec0``),
always UDP-encapsulated (it pretends a NAT is there).

Everything is undone by the context managers even when a test fails: charon
is stopped and reaped, the namespaces deleted. Logs stay in the test's
directory; :func:`log_tail` gives their end for an assertion message.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from espnic.sim.model.esp import internet_checksum

__all__ = ["missing_tools", "Topology", "Charon", "CharonConfig", "Child", "parse_vici",
           "Capture", "ModelServerProcess", "LoggedSa", "logged_sas", "ping", "start_ping",
           "finish_ping",
           "log_tail", "CHARON"]

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "swanctl"

#: Plugins charon loads (``load`` overrides every plugin's own ``load``):
#: ``kernel-libipsec`` is the ESP data path (no ESP in this kernel), ``kernel-netlink``
#: the routes and addresses, ``vici`` swanctl's socket.
PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gcm kdf curve25519 pem pkcs1 x509 "
           "pubkey constraints kernel-libipsec kernel-netlink socket-default vici")

_names = itertools.count()


def terminate(process, timeout: float) -> None:
    """SIGTERM, up to `timeout` s to end, then SIGKILL; the process reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()



def missing_tools() -> str | None:
    """Why strongSwan tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in (CHARON, shutil.which(SWANCTL) or SWANCTL, shutil.which("ip") or "ip",
                 shutil.which("unshare") or "unshare"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed (Debian: strongswan-charon strongswan-swanctl)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (kernel-libipsec and the gateway need TUN devices)"
    plugin = Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
    if not plugin.exists():
        return f"{plugin} is not installed (Debian: libcharon-extra-plugins)"
    probe = f"espnic-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


#: The repository: where ``python -m tests.strongswan`` finds this module.
REPO = Path(__file__).resolve().parents[1]


def run(*args, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """``args`` run to completion; a failure raises with its output."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def in_ns(ns: str, *args, **options) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", ns, *args, **options)


# -- namespaces -----------------------------------------------------------------------------

@dataclass
class Side:
    """One namespace: its name, its veth, the veth's address, the inner address (on
    ``lo``, inside the traffic selector) and the network the inner address is in."""
    ns: str
    veth: str
    outer: str
    inner: str


class Topology:
    """Two namespaces ``left`` and ``right`` joined by a veth pair:

    ``left``: veth ``outer`` 198.51.100.1/24, inner 192.0.2.1/32 on lo;
    ``right``: veth ``outer`` 198.51.100.2/24, inner 203.0.113.1/32 on lo (unless
    ``right_inner_on_lo`` is False: a gateway's TUN carries it instead).

    Documentation ranges (RFC 5737) only, and only inside namespaces this makes.
    """

    def __init__(self, *, right_inner_on_lo: bool = True):
        tag = f"{os.getpid() % 100000}x{next(_names)}"
        self.left = Side(f"espnic-{tag}-l", f"en{tag}l", "198.51.100.1", "192.0.2.1")
        self.right = Side(f"espnic-{tag}-r", f"en{tag}r", "198.51.100.2", "203.0.113.1")
        self._right_inner_on_lo = right_inner_on_lo
        self._made: list[str] = []

    def __enter__(self) -> "Topology":
        try:
            for side in (self.left, self.right):
                run("ip", "netns", "add", side.ns)
                self._made.append(side.ns)
                in_ns(side.ns, "ip", "link", "set", "lo", "up")
            run("ip", "link", "add", self.left.veth, "netns", self.left.ns, "type", "veth",
                "peer", "name", self.right.veth, "netns", self.right.ns)
            for side in (self.left, self.right):
                in_ns(side.ns, "ip", "addr", "add", f"{side.outer}/24", "dev", side.veth)
                in_ns(side.ns, "ip", "link", "set", side.veth, "up")
                if side is self.left or self._right_inner_on_lo:
                    in_ns(side.ns, "ip", "addr", "add", f"{side.inner}/32", "dev", "lo")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for ns in reversed(self._made):
            # Processes still inside keep a namespace alive, but its name goes.
            run("ip", "netns", "del", ns, check=False)
        self._made.clear()


# -- charon ---------------------------------------------------------------------------------

@dataclass
class Child:
    """A CHILD_SA as ``swanctl --list-sas`` shows it."""
    name: str
    state: str
    mode: str
    encap: bool
    encryption: str
    key_size: int
    spi_in: int
    spi_out: int
    local_ts: list[str]
    remote_ts: list[str]
    packets_in: int
    packets_out: int
    unique_id: int


@dataclass
class CharonConfig:
    """What goes into charon's ``swanctl.conf``: one connection ``espnic`` with one
    child ``net``, PSK both ways."""
    local: Side
    remote: Side
    psk: str = field(repr=False)
    esp_proposals: str = "aes128gcm16"
    ike_proposals: str = "aes128gcm16-aes256gcm16-prfsha256-prfsha384-prfsha512-x25519-ecp256-modp2048"
    port: int = 500
    port_nat_t: int = 4500
    remote_port: int = 500
    rekey_time: str = "1h"         # CHILD_SA
    ike_rekey_time: str = "4h"
    start_action: str = "none"     # "trap", "start": charon initiates on its own

    def swanctl_conf(self) -> str:
        secret = self.psk.replace('"', '\\"')
        return f"""connections {{
    espnic {{
        version = 2
        local_addrs = {self.local.outer}
        remote_addrs = {self.remote.outer}
        remote_port = {self.remote_port}
        proposals = {self.ike_proposals}
        rekey_time = {self.ike_rekey_time}
        dpd_delay = 0
        local {{
            auth = psk
            id = {self.local.outer}
        }}
        remote {{
            auth = psk
            id = {self.remote.outer}
        }}
        children {{
            net {{
                mode = tunnel
                local_ts = {self.local.inner}/32
                remote_ts = {self.remote.inner}/32
                esp_proposals = {self.esp_proposals}
                rekey_time = {self.rekey_time}
                start_action = {self.start_action}
                dpd_action = clear
            }}
        }}
    }}
}}
secrets {{
    ike-espnic {{
        id-local = {self.local.outer}
        id-remote = {self.remote.outer}
        secret = "{secret}"
    }}
}}
"""


class Charon:
    """strongSwan's charon in namespace ``side.ns`` for the ``with`` block, its files
    (``strongswan.conf``, ``swanctl.conf``, ``charon.log``, the vici socket) in
    ``workdir``. ``debug``: log levels 4 for ``chd`` and ``ike`` (charon then logs
    keys: for debugging key derivation only); ``keys``: ``chd = 4`` alone, the CHILD_SA
    keys for :func:`logged_sas`."""

    def __init__(self, config: CharonConfig, workdir: Path, *, debug: bool = False,
                 keys: bool = False):
        self.config = config
        self.ns = config.local.ns
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "charon.log"
        self.socket = self.workdir / "charon.vici"
        self.uri = f"unix://{self.socket}"
        self.debug = debug
        self.keys = keys
        self.process: subprocess.Popen | None = None

    def strongswan_conf(self) -> str:
        levels = (f"ike = {4 if self.debug else 2}\n"
                  f"            chd = {4 if self.debug or self.keys else 2}\n"
                  f"            knl = {2 if self.debug else 1}")
        return f"""charon {{
    load = {PLUGINS}
    port = {self.config.port}
    port_nat_t = {self.config.port_nat_t}
    retransmit_tries = 3
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    install_virtual_ip = no
    filelog {{
        charon {{
            path = {self.log}
            time_format = %T
            ike_name = yes
            flush_line = yes
            default = 1
            {levels}
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
    plugins {{
        vici {{
            socket = {self.uri}
        }}
    }}
}}
swanctl {{
    socket = {self.uri}
}}
"""

    def __enter__(self) -> "Charon":
        conf = self.workdir / "strongswan.conf"
        conf.write_text(self.strongswan_conf())
        (self.workdir / "swanctl.conf").write_text(self.config.swanctl_conf())
        self.log.write_text("")
        stdout = open(self.workdir / "charon.stdout", "w")
        # A private /run per charon: its pid file and lock are at fixed paths there.
        script = ("mount -t tmpfs tmpfs /run && "
                  f"STRONGSWAN_CONF={conf} exec {CHARON}")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "-m", "--propagation", "private",
             "sh", "-c", script], stdout=stdout, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        stdout.close()
        try:
            self._wait_ready()
            self.swanctl("--load-all", "--file", self.workdir / "swanctl.conf")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _wait_ready(self, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"charon in {self.ns} exited ({self.process.returncode}): "
                                   f"{log_tail(self.workdir / 'charon.stdout', self.log)}")
            if self.socket.exists() and self.swanctl("--stats", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"charon in {self.ns}: no vici socket within {timeout:g} s")

    def stop(self):
        """SIGTERM, then SIGKILL; the process reaped either way."""
        if self.process is None:
            return
        terminate(self.process, 5)
        self.process = None

    # -- swanctl ------------------------------------------------------------------------

    def swanctl(self, *args, check: bool = True, timeout: float = 20.0):
        return run(SWANCTL, *args, "--uri", self.uri, check=check, timeout=timeout)

    def initiate(self, child: str = "net", *, timeout: int = 10):
        """``swanctl --initiate --child``: returns when the CHILD_SA is up (raises if
        it failed, with charon's words)."""
        done = self.swanctl("--initiate", "--child", child, "--timeout", timeout,
                            check=False, timeout=timeout + 5)
        if done.returncode:
            raise RuntimeError(f"charon could not initiate {child}: "
                               f"{done.stdout.strip()[-2000:]}")

    def rekey_child(self, child: str = "net"):
        self.swanctl("--rekey", "--child", child)

    def rekey_ike(self, ike: str = "espnic"):
        self.swanctl("--rekey", "--ike", ike)

    def terminate(self, ike: str = "espnic"):
        self.swanctl("--terminate", "--ike", ike, "--timeout", 5, check=False)

    def list_sas(self) -> list[dict]:
        """Every IKE_SA as vici gives it (``--raw`` parsed): dicts of strings, lists
        and dicts, the IKE_SA's name under ``"name"``."""
        raw = self.swanctl("--list-sas", "--raw").stdout
        sas = []
        for line in raw.splitlines():
            if line.startswith("list-sa event "):
                for name, body in parse_vici(line[len("list-sa event "):]).items():
                    sas.append({"name": name, **body})
        return sas

    def children(self, state: str | None = "INSTALLED") -> list[Child]:
        """The CHILD_SAs of every IKE_SA (in ``state``, or all)."""
        found = []
        for ike in self.list_sas():
            for child in (ike.get("child-sas") or {}).values():
                if state and child.get("state") != state:
                    continue
                found.append(Child(
                    name=child["name"], state=child["state"], mode=child.get("mode", ""),
                    encap=child.get("encap") == "yes", encryption=child.get("encr-alg", ""),
                    key_size=int(child.get("encr-keysize", 0)),
                    spi_in=int(child.get("spi-in", "0"), 16),
                    spi_out=int(child.get("spi-out", "0"), 16),
                    local_ts=list(child.get("local-ts", [])),
                    remote_ts=list(child.get("remote-ts", [])),
                    packets_in=int(child.get("packets-in", 0)),
                    packets_out=int(child.get("packets-out", 0)),
                    unique_id=int(child.get("uniqueid", 0))))
        return found

    def wait_children(self, count: int = 1, *, timeout: float = 10.0,
                      state: str = "INSTALLED") -> list[Child]:
        """Wait until ``count`` CHILD_SAs are in ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            children = self.children(state)
            if len(children) >= count or time.monotonic() > deadline:
                return children
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


_TOKEN = re.compile(r"\s*(\{|\}|\[|\]|[^\s{}\[\]=]+=|[^\s{}\[\]]+)")


def parse_vici(text: str) -> dict:
    """swanctl's ``--raw`` form (``name {key=value list=[a b] section {...}}``) as
    nested dicts and lists of strings."""
    tokens = [m.group(1) for m in _TOKEN.finditer(text)]
    position = 1 if tokens[:1] == ["{"] else 0      # a message is one unnamed section

    def section() -> dict:
        nonlocal position
        result = {}
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == "}":
                return result
            if token.endswith("="):
                key = token[:-1]
                if position < len(tokens) and tokens[position] == "[":
                    position += 1
                    items = []
                    while tokens[position] != "]":
                        items.append(tokens[position])
                        position += 1
                    position += 1
                    result[key] = items
                else:
                    result[key] = tokens[position]
                    position += 1
            else:                  # a named section: name {
                if tokens[position] != "{":
                    raise ValueError(f"vici text: expected {{ after {token!r}")
                position += 1
                result[token] = section()
        return result

    return section()


def log_tail(*paths, lines: int = 60) -> str:
    """The last ``lines`` lines of each log that exists, for a failure message."""
    parts = []
    for path in paths:
        path = Path(path)
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
    return "\n".join(parts)


# -- ping -----------------------------------------------------------------------------------

def _ping(src: str, dst: str, count: int, interval: float, wait: float) -> dict:
    """ICMP echo from ``src`` to ``dst``: ``count`` requests ``interval`` s apart, then
    up to ``wait`` s for the replies still missing. Returns the sequence numbers
    answered."""
    import select
    import socket
    import struct

    ident = os.getpid() & 0xffff
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.bind((src, 0))
    answered: set[int] = set()

    def receive(until: float):
        while (left := until - time.monotonic()) > 0 and len(answered) < count:
            if not select.select([sock], [], [], left)[0]:
                return
            packet, (peer, _) = sock.recvfrom(65535)
            header = (packet[0] & 15) * 4
            kind, _, _, who, seq = struct.unpack_from("!BBHHH", packet, header)
            if kind == 0 and who == ident and peer == dst:
                answered.add(seq)

    for seq in range(count):
        body = struct.pack("!d", time.monotonic()) + bytes(48)
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        checksum = internet_checksum(header + body)
        sock.sendto(struct.pack("!BBHHH", 8, 0, checksum, ident, seq) + body, (dst, 0))
        pace = time.monotonic() + interval
        receive(pace)
        time.sleep(max(0.0, pace - time.monotonic()))
    receive(time.monotonic() + wait)        # returns as soon as every request is answered
    return {"sent": count, "answered": sorted(answered)}


def ping(ns: str, src: str, dst: str, *, count: int = 3, interval: float = 0.1,
         wait: float = 2.0) -> dict:
    """:func:`_ping` run inside namespace ``ns`` (no ``ping`` binary needed): ``{"sent":
    n, "answered": [sequence numbers]}``."""
    import json
    import sys

    done = in_ns(ns, sys.executable, "-m", "tests.strongswan", "ping", src, dst, count,
                 interval, wait, timeout=count * interval + wait + 30)
    return json.loads(done.stdout)


def start_ping(ns: str, src: str, dst: str, *, count: int, interval: float,
               wait: float = 2.0) -> subprocess.Popen:
    """:func:`ping` in the background; ``finish_ping`` collects it."""
    import sys

    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.strongswan",
                             "ping", src, dst, str(count), str(interval), str(wait)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_ping(process: subprocess.Popen, timeout: float = 60.0) -> dict:
    import json

    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    if process.returncode:
        raise RuntimeError(f"ping failed: {err.strip()}")
    return json.loads(out)


# -- capture --------------------------------------------------------------------------------

def _capture(interface: str, path: str):
    """Every frame on ``interface`` (both ways) until SIGTERM, then a pcap at ``path``
    (link type Ethernet, or raw IP for a TUN device). Prints ``ready`` once bound."""
    import socket
    import sys

    from scapy.utils import RawPcapWriter

    ETH_P_ALL = 0x0003
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, ETH_P_ALL))
    sock.settimeout(0.05)
    arphrd = sock.getsockname()[3]
    frames = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    while not stop:
        try:
            frames.append((time.time(), sock.recv(65535)))
        except (socket.timeout, InterruptedError):
            continue
    # ARPHRD_NONE (a TUN device): raw IP, link type 101; else Ethernet, 1.
    with RawPcapWriter(path, linktype=101 if arphrd == 0xfffe else 1, sync=False) as writer:
        writer.write_header(None)
        for stamp, frame in frames:
            writer.write_packet(frame, sec=int(stamp), usec=int((stamp % 1) * 1e6))
    sys.stdout.flush()


class Capture:
    """Frames on ``interface`` in namespace ``ns`` for the ``with`` block, written to
    ``path`` (pcap) when it ends; :attr:`frames` then holds them as
    ``(linktype, [bytes])``."""

    def __init__(self, ns: str, interface: str, path: Path):
        self.ns, self.interface, self.path = ns, interface, Path(path)
        self.process = None
        self.frames: list[bytes] = []
        self.linktype = None

    def __enter__(self) -> "Capture":
        import sys

        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.strongswan",
             "capture", self.interface, str(self.path)], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            self.process.wait(timeout=10)
            raise RuntimeError(f"capture on {self.interface} in {self.ns} did not start: "
                               f"{self.process.stderr.read().strip()}")
        return self

    def __exit__(self, *exc):
        from scapy.utils import RawPcapReader

        terminate(self.process, 20)
        for pipe in (self.process.stdout, self.process.stderr):
            pipe.close()
        if self.process.returncode == 0 and self.path.exists():
            with RawPcapReader(str(self.path)) as reader:
                self.linktype = reader.linktype
                self.frames = [frame for frame, _ in reader]


# -- a device server in a namespace ----------------------------------------------------------

class ModelServerProcess:
    """``tests/model_server.ModelServer`` (the reference model behind a TCP port) in a
    process of its own in namespace ``ns``: :attr:`url` is its ``socket://`` URL,
    reachable from that namespace only."""

    def __init__(self, ns: str):
        self.ns = ns
        self.process = None
        self.url = None

    def __enter__(self) -> "ModelServerProcess":
        import sys

        # SIGTERM blocked before the interpreter starts it: sigwait takes it.
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c",
             "import signal, runpy, sys; "
             "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT}); "
             "sys.argv = ['strongswan', 'model-server']; "
             "runpy.run_module('tests.strongswan', run_name='__main__')"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("socket://"):
            self.process.kill()
            self.process.wait()
            error = self.process.stderr.read().strip()[-2000:]
            self.process.stdout.close()
            self.process.stderr.close()
            raise RuntimeError(f"model server in {self.ns} did not start: {error}")
        return self

    def __exit__(self, *exc):
        terminate(self.process, 10)
        for pipe in (self.process.stdout, self.process.stderr):
            pipe.close()


# -- keys, from charon's log ----------------------------------------------------------------

_KEY_LINE = re.compile(r"encryption (initiator|responder) key => (\d+) bytes")
_DUMP_LINE = re.compile(r"^\s+\d+: ((?:[0-9A-F]{2} ?)+)")
_SA_LINE = re.compile(r"SPI 0x([0-9a-f]+), src (\S+) dst (\S+)")
_EXCHANGE = re.compile(r"(generating|parsed) (IKE_AUTH|CREATE_CHILD_SA) request")


@dataclass
class LoggedSa:
    """An ESP SA charon installed, with the key and salt it logged (``chd = 4``)."""
    spi: int
    src: str
    dst: str
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)


def logged_sas(log: str) -> dict[int, LoggedSa]:
    """Every ESP SA in charon's log (written with ``keys=True``), by SPI.

    RFC 7296 section 2.17: the first key protects what the exchange's initiator
    sends. The role comes from the last IKE_AUTH or CREATE_CHILD_SA request this
    charon generated (initiator) or parsed (responder) before the keys; the SA's
    direction from its src: the initiator's own outer address."""
    sas = {}
    initiator = None
    keys: dict[str, bytes] = {}
    lines = log.splitlines()
    n = 0
    while n < len(lines):
        text = lines[n].split("> ", 1)[-1] if "> " in lines[n] else lines[n]
        n += 1
        if (exchange := _EXCHANGE.search(text)):
            initiator = exchange.group(1) == "generating"
            keys = {}
        elif (key := _KEY_LINE.search(text)):
            size = int(key.group(2))
            octets = bytearray()
            while len(octets) < size and n < len(lines):
                dump = _DUMP_LINE.match(lines[n].split("> ", 1)[-1])
                if not dump:
                    break
                octets += bytes.fromhex(dump.group(1).replace(" ", ""))
                n += 1
            keys[key.group(1)] = bytes(octets[:size])
        elif (sa := _SA_LINE.search(text)) and len(keys) == 2 and initiator is not None:
            spi, src, dst = int(sa.group(1), 16), sa.group(2), sa.group(3)
            direction = "outbound" if "outbound" in lines[n - 2] else "inbound"
            # This charon sends on its outbound SAs: initiator's key if it initiated.
            sent_by_initiator = (direction == "outbound") == initiator
            material = keys["initiator" if sent_by_initiator else "responder"]
            sas[spi] = LoggedSa(spi, src, dst, material[:-4], material[-4:])
    return sas


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] == ["ping"]:
        _src, _dst, _count, _interval, _wait = sys.argv[2:7]
        print(json.dumps(_ping(_src, _dst, int(_count), float(_interval), float(_wait))))
    elif sys.argv[1:2] == ["capture"]:
        _capture(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["model-server"]:
        # A device that outlives its clients, inside the namespace that runs this.
        from tests.model_server import ModelServer
        _server = ModelServer()
        print(_server.url, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        _server.close()
