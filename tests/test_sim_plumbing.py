# SPDX-License-Identifier: BSD-2-Clause
"""The simulation plumbing: Verilog cache, cocotb runner, Amaranth helpers."""

import json
import random
import shutil
import threading
import time

import pytest
from amaranth import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from espnic.sim import verilog as sim_verilog
from espnic.sim.amaranth_sim import run_sim, stream_get, stream_get_n, stream_put, stream_put_all
from espnic.sim.cocotb_runner import run_cocotb, verilator_fst_available
from espnic.sim.verilog import cache_key, generate, load_ports, ports_path

BENCH = "tests.benches.smoke_counter"


class SmokeCounter(wiring.Component):
    """Counts by the ``step`` of each input beat, modulo ``2**width``, and emits
    the new count; ``clear`` restarts from zero before adding ``step``.

    One beat per cycle; each count leaves one cycle after its beat.
    """

    def __init__(self, *, width: int = 8):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self._width = width
        beat = data.StructLayout({"step": width, "clear": 1})
        super().__init__({
            "i": In(stream.Signature(beat)),
            "o": Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        count = Signal(self._width)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            following = (Mux(self.i.payload.clear, 0, count) + self.i.payload.step)[:self._width]
            m.d.sync += [count.eq(following), self.o.payload.eq(following), self.o.valid.eq(1)]
        return m


def smoke_counter(**params):
    return SmokeCounter(**params)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh cache, for tests that must see misses."""
    monkeypatch.setenv("ESPNIC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- Verilog cache ------------------------------------------------------------

def test_verilog_ports_follow_amaranth_names(private_cache):
    path = generate(SmokeCounter, name="smoke_counter", params={"width": 12})
    assert path.parent == private_cache / "verilog"
    assert "module smoke_counter(" in path.read_text()
    sidecar = load_ports(path)
    assert sidecar["params"] == {"width": 12}
    ports = {port["name"]: port for port in sidecar["ports"]}
    assert {name: (port["width"], port["direction"]) for name, port in ports.items()} == {
        "clk": (1, "input"), "rst": (1, "input"),
        "i__payload": (13, "input"), "i__valid": (1, "input"), "i__ready": (1, "output"),
        "o__payload": (12, "output"), "o__valid": (1, "output"),
        "o__ready": (1, "input"),
    }
    assert ports["i__payload"]["path"] == ["i", "payload"]
    assert ports["i__payload"]["fields"] == {"step": {"offset": 0, "width": 12},
                                             "clear": {"offset": 12, "width": 1}}
    assert ports["clk"]["path"] is None
    assert ports_path(path).is_file()


def test_cache_key_follows_params_name_and_sources(private_cache, tmp_path):
    key = cache_key(name="smoke_counter", params={"width": 8})
    assert key == cache_key(name="smoke_counter", params={"width": 8})
    assert key != cache_key(name="smoke_counter", params={"width": 9})
    assert key != cache_key(name="smoke_counter2", params={"width": 8})
    # Order of params does not matter; their values do.
    assert (cache_key(name="x", params={"a": 1, "b": 2})
            == cache_key(name="x", params={"b": 2, "a": 1}))
    extra = tmp_path / "design.py"
    extra.write_text("A = 1\n")
    with_extra = cache_key(name="smoke_counter", params={"width": 8}, extra_sources=[extra])
    assert with_extra != key
    extra.write_text("A = 2\n")
    assert with_extra != cache_key(name="smoke_counter", params={"width": 8},
                                   extra_sources=[extra])


def test_cache_key_covers_hdl_sources():
    rels = [rel for rel, _path in sim_verilog.hdl_sources()]
    assert "__init__.py" in rels
    assert rels == sorted(rels)


def test_cache_hit_does_not_call_factory(private_cache):
    calls = []

    def factory(**params):
        calls.append(params)
        return SmokeCounter(**params)

    first = generate(factory, name="smoke_counter", params={"width": 8})
    again = generate(factory, name="smoke_counter", params={"width": 8})
    assert first == again and calls == [{"width": 8}]
    other = generate(factory, name="smoke_counter", params={"width": 9})
    assert other != first and calls == [{"width": 8}, {"width": 9}]


def test_concurrent_generate_elaborates_once(private_cache):
    calls, paths, errors = [], [], []

    def factory(**params):
        calls.append(params)
        time.sleep(0.2)  # widen the race window
        return SmokeCounter(**params)

    def worker():
        try:
            paths.append(generate(factory, name="smoke_counter", params={"width": 5}))
        except Exception as error:  # reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(calls) == 1 and len(set(paths)) == 1
    assert not [p for p in (private_cache / "verilog").iterdir() if p.name.endswith(".tmp")]


def test_unstable_params_are_refused(private_cache):
    with pytest.raises(ValueError, match="stable reprs"):
        cache_key(name="smoke_counter", params={"width": object()})
    with pytest.raises(ValueError, match="name must be a Verilog identifier"):
        cache_key(name="smoke-counter", params={})


def test_factory_must_return_a_component(private_cache):
    with pytest.raises(TypeError, match="wiring.Component"):
        generate(lambda: Module(), name="not_a_component", params={})


class _PartlyConstant(wiring.Component):
    """Drives one field of a comb struct from a constant, the other from an input:
    the shape of Verilog that simulators never evaluate."""
    i: In(1)
    o: Out(2)

    def elaborate(self, platform):
        m = Module()
        pair = Signal(data.StructLayout({"a": 1, "b": 1}))
        m.d.comb += [pair.b.eq(1), self.o.eq(pair)]
        with m.If(self.i):
            m.d.comb += pair.a.eq(1)
        return m


def test_verilog_a_simulator_never_runs_is_refused(private_cache):
    with pytest.raises(RuntimeError, match=r"drives o\[1\] from a constant"):
        generate(_PartlyConstant, name="partly_constant", params={})


# -- cocotb runner ------------------------------------------------------------

def _run_smoke(simulator, params, *, timeout=300, **kwargs):
    return run_cocotb(smoke_counter, name="smoke_counter", params=params, test_module=BENCH,
                      simulator=simulator, extra_sources=[__file__], timeout=timeout, **kwargs)


def test_verilator_runs_bench_and_reuses_build(monkeypatch):
    monkeypatch.delenv("ESPNIC_WAVES", raising=False)
    params = {"width": 8}
    first = _run_smoke("verilator", params)
    assert first.tests == 3  # two checks, one skipped deliberate failure
    assert "test_counts_with_gaps_and_back_pressure" in first.results.read_text()
    assert json.loads((first.build_dir / "espnic-build.json").read_text())["simulator"] == "verilator"
    # Other work may edit hdl/ meanwhile (a new key, rightly rebuilt): compare
    # two consecutive runs that saw the same sources.
    for _attempt in range(3):
        started = time.monotonic()
        again = _run_smoke("verilator", params)
        rerun = time.monotonic() - started
        if again.key == first.key:
            break
        first = again
    assert again.key == first.key, "hdl/ kept changing during the test"
    assert again.build_seconds is None, "second run rebuilt the design"
    assert again.build_dir == first.build_dir
    print(f"verilator build {first.build_seconds} s, cached run {rerun:.1f} s")


def test_bench_failure_fails_with_cocotb_message(monkeypatch):
    monkeypatch.delenv("ESPNIC_WAVES", raising=False)
    with pytest.raises(AssertionError, match="deliberate failure: device counted \\[1\\]"):
        _run_smoke("verilator", {"width": 8}, testcase="test_deliberate_failure",
                   extra_env={"ESPNIC_SMOKE_EXPECT_FAILURE": "1"})


def test_simulation_timeout_is_reported(monkeypatch):
    monkeypatch.delenv("ESPNIC_WAVES", raising=False)
    _run_smoke("verilator", {"width": 8})  # build outside the time limit
    with pytest.raises(RuntimeError, match="timed out after 0.01 s"):
        _run_smoke("verilator", {"width": 8}, timeout=0.01)


def test_unknown_simulator_is_refused():
    with pytest.raises(ValueError, match="simulator must be one of"):
        _run_smoke("questa-lite", {"width": 8})


@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="Icarus Verilog (iverilog) is not installed")
def test_icarus_runs_bench(monkeypatch):
    monkeypatch.delenv("ESPNIC_WAVES", raising=False)
    _run_smoke("icarus", {"width": 6})


# -- Amaranth simulator helpers -----------------------------------------------

def test_stream_put_get_through_fifo():
    dut = fifo.SyncFIFOBuffered(width=8, depth=4)
    received = []

    async def testbench(ctx):
        await stream_put(ctx, dut.w_stream, 0x5A)
        await stream_put(ctx, dut.w_stream, 0xA5)
        received.append(await stream_get(ctx, dut.r_stream))
        received.append(await stream_get(ctx, dut.r_stream))

    run_sim(dut, testbench)
    assert received == [0x5A, 0xA5]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_gaps_and_stalls_keep_order(seed):
    dut = fifo.SyncFIFOBuffered(width=16, depth=3)
    rng = random.Random(seed)
    sent = [rng.randrange(1 << 16) for _ in range(200)]
    received = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.w_stream, sent, rng=random.Random(seed),
                             gap_prob=0.4, timeout=50)

    async def consumer(ctx):
        received.extend(await stream_get_n(ctx, dut.r_stream, len(sent),
                                           rng=random.Random(seed + 100),
                                           stall_prob=0.5, timeout=50))

    run_sim(dut, producer, consumer)
    assert received == sent


def test_stream_get_times_out():
    dut = fifo.SyncFIFOBuffered(width=8, depth=4)

    async def testbench(ctx):
        with pytest.raises(TimeoutError, match="no valid payload for 20 cycles"):
            await stream_get(ctx, dut.r_stream, timeout=20)

    run_sim(dut, testbench)


def test_helpers_decode_struct_payloads():
    dut = SmokeCounter(width=8)
    received = []

    async def testbench(ctx):
        await stream_put(ctx, dut.i, {"step": 200, "clear": 0})
        received.append(await stream_get(ctx, dut.o))
        await stream_put(ctx, dut.i, {"step": 100, "clear": 0})
        received.append(await stream_get(ctx, dut.o))
        await stream_put(ctx, dut.i, {"step": 7, "clear": 1})
        received.append(await stream_get(ctx, dut.o))

    run_sim(dut, testbench)
    assert received == [200, 44, 7]


def test_run_sim_writes_vcd_when_asked(private_cache, monkeypatch):
    monkeypatch.setenv("ESPNIC_WAVES", "1")
    dut = fifo.SyncFIFOBuffered(width=8, depth=2)

    async def testbench(ctx):
        await stream_put(ctx, dut.w_stream, 1)

    run_sim(dut, testbench)
    waves = list((private_cache / "waves").glob("*.vcd"))
    assert len(waves) == 1 and "test_run_sim_writes_vcd_when_asked" in waves[0].name
    assert waves[0].stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("simulator", [
    "verilator",
    pytest.param("icarus", marks=pytest.mark.skipif(
        shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) is not installed")),
])
def test_waves_are_dumped(simulator, monkeypatch):
    monkeypatch.setenv("ESPNIC_WAVES", "1")
    run = _run_smoke(simulator, {"width": 8}, testcase="test_counts_back_to_back")
    assert run.tests == 1
    # FST, except from Verilator when the lz4 headers are missing (then VCD).
    fst = simulator == "icarus" or verilator_fst_available()
    assert run.waves is not None and run.waves.suffix == (".fst" if fst else ".vcd")
    assert run.waves.is_file() and run.waves.stat().st_size > 0
    # A VCD starts with a `$date`-style header; an FST is binary.
    assert (run.waves.read_bytes()[:1] == b"$") == (not fst)
