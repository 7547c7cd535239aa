# SPDX-License-Identifier: BSD-2-Clause
"""What a board is to espnic: its platform, its part's resources, its clock and
host link, and the top-level that puts a design on it.

Each board file (``icebreaker.py``, ``ulx3s.py``, ``ecpix5.py``) defines one
:class:`Board`; :data:`BOARDS` lists them by name and :func:`board` looks one up
with a clear error. Two designs go on a board:

* ``espnic``: :class:`~espnic.hdl.device.EspNicDevice` with its host link on the
  board's USB-UART. On a board without Ethernet, packets come and go as frames on
  that link (``packets="link"``, lookaside mode).
* ``link-check``: :class:`~.linkcheck.LinkCheck`, which sends host-link frames
  back; ``espnic link-check`` uses it to bring a board up.
"""

from dataclasses import dataclass, field

from amaranth import *
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

from ..hdl.bridge.uart import divisor_for
from .clocks import PllDomain
from .linkcheck import LinkCheck

__all__ = ["Board", "BoardTop", "BOARDS", "DESIGNS", "board", "register"]

DESIGNS = ("espnic", "link-check")

#: The board files register here, in the order of the issue's list.
BOARDS: dict = {}


@dataclass(frozen=True)
class Board:
    """One board: everything ``espnic build`` and ``espnic flash`` need.

    ``capacity`` is the part's, per resource as :mod:`~.ooc` counts them
    (``luts``, ``ffs``, ``brams``, ``sprams``, ``dsps``). ``params`` is the
    :class:`~espnic.hdl.top.EspNic` parameter set built by default; ``clock_mhz``
    the ``sync`` target it is built for.
    """
    name: str
    title: str
    platform: type                 # amaranth-boards platform class
    family: str                    # "ice40" | "ecp5"
    nextpnr_device: str            # as nextpnr's option: "up5k", "85k", "um5g-85k"
    package: str                   # as nextpnr's --package
    capacity: dict
    osc: str                       # oscillator resource
    osc_mhz: float
    clock_mhz: float               # default sync frequency
    baud: int                      # host link
    params: dict = field(default_factory=dict)
    ethernet: str | None = None    # the RGMII PHY resource, when the board has one
    # The Ethernet header of the packets sent (the next hop's address is fixed:
    # the MAC resolves no addresses). Locally administered defaults.
    src_mac: str = "02:00:00:00:00:01"
    dst_mac: str = "02:00:00:00:00:02"
    led: str = "led"               # the heartbeat's resource ("name" or "name.member")
    openfpgaloader: str | None = None   # openFPGALoader's -b name
    iceprog: bool = False          # iceprog can program it (iCE40 boards)
    bitstream_ext: str = "bit"


def register(b: Board) -> Board:
    BOARDS[b.name] = b
    return b


def board(name: str) -> Board:
    """The board called `name`; ValueError naming the known ones otherwise."""
    from . import ecpix5, icebreaker, ulx3s          # they register themselves
    del ecpix5, icebreaker, ulx3s
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]


