# SPDX-License-Identifier: BSD-2-Clause
"""AES cores against FIPS-197 Appendix C and against `cryptography`."""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from espnic.hdl.aes import SBOX, AesIterative, AesPipeline, SboxRom, SubBytes


PLAINTEXT = bytes.fromhex("00112233445566778899aabbccddeeff")
FIPS_C1 = (bytes(range(16)), PLAINTEXT, bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a"))
FIPS_C3 = (bytes(range(32)), PLAINTEXT, bytes.fromhex("8ea2b7ca516745bfeafc49904b496089"))

SIDEBAND = data.StructLayout({"tag": 7, "last": 1})


def encrypt(key, block):
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def payload(key, block, *, key_high=bytes(16)):
    """Request fields; an AES-128 key is followed by `key_high`, which the core must ignore."""
    full_key = key if len(key) == 32 else key + key_high
    return {"block": int.from_bytes(block, "little"), "key": int.from_bytes(full_key, "little"),
            "key_256": len(key) == 32}


def fips_requests():
    return [(payload(key, pt), ct) for key, pt, ct in (FIPS_C1, FIPS_C3)]


def random_requests(rng, count):
    """(payload, ciphertext) with fresh random keys, alternating AES-128 and AES-256."""
    requests = []
    for n in range(count):
        key, block = rng.randbytes(32 if n % 2 else 16), rng.randbytes(16)
        requests.append((payload(key, block, key_high=rng.randbytes(16)), encrypt(key, block)))
    return requests


def as_bytes(value):
    return int(value).to_bytes(16, "little")


def rounds(request):
    return 14 if request["key_256"] else 10


def simulate(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    sim.run()


# --- S-box -------------------------------------------------------------------------------------

def test_sbox_fips_values():
    # FIPS-197 Figure 7 and the SubBytes example of section 5.1.1.
    assert [SBOX[x] for x in (0x00, 0x01, 0x53, 0x9a, 0xff)] == [0x63, 0x7c, 0xed, 0xb8, 0x16]
    assert sorted(SBOX) == list(range(256))


@pytest.mark.parametrize("latency", [1, 2, 3])
@pytest.mark.parametrize("sbox,ports", [("rom", 1), ("rom", 2), ("logic", 1)])
def test_sub_bytes_latency_and_hold(sbox, ports, latency):
    dut = SubBytes(4, sbox=sbox, ports=ports, latency=latency)
    sub_word = lambda word: int.from_bytes(bytes(SBOX[b] for b in word.to_bytes(4, "little")),
                                           "little")
    words = (0x00010253, 0xff9a1000, 0x12345678)

    async def testbench(ctx):
        # A new address every cycle: `data` follows it exactly `latency` cycles later.
        for n, word in enumerate(words + (0x12345678,) * (latency - 1)):
            ctx.set(dut.addr, word)
            await ctx.tick()
            if n + 1 >= latency:
                assert ctx.get(dut.data) == sub_word(words[n + 1 - latency])
        ctx.set(dut.en, 0)
        ctx.set(dut.addr, 0)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.data) == sub_word(0x12345678)

    simulate(dut, testbench)


# --- Iterative core ----------------------------------------------------------------------------

def run_iterative(dut, requests, *, rng=None, gap=0.0, stall=0.0):
    """Stream `requests` through `dut` with random input gaps and output stalls.

    Returns the ciphertexts in order, the cycles of the `i` handshakes and of the `o`
    handshakes. Checks that `o` holds its payload while stalled.
    """
    rng = rng or random.Random(0)
    in_cycles, out_cycles, outputs = [], [], []

    async def source(ctx):
        for fields, _ in requests:
            while rng.random() < gap:
                await ctx.tick()
            ctx.set(dut.i.payload, fields)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        cycle, held = 0, None
        while len(outputs) < len(requests):
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            _, _, i_handshake, valid, block = await ctx.tick().sample(
                dut.i.valid & dut.i.ready, dut.o.valid, dut.o.payload)
            if held is not None:
                assert valid and block == held, "o changed while stalled"
            held = block if valid and not ready else None
            if i_handshake:
                in_cycles.append(cycle)
            if valid and ready:
                outputs.append(as_bytes(block))
                out_cycles.append(cycle)
            cycle += 1
            assert cycle < 100 * len(requests), "no output"

    simulate(dut, source, sink)
    return outputs, in_cycles, out_cycles


@pytest.mark.parametrize("output_register", [False, True])
@pytest.mark.parametrize("sbox", ["rom", "logic"])
def test_iterative_fips(sbox, output_register):
    requests = fips_requests()
    outputs, in_cycles, out_cycles = run_iterative(
        AesIterative(sbox=sbox, output_register=output_register), requests)
    assert outputs == [ct for _, ct in requests]


@pytest.mark.parametrize("output_register", [False, True])
def test_iterative_back_to_back_timing(output_register):
    # Always valid, always ready: latency 10/14 (a cycle more with the output
    # register) and the next block loads in the cycle of the previous o
    # handshake (the cycle after it with the output register), so one block per
    # 10/14 (12/16) cycles.
    requests = random_requests(random.Random(1), 8)
    outputs, in_cycles, out_cycles = run_iterative(
        AesIterative(output_register=output_register), requests)
    assert outputs == [ct for _, ct in requests]
    assert ([o - i for i, o in zip(in_cycles, out_cycles)]
            == [rounds(r) + output_register for r, _ in requests])
    assert in_cycles[1:] == [o + output_register for o in out_cycles[:-1]]


@pytest.mark.parametrize("output_register", [False, True])
@pytest.mark.parametrize("sbox", ["rom", "logic"])
def test_iterative_random_stream(sbox, output_register):
    rng = random.Random(2)
    requests = random_requests(rng, 30)
    outputs, _, _ = run_iterative(AesIterative(sbox=sbox, output_register=output_register),
                                  requests, rng=rng, gap=0.3, stall=0.4)
    assert outputs == [ct for _, ct in requests]


def test_iterative_output_register_checked():
    with pytest.raises(TypeError, match="output_register must be True or False, not 1"):
        AesIterative(output_register=1)


# --- Pipeline ----------------------------------------------------------------------------------

def run_pipeline(dut, schedule):
    """Drive `schedule` (a request's fields, or None for an idle cycle) one entry per
    cycle; return the `o` payload sampled each cycle (None when not valid)."""
    outputs = []

    async def testbench(ctx):
        for fields in schedule + [None] * (dut.latency + 1):
            ctx.set(dut.i.valid, fields is not None)
            if fields is not None:
                ctx.set(dut.i.payload, fields)
            _, _, valid, response = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            outputs.append(response if valid else None)

    simulate(dut, testbench)
    return outputs


# (sbox, sbox_latency, input_register, round_key_register): every S-box mapping and
# latency, the fast profile's registers, and the round key register alone.
PIPELINES = [("rom", 1, False, False), ("rom", 2, False, False), ("logic", 1, False, False),
             ("logic", 2, False, False), ("rom", 3, True, True), ("rom", 1, False, True)]


@pytest.mark.parametrize("sbox,sbox_latency,input_register,round_key_register", PIPELINES)
def test_pipeline_fips(sbox, sbox_latency, input_register, round_key_register):
    dut = AesPipeline(sbox=sbox, sbox_latency=sbox_latency, input_register=input_register,
                      round_key_register=round_key_register)
    assert dut.latency == 14 * sbox_latency + 1 + input_register + round_key_register
    requests = fips_requests()
    outputs = run_pipeline(dut, [fields for fields, _ in requests])
    assert [as_bytes(r.block) for r in outputs[dut.latency:dut.latency + 2]] == \
        [ct for _, ct in requests]


@pytest.mark.parametrize("sbox,sbox_latency,input_register,round_key_register", PIPELINES)
def test_pipeline_random_stream(sbox, sbox_latency, input_register, round_key_register):
    rng = random.Random(3)
    dut = AesPipeline(sideband=SIDEBAND, sbox=sbox, sbox_latency=sbox_latency,
                      input_register=input_register, round_key_register=round_key_register)
    schedule, expected = [], []
    for n, (fields, ct) in enumerate(random_requests(rng, 30)):
        if rng.random() < 0.2:
            schedule.append(None)
        sideband = {"tag": n, "last": n == 29}
        schedule.append({**fields, "sideband": sideband})
        expected.append((ct, sideband))
    outputs = run_pipeline(dut, schedule)
    # o.valid is i.valid delayed by exactly `latency` cycles, nothing reordered.
    assert [r is not None for r in outputs] == \
        [False] * dut.latency + [f is not None for f in schedule] + [False]
    received = [(as_bytes(r.block), {"tag": r.sideband.tag, "last": r.sideband.last})
                for r in outputs if r is not None]
    assert received == expected


def test_pipeline_int_sideband():
    dut = AesPipeline(sideband=5)
    (fields, ct), = fips_requests()[1:]
    outputs = run_pipeline(dut, [{**fields, "sideband": 0x15}])
    assert (as_bytes(outputs[dut.latency].block), outputs[dut.latency].sideband) == (ct, 0x15)


# --- Parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("make,name", [
    (lambda: AesIterative(sbox="bram"), "sbox"),
    (lambda: AesPipeline(sbox=None), "sbox"),
    (lambda: AesPipeline(sbox_latency=4), "sbox_latency"),
    (lambda: AesPipeline(input_register=1), "input_register"),
    (lambda: AesPipeline(round_key_register=None), "round_key_register"),
    (lambda: SubBytes(16, latency=0), "latency"),
    (lambda: SubBytes(16, latency=4), "latency"),
    (lambda: AesPipeline(sideband=-1), "sideband"),
    (lambda: AesPipeline(sideband="tag"), "sideband"),
    (lambda: SboxRom(ports=3), "ports"),
    (lambda: SubBytes(3, ports=2), "width"),
])
def test_bad_parameters(make, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        make()
