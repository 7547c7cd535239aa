# SPDX-License-Identifier: BSD-2-Clause
"""A board's ``sync`` clock: the oscillator through a PLL to the design's frequency.

:func:`ice40_pll` and :func:`ecp5_pll` choose the divider settings (what
``icepll`` and ``ecppll`` print, computed here so no tool runs);
:class:`PllDomain` instantiates the PLL for the board's family and holds
``sync`` in reset until the PLL reports lock. Without a PLL (the oscillator
already at the wanted frequency) the oscillator drives ``sync`` directly.
"""

from dataclasses import dataclass

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["PllSettings", "ice40_pll", "ecp5_pll", "PllDomain"]

#: How far the PLL's output may be from the asked frequency.
TOLERANCE = 0.005


@dataclass(frozen=True)
class PllSettings:
    """Divider settings and the frequency they give (MHz)."""
    family: str
    f_in: float
    f_out: float          # what the dividers give
    dividers: dict        # the primitive's parameters, by name


def _check(f_in, f_out):
    for name, value in (("f_in", f_in), ("f_out", f_out)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive frequency in MHz, not {value!r}")


def _pick(candidates, f_in, f_out, family, part_limits):
    best = min(candidates, default=None, key=lambda c: (abs(c[0] - f_out), c[1]))
    if best is None or abs(best[0] - f_out) > TOLERANCE * f_out:
        near = f"; nearest {best[0]:.3f} MHz" if best else ""
        raise ValueError(f"no {family} PLL setting gives {f_out:g} MHz from {f_in:g} MHz "
                         f"within {TOLERANCE:.1%} ({part_limits}{near})")
    return best


def ice40_pll(f_in: float, f_out: float) -> PllSettings:
    """SB_PLL40 settings (``FEEDBACK_PATH="SIMPLE"``) for `f_out` MHz from `f_in`.

    The iCE40 PLL's limits (iCE40 sysCLOCK PLL technical note): phase detector
    10 to 133 MHz, VCO 533 to 1,066 MHz, output 16 to 275 MHz.
    """
    _check(f_in, f_out)
    candidates = []
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                out = f_vco / 2 ** divq
                if 16 <= out <= 275:
                    # The loop filter's range follows the phase detector's frequency.
                    filter_range = next(n for n, top in enumerate((17, 26, 44, 66, 101), 1)
                                        if f_pfd < top) if f_pfd < 101 else 6
                    candidates.append((out, divr, dict(
                        DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filter_range)))
    out, _, dividers = _pick(candidates, f_in, f_out, "iCE40",
                             "output 16 to 275 MHz, VCO 533 to 1,066 MHz")
    return PllSettings("ice40", f_in, out, dividers)


def ecp5_pll(f_in: float, f_out: float, *, extra: tuple = ()) -> PllSettings:
    """EHXPLLL settings (feedback from CLKOP) for `f_out` MHz from `f_in`, and for
    each frequency of `extra` (at most three) from CLKOS, CLKOS2 and CLKOS3.

    The ECP5 PLL's limits (ECP5 sysCLOCK user guide): phase detector 3.125 to
    400 MHz, VCO 400 to 800 MHz, output 3.125 to 400 MHz. Every output divides
    the one VCO, so it is chosen as a common multiple, nearest 600 MHz (ecppll's
    choice) among those that give every output within the tolerance.
    """
    _check(f_in, f_out)
    for f in extra:
        _check(f_in, f)
    if len(extra) > 3:
        raise ValueError(f"an EHXPLLL has three secondary outputs, not {len(extra)}")
    candidates = []
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb in range(1, 81):
            out = f_pfd * clkfb
            if not 3.125 <= out <= 400:
                continue
            best = None
            for clkop in range(1, 129):
                vco = out * clkop
                if not 400 <= vco <= 800:
                    continue
                divs = [round(vco / f) for f in extra]
                if any(not 1 <= d <= 128 or abs(vco / d - f) > TOLERANCE * f
                       for d, f in zip(divs, extra)):
                    continue
                if best is None or abs(vco - 600) < abs(best[0] * out - 600):
                    best = (clkop, divs)
            if best:
                clkop, divs = best
                dividers = dict(CLKI_DIV=clki, CLKFB_DIV=clkfb, CLKOP_DIV=clkop,
                                CLKOP_CPHASE=clkop - 1, CLKOP_FPHASE=0)
                for name, d in zip(("CLKOS", "CLKOS2", "CLKOS3"), divs):
                    dividers.update({f"{name}_DIV": d, f"{name}_CPHASE": d - 1,
                                     f"{name}_FPHASE": 0})
                candidates.append((out, clki, dividers))
    out, _, dividers = _pick(candidates, f_in, f_out, "ECP5",
                             "output 3.125 to 400 MHz, VCO 400 to 800 MHz"
                             + (f", with {', '.join(f'{f:g}' for f in extra)} MHz from the "
                                f"same VCO" if extra else ""))
    return PllSettings("ecp5", f_in, out, dividers)


class PllDomain(Elaboratable):
    """Drives ``sync`` (which the parent defines) at `f_out` MHz from the board's
    oscillator resource `clock` (`f_in` MHz), held in reset until the PLL locks (and
    for two cycles after, by a :class:`ResetSynchronizer`). ``settings`` is None
    when no PLL is needed."""

    def __init__(self, *, family: str, clock: str, f_in: float, f_out: float,
                 extra: dict | None = None):
        if family not in ("ice40", "ecp5"):
            raise ValueError(f"family must be 'ice40' or 'ecp5', not {family!r}")
        extra = dict(extra or {})
        if extra and family != "ecp5":
            raise ValueError("extra clock domains are built on ECP5 only")
        self.family, self.clock, self.f_in, self.f_out = family, clock, f_in, f_out
        self.extra = extra
        if abs(f_in - f_out) <= TOLERANCE * f_out and not extra:
            self.settings = None
        elif family == "ice40":
            self.settings = ice40_pll(f_in, f_out)
        else:
            self.settings = ecp5_pll(f_in, f_out, extra=tuple(extra.values()))

    @property
    def frequency(self) -> float:
        """``sync``'s frequency in MHz."""
        return self.f_in if self.settings is None else self.settings.f_out

    def elaborate(self, platform):
        m = Module()
        clk = Signal(name="sync_clk")        # a Signal: a clock constraint names one
        m.d.comb += ClockSignal("sync").eq(clk)
        locked = Signal()
        pin = platform.request(self.clock, 0, dir="-")
        if self.settings is None or self.family == "ecp5":
            m.submodules.osc = osc = io.Buffer("i", pin)
        if self.settings is None:
            m.d.comb += [clk.eq(osc.i), locked.eq(1)]
        elif self.family == "ice40":
            # The PAD variant: the PLL takes the oscillator straight from its pin.
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                **{f"p_{name}": value for name, value in self.settings.dividers.items()},
                i_PACKAGEPIN=pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        else:
            d = self.settings.dividers
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{self.f_in:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.settings.f_out:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
                a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
                p_CLKI_DIV=d["CLKI_DIV"], p_CLKFB_DIV=d["CLKFB_DIV"],
                p_CLKOP_DIV=d["CLKOP_DIV"], p_CLKOP_CPHASE=d["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=d["CLKOP_FPHASE"],
                **self._secondary(m, platform, d),
                i_CLKI=osc.i, i_CLKFB=clk, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
                i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=clk, o_LOCK=locked)
        platform.add_clock_constraint(clk, self.frequency * 1e6)
        if self.family == "ecp5":
            self._global_reset(m, clk, ~locked)
        else:
            # nextpnr-ice40 puts a high-fanout reset on a global buffer itself.
            m.submodules.reset = ResetSynchronizer(~locked, domain="sync")
        for name in self.extra:
            m.submodules[f"reset_{name}"] = ResetSynchronizer(~locked, domain=name)
        return m

    @staticmethod
    def _global_reset(m, clk, arst):
        """``sync``'s reset, synchronized as :class:`ResetSynchronizer` does, then through
        a ``DCCA`` onto a global network. nextpnr-ecp5 promotes only clocks to global
        networks; ``sync``'s reset goes to nearly every flip-flop of the design, and in
        the general routing it was among the three most congested nets of the whole
        ULX3S build and one cycle's wire across the die."""
        # A domain of `sync`'s clock whose reset is the synchronizer's output before
        # the global buffer.
        m.domains.sync_reset = local = ClockDomain("sync_reset", local=True)
        m.d.comb += local.clk.eq(clk)
        m.submodules.reset = ResetSynchronizer(arst, domain="sync_reset")
        m.submodules.reset_buffer = Instance("DCCA", i_CLKI=local.rst, i_CE=1,
                                             o_CLKO=ResetSignal("sync"))

    def _secondary(self, m, platform, dividers) -> dict:
        """The EHXPLLL ports and parameters of the extra domains' outputs."""
        ports = {}
        for (name, f), output in zip(self.extra.items(), ("CLKOS", "CLKOS2", "CLKOS3")):
            clk = Signal(name=f"{name}_clk")
            m.d.comb += ClockSignal(name).eq(clk)
            ports.update({f"p_{output}_ENABLE": "ENABLED", f"o_{output}": clk,
                          f"a_FREQUENCY_PIN_{output}": f"{f:g}",
                          **{f"p_{output}_{k}": dividers[f"{output}_{k}"]
                             for k in ("DIV", "CPHASE", "FPHASE")}})
            # The constraint lets nextpnr time the domain; the parent defines it.
            platform.add_clock_constraint(clk, f * 1e6)
        return ports
