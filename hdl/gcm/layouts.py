# SPDX-License-Identifier: BSD-2-Clause
"""Stream payloads of the AES-GCM core, shared by gateware, benches and host.

Byte order everywhere: a 128-bit block (or the 256-bit key, the 96-bit nonce)
holds byte ``i`` in bits ``[8*i, 8*i+8)``, i.e. ``value ==
int.from_bytes(octets, "little")``. Helpers at the bottom convert both ways, so
no caller shifts bytes by hand.
"""

from amaranth.lib import data

__all__ = [
    "BLOCK_BYTES", "MAX_LENGTH",
    "GCM_COMMAND", "GCM_OUTPUT", "GCM_RESULT",
    "block_from_bytes", "block_to_bytes",
]

BLOCK_BYTES = 16
#: Largest AAD or text length in bytes a command can carry (16-bit fields).
#: An ESP packet is bounded by the 16-bit IP length, so this is never the limit.
MAX_LENGTH = 2**16 - 1


#: One message. The data stream that follows carries ``ceil(aad_len/16)`` AAD
#: blocks, then ``ceil(text_len/16)`` text blocks, then (``decrypt`` only) one
#: block holding the expected 16-byte tag. Each segment starts on a block
#: boundary; bytes past a segment's length in its last block are ignored.
GCM_COMMAND = data.StructLayout({
    "key":      256,   # AES key; AES-128 uses bytes 0..15
    "key_256":  1,     # 1: AES-256, 0: AES-128
    "nonce":    96,    # RFC 4106: 4-byte salt || 8-byte IV
    "aad_len":  16,    # bytes
    "text_len": 16,    # bytes
    "decrypt":  1,
})

#: One block of ciphertext (encrypt) or plaintext (decrypt). Bytes past the
#: message's ``text_len`` in its last block are zero.
#: Decrypt output is NOT authenticated yet: the verdict comes afterwards on
#: ``result``; whoever releases plaintext must hold it until then.
GCM_OUTPUT = data.StructLayout({
    "data": 128,
    "last": 1,         # last text block of the message
})

#: One per message, after its last output block.
GCM_RESULT = data.StructLayout({
    # Encrypt: the 16-byte ICV. Decrypt: zero -- the tag the core computed for a
    # forged message would be an oracle for the right tag, so it never leaves.
    "tag":    128,
    # Decrypt: 1 only if the received tag equals the computed one. Encrypt: 1.
    "tag_ok": 1,
})


def block_from_bytes(octets: bytes) -> int:
    """Value of a block/key/nonce signal that holds ``octets`` (short input is zero-padded)."""
    return int.from_bytes(bytes(octets), "little")


def block_to_bytes(value: int, length: int = BLOCK_BYTES) -> bytes:
    """The first ``length`` bytes held by a block signal's value."""
    value = int(value)
    return value.to_bytes(max(length, (value.bit_length() + 7) // 8), "little")[:length]
