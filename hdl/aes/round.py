# SPDX-License-Identifier: BSD-2-Clause
"""Combinational pieces of the AES forward cipher shared by both cores.

Byte i of a block or key (FIPS-197 order) is bits [8i, 8i+8); word j of a key is
bits [32j, 32j+32). Every S-box lookup takes one clock (see :mod:`.sbox`), and the
S-box's address register *is* the state register: a round takes the S-box output
of the previous state and produces the next address combinationally.

The key schedule runs on the fly alongside, one round key per round, from a
window of two 128-bit halves ``(lo, hi)`` whose S-box lookup (SubWord of
``hi``'s last word) was issued a cycle earlier in the same way. While the S-box
output of round ``r`` is processed, ``hi`` holds round key r-1 and the step makes
round key r, which is both AddRoundKey's operand and the next ``hi``:

* AES-128: round key r = f(SubWord(hi[3])) chained through ``hi`` (FIPS-197 5.2).
* AES-256: ``lo`` holds round key r-2, and round key r = f(SubWord(hi[3]))
  chained through ``lo``; f is RotWord and Rcon when 4r is a multiple of 8,
  identity otherwise.

The next ``lo`` is always ``hi``, so the only difference between the key sizes
is which half the chain starts from. Round key 1 of AES-256 is key bytes 16..31
as given: that step makes f zero and starts from a ``lo`` loaded with the
differences of consecutive key words, which the chain undoes.
"""

from amaranth import *
from amaranth.lib import data


__all__ = [
    "AES_REQUEST", "AES_PIPE_REQUEST", "AES_PIPE_RESPONSE", "ROUNDS_128", "ROUNDS_256",
    "shift_rows", "mix_columns", "cipher_round", "final_round",
    "rcon", "key_control_word", "key_load", "key_step",
]


# --- Interfaces --------------------------------------------------------------------------------

#: One block to encrypt: AES-128 uses key bytes 0..15, AES-256 (``key_256``) all 32.
AES_REQUEST = data.StructLayout({"block": 128, "key": 256, "key_256": 1})


def _check_sideband(sideband):
    if isinstance(sideband, data.Layout):
        return sideband
    if type(sideband) is int and sideband >= 0:
        return sideband
    raise ValueError(f"sideband must be a non-negative int or a data.Layout, not {sideband!r}")


def AES_PIPE_REQUEST(sideband=0):
    """:data:`AES_REQUEST` plus ``sideband`` (int width or layout; omitted when 0)."""
    sideband = _check_sideband(sideband)
    fields = {"block": 128, "key": 256, "key_256": 1}
    if not (type(sideband) is int and sideband == 0):
        fields["sideband"] = sideband
    return data.StructLayout(fields)


def AES_PIPE_RESPONSE(sideband=0):
    """The ciphertext ``block`` and the request's ``sideband`` (omitted when 0)."""
    sideband = _check_sideband(sideband)
    fields = {"block": 128}
    if not (type(sideband) is int and sideband == 0):
        fields["sideband"] = sideband
    return data.StructLayout(fields)


ROUNDS_128, ROUNDS_256 = 10, 14


# --- Cipher rounds (FIPS-197 5.1) --------------------------------------------------------------

def _xtime(byte):
    # Multiplication by x in GF(2^8): shift left, reduce by 0x1b when bit 7 falls out.
    return Cat(byte[7], byte[0] ^ byte[7], byte[1], byte[2] ^ byte[7], byte[3] ^ byte[7],
               byte[4], byte[5], byte[6])


def shift_rows(state):
    # Byte 4c+r is row r of column c; row r rotates left by r columns.
    return Cat(state[8 * (4 * ((c + r) % 4) + r):][:8] for c in range(4) for r in range(4))


def mix_columns(state):
    columns = []
    for c in range(4):
        a = [state[8 * (4 * c + r):][:8] for r in range(4)]
        total = a[0] ^ a[1] ^ a[2] ^ a[3]
        # {02}a_r ^ {03}a_(r+1) ^ a_(r+2) ^ a_(r+3) = a_r ^ total ^ xtime(a_r ^ a_(r+1))
        columns += [a[r] ^ total ^ _xtime(a[r] ^ a[(r + 1) % 4]) for r in range(4)]
    return Cat(columns)


