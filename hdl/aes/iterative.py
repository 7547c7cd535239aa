# SPDX-License-Identifier: BSD-2-Clause
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .round import (AES_REQUEST, ROUNDS_128, ROUNDS_256, cipher_round, final_round,
                    key_control_word, key_load, key_step)
from .sbox import SubBytes, check_sbox


__all__ = ["AesIterative"]


class AesIterative(wiring.Component):
    """AES-128/256 forward cipher, one round per clock (the "compact" profile).

    Encrypts ``i.payload.block`` under ``i.payload.key`` (AES-256 when ``key_256``)
    and presents the ciphertext on ``o``. The key schedule runs on the fly from the
    request's key, so each block may bring a different key at no cost (and the core
    keeps no copy of a key). 16 data + 4 key S-boxes, one lookup each per cycle
    (``sbox="rom"``: 20 block RAMs, one read port each).

    Latency: the ``o`` handshake can happen 10 (AES-128) / 14 (AES-256) clock edges
    after the ``i`` handshake, one more with ``output_register``. Without it
    ``o.payload`` comes from the last round's logic (the S-box read, the key step,
    AddRoundKey); with it from a register, so a consumer's logic does not share a
    cycle with the last round.

    Throughput: one block per 10 / 14 cycles (12 / 16 with ``output_register``).
    Without the register ``i.ready`` is high while idle and during an ``o``
    handshake (combinationally from ``o.ready``), so the next block loads as the
    last one is delivered; with it ``i.ready`` is high while idle (the register
    empty and no round running), from registers only, and the next block loads
    the cycle after the last one was delivered. The core holds one block at a
    time, in its rounds or in its output register. While ``o.valid`` and not
    ``o.ready`` everything holds.
    """

    i: In(stream.Signature(AES_REQUEST))
    o: Out(stream.Signature(128))

    def __init__(self, *, sbox="rom", output_register: bool = False):
        check_sbox(sbox)
        if type(output_register) is not bool:
            raise TypeError(f"output_register must be True or False, not {output_register!r}")
        self._sbox = sbox
        self._output_register = output_register
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # One port per ROM: iCE40 maps only one read port to an SB_RAM40_4K.
        m.submodules.sub_bytes = sub_bytes = SubBytes(16, sbox=self._sbox)
        m.submodules.sub_word  = sub_word  = SubBytes(4, sbox=self._sbox)

        rnd     = Signal(range(ROUNDS_256 + 1))  # round whose S-box output is ready; 0: idle
        last    = Signal()                       # rnd is the final round (a register for Fmax)
        key_256 = Signal()
        key_lo  = Signal(128, reset_less=True)
        key_hi  = Signal(128, reset_less=True)
        # The key step's control (Rcon, rotate) for round `rnd`, kept in a register
        # beside it: decoding the round counter was in front of the key step's XOR
        # chain, on the path from the counter to the next round's S-box address.
        control = Signal(10, reset_less=True)

        round_key, next_lo, next_hi, next_sub_addr = key_step(
            m, key_lo, key_hi, sub_word.data, control=control, key_256=key_256)
        state = cipher_round(m, sub_bytes.data, round_key)

        request = self.i.payload
        load_lo, load_hi, load_sub_addr = key_load(request.key)
        # The S-box address registers hold the state: they take the next round's
        # input or, once this block is done (or none is running), the new block's.
        running = (rnd != 0) & ~last
        result = final_round(m, sub_bytes.data, round_key)
        if self._output_register:
            # `last` moves the result into the register and the core to idle; the
            # next block loads once the register has been read, so one block at a
            # time, and `i.ready` is a function of the core's own registers only:
            # the consumer's `o.ready` does not reach the producer's logic.
            held = Signal()
            ciphertext = Signal(128, reset_less=True)
            advance = 1
            idle = (rnd == 0) & ~held
            with m.If(last):
                m.d.sync += [ciphertext.eq(result), held.eq(1)]
            with m.Elif(self.o.ready):
                m.d.sync += held.eq(0)
            m.d.comb += [self.o.payload.eq(ciphertext), self.o.valid.eq(held)]
        else:
            advance = ~last | self.o.ready
            idle = (rnd == 0) | (last & self.o.ready)
            m.d.comb += [self.o.payload.eq(result), self.o.valid.eq(last)]
        m.d.comb += [
            sub_bytes.addr.eq(Mux(running, state, request.block ^ request.key[:128])),
            sub_word.addr.eq(Mux(running, next_sub_addr, load_sub_addr)),
            sub_bytes.en.eq(advance),
            sub_word.en.eq(advance),
            self.i.ready.eq(idle),
        ]

        with m.If(running):
            m.d.sync += [
                key_lo.eq(next_lo),
                key_hi.eq(next_hi),
                rnd.eq(rnd + 1),
                control.eq(key_control_word(rnd + 1, key_256)),
                last.eq(rnd + 1 == Mux(key_256, ROUNDS_256, ROUNDS_128)),
            ]
        with m.Elif(advance):  # idle, delivering, or (output register) done
            m.d.sync += [
                key_lo.eq(load_lo),
                key_hi.eq(load_hi),
                key_256.eq(request.key_256),
                control.eq(key_control_word(1, request.key_256)),
                rnd.eq(self.i.valid & self.i.ready),
                last.eq(0),
            ]
        return m
