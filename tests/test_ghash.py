# SPDX-License-Identifier: BSD-2-Clause
"""GF(2^128) multipliers against SP 800-38D Algorithm 1."""

import random

import pytest
from amaranth.hdl import Value
from amaranth.lib import data
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from espnic.hdl.gcm.ghash import GfMulPipeline, GfMulSerial
from espnic.sim.amaranth_sim import run_sim, stream_put_all

# --- reference -----------------------------------------------------------------------

R = 0xE1 << 120  # SP 800-38D 6.3: R = 11100001 || 0^120


def gf_mul_ref(x: bytes, y: bytes) -> bytes:
    """SP 800-38D Algorithm 1, bit by bit. As a big-endian integer, block bit i (bit 0 =
    MSB of byte 0) is integer bit 127-i, and the spec's RIGHTSHIFT is ``>> 1``."""
    x_int, v = int.from_bytes(x, "big"), int.from_bytes(y, "big")
    z = 0
    for i in range(128):
        if (x_int >> (127 - i)) & 1:
            z ^= v
        v = (v >> 1) ^ R if v & 1 else v >> 1
    return z.to_bytes(16, "big")


def ghash_ref(h: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    """GHASH_H(A || 0^v || C || 0^u || [len(A)]_64 || [len(C)]_64), SP 800-38D 7.1."""
    def padded(s):
        return s + bytes(-len(s) % 16)
    lengths = (8 * len(aad)).to_bytes(8, "big") + (8 * len(ciphertext)).to_bytes(8, "big")
    message = padded(aad) + padded(ciphertext) + lengths
    y = bytes(16)
    for k in range(0, len(message), 16):
        y = gf_mul_ref(bytes(p ^ q for p, q in zip(y, message[k:k + 16])), h)
    return y


def aes_encrypt_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def test_reference_gcm_test_case_2():
    # McGrew & Viega, "The GCM mode of operation", test case 2: K = 0^128, P = 0^128, IV = 0^96.
    key = bytes(16)
    h = aes_encrypt_block(key, bytes(16))
    assert h.hex() == "66e94bd4ef8a2c3b884cfa59ca342b2e"
    ciphertext = bytes.fromhex("0388dace60b6a392f328c2b971b2fe78")
    ghash = ghash_ref(h, b"", ciphertext)
    # As printed in the spec, and = tag xor E(J0) below.
    assert ghash.hex() == "f38cbb1ad69223dcc3457ae5b6b0f885"
    e_j0 = aes_encrypt_block(key, bytes(12) + b"\0\0\0\1")
    assert e_j0.hex() == "58e2fccefa7e3061367f1d57a4e7455a"
    tag = bytes(p ^ q for p, q in zip(e_j0, ghash))
    assert tag.hex() == "ab6e47d42cec13bdf53a67b21257bddf"
    assert AESGCM(key).encrypt(bytes(12), bytes(16), b"") == ciphertext + tag


def test_reference_against_aes_gcm():
    rng = random.Random(1)
    for _ in range(20):
        key, iv = rng.randbytes(16), rng.randbytes(12)
        aad, plaintext = rng.randbytes(rng.randrange(40)), rng.randbytes(rng.randrange(70))
        sealed = AESGCM(key).encrypt(iv, plaintext, aad)
        ciphertext, tag = sealed[:-16], sealed[-16:]
        h = aes_encrypt_block(key, bytes(16))
        e_j0 = aes_encrypt_block(key, iv + b"\0\0\0\1")
        ghash = ghash_ref(h, aad, ciphertext)
        assert bytes(p ^ q for p, q in zip(e_j0, ghash)) == tag


def test_reference_field_identities():
    one = b"\x80" + bytes(15)  # coefficient of x^0
    x = b"\x40" + bytes(15)
    x127 = bytes(15) + b"\x01"
    assert gf_mul_ref(one, x127) == x127
    # x·x^127 = x^128 = 1 + x + x^2 + x^7
    assert gf_mul_ref(x, x127) == bytes([0b11100001]) + bytes(15)


# --- operands ------------------------------------------------------------------------

def packed(block: bytes) -> int:
    """The interface's byte-packed value of a block."""
    return int.from_bytes(block, "little")


ONE = b"\x80" + bytes(15)
SPECIAL = [bytes(16), ONE, b"\xff" * 16, bytes(15) + b"\x01", b"\x01" + bytes(15)]


def operand_pairs(rng, count):
    pairs = [(a, b) for a in SPECIAL for b in SPECIAL]
    pairs += [(rng.choice(SPECIAL), rng.randbytes(16)) for _ in range(8)]
    pairs += [(rng.randbytes(16), rng.choice(SPECIAL)) for _ in range(8)]
    pairs += [(rng.randbytes(16), rng.randbytes(16)) for _ in range(count)]
    return pairs


# --- GfMulSerial ---------------------------------------------------------------------

@pytest.mark.parametrize("digit", [1, 2, 4, 8, 11, 12, 13, 16, 32, 128])
def test_serial_random_stalls(digit):
    rng = random.Random(digit)
    dut = GfMulSerial(digit=digit)
    assert dut.cycles == -(-128 // digit)
    pairs = operand_pairs(rng, 10)
    results = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, [{"a": packed(a), "b": packed(b)} for a, b in pairs],
                             rng=rng, gap_prob=0.3)

    async def consumer(ctx):
        held = None  # a product offered but not taken must stay offered, unchanged
        while len(results) < len(pairs):
            ready = rng.random() < 0.4
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if held is not None:
                assert (valid, payload) == (1, held)
            held = payload if valid and not ready else None
            if valid and ready:
                results.append(payload)
        ctx.set(dut.o.ready, 0)

    run_sim(dut, producer, consumer)
    assert results == [packed(gf_mul_ref(a, b)) for a, b in pairs]


@pytest.mark.parametrize("digit", [8, 13, 128])
def test_serial_timing(digit):
    """With a ready consumer and a busy producer: latency `cycles`, one product per
    `cycles` cycles, next operands taken in the cycle the product is."""
    rng = random.Random(digit)
    dut = GfMulSerial(digit=digit)
    pairs = operand_pairs(rng, 2)[-6:]
    accepted, delivered = [], []

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        cycle = 0
        for a, b in pairs:
            ctx.set(dut.i.payload, {"a": packed(a), "b": packed(b)})
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                cycle += 1
                if ready:
                    accepted.append(cycle)
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(delivered) < len(pairs):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                delivered.append((cycle, payload))

    run_sim(dut, producer, consumer)
    assert [p for _, p in delivered] == [packed(gf_mul_ref(a, b)) for a, b in pairs]
    assert [c for c, _ in delivered] == [c + dut.cycles for c in accepted]
    assert accepted[1:] == [c for c, _ in delivered[:-1]]


@pytest.mark.parametrize("digit", [0, 129, -8, 8.0, "8", True, None])
def test_serial_bad_digit(digit):
    with pytest.raises(ValueError, match="digit"):
        GfMulSerial(digit=digit)


# --- GfMulPipeline -------------------------------------------------------------------

SIDEBAND_TAG = data.StructLayout({"accumulator": 3, "last": 1})


@pytest.mark.parametrize("stages,sideband,input_register,karatsuba", [
    (1, 0, False, 0), (2, 7, False, 0), (4, SIDEBAND_TAG, False, 0), (4, 0, False, 0),
    (8, 1, False, 0), (1, 0, True, 0), (2, SIDEBAND_TAG, True, 0),
    (2, 5, False, 1), (2, SIDEBAND_TAG, True, 2), (2, 3, True, 3),
])
def test_pipeline_back_to_back(stages, sideband, input_register, karatsuba):
    rng = random.Random(stages)
    dut = GfMulPipeline(stages=stages, sideband=sideband, input_register=input_register,
                        karatsuba=karatsuba)
    assert dut.latency == stages + input_register
    latency = dut.latency
    width = Value.cast(dut.i.payload.sideband).shape().width
    pairs = operand_pairs(rng, 20)
    # Valid every cycle, except a few bubbles to check valid travels with its data.
    inputs = [(rng.random() > 0.1, a, b, rng.getrandbits(width)) for a, b in pairs]
    outputs = []

    async def testbench(ctx):
        for cycle in range(len(inputs) + latency):
            valid, a, b, tag = inputs[cycle] if cycle < len(inputs) else (0, ONE, ONE, 0)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload.a, packed(a))
            ctx.set(dut.i.payload.b, packed(b))
            ctx.set(Value.cast(dut.i.payload.sideband), tag)
            outputs.append((ctx.get(dut.o.valid), ctx.get(dut.o.payload.p),
                            ctx.get(Value.cast(dut.o.payload.sideband))))
            await ctx.tick()

    run_sim(dut, testbench)
    assert [valid for valid, _, _ in outputs[:latency]] == [0] * latency
    for (valid, a, b, tag), (o_valid, o_p, o_tag) in zip(inputs, outputs[latency:]):
        assert o_valid == valid
        if valid:
            assert (o_p, o_tag) == (packed(gf_mul_ref(a, b)), tag)


@pytest.mark.parametrize("kwargs", [
    {"stages": 3}, {"stages": 0}, {"stages": 16}, {"stages": 4.0}, {"stages": True},
    {"sideband": -1}, {"sideband": "8"}, {"sideband": 2.0}, {"input_register": 1},
    {"karatsuba": 4}, {"karatsuba": True}, {"karatsuba": 1, "stages": 4},
])
def test_pipeline_bad_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GfMulPipeline(**kwargs)