def cipher_round(m, sub, round_key, *, name="state"):
    """The state after a round: ShiftRows, MixColumns and AddRoundKey applied to
    the S-box output ``sub`` of the previous state. Comb logic in ``m``; returns
    the signal ``name`` that holds it.
    """
    # Named signals keep expression trees (and simulation) small.
    shifted = Signal(128, name=f"{name}_shifted")
    state = Signal(128, name=name)
    m.d.comb += [
        shifted.eq(shift_rows(sub)),
        state.eq(mix_columns(shifted) ^ round_key),
    ]
    return state


def final_round(m, sub, round_key, *, name="final"):
    """Like :func:`cipher_round` without MixColumns: the ciphertext.

    A separate output rather than a mux in front of the next state: the state
    after the final round is never an S-box address, and the mux costs LUTs.
    """
    ciphertext = Signal(128, name=name)
    m.d.comb += ciphertext.eq(shift_rows(sub) ^ round_key)
    return ciphertext


# --- Key schedule (FIPS-197 5.2) ---------------------------------------------------------------

def rcon(i):
    """Rcon[i] for i >= 1: x^(i-1) in GF(2^8)."""
    value = 1
    for _ in range(i - 1):
        value = (value << 1) ^ (0x11b if value & 0x80 else 0)
    return value


def _key_control_entry(rnd, key_256):
    # The key step of round `rnd`: zero << 9 | rotate << 8 | rcon.
    if not key_256:
        return 1 << 8 | (rcon(rnd) if 1 <= rnd <= ROUNDS_128 else 0)
    if rnd == 1:
        return 1 << 9
    if rnd % 2 == 0:  # the step makes w[4 * rnd], a multiple of 8
        return 1 << 8 | rcon(rnd // 2)
    return 0


def key_control_word(rnd, key_256):
    """The key step's control for round ``rnd`` (int or value, 1..14) as one 10-bit
    value (``zero``, ``rotate``, then the 8-bit ``rcon``), for a unit that keeps it in
    a register ahead of its round (:func:`key_step`'s ``control``)."""
    if isinstance(rnd, int):
        return Mux(key_256, Const(_key_control_entry(rnd, True), 10),
                   Const(_key_control_entry(rnd, False), 10))
    return Array(Const(_key_control_entry(r, k), 10)
                 for k in (False, True) for r in range(16))[Cat(rnd[:4], key_256)]


def key_load(key):
    """``(lo, hi, sub_addr)``: the window before round 1 and its S-box address."""
    words = [key[32 * j:][:32] for j in range(8)]
    differences = Cat(words[4], *(words[j] ^ words[j + 1] for j in range(4, 7)))
    # AES-128 needs SubWord(w[3]); AES-256 needs no lookup in round 1.
    return differences, key[:128], words[3]


def key_step(m, lo, hi, sub, *, rnd=None, key_256, control=None, name="key"):
    """``(round_key, next_lo, next_hi, sub_addr)`` in round ``rnd`` (int or value), or
    with ``control``, :func:`key_control_word` of the round, given instead.

    ``sub`` is SubWord(hi[3]), looked up a cycle earlier; ``sub_addr`` is the word
    to look up for the next step. Comb logic in ``m``.
    """
    if (rnd is None) == (control is None):
        raise TypeError("key_step needs either rnd or control")
    if control is None:
        control = key_control_word(rnd, key_256)
    zero, rotate, round_constant = control[9], control[8], control[:8]
    # SubWord(RotWord(w)) = RotWord(SubWord(w)): the S-box needs no rotated address.
    temp = Signal(32, name=f"{name}_temp")
    base = Signal(128, name=f"{name}_base")
    round_key = Signal(128, name=f"{name}_round")
    m.d.comb += [
        temp.eq(Mux(zero, 0, Mux(rotate, Cat(sub[8:32], sub[:8]) ^ round_constant, sub))),
        base.eq(Mux(key_256, lo, hi)),
    ]
    for j in range(4):  # w[i] = w[i-Nk] ^ w[i-1], starting from temp
        temp = temp ^ base[32 * j:][:32]
        m.d.comb += round_key[32 * j:][:32].eq(temp)
    return round_key, hi, round_key, round_key[96:128]
