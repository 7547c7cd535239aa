# SPDX-License-Identifier: BSD-2-Clause
"""Testbench helpers for Amaranth's own simulator (unit tests).

Every helper is an ``async`` function that takes the testbench context ``ctx``
(from :meth:`amaranth.sim.Simulator.add_testbench`) and a stream interface
(:class:`amaranth.lib.stream.Interface`, or anything with ``payload``,
``valid`` and ``ready``). The helpers leave ``valid``/``ready`` low when they
return, so calls compose; the randomized ones take a :class:`random.Random`
(default ``random.Random(0)``, so a failing run repeats) and insert idle
cycles (``gap_prob``) or back-pressure (``stall_prob``) per cycle.

``timeout`` arguments count clock cycles and raise :exc:`TimeoutError`, so a
device that never answers fails the test instead of hanging it.

:func:`run_sim` runs testbenches on a design and writes a VCD when
``ESPNIC_WAVES=1`` (to ``<cache>/waves/<test>.vcd``) or when ``vcd`` is given.
"""

import os
import random
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "stream_put_all", "stream_get_n", "stream_get_packets",
           "stream_record", "run_sim"]

_DEFAULT_CLOCKS = {"sync": 1e-8}


def _rng(rng: random.Random | None) -> random.Random:
    return random.Random(0) if rng is None else rng


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), not {value!r}")


async def stream_put(ctx, stream, payload, *, domain: str = "sync",
                     timeout: int | None = None) -> None:
    """Offer one ``payload`` on ``stream`` and wait for the clock edge that takes it."""
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    cycles = 0
    while True:
        _clk, _rst, ready = await ctx.tick(domain).sample(stream.ready)
        if ready:
            break
        cycles += 1
        if timeout is not None and cycles >= timeout:
            ctx.set(stream.valid, 0)
            raise TimeoutError(f"stream was not ready for {timeout} cycles")
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, domain: str = "sync", timeout: int | None = None):
    """Accept one payload from ``stream``; returns it as :meth:`ctx.get` would
    (an ``int``, or a :class:`amaranth.lib.data.Const` for a layout)."""
    ctx.set(stream.ready, 1)
    cycles = 0
    while True:
        _clk, _rst, valid, payload = await ctx.tick(domain).sample(stream.valid, stream.payload)
        if valid:
            break
        cycles += 1
        if timeout is not None and cycles >= timeout:
            ctx.set(stream.ready, 0)
            raise TimeoutError(f"stream had no valid payload for {timeout} cycles")
    ctx.set(stream.ready, 0)
    return payload


async def stream_put_all(ctx, stream, payloads: Iterable, *, rng: random.Random | None = None,
                         gap_prob: float = 0.0, domain: str = "sync",
                         timeout: int | None = None) -> None:
    """Send ``payloads`` in order, back to back, except that before each one an
    idle cycle (``valid`` low) is inserted with probability ``gap_prob``
    (repeatedly, so gaps are geometrically long). ``timeout`` is per payload."""
    _check_prob("gap_prob", gap_prob)
    rng = _rng(rng)
    for payload in payloads:
        while gap_prob and rng.random() < gap_prob:
            ctx.set(stream.valid, 0)
            await ctx.tick(domain)
        # Lowering `valid` after the handshake and raising it again for the
        # next payload before the next edge leaves it high: no idle cycle.
        await stream_put(ctx, stream, payload, domain=domain, timeout=timeout)


async def stream_get_n(ctx, stream, n: int, *, rng: random.Random | None = None,
                       stall_prob: float = 0.0, domain: str = "sync",
                       timeout: int | None = None) -> list:
    """Receive ``n`` payloads; in each cycle ``ready`` is held low with
    probability ``stall_prob``. ``timeout`` bounds the cycles between two
    payloads."""
    _check_prob("stall_prob", stall_prob)
    rng = _rng(rng)
    payloads = []
    cycles = 0
    while len(payloads) < n:
        ready = not (stall_prob and rng.random() < stall_prob)
        ctx.set(stream.ready, ready)
        _clk, _rst, valid, payload = await ctx.tick(domain).sample(stream.valid, stream.payload)
        if valid and ready:
            payloads.append(payload)
            cycles = 0
            continue
        cycles += 1
        if timeout is not None and cycles >= timeout:
            ctx.set(stream.ready, 0)
            raise TimeoutError(f"received {len(payloads)} of {n} payloads, then nothing "
                               f"for {timeout} cycles")
    ctx.set(stream.ready, 0)
    return payloads


async def stream_get_packets(ctx, stream, packets: int, *, rng: random.Random | None = None,
                             stall_prob: float = 0.0, domain: str = "sync",
                             timeout: int | None = None) -> list:
    """Receive the beats of ``packets`` packets (a payload with a ``last`` field
    ends one); before each beat ``ready`` stays low for a geometrically long
    time (``stall_prob``). ``timeout`` is per beat."""
    _check_prob("stall_prob", stall_prob)
    rng = _rng(rng)
    beats, ended = [], 0
    while ended < packets:
        ctx.set(stream.ready, 0)
        while stall_prob and rng.random() < stall_prob:
            await ctx.tick(domain)
        beats.append(await stream_get(ctx, stream, domain=domain, timeout=timeout))
        ended += beats[-1].last
    return beats


def stream_record(stream, into: list, *, domain: str = "sync"):
    """A process (for ``run_sim(processes=...)``) that is always ready on ``stream``
    and appends every payload to ``into``: for streams a test watches, such as
    events, without driving them."""
    async def process(ctx):
        ctx.set(stream.ready, 1)
        async for _clk, _rst, valid, payload in ctx.tick(domain).sample(stream.valid,
                                                                        stream.payload):
            if valid:
                into.append(payload)
    return process


def _waves_enabled() -> bool:
    return os.environ.get("ESPNIC_WAVES", "") not in ("", "0")


def _default_vcd(design) -> Path:
    from .verilog import cache_dir

    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    label = current.split(" ", 1)[0] if current else type(design).__name__
    label = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)[-150:]
    return cache_dir() / "waves" / f"{label}.vcd"


def run_sim(design, *testbenches, clocks: Mapping[str, float] | None = None,
            processes: Iterable = (), background: Iterable = (),
            vcd: os.PathLike | str | None = None) -> None:
    """Simulate ``design`` until every testbench returns.

    ``background`` testbenches run beside them but do not keep the simulation
    going (a responder that serves requests for as long as there are any).
    ``clocks`` maps clock domains to periods in seconds (default: ``sync`` at
    100 MHz, when the design has a ``sync`` domain). ``processes`` are added
    with :meth:`~amaranth.sim.Simulator.add_process`. Waves go to ``vcd``, or
    under the cache when ``ESPNIC_WAVES=1``.
    """
    sim = Simulator(design)
    if clocks is None:
        for domain, period in _DEFAULT_CLOCKS.items():
            sim.add_clock(period, domain=domain, if_exists=True)
    else:
        for domain, period in clocks.items():
            sim.add_clock(period, domain=domain)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for testbench in background:
        sim.add_testbench(testbench, background=True)
    for process in processes:
        sim.add_process(process)
    if vcd is None and _waves_enabled():
        vcd = _default_vcd(design)
    if vcd is None:
        sim.run()
        return
    vcd = Path(vcd)
    vcd.parent.mkdir(parents=True, exist_ok=True)
    with sim.write_vcd(str(vcd)):
        sim.run()
    print(f"waves: {vcd}", file=sys.stderr)
