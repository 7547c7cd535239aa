# SPDX-License-Identifier: BSD-2-Clause
"""The deepest combinational path of a synthesized netlist, in LUT levels.

nextpnr names a design's critical path only after routing, and routing the whole
device takes longer than an hour on a small machine. The mapped netlist already
says where the deep logic is: :func:`logic_depth` reads yosys' JSON netlist (what
``synth_ice40``/``synth_ecp5 -json`` write), cuts it at flip-flops, block and
LUT RAM write ports, DSPs and I/O, and finds the path with the most LUT levels
between two cuts. A LUT counts 1; a carry chain counts 1 where it is entered
from logic and :data:`RIPPLE` per cell it ripples through (carry logic is a
tenth of a LUT's delay or less); ECP5's wide-function multiplexers count
:data:`WIDE_MUX`. At ECP5 speed grade 6, a LUT level with its routing costs
about 1.2 to 2 ns, so a 75 MHz design (13.3 ns) needs paths of at most 6 to 8
levels; see docs/performance.md for how the estimates compared with nextpnr's.

The path is given as the named nets it goes through (the last name yosys kept
for each bit: Amaranth's hierarchical signal names such as
``engine.table.reply__payload``), so that it says which blocks it crosses.

Run it on a netlist: ``python -m espnic.boards.depth WORKDIR/design/top.json``
(``boards.ooc`` and ``espnic build`` leave one there), or through ``ooc``'s
report, which includes it.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["logic_depth", "Depth", "RIPPLE", "WIDE_MUX"]

#: Levels a carry signal adds per carry cell it ripples through.
RIPPLE = 0.1
#: Levels of an ECP5 PFUMX / L6MUX21 (a wide function built from two LUTs).
WIDE_MUX = 0.3


def _lut(ins, outs, levels=1.0):
    return {(i, o): levels for i in ins for o in outs}


def _ccu2c():
    """An ECP5 carry cell: two LUT4s feeding a 2-bit carry chain."""
    arcs = {}
    for half in "01":
        for pin in "ABCD":
            arcs[(pin + half, "S" + half)] = 1.0
            arcs[(pin + half, "COUT")] = 1.0
    arcs.update({("CIN", "S0"): RIPPLE, ("CIN", "S1"): RIPPLE, ("CIN", "COUT"): RIPPLE})
    return arcs


# cell type -> {(input port, output port): levels}. A port named here with a
# trailing "*" stands for every bit of a bus port. Types missing from a family's
# table are cuts (their inputs end paths, their outputs start them).
_ARCS = {
    "ice40": {
        "SB_LUT4": _lut(("I0", "I1", "I2", "I3"), ("O",)),
        "SB_CARRY": {("I0", "CO"): RIPPLE, ("I1", "CO"): RIPPLE, ("CI", "CO"): RIPPLE},
    },
    "ecp5": {
        "LUT4": _lut(("A", "B", "C", "D"), ("Z",)),
        "PFUMX": _lut(("ALUT", "BLUT", "C0"), ("Z",), WIDE_MUX),
        "L6MUX21": _lut(("D0", "D1", "SD"), ("Z",), WIDE_MUX),
        "CCU2C": _ccu2c(),
        # LUT RAM: the read address to the data out is a LUT's path; writes are cuts.
        "TRELLIS_DPR16X4": {("RAD*", "DO*"): 1.0},
    },
}


@dataclass
class Depth:
    """A deep path: ``levels``, its combinational ``cells``, the named nets along it
    (name, type of the cell that drives it), start first, and the ``blocks`` (module
    instances) it goes through, in order."""
    levels: float
    cells: int
    nets: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    cut_types: dict = field(default_factory=dict)   # cell types treated as cuts: count

    def summary(self) -> str:
        return f"{self.levels:g} LUT levels: " + (" -> ".join(self.blocks) or "-")


def _bit_names(module):
    """For each net bit, a readable name and the hierarchy of all named nets.

    A bit's name is the one of a signal of the design if it has one (yosys keeps its
    hierarchy in ``hdlname``), else a public one yosys made, the shortest. The
    hierarchy is every module instance path (``core.nic.engine0.table``) seen."""
    names, hierarchy = {}, set()
    for name, net in module.get("netnames", {}).items():
        hdlname = net.get("attributes", {}).get("hdlname")
        if hdlname:
            hierarchy.add(".".join(hdlname.split(" ")[:-1]))
        rank = (bool(hdlname), not net.get("hide_name", 0))
        for index, bit in enumerate(net["bits"]):
            if isinstance(bit, str):
                continue
            label = name if len(net["bits"]) == 1 else f"{name}[{index}]"
            known = names.get(bit)
            if known is None or rank > known[1] or (rank == known[1]
                                                     and len(label) < len(known[0])):
                names[bit] = (label, rank)
    return {bit: label for bit, (label, _) in names.items()}, hierarchy


def _port_bits(cell, port):
    return [b for b in cell["connections"].get(port, []) if not isinstance(b, str)]


def logic_depth(netlist, family: str, *, top: str = "top", paths: int = 1,
                block_depth: int = 4) -> list:
    """The deepest paths of ``netlist`` (a path to yosys' JSON netlist, or it parsed),
    one per module instance they end in (cut to ``block_depth`` levels of the
    hierarchy), deepest first, at most ``paths`` of them (:class:`Depth` each)."""
    if family not in _ARCS:
        raise ValueError(f"family must be one of {sorted(_ARCS)}, not {family!r}")
    if not isinstance(netlist, dict):
        netlist = json.loads(Path(netlist).read_text())
    modules = netlist["modules"]
    if top not in modules:
        raise ValueError(f"no module {top!r} in the netlist (it has {sorted(modules)[:5]})")
    module = modules[top]
    arcs_of = _ARCS[family]

    # fanin: output bit -> [(input bit, levels)], over every combinational arc.
    fanin, cut_types, drivers = {}, {}, {}
    for cell in module["cells"].values():
        kind = cell["type"]
        arcs = arcs_of.get(kind)
        if arcs is None:
            cut_types[kind] = cut_types.get(kind, 0) + 1
            continue
        for (src, dst), levels in arcs.items():
            if src.endswith("*"):
                # A bus-to-bus arc (LUT RAM address to data): every bit to every bit.
                srcs = [p for p in cell["connections"] if p.startswith(src[:-1])]
                dsts = [p for p in cell["connections"] if p.startswith(dst[:-1])]
            else:
                srcs, dsts = [src], [dst]
            ins = [b for port in srcs for b in _port_bits(cell, port)]
            for port in dsts:
                for out in _port_bits(cell, port):
                    fanin.setdefault(out, []).extend((bit, levels) for bit in ins)
        for port, direction in cell.get("port_directions", {}).items():
            if direction == "output":
                for bit in _port_bits(cell, port):
                    drivers[bit] = kind

    # Longest path ending at each bit, by memoized depth-first search over the fanin.
    best = {}                                   # bit -> (levels, cells, predecessor)
    for start in list(fanin):
        if start in best:
            continue
        stack = [(start, iter(fanin.get(start, ())))]
        on_stack = {start}
        while stack:
            bit, pending = stack[-1]
            advanced = False
            for pred, _ in pending:
                if pred not in best and pred in fanin:
                    if pred in on_stack:
                        raise ValueError(f"combinational loop through net bit {pred}")
                    stack.append((pred, iter(fanin[pred])))
                    on_stack.add(pred)
                    advanced = True
                    break
            if advanced:
                continue
            stack.pop()
            on_stack.discard(bit)
            value = (0.0, 0, None)
            for pred, levels in fanin[bit]:
                prior = best.get(pred, (0.0, 0, None))
                candidate = (prior[0] + levels, prior[1] + 1, pred)
                if candidate[0] > value[0]:
                    value = candidate
            best[bit] = value

    names, hierarchy = _bit_names(module)

    blocks_of = {}

    def block(bit):
        """The instance a bit's net is in (its longest hierarchy prefix), cut to
        ``block_depth`` levels."""
        if bit not in blocks_of:
            parts = names.get(bit, "").split(".")
            blocks_of[bit] = next((".".join(parts[:min(cut, block_depth)])
                                   for cut in range(len(parts) - 1, 0, -1)
                                   if ".".join(parts[:cut]) in hierarchy), "")
        return blocks_of[bit]

    def trace(end):
        levels, cells, _ = best[end]
        path, bit = [], end
        while bit is not None:
            path.append(bit)
            bit = best.get(bit, (0, 0, None))[2]
        path.reverse()
        nets = [(names.get(b, f"${b}"), drivers.get(b, "-")) for b in path]
        blocks = []
        for where in map(block, path):
            if where and (not blocks or blocks[-1] != where):
                blocks.append(where)
        return Depth(round(levels, 2), cells, nets, blocks, cut_types)

    if not best:
        return [Depth(0.0, 0, [], [], cut_types)]
    # The deepest path ending in each instance (that of its last net), deepest first.
    ends = {}
    for bit, (levels, _, _) in best.items():
        where = block(bit)
        if where not in ends or levels > best[ends[where]][0]:
            ends[where] = bit
    order = sorted(ends.values(), key=lambda b: -best[b][0])
    return [trace(bit) for bit in order[:paths]]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m espnic.boards.depth",
        description="The deepest combinational path of a yosys JSON netlist, in LUT levels.")
    parser.add_argument("netlist", metavar="TOP.json")
    parser.add_argument("--family", required=True, choices=sorted(_ARCS))
    parser.add_argument("--top", default="top")
    parser.add_argument("--paths", type=int, default=10, metavar="N",
                        help="the deepest path ending in each of the N deepest blocks")
    parser.add_argument("--block-depth", type=int, default=4, metavar="PARTS",
                        help="hierarchy levels that make a block (default 4: core.nic.engine0.table)")
    parser.add_argument("--verbose", action="store_true", help="every net of each path")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        found = logic_depth(args.netlist, args.family, top=args.top, paths=args.paths,
                            block_depth=args.block_depth)
    except (OSError, ValueError, KeyError) as error:
        print(f"depth: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"paths": [{"levels": d.levels, "cells": d.cells, "blocks": d.blocks,
                                     "nets": d.nets} for d in found]}))
        return 0
    for depth in found:
        ends = depth.nets[-1][0] if depth.nets else "-"
        print(f"{depth.levels:5g} levels, {depth.cells:3} cells, ends at {ends}")
        print("      through " + " -> ".join(depth.blocks))
        if args.verbose:
            for name, kind in depth.nets:
                print(f"        {kind:<16} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
