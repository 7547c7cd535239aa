# SPDX-License-Identifier: BSD-2-Clause
"""The whole device in Python: ``hdl/top.py: EspNic``'s forwarders, engines and egress.

:class:`NicModel` holds, per ingress port, the two filters of the classifier
(:class:`SpiTableModel`, :class:`PolicyTableModel`) and the miss setting;
per engine an :class:`EspModel` and the SAs' configurations; one route table.
:meth:`NicModel.process` takes a packet as it arrives on a port and says what
the device does with it: an :class:`Outcome` naming the port it leaves on and
its bytes, or where it died and which counter says so.

The device keeps order per SA (and per port's bypass traffic), not across
them: :attr:`Outcome.flow` names the order a packet belongs to, so a test can
compare each flow's packets in order and the rest as a set. Feed each SA's
traffic through one port: the model processes packets in the order they are
given, which the device keeps only within a port.

With ``nested``, a packet the route table sends to port ``ports`` (the device
itself) goes through the local forwarder (index ``ports``: an SPI table, no
policy) again: a nested SA's inner ESP packet on to the inner SA's engine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...hdl.engine.sa import REPLAY_WINDOW, SaConfig
from ...hdl.forwarder.classifier import Decision
from ...hdl.top import ENGINE_COUNTERS, LOCAL_COUNTERS, LOCAL_DEPTH, PORT_COUNTERS
from .engine import engine_outcome
from .esp import EspModel
from .forwarder import PolicyTableModel, RouteTableModel, SpiTableModel, classify, egress, parse

__all__ = ["Outcome", "Forward", "NicModel"]


@dataclass(frozen=True)
class Outcome:
    """What became of one packet. ``port`` and ``packet`` when it left the device
    (``exception``: to the host's exception queue instead); otherwise ``reason``."""
    flow: tuple | None = None          # ("sa", engine, slot) or ("bypass", ingress port)
    port: int | None = None
    packet: bytes | None = None
    exception: bool = False
    reason: str = "ok"
    ingress: int | None = None         # the forwarder that sent it to the exception queue


@dataclass(frozen=True)
class Forward:
    """A forwarder's decision for a packet that goes on (:meth:`NicModel.decide`):
    to engine ``target`` (``{"engine", "slot"}``), or the bypass (``target`` None)."""
    port: int
    target: dict | None


class NicModel:
    """The device (see the module docstring); parameters as :class:`EspNic`'s."""

    def __init__(self, *, engines: int = 1, ports: int = 1, slots: int = 16,
                 spi_entries: int = 64, spi_ways: int = 4, rules: int = 16, routes: int = 8,
                 nested: bool = False, window: int = REPLAY_WINDOW):
        self.engines, self.ports, self.slots, self.nested = engines, ports, slots, nested
        forwarders = ports + nested      # the local one last (input: egress port `ports`)
        self.spi = [SpiTableModel(entries=spi_entries, ways=spi_ways) for _ in range(forwarders)]
        # The local forwarder's policy table stays empty: everything but ESP is a miss.
        self.policy = [PolicyTableModel(rules=rules) for _ in range(forwarders)]
        self.miss_to_host = [False] * forwarders
        self.engine = [EspModel(slots=slots, window=window) for _ in range(engines)]
        self.configs: list[dict[int, SaConfig]] = [{} for _ in range(engines)]
        self._refused = [Counter() for _ in range(engines)]
        self.routes = RouteTableModel(routes=routes, ports=ports + nested)
        self.port_counters = [Counter() for _ in range(forwarders)]
        self.egress_counters = Counter()
        self.sent = [0] * (ports + nested)

    def install(self, engine: int, slot: int, config: SaConfig):
        self.engine[engine].install(slot, config)
        self.configs[engine][slot] = config

    def engine_counters(self, engine: int) -> dict[str, int]:
        """The engine-wide counters (``ENGINE_COUNTERS``) the engine's model keeps."""
        counts = {**self.engine[engine].engine_counters, **self._refused[engine]}
        return {name: counts.get(name, 0) for name in ENGINE_COUNTERS}

    def process(self, port: int, packet: bytes) -> Outcome:
        decided = self.decide(port, packet)
        return decided if isinstance(decided, Outcome) else self.finish(decided, packet)

    def decide(self, port: int, packet: bytes) -> Outcome | Forward:
        """Forwarder `port`'s classifier on `packet`: an :class:`Outcome` when the
        packet ends here (dropped, to the exception queue), else where it goes on
        (:meth:`finish` takes it there). The classifier's counters count now."""
        counters = self.port_counters[port]
        decision, _inbound, target, counter = classify(
            parse(packet), self.spi[port], self.policy[port],
            miss_to_host=self.miss_to_host[port])
        if counter:
            counters[counter] += 1
        if decision == Decision.DROP:
            return Outcome(reason=counter)
        if decision == Decision.HOST:
            counters["to_host"] += 1
            return Outcome(exception=True, packet=packet, reason=counter, ingress=port)
        return Forward(port, None if decision == Decision.BYPASS else dict(target))

    def finish(self, decided: Forward, packet: bytes) -> Outcome:
        """The rest of a packet's way after :meth:`decide`: its engine (or the
        bypass), the egress."""
        port, target, counters = decided.port, decided.target, self.port_counters[decided.port]
        if target is None:
            counters["bypassed"] += 1
            return self._egress(("bypass", port), packet)
        engine, slot = target["engine"], target["slot"]
        if engine >= self.engines:
            counters["no_engine"] += 1
            return Outcome(reason="no_engine")
        model = self.engine[engine]
        output, reason = engine_outcome(model, self.configs[engine].get(slot), slot, packet)
        # The model counts the SA's drops; these two are the engine's own.
        if reason in ("unsupported", "aborted"):
            self._refused[engine]["unsupported" if reason == "unsupported" else "truncated"] += 1
        if output is None:
            return Outcome(flow=("sa", engine, slot), reason=reason)
        return self._egress(("sa", engine, slot), output)

    def _egress(self, flow, packet: bytes) -> Outcome:
        if parse(packet).malformed:
            self.egress_counters["egress_malformed"] += 1
            return Outcome(flow=flow, reason="egress_malformed")
        port = egress(self.routes, packet)
        if port is None:
            self.egress_counters["no_route"] += 1
            return Outcome(flow=flow, reason="no_route")
        self.sent[port] += 1
        if port == self.ports:
            # Routed to the device itself: through the local forwarder (a nested SA's
            # inner packet to the inner SA's engine). Every pass through an engine from
            # here decapsulates (the local forwarder has no policy), so it ends.
            if len(packet) > 16 * LOCAL_DEPTH:
                self.egress_counters["local_oversize"] += 1
                return Outcome(flow=flow, reason="local_oversize")
            return self.process(self.ports, packet)
        return Outcome(flow=flow, port=port, packet=packet)

    def counters(self) -> dict:
        """Every device counter by name as :class:`EspNic` has them (per port, per engine)."""
        return {
            **{name: [c[name] for c in self.port_counters] for name in PORT_COUNTERS},
            **{name: [self.engine_counters(k)[name] for k in range(self.engines)]
               for name in ENGINE_COUNTERS},
            "misrouted": 0, "arm_refused": 0,
            "no_route": self.egress_counters["no_route"],
            "egress_malformed": self.egress_counters["egress_malformed"],
            "sent": list(self.sent),
            **{name: self.egress_counters[name] for name in LOCAL_COUNTERS},
        }
