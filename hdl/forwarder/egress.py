# SPDX-License-Identifier: BSD-2-Clause
"""The forwarder's egress: each packet to the port its destination is routed to.

:class:`RouteTable` maps a destination prefix to an egress port, the longest
matching prefix winning (the lowest index among routes of one length). It is
a :class:`PolicyTable` underneath, not a second matcher: a route is a rule
that takes any source, protocol and ports, with the prefix length as its
priority and the port as its value, so the table's highest-priority-wins
rule is longest-prefix match, and its one-cycle atomic writes, its
pipelining and its refusal of a prefix longer than the address come with it.

:class:`Egress` parses each packet (an :class:`IpParser`, so the egress reads
the same destination the classifier filtered by), looks the destination up
and sends the packet's beats to that port. It fails closed: a malformed
packet and a packet with no route are dropped and counted; a packet leaves
only where a route says (a default route is a ``/0`` the host writes). The
packets reaching it come from the engines and the bypass after the merge,
cut through: a packet that was cut short upstream arrives with ``abort`` set
on its last beat and is sent on with it (the port's MAC invalidates it like
a bad FCS), since its first beats may have left already.

``sim/model/forwarder.py: RouteTableModel, egress`` are the same in Python.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..packet.layouts import packet_beat
from .parser import IpParser
from .policy import PolicyAction, PolicyTable

__all__ = ["EGRESS_BEAT", "ROUTE_KEY", "MAX_PORTS", "route_value", "route_layouts",
           "RouteTable", "Egress"]

_WIDTH = 16

#: The most ports an egress serves (the port number's width is sized from it).
MAX_PORTS = 16

#: A beat into and out of the egress: a packet beat, and with the last beat ``abort``
#: (the packet was cut short upstream; the port's MAC must invalidate it).
EGRESS_BEAT = data.StructLayout({**packet_beat(_WIDTH).members, "abort": 1})

#: What a route is looked up by (the address in wire order, IPv4 in the first 4 bytes).
ROUTE_KEY = data.StructLayout({"ipv6": 1, "dst": 128})


def _check_ports(ports) -> None:
    if type(ports) is not int or not 1 <= ports <= MAX_PORTS:
        raise ValueError(f"ports must be an integer from 1 to {MAX_PORTS}, not {ports!r}")


def route_value(ports: int) -> data.StructLayout:
    """What a route maps to (the :class:`PolicyTable` rule's value): a port."""
    _check_ports(ports)
    return data.StructLayout({"port": range(max(ports, 2))})


def route_layouts(routes: int, ports: int) -> dict:
    """The route table's layouts: ``WRITE`` (what the host writes: a route, or
    ``valid = 0`` to clear one), ``RESULT`` (a lookup's answer), ``REPLY``."""
    port = route_value(ports)["port"].shape
    return {
        "WRITE": data.StructLayout({
            "index":  range(routes),
            "valid":  1,
            "ipv6":   1,
            "dst":    128,          # wire order; the bits past `length` are ignored
            "length": 8,            # prefix length, 0 to 32 (IPv4) or 128 (IPv6)
            "port":   port,
        }),
        "RESULT": data.StructLayout({"hit": 1, "port": port}),
        "REPLY": data.StructLayout({"ok": 1}),
    }


def _check_size(routes, stages) -> None:
    if type(stages) is not int or stages < 1:
        raise ValueError(f"stages must be a positive integer, not {stages!r}")
    if type(routes) is not int or routes < stages or routes % stages or routes > 1024:
        raise ValueError(f"routes must be a multiple of stages ({stages}) up to 1024, "
                         f"not {routes!r}")


class RouteTable(wiring.Component):
    """Longest-prefix match of a destination to a port (see the module docstring).

    Parameters
    ----------
    routes : number of routes (a multiple of ``stages``).
    stages : pipeline stages; ``routes / stages`` routes are compared in each.
    ports : the ports a route can name (a route to port ``ports`` or above is refused).

    Latency :attr:`latency` = ``stages + 4`` cycles from a lookup taken to its result
    offered (a :class:`PolicyTable`'s, its result queue included), one lookup per
    cycle; a miss is ``hit = 0``. A host write is taken a cycle after it is offered
    and answered in the next; ``ok = 0`` (nothing written) for a prefix longer than
    the address or a port that does not exist. A lookup sees each route old or new,
    never a mix.
    """

    def __init__(self, *, routes: int = 8, stages: int = 2, ports: int):
        _check_size(routes, stages)
        _check_ports(ports)
        self._ports = ports
        self._layouts = route_layouts(routes, ports)
        self._table = PolicyTable(rules=routes, stages=stages, value=route_value(ports))
        super().__init__({
            "lookup":     In(stream.Signature(ROUTE_KEY)),
            "result":     Out(stream.Signature(self._layouts["RESULT"])),
            "host":       In(stream.Signature(self._layouts["WRITE"])),
            "host_reply": Out(stream.Signature(self._layouts["REPLY"])),
        })

    @property
    def latency(self) -> int:
        return self._table.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = self._table

        # Source, protocol and ports stay zero: every route takes any of them.
        m.d.comb += [
            table.lookup.payload.ipv6.eq(self.lookup.payload.ipv6),
            table.lookup.payload.dst.eq(self.lookup.payload.dst),
            table.lookup.valid.eq(self.lookup.valid),
            self.lookup.ready.eq(table.lookup.ready),
            self.result.payload.hit.eq(table.result.payload.hit),
            self.result.payload.port.eq(table.result.payload.value.port),
            self.result.valid.eq(table.result.valid),
            table.result.ready.eq(self.result.ready),
        ]

        write, rule = self.host.payload, table.host.payload.rule
        # A port past `ports` (the field holds up to the next power of two) goes in as a
        # prefix length no address has, which the table refuses, writing nothing.
        exists = write.port < self._ports
        m.d.comb += [
            table.host.payload.index.eq(write.index),
            rule.valid.eq(write.valid),
            rule.ipv6.eq(write.ipv6),
            rule.priority.eq(write.length),         # the longest prefix wins
            rule.dst.eq(write.dst),
            rule.dst_len.eq(Mux(exists, write.length, 255)),
            rule.any_proto.eq(1),
            rule.sport_hi.eq(0xffff),
            rule.dport_hi.eq(0xffff),
            rule.action.eq(PolicyAction.BYPASS),    # unused: a hit is a route
            rule.value.port.eq(write.port),
            table.host.valid.eq(self.host.valid),
            self.host.ready.eq(table.host.ready),
        ]
        wiring.connect(m, table.host_reply, wiring.flipped(self.host_reply))
        return m


class Egress(wiring.Component):
    """Routes each packet on ``i`` to ``o[port]`` (see the module docstring).

    Parameters
    ----------
    ports : egress ports (1 to :data:`MAX_PORTS`).
    routes, stages : the :class:`RouteTable`'s size.

    Each packet's record goes from the parser to the route table; the packet's
    beats go from the parser into a FIFO of ``stages + 6`` beats and leave it
    once the route is known, so the next lookup runs while this packet waits.
    Throughput: one beat per cycle in and out, with no cycle lost between
    packets of two beats or more (every well-formed IP packet); a dropped
    packet's beats are taken one a cycle too. Latency: a packet's first beat
    is offered on its port ``stages + 8`` cycles after the beat that completes its
    parser record came in (the record 4 cycles after that beat, then the route
    table's ``stages + 4``; the record is complete with the first 72 bytes at most).
    Packets leave in order: a stalled port holds the egress, and with it every
    other port, until it takes the beat at the head. The bytes pass as they came:
    a stream longer than its IP length (Ethernet padding) keeps its tail.

    Counters: ``malformed`` and ``no_route`` (packets dropped), ``sent[p]``
    (packets handed to port p, aborted ones included).
    """

    def __init__(self, *, ports: int, routes: int = 8, stages: int = 2):
        _check_ports(ports)
        _check_size(routes, stages)
        self._ports = ports
        self._routes = RouteTable(routes=routes, stages=stages, ports=ports)
        self._parser = IpParser(width=_WIDTH, extra={"abort": 1})
        table = self._routes.signature.members
        super().__init__({
            "i":          In(stream.Signature(EGRESS_BEAT)),
            "o":          Out(stream.Signature(EGRESS_BEAT)).array(ports),
            "host":       table["host"],
            "host_reply": table["host_reply"],
            "malformed":  Out(32),
            "no_route":   Out(32),
            "sent":       Out(32).array(ports),
        })

    def elaborate(self, platform):
        m = Module()
        ports, lookup = self._ports, self._routes.latency
        m.submodules.parser = parser = self._parser
        m.submodules.routes = routes = self._routes
        # The `malformed` flags of the packets in the route table or its result queue.
        m.submodules.verdicts = verdicts = SyncFIFO(width=1, depth=lookup + 2)
        # The results wait in the route table's result queue, read from registers.
        # The parser hands on a packet's first beat only after its record, and the next
        # record only after that beat: taking the beats into a FIFO at once lets the next
        # lookup start while this packet waits for its route.
        m.submodules.beats = beats = SyncFIFOBuffered(width=EGRESS_BEAT.size,
                                                      depth=lookup + 2)
        wiring.connect(m, wiring.flipped(self.i), parser.i)
        wiring.connect(m, wiring.flipped(self.host), routes.host)
        wiring.connect(m, routes.host_reply, wiring.flipped(self.host_reply))

        # ---- fork: the destination to the route table, `malformed` beside it -------------
        # (a full FIFO holds the parser, so the depths are about throughput only)
        record = parser.parsed.payload
        m.d.comb += [
            routes.lookup.payload.ipv6.eq(record.ipv6),
            routes.lookup.payload.dst.eq(record.dst),
            verdicts.w_data.eq(record.malformed),
            parser.parsed.ready.eq(routes.lookup.ready & verdicts.w_rdy),
            routes.lookup.valid.eq(parser.parsed.valid & verdicts.w_rdy),
            verdicts.w_en.eq(parser.parsed.valid & routes.lookup.ready),
            beats.w_data.eq(parser.o.payload),
            beats.w_en.eq(parser.o.valid),
            parser.o.ready.eq(beats.w_rdy),
        ]

        # ---- steer: a packet's first beat with its route, the rest where it went ---------
        head = EGRESS_BEAT(beats.r_data)
        found = routes.result.payload
        known = verdicts.r_rdy & routes.result.valid
        drop_new = verdicts.r_data[0] | ~found.hit
        kept_drop = Signal()
        kept_port = Signal.like(found.port)
        drop = Mux(head.first, drop_new, kept_drop)
        port = Mux(head.first, found.port, kept_port)
        go = beats.r_rdy & (~head.first | known)
        port_ready = Cat(self.o[p].ready & (port == p) for p in range(ports)).any()
        take = go & (drop | port_ready)
        new_packet = take & head.first
        for p in range(ports):
            m.d.comb += [
                self.o[p].payload.eq(head),
                self.o[p].valid.eq(go & ~drop & (port == p)),
            ]
        m.d.comb += [
            beats.r_en.eq(take),
            verdicts.r_en.eq(new_packet),
            routes.result.ready.eq(new_packet),
        ]
        with m.If(new_packet):
            m.d.sync += [kept_drop.eq(drop_new), kept_port.eq(found.port)]
            with m.If(verdicts.r_data[0]):
                m.d.sync += self.malformed.eq(self.malformed + 1)
            with m.Elif(~found.hit):
                m.d.sync += self.no_route.eq(self.no_route + 1)
        with m.If(take & head.last & ~drop):
            for p in range(ports):
                with m.If(port == p):
                    m.d.sync += self.sent[p].eq(self.sent[p] + 1)
        return m
