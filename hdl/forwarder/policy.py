# SPDX-License-Identifier: BSD-2-Clause
"""The outbound filter: selector rules with priorities (RFC 4301 4.4.1, the SPD).

:class:`PolicyTable` holds ``rules`` rules in registers, ``rules / stages``
of them in each stage of a pipeline: a lookup (a :data:`SELECTOR`, what the
parser read from the packet) passes every stage, one stage a cycle, and
carries the best match so far. A stage's compares and the choice among its
matches are a cycle apart (the choice overlapping the next stage's compares),
and the lookup is registered before the first compare, so no cycle has a
memory read, a 128-bit compare and a priority chain in series. A rule matches
when it is valid, of the packet's IP version, its source and destination
prefixes cover the packet's addresses, its protocol is the packet's (or it
takes any), and the ports are inside its ranges. The match with the highest
``priority`` wins; among equal priorities the lowest index. No match is a miss
(``hit = 0``): the forwarder fails closed. The pipeline never stops: its
results wait in a :class:`ResultQueue`, which takes a lookup only when it has
a place for the result.

A host write replaces one rule in one cycle (its prefix lengths turned into
masks on the way in), so a lookup sees each rule old or new, never a mix;
rules are independent, so the table needs no ordering by the host.
"""

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..packet.credit import ResultQueue

__all__ = ["PolicyAction", "SELECTOR", "policy_layouts", "prefix_mask", "PolicyTable"]


class PolicyAction(enum.Enum, shape=2):
    DISCARD = 0
    BYPASS  = 1
    PROTECT = 2


#: What a packet is matched by (addresses in wire order, IPv4 in the first 4 bytes).
SELECTOR = data.StructLayout({
    "ipv6":  1,
    "src":   128,
    "dst":   128,
    "proto": 8,
    "sport": 16,
    "dport": 16,
})


