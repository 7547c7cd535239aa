# SPDX-License-Identifier: BSD-2-Clause
"""GcmCore in Verilator (cocotb) against NIST CAVP vectors and `cryptography`."""

import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espnic.hdl.gcm.core import GcmCore
from espnic.sim.gcm_job import GcmMessage, reference, run_gcm

from .nist_gcm import load_vectors

PROFILES = ["compact", "fast"]
VECTOR_FILES = ["gcmEncryptExtIV128.rsp", "gcmEncryptExtIV256.rsp",
                "gcmDecrypt128.rsp", "gcmDecrypt256.rsp"]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("filename", VECTOR_FILES)
def test_nist_vectors(profile, filename):
    """Every vector with a 96-bit IV and a 128-bit tag, back to back in one run."""
    vectors = load_vectors(filename)
    assert len(vectors) == 375, "the CAVP file changed shape"
    decrypt = "Decrypt" in filename
    messages = [GcmMessage(key=v.key, nonce=v.iv, aad=v.aad,
                           text=v.ct if decrypt else v.pt, decrypt=decrypt,
                           tag=v.tag if decrypt else b"")
                for v in vectors]
    run = run_gcm(messages, profile=profile)
    failures = 0
    for vector, outcome in zip(vectors, run.outcomes, strict=True):
        where = f"{filename} Count={vector.count} (section {vector.section})"
        if not decrypt:
            assert (outcome.text, outcome.tag) == (vector.ct, vector.tag), where
        elif vector.fail:
            failures += 1
            # Reported as a failure, and the computed tag is not disclosed.
            assert (outcome.tag_ok, outcome.tag) == (False, bytes(16)), where
        else:
            assert (outcome.tag_ok, outcome.text, outcome.tag) == (True, vector.pt, bytes(16)), where
    if decrypt:
        assert failures > 100, "the decrypt file should hold many FAIL vectors"


def _message_strategy():
    key_sizes = st.sampled_from([16, 32])
    return st.builds(
        lambda key_size, key, nonce, aad, text, decrypt, corrupt:
            (key[:key_size], nonce, aad, text, decrypt, corrupt),
        key_sizes, st.binary(min_size=32, max_size=32), st.binary(min_size=12, max_size=12),
        st.binary(max_size=64),
        st.one_of(st.binary(max_size=48), st.binary(min_size=1, max_size=2000)),
        st.booleans(),
        # Decrypt only: none, or which byte of aad/text/tag to flip.
        st.one_of(st.none(), st.tuples(st.sampled_from(["aad", "text", "tag"]),
                                       st.integers(0, 2**16), st.integers(1, 255))))


def _to_message(spec):
    key, nonce, aad, text, decrypt, corrupt = spec
    if not decrypt:
        return GcmMessage(key=key, nonce=nonce, aad=aad, text=text)
    sealed = reference(GcmMessage(key=key, nonce=nonce, aad=aad, text=text))
    fields = {"aad": aad, "text": sealed.text, "tag": sealed.tag}
    if corrupt is not None and fields[corrupt[0]]:
        name, position, flip = corrupt
        octets = bytearray(fields[name])
        octets[position % len(octets)] ^= flip
        fields[name] = bytes(octets)
    return GcmMessage(key=key, nonce=nonce, decrypt=True, **fields)


