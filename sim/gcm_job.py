# SPDX-License-Identifier: BSD-2-Clause
"""Run AES-GCM messages through the simulated `GcmCore` and through `cryptography`.

:func:`run_gcm` is what tests, ``bench/gcm.py`` and the demo call: it writes a
job file, runs the cocotb bench :mod:`espnic.sim.benches.gcm` on the cached
Verilator (or Icarus) build of the core, and returns the outputs with the
handshake cycles. :func:`reference` computes what the outputs must be with the
`cryptography` package, which shares no code with the gateware.
"""

from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["GcmMessage", "GcmOutcome", "GcmRun", "run_gcm", "reference"]


@dataclass(frozen=True)
class GcmMessage:
    key: bytes              # 16 or 32 bytes
    nonce: bytes            # 12 bytes: salt || IV
    aad: bytes = b""
    text: bytes = b""       # plaintext (encrypt) or ciphertext (decrypt)
    decrypt: bool = False
    tag: bytes = b""        # decrypt: the received tag

    def __post_init__(self):
        if len(self.key) not in (16, 32):
            raise ValueError(f"key must be 16 or 32 bytes, not {len(self.key)}")
        if len(self.nonce) != 12:
            raise ValueError(f"nonce must be 12 bytes, not {len(self.nonce)}")
        if self.decrypt and len(self.tag) != 16:
            raise ValueError(f"a decrypt message needs a 16-byte tag, not {len(self.tag)} bytes")

    def to_json(self):
        return {"key": self.key.hex(), "nonce": self.nonce.hex(), "aad": self.aad.hex(),
                "text": self.text.hex(), "decrypt": self.decrypt, "tag": self.tag.hex()}


@dataclass(frozen=True)
class GcmOutcome:
    text: bytes             # ciphertext (encrypt) or plaintext (decrypt; trust only if tag_ok)
    tag: bytes              # encrypt: the tag; decrypt: zero (never disclosed)
    tag_ok: bool


@dataclass
class GcmRun:
    outcomes: list
    cycles: int                                   # reset release to the last result
    cmd_cycles: list = field(default_factory=list)     # cycle each command was accepted
    result_cycles: list = field(default_factory=list)  # cycle each result was taken
    out_cycles: list = field(default_factory=list)     # cycle each output block was taken


def reference(message: GcmMessage) -> GcmOutcome:
    """What the core must produce for `message`, from `cryptography`."""
    aead = AESGCM(message.key)
    if not message.decrypt:
        sealed = aead.encrypt(message.nonce, message.text, message.aad)
        return GcmOutcome(sealed[:-16], sealed[-16:], True)
    try:
        return GcmOutcome(aead.decrypt(message.nonce, message.text + message.tag, message.aad),
                          bytes(16), True)
    except InvalidTag:
        return GcmOutcome(None, bytes(16), False)


def run_gcm(messages, *, profile="compact", in_gap=0.0, out_stall=0.0, seed=0,
            simulator=None, timeout=None, **overrides) -> GcmRun:
    """Run `messages` back to back through the core in simulation.

    ``in_gap``/``out_stall`` are the chances per cycle that the bench holds an
    input back or stalls an output; ``overrides`` are GcmCore parameters.
    """
    from ..hdl.gcm.core import GcmCore
    from .cocotb_runner import run_job

    params = {"profile": profile, **{k: v for k, v in overrides.items() if v is not None}}
    job = {"messages": [m.to_json() for m in messages], "in_gap": in_gap,
           "out_stall": out_stall, "seed": seed}
    result = run_job(GcmCore, name=f"gcm_{profile}", params=params,
                     test_module="espnic.sim.benches.gcm", job=job, simulator=simulator,
                     timeout=timeout)
    outcomes = [GcmOutcome(bytes.fromhex(o["text"]), bytes.fromhex(o["tag"]), o["tag_ok"])
                for o in result["outputs"]]
    return GcmRun(outcomes, result["cycles"], result["cmd_cycles"], result["result_cycles"],
                  result["out_cycles"])


def measure(profile, *, key_sizes=(16, 32), text_lens=(64, 512, 1400), aad_len=8,
            messages_per_size=6, seed=0, decrypt=False, simulator=None,
            **overrides) -> list[dict]:
    """Steady-state cycles per message for back-to-back messages of each size.

    One simulation per call: for every key size and text length a group of
    ``messages_per_size`` equal-sized encryptions (random keys, so the key
    changes on every message) runs back to back with an always-ready output.
    A group's interval is the cycles between its first and last result divided
    by the messages between them, so latency and the group before it cancel out.
    Two extra sizes (64 and 128 blocks) give the sustained cycles per block and
    the fixed cycles every message pays. With ``decrypt`` every message is a
    decryption of a genuine ciphertext and tag (so the fixed cycles include the
    received tag's). Every output is checked against :func:`reference` before
    any figure is reported.
    """
    import random

    rng = random.Random(seed)
    sizes = sorted({*text_lens, 1024, 2048})
    groups, messages = [], []
    for key_size in key_sizes:
        for text_len in sizes:
            start = len(messages)
            for _ in range(messages_per_size):
                message = GcmMessage(key=rng.randbytes(key_size), nonce=rng.randbytes(12),
                                     aad=rng.randbytes(aad_len), text=rng.randbytes(text_len))
                if decrypt:
                    sealed = reference(message)
                    message = replace(message, text=sealed.text, decrypt=True, tag=sealed.tag)
                messages.append(message)
            groups.append((key_size, text_len, start, len(messages)))
    run = run_gcm(messages, profile=profile, seed=seed, simulator=simulator, **overrides)
    for index, (message, outcome) in enumerate(zip(messages, run.outcomes, strict=True)):
        if outcome != reference(message) or not outcome.tag_ok:
            raise AssertionError(f"{profile}: message {index} differs from the reference")

    intervals = {}
    for key_size, text_len, start, end in groups:
        spans = run.result_cycles[end - 1] - run.result_cycles[start]
        intervals[key_size, text_len] = spans / (end - 1 - start)
    rows = []
    for key_size in key_sizes:
        per_block = (intervals[key_size, 2048] - intervals[key_size, 1024]) / 64
        fixed = intervals[key_size, 1024] - 64 * per_block
        for text_len in text_lens:
            interval = intervals[key_size, text_len]
            rows.append({"profile": profile, "decrypt": decrypt,
                         "key_bits": key_size * 8, "text_bytes": text_len,
                         "aad_bytes": aad_len, "cycles_per_message": round(interval, 2),
                         "bits_per_cycle": round(text_len * 8 / interval, 2),
                         "cycles_per_block": round(per_block, 3),
                         "fixed_cycles": round(fixed, 2)})
    return rows
