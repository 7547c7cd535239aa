# SPDX-License-Identifier: BSD-2-Clause
"""AES forward cipher (GCM needs no decryption): a compact iterative core and a
fully unrolled pipeline, both with the key schedule computed on the fly."""

from .round import AES_REQUEST, AES_PIPE_REQUEST, AES_PIPE_RESPONSE, ROUNDS_128, ROUNDS_256
from .sbox import SBOX, SboxRom, SboxLogic, SubBytes
from .iterative import AesIterative
from .pipeline import AesPipeline


__all__ = [
    "AES_REQUEST", "AES_PIPE_REQUEST", "AES_PIPE_RESPONSE", "ROUNDS_128", "ROUNDS_256",
    "SBOX", "SboxRom", "SboxLogic", "SubBytes",
    "AesIterative", "AesPipeline",
]