@pytest.mark.parametrize("profile", PROFILES)
@settings(max_examples=int(os.environ.get("ESPNIC_EXAMPLES", "8")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs=st.lists(_message_strategy(), min_size=1, max_size=10),
       in_gap=st.sampled_from([0.0, 0.2, 0.6]), out_stall=st.sampled_from([0.0, 0.3, 0.7]),
       seed=st.integers(0, 2**32 - 1))
def test_differential(profile, specs, in_gap, out_stall, seed):
    """Random keys (128/256 alternating freely), AAD 0..64, text 0..2000 bytes,
    corrupted decrypts, random input gaps and output stalls."""
    messages = [_to_message(spec) for spec in specs]
    run = run_gcm(messages, profile=profile, in_gap=in_gap, out_stall=out_stall, seed=seed)
    for index, (message, outcome) in enumerate(zip(messages, run.outcomes, strict=True)):
        expected = reference(message)
        assert outcome.tag_ok == expected.tag_ok, f"message {index}"
        assert outcome.tag == expected.tag, f"message {index}"
        if expected.tag_ok:
            assert outcome.text == expected.text, f"message {index}"


def test_fast_core_under_long_output_stalls():
    """Text far longer than the output FIFO (64 blocks) with the consumer stalled 90 %
    of the time: the credit count must stop the injector while the FIFO is full (the
    bench fails the run if `overrun` was set: a write into the full FIFO), and every
    block must still come out right, in order."""
    messages = [GcmMessage(key=bytes((7 * i + size) % 256 for i in range(size)), nonce=bytes(12),
                           aad=b"esp", text=bytes(range(256)) * 8)
                for size in (16, 32)]
    sealed = reference(messages[0])
    messages.append(GcmMessage(key=messages[0].key, nonce=messages[0].nonce, aad=b"esp",
                               text=sealed.text, tag=sealed.tag, decrypt=True))
    run = run_gcm(messages, profile="fast", out_stall=0.9, seed=5)
    for index, (message, outcome) in enumerate(zip(messages, run.outcomes, strict=True)):
        assert outcome == reference(message), f"message {index}"


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
def test_icarus_runs_the_same_vectors():
    vectors = load_vectors("gcmEncryptExtIV256.rsp")[:40]
    messages = [GcmMessage(key=v.key, nonce=v.iv, aad=v.aad, text=v.pt) for v in vectors]
    run = run_gcm(messages, profile="compact", simulator="icarus")
    assert [(o.text, o.tag) for o in run.outcomes] == [(v.ct, v.tag) for v in vectors]


def test_unregistered_tag_check_in_the_compact_profile():
    """The tag check without its register (both profiles have it) with one lane, so
    that both settings run with one lane: decrypts that pass and fail, and encrypts,
    back to back."""
    vectors = load_vectors("gcmDecrypt128.rsp")[::15] + load_vectors("gcmDecrypt256.rsp")[::15]
    assert any(v.fail for v in vectors) and not all(v.fail for v in vectors)
    messages = []
    for v in vectors:
        messages.append(GcmMessage(key=v.key, nonce=v.iv, aad=v.aad, text=v.ct,
                                   decrypt=True, tag=v.tag))
        messages.append(GcmMessage(key=v.key, nonce=v.iv, aad=v.aad, text=v.ct))
    run = run_gcm(messages, profile="compact", tag_check_register=False)
    for index, (message, outcome) in enumerate(zip(messages, run.outcomes, strict=True)):
        expected = reference(message)
        assert (outcome.tag_ok, outcome.tag) == (expected.tag_ok, expected.tag), f"message {index}"
        if expected.tag_ok:
            assert outcome.text == expected.text, f"message {index}"


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "tiny"}, "profile must be one of"),
    ({"profile": "compact", "sbox": "lut"}, "sbox must be one of"),
    ({"profile": "compact", "ghash_digit": 7}, "ghash_digit must be one of"),
    ({"profile": "fast", "ghash_stages": 3}, "ghash_stages must be one of"),
    ({"profile": "fast", "out_depth": 0}, "out_depth must be an integer >= 1"),
    ({"profile": "fast", "sbox_latency": 4}, "sbox_latency must be 1, 2 or 3 with the pipeline"),
    ({"profile": "compact", "sbox_latency": 2}, "sbox_latency must be 1 with the iterative"),
    ({"profile": "compact", "ghash_input_register": True},
     "ghash_input_register must be False with the serial"),
    ({"profile": "fast", "ghash_input_register": 1},
     "ghash_input_register must be True or False with the pipeline"),
    ({"profile": "compact", "aes_input_register": True},
     "aes_input_register must be False with the iterative"),
    ({"profile": "fast", "aes_input_register": 0},
     "aes_input_register must be True or False with the pipeline"),
    ({"profile": "compact", "aes_round_key_register": True},
     "aes_round_key_register must be False with the iterative"),
    ({"profile": "compact", "out_depth": -1}, "out_depth must be an integer >= 0"),
    ({"profile": "compact", "result_depth": 0}, "result_depth must be an integer >= 1"),
    ({"profile": "fast", "out_depth": 2}, "out_depth must not be 2"),
    ({"profile": "compact", "output_register": True}, "output_register must be False with out_depth=0"),
    ({"profile": "fast", "output_register": 1}, "output_register must be True or False"),
    ({"profile": "compact", "result_depth": 2}, "result_depth must not be 2"),
    ({"profile": "fast", "tag_check_register": 1}, "tag_check_register must be True or False"),
    ({"profile": "compact", "input_registers": 1}, "input_registers must be True or False"),
    ({"profile": "compact", "post_register": 1}, "post_register must be True or False, not 1"),
    ({"profile": "compact", "injector_register": True},
     "injector_register must be False with the iterative"),
    ({"profile": "fast", "ghash_karatsuba": 1, "ghash_stages": 4}, "ghash_karatsuba must be 0 to 3"),
    ({"profile": "compact", "ghash_karatsuba": 2}, "ghash_karatsuba must be 0 to 3"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GcmCore(**kwargs)


def test_unknown_parameter():
    with pytest.raises(TypeError, match="unknown GCM core parameter 'key_size'"):
        GcmCore("compact", key_size=128)