class BoardTop(Elaboratable):
    """A design on a board: the PLL for ``sync``, the host link on the USB-UART, a
    heartbeat on an LED (0.7 to 1.4 s a period: the clock runs and reset is over).

    Parameters
    ----------
    board : the :class:`Board`.
    design : one of :data:`DESIGNS`.
    clock_mhz : the ``sync`` frequency asked for (the PLL's nearest is used).
    baud : the host link's baud rate (default: the board's).
    params : :class:`~espnic.hdl.top.EspNic` parameters (``espnic`` only; default the
        board's).
    """

    def __init__(self, b: Board, *, design: str = "espnic", clock_mhz: float | None = None,
                 baud: int | None = None, params: dict | None = None):
        if design not in DESIGNS:
            raise ValueError(f"unknown design {design!r}; designs: {', '.join(DESIGNS)}")
        if design == "link-check" and params:
            raise ValueError("the link-check design takes no EspNic parameters")
        self.board, self.design = b, design
        # With an Ethernet PHY, the espnic design's port 0 is the wire.
        self.ethernet = design == "espnic" and b.ethernet is not None
        self.clocks = PllDomain(family=b.family, clock=b.osc, f_in=b.osc_mhz,
                                f_out=b.clock_mhz if clock_mhz is None else clock_mhz,
                                extra={"rgmii_tx": 125} if self.ethernet else None)
        self.baud = b.baud if baud is None else baud
        self.divisor = divisor_for(self.clocks.frequency * 1e6, self.baud)
        # The EspNic parameters built: the board's own unless given (none for link-check).
        self.params = {} if design == "link-check" else dict(
            b.params if params is None else params)
        # Built here so a parameter set the design refuses fails before any tool runs.
        if design == "espnic":
            from ..hdl.device import EspNicDevice
            if self.ethernet:
                self.params.setdefault("ethernet", True)
            self.core = EspNicDevice(link="uart", divisor=self.divisor,
                                     packets="ports" if self.ethernet else "link", **self.params)
        else:
            self.core = LinkCheck(divisor=self.divisor)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.clocks = self.clocks
        m.submodules.core = core = self.core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(uart_rx.i), uart_tx.o.eq(core.uart_tx)]
        if self.ethernet:
            self._ethernet(m, platform, core)

        # The top bit of a free-running counter: a plain carry chain, never the
        # slowest path; 2**bits cycles is 0.7 to 1.4 s.
        heartbeat = Signal(max(2, round(self.clocks.frequency * 1e6)).bit_length())
        m.d.sync += heartbeat.eq(heartbeat + 1)
        lit = heartbeat[-1]
        resource, _, member = self.board.led.partition(".")
        led = platform.request(resource, 0, dir="-")
        m.submodules.led = led = io.Buffer("o", getattr(led, member) if member else led)
        m.d.comb += led.o.eq(lit)
        return m

    def _ethernet(self, m, platform, core):
        """Port 0 of the data plane on the RGMII PHY (:class:`~espnic.hdl.mac.RgmiiPort`);
        the other ports, and the exception queue, are not on the board."""
        from ..hdl.mac import RgmiiPort
        pins = platform.request(self.board.ethernet, 0, dir="-")
        m.domains.rgmii_rx = ClockDomain("rgmii_rx")
        m.domains.rgmii_tx = ClockDomain("rgmii_tx")
        m.submodules.rgmii_rx_clk = rx_clk = io.Buffer("i", pins.rx_clk)
        m.d.comb += ClockSignal("rgmii_rx").eq(rx_clk.i)
        # On the pin: yosys names the clock net after a signal deep in the MAC, so a
        # constraint on a net named here would match nothing (nextpnr then times the
        # domain at its 12 MHz default).
        platform.add_clock_constraint(pins.rx_clk.io, 125e6)
        m.submodules.rgmii_rx_reset = ResetSynchronizer(ResetSignal("sync"), domain="rgmii_rx")

        # The PHY is held in reset for 2**20 cycles (14 ms at 75 MHz; it needs 10 ms).
        m.submodules.phy_reset = phy_reset = io.Buffer("o", pins.rst)
        hold = Signal(21)
        with m.If(~hold[-1]):
            m.d.sync += hold.eq(hold + 1)
        m.d.comb += phy_reset.o.eq(~hold[-1])

        mac_address = lambda text: bytes.fromhex(text.replace(":", ""))   # noqa: E731
        m.submodules.mac = mac = RgmiiPort(pins, src_mac=mac_address(self.board.src_mac),
                                           dst_mac=mac_address(self.board.dst_mac))
        wiring.connect(m, mac.o, core.i[0])
        wiring.connect(m, core.o[0], mac.i)
        for p in range(1, len(core.i)):
            m.d.comb += core.o[p].ready.eq(1)
        m.d.comb += core.exception.ready.eq(1)
