# SPDX-License-Identifier: BSD-2-Clause
"""boards/depth.py: the deepest path of hand-built netlists, counted by hand."""

import pytest

from espnic.boards.depth import RIPPLE, WIDE_MUX, logic_depth


class Netlist:
    """A yosys-JSON-shaped netlist built a cell at a time; nets are ints."""

    def __init__(self):
        self.cells, self.netnames, self._next = {}, {}, 10

    def net(self, name=None, hdlname=None):
        self._next += 1
        if name:
            attributes = {"hdlname": hdlname} if hdlname else {}
            self.netnames[name] = {"bits": [self._next], "hide_name": 0,
                                   "attributes": attributes}
        return self._next

    def cell(self, kind, inputs: dict, outputs: dict):
        directions = {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}}
        connections = {p: [b] for p, b in {**inputs, **outputs}.items()}
        self.cells[f"c{len(self.cells)}"] = {"type": kind, "port_directions": directions,
                                             "connections": connections}

    def json(self):
        return {"modules": {"top": {"cells": self.cells, "netnames": self.netnames}}}


def _ff(n, d, q):
    n.cell("TRELLIS_FF", {"DI": d, "CLK": 0}, {"Q": q})


def test_a_chain_of_luts_between_flip_flops_counts_one_level_each():
    n = Netlist()
    start = n.net("a.q", "a q")
    _ff(n, n.net(), start)
    bit = start
    for k in range(5):
        out = n.net(f"a.l{k}", f"a l{k}")
        n.cell("LUT4", {"A": bit, "B": n.net()}, {"Z": out})
        bit = out
    _ff(n, bit, n.net())
    (deepest,) = logic_depth(n.json(), "ecp5")
    assert deepest.levels == 5 and deepest.cells == 5
    assert [name for name, _ in deepest.nets] == ["a.q"] + [f"a.l{k}" for k in range(5)]
    assert deepest.blocks == ["a"]
    assert deepest.cut_types == {"TRELLIS_FF": 2}


def test_a_carry_chain_counts_once_where_entered_then_ripple():
    n = Netlist()
    a = n.net("x.a", "x a")
    lut = n.net("x.b", "x b")
    n.cell("LUT4", {"A": a}, {"Z": lut})
    carry = n.net()
    n.cell("CCU2C", {"A0": lut, "CIN": n.net()}, {"COUT": carry, "S0": n.net()})
    for _ in range(7):
        nxt = n.net()
        n.cell("CCU2C", {"CIN": carry, "A0": n.net()}, {"COUT": nxt, "S0": n.net()})
        carry = nxt
    total = n.net("x.sum", "x sum")
    n.cell("CCU2C", {"CIN": carry}, {"S1": total})
    mux = n.net("x.m", "x m")
    n.cell("PFUMX", {"ALUT": total, "BLUT": n.net(), "C0": n.net()}, {"Z": mux})
    (deepest,) = logic_depth(n.json(), "ecp5")
    # LUT 1, entering the chain 1, 7 ripples, the sum out of the last cell, the mux.
    assert deepest.levels == pytest.approx(2 + 7 * RIPPLE + RIPPLE + WIDE_MUX)
    assert deepest.nets[-1] == ("x.m", "PFUMX")


def test_block_rams_cut_paths_and_the_deepest_path_per_block_is_reported():
    n = Netlist()
    # Block "p": 3 LUTs into a block RAM's address, then 2 LUTs from its output.
    bit = n.net("p.in", "p in")
    for k in range(3):
        out = n.net(f"p.pre{k}", f"p pre{k}")
        n.cell("SB_LUT4", {"I0": bit}, {"O": out})
        bit = out
    data = n.net("p.ram_data", "p ram_data")
    n.cell("SB_RAM40_4K", {"RADDR": bit}, {"RDATA": data})
    bit = data
    for k in range(2):
        out = n.net(f"p.post{k}", f"p post{k}")
        n.cell("SB_LUT4", {"I0": bit}, {"O": out})
        bit = out
    # Block "q.r" (a submodule): one LUT.
    n.cell("SB_LUT4", {"I0": n.net()}, {"O": n.net("q.r.x", "q r x")})
    found = logic_depth(n.json(), "ice40", paths=5)
    assert [(d.levels, d.blocks) for d in found] == [(3, ["p"]), (1, ["q.r"])]


def test_a_combinational_loop_is_an_error():
    n = Netlist()
    a, b = n.net("l.a", "l a"), n.net("l.b", "l b")
    n.cell("LUT4", {"A": a}, {"Z": b})
    n.cell("LUT4", {"A": b}, {"Z": a})
    with pytest.raises(ValueError, match="combinational loop"):
        logic_depth(n.json(), "ecp5")


def test_unknown_family_and_module_are_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        logic_depth({"modules": {"top": {"cells": {}}}}, "gowin")
    with pytest.raises(ValueError, match="no module 'top'"):
        logic_depth({"modules": {"other": {"cells": {}}}}, "ice40")
