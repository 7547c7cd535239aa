# SPDX-License-Identifier: BSD-2-Clause
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .round import (AES_PIPE_REQUEST, AES_PIPE_RESPONSE, ROUNDS_128, ROUNDS_256,
                    cipher_round, final_round, key_load, key_step)
from .sbox import SBOX_LATENCIES, SubBytes, check_sbox


__all__ = ["AesPipeline"]


class AesPipeline(wiring.Component):
    """AES-128/256 forward cipher, fully unrolled (the "fast" profile).

    Encrypts ``i.payload.block`` under ``i.payload.key`` (AES-256 when ``key_256``)
    and carries ``i.payload.sideband`` unchanged to ``o.payload.sideband``. Key and
    sideband travel with the block, so every block may use a different key.

    14 round stages, each a registered S-box lookup (16 data + 4 key S-boxes)
    followed by the round's logic, then an output register. With
    ``sbox_latency=2`` the S-box data is registered once more (the block RAM's
    output register), so a round takes two cycles and its logic starts from a
    flip-flop: the path per cycle is ShiftRows, MixColumns and AddRoundKey (after
    the key step) into the next S-box address, nothing else. ``sbox_latency=3``
    adds a fabric register after the block RAM's (three cycles a round), so the
    wire from one round's block RAMs to the next round's logic has a cycle of
    its own.
    AES-128 blocks finish in round 10 and a copy of the ciphertext is carried past
    the remaining rounds, so both key sizes take the same time.

    With ``input_register`` the request is registered first, so round 1's S-box
    addresses (the block XOR the key, the key's last word) come from flip-flops
    rather than from whatever logic drives ``i``.

    With ``round_key_register`` the cipher state starts a cycle after the key
    schedule and each round key waits for it in a register: AddRoundKey's
    operand comes from a flip-flop, so the key step (after its own S-box read)
    and MixColumns no longer follow each other in one cycle.

    Latency: ``o.valid`` is ``i.valid`` delayed by exactly :attr:`latency` cycles:
    ``14 * sbox_latency + 1 + input_register + round_key_register`` (15 to 45).
    Throughput: one block per cycle; no back-pressure (both streams are always ready).
    With ``sbox="rom"`` each 256x8 ROM serves two lookups (ECP5 DP16KD: 140 of them).
    """

    def __init__(self, *, sideband=0, sbox="rom", sbox_latency=1, input_register=False,
                 round_key_register=False):
        check_sbox(sbox)
        if type(sbox_latency) is not int or sbox_latency not in SBOX_LATENCIES:
            raise ValueError(f"sbox_latency must be 1, 2 or 3, not {sbox_latency!r}")
        for name, value in (("input_register", input_register),
                            ("round_key_register", round_key_register)):
            if type(value) is not bool:
                raise ValueError(f"{name} must be True or False, not {value!r}")
        self._sbox, self._sbox_latency = sbox, sbox_latency
        self._input_register, self._round_key_register = input_register, round_key_register
        self.latency = ROUNDS_256 * sbox_latency + 1 + input_register + round_key_register
        request, response = AES_PIPE_REQUEST(sideband), AES_PIPE_RESPONSE(sideband)
        self._sideband = "sideband" in request.members
        super().__init__({
            "i": In(stream.Signature(request, always_ready=True)),
            "o": Out(stream.Signature(response, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()

        def delay(value, name, cycles=1, *, reset_less=True):
            # Pipeline registers carry no reset (no reset fanout); only `valid` does.
            for n in range(cycles):
                register = Signal.like(value, name=f"{name}_{n}", reset_less=reset_less)
                m.d.sync += register.eq(value)
                value = register
            return value

        def stage(value, name):
            # As many registers as the round's S-box lookup takes.
            return delay(value, name, self._sbox_latency)

        request, valid = self.i.payload, self.i.valid
        if self._input_register:
            request = delay(request, "request")
            valid = delay(valid, "request_valid", reset_less=False)

        key_256 = request.key_256
        sideband = request.sideband if self._sideband else None
        state = request.block ^ request.key[:128]
        key_lo, key_hi, sub_addr = key_load(request.key)
        if self._round_key_register:
            # The cipher state runs a cycle behind the key schedule, so every
            # round key waits in a register for its round.
            state = delay(state, "initial_state")

        for rnd in range(1, ROUNDS_256 + 1):
            sub_bytes = SubBytes(16, sbox=self._sbox, ports=2, latency=self._sbox_latency)
            m.submodules[f"sub_bytes{rnd}"] = sub_bytes
            m.d.comb += sub_bytes.addr.eq(state)

            valid = delay(valid, f"valid{rnd}", self._sbox_latency, reset_less=False)
            key_256 = stage(key_256, f"key_256_{rnd}")
            if sideband is not None:
                sideband = stage(sideband, f"sideband{rnd}")
            sub_word = SubBytes(4, sbox=self._sbox, ports=2, latency=self._sbox_latency)
            m.submodules[f"sub_word{rnd}"] = sub_word
            m.d.comb += sub_word.addr.eq(sub_addr)
            key_lo = stage(key_lo, f"key_lo{rnd}")
            key_hi = stage(key_hi, f"key_hi{rnd}")
            round_key, key_lo, key_hi, sub_addr = key_step(
                m, key_lo, key_hi, sub_word.data, rnd=rnd, key_256=key_256, name=f"key{rnd}")
            if self._round_key_register:
                round_key = delay(round_key, f"round_key{rnd}")

            if rnd < ROUNDS_256:
                state = cipher_round(m, sub_bytes.data, round_key, name=f"state{rnd}")
            else:
                state = final_round(m, sub_bytes.data, round_key, name="ciphertext_256")
            # AES-128 blocks are done here; carry their ciphertext past rounds 11..14.
            if rnd == ROUNDS_128:
                ciphertext_128 = final_round(m, sub_bytes.data, round_key, name="ciphertext_128")
            elif rnd > ROUNDS_128:
                ciphertext_128 = stage(ciphertext_128, f"ciphertext_128_{rnd}")

        if self._round_key_register:
            # What travelled with the key schedule catches up with the state.
            valid = delay(valid, "valid_out", reset_less=False)
            key_256 = delay(key_256, "key_256_out")
            if sideband is not None:
                sideband = delay(sideband, "sideband_out")
        m.d.sync += [
            self.o.valid.eq(valid),
            self.o.payload.block.eq(Mux(key_256, state, ciphertext_128)),
        ]
        if sideband is not None:
            m.d.sync += self.o.payload.sideband.eq(sideband)
        return m