def prefix_mask(length: int) -> int:
    """The mask of an address prefix of `length` bits in wire order (byte i at bits 8i,
    the prefix's first bit the most significant bit of byte 0)."""
    mask = 0
    for bit in range(length):
        mask |= 1 << (8 * (bit // 8) + 7 - bit % 8)
    return mask


def policy_layouts(rules: int, value: data.Layout) -> dict:
    rule = {
        "valid":    1,
        "ipv6":     1,
        "priority": 8,
        "src":      128,
        "dst":      128,
        "any_proto": 1,
        "proto":    8,
        "sport_lo": 16, "sport_hi": 16,
        "dport_lo": 16, "dport_hi": 16,
        "action":   PolicyAction,
        "value":    value,
    }
    return {
        # What the host writes: prefix lengths; what the table keeps: masks.
        "WRITE": data.StructLayout({"index": range(rules),
                                    "rule": data.StructLayout({**rule, "src_len": 8,
                                                               "dst_len": 8})}),
        "RULE": data.StructLayout({**rule, "src_mask": 128, "dst_mask": 128}),
        "RESULT": data.StructLayout({"hit": 1, "index": range(rules), "action": PolicyAction,
                                     "value": value}),
        "REPLY": data.StructLayout({"ok": 1}),
    }


class PolicyTable(wiring.Component):
    """Priority-ordered selector rules (see the module docstring).

    Parameters
    ----------
    rules : number of rules (a multiple of ``stages``).
    stages : pipeline stages; ``rules / stages`` rules are compared in each.
    value : the layout a PROTECT rule carries (the forwarder's: engine and SA slot).

    Latency :attr:`latency` = ``stages + 4`` cycles from a lookup taken to its result
    offered (``stages + 2`` of pipeline, 2 of the result queue's), one lookup per
    cycle. A host write is taken the cycle after it is first offered (its rule's
    enable is registered in between), written in the cycle it is taken, and
    answered in the next (``ok = 0``: a prefix longer than the address, nothing
    written).
    """

    def __init__(self, *, rules: int = 16, stages: int = 4, value: data.Layout):
        if type(stages) is not int or stages < 1:
            raise ValueError(f"stages must be a positive integer, not {stages!r}")
        if type(rules) is not int or rules < stages or rules % stages or rules > 1024:
            raise ValueError(f"rules must be a multiple of stages ({stages}) up to 1024, "
                             f"not {rules!r}")
        if not isinstance(value, data.Layout):
            raise TypeError(f"value must be a data layout, not {value!r}")
        self._rules, self._stages = rules, stages
        self._layouts = policy_layouts(rules, value)
        super().__init__({
            "lookup":     In(stream.Signature(SELECTOR)),
            "result":     Out(stream.Signature(self._layouts["RESULT"])),
            "host":       In(stream.Signature(self._layouts["WRITE"])),
            "host_reply": Out(stream.Signature(self._layouts["REPLY"])),
        })

    @property
    def _steps(self) -> int:
        # The lookup registered, then each stage's compare, then the last choice.
        return self._stages + 2

    @property
    def latency(self) -> int:
        """Cycles from a lookup taken to its result offered."""
        return self._steps + ResultQueue.DELAY

    def elaborate(self, platform):
        m = Module()
        layouts = self._layouts
        rules = [Signal(layouts["RULE"], name=f"rule_{k}") for k in range(self._rules)]

        # ---- host writes ----------------------------------------------------------------
        write = self.host.payload
        given = write.rule
        limit = Mux(given.ipv6, 128, 32)
        fits = (given.src_len <= limit) & (given.dst_len <= limit)

        def mask(length):
            # Thermometer over wire-order bits: prefix bit b is bit 8*(b//8) + 7 - b%8.
            bits = [None] * 128
            for b in range(128):
                bits[8 * (b // 8) + 7 - b % 8] = length > b
            return Cat(bits)

        stored = Signal(layouts["RULE"])
        m.d.comb += [stored.src_mask.eq(mask(given.src_len)),
                     stored.dst_mask.eq(mask(given.dst_len))]
        for name, _field in layouts["RULE"]:
            if name not in ("src_mask", "dst_mask"):
                m.d.comb += stored[name].eq(given[name])
        # A write is looked at for a cycle before it is taken: which rule it writes, if
        # any, goes into a register, so each rule's enable (a few hundred flip-flops'
        # worth) comes from a flip-flop rather than from the length checks and the
        # index decode. The write stays on `host` meanwhile, so nothing is copied.
        writes = Signal(self._rules)        # the rule the offered write will write
        ok = Signal()
        armed = Signal()
        with m.If(self.host_reply.ready):
            m.d.sync += self.host_reply.valid.eq(0)
        with m.If(~armed):
            with m.If(self.host.valid & ~self.host_reply.valid):
                m.d.sync += [armed.eq(1), ok.eq(fits),
                             writes.eq(Mux(fits, 1 << write.index, 0))]
        with m.Else():
            m.d.comb += self.host.ready.eq(1)
            m.d.sync += [armed.eq(0), self.host_reply.valid.eq(1),
                         self.host_reply.payload.ok.eq(ok)]
            for k, rule in enumerate(rules):
                with m.If(writes[k]):
                    m.d.sync += rule.eq(stored)

        # ---- the pipeline ------------------------------------------------------------------
        def matches(rule, key):
            return (rule.valid & (rule.ipv6 == key.ipv6)
                    & (((rule.src ^ key.src) & rule.src_mask) == 0)
                    & (((rule.dst ^ key.dst) & rule.dst_mask) == 0)
                    & (rule.any_proto | (rule.proto == key.proto))
                    & (key.sport >= rule.sport_lo) & (key.sport <= rule.sport_hi)
                    & (key.dport >= rule.dport_lo) & (key.dport <= rule.dport_hi))

        # A matching rule's fields, taken when it is compared: the choice a cycle later
        # sees the rule as it was compared, even if the host rewrote it in between.
        candidate = data.StructLayout({"hit": 1, "priority": 8, "action": PolicyAction,
                                       "value": layouts["RESULT"]["value"].shape})
        # The best match so far: a candidate and the rule's index.
        best_layout = data.StructLayout({**{name: field.shape for name, field in candidate},
                                         "index": range(self._rules)})
        # Step 0 registers the lookup; step s + 1 compares stage s's rules with the key;
        # step s + 2 chooses among their matches and the best so far (in index order: a
        # later rule replaces the match so far only with a strictly higher priority, so
        # the lowest index wins a tie). The last step's register goes to the result
        # queue. The steps never stop (no enable on their registers: see
        # `packet/credit.py`); a lookup is taken only with a place for its result.
        m.submodules.results = results = ResultQueue(layouts["RESULT"], latency=self._steps)
        wiring.connect(m, results.o, wiring.flipped(self.result))
        taken = self.lookup.valid & self.lookup.ready
        m.d.comb += [self.lookup.ready.eq(results.room), results.taken.eq(taken)]
        key, valid = self.lookup.payload, taken
        best = Signal(best_layout)          # no match before the first choice (always zero)
        found = []                          # (index, candidate) compared in the step before
        per_stage = self._rules // self._stages
        for step in range(self._steps):
            chosen = best
            for k, match in found:
                better = match.hit & (~chosen.hit | (match.priority > chosen.priority))
                after = Signal(best_layout, name=f"best_after_{k}")
                with m.If(better):
                    m.d.comb += [after.hit.eq(1), after.priority.eq(match.priority),
                                 after.index.eq(k), after.action.eq(match.action),
                                 after.value.eq(match.value)]
                with m.Else():
                    m.d.comb += after.eq(chosen)
                chosen = after
            stage = step - 1
            found = []
            if 0 <= stage < self._stages:
                for k in range(stage * per_stage, (stage + 1) * per_stage):
                    rule = rules[k]
                    match = Signal(candidate, name=f"match_{k}")
                    m.d.sync += [match.hit.eq(matches(rule, key)),
                                 match.priority.eq(rule.priority),
                                 match.action.eq(rule.action), match.value.eq(rule.value)]
                    found.append((k, match))
            next_valid = Signal(name=f"valid_{step}")
            next_best = Signal(best_layout, name=f"best_{step}")
            m.d.sync += [next_valid.eq(valid), next_best.eq(chosen)]
            if step < self._stages:     # the last compare is in step `stages`
                next_key = Signal(SELECTOR, name=f"key_{step}")
                m.d.sync += next_key.eq(key)
                key = next_key
            valid, best = next_valid, next_best
        m.d.comb += [
            results.i_valid.eq(valid),
            results.i.hit.eq(best.hit),
            results.i.index.eq(best.index),
            results.i.action.eq(best.action),
            results.i.value.eq(best.value),
        ]
        return m
