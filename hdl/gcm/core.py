# SPDX-License-Identifier: BSD-2-Clause
"""AES-GCM (NIST SP 800-38D) with a 96-bit nonce and a 128-bit tag.

One datapath serves both profiles; the profile picks the two arithmetic units:

========= ===================================== ==========================================
profile   AES unit                              GHASH multiplier
========= ===================================== ==========================================
compact   `AesIterative`: one round per cycle   `GfMulSerial`: one digit per cycle,
          (10 cycles/block AES-128, 14 AES-256) one lane
fast      `AesPipeline`: one block per cycle    `GfMulPipeline`: one product per cycle,
                                                one interleaved lane per cycle of its latency
========= ===================================== ==========================================

Data flow::

    cmd, data_in --> injector --> AES unit --> post --+--> data_out (FIFO)
                                  (sideband carries   +--> GHASH lanes --> result (FIFO)
                                   each item's role)

The *injector* turns a command and its data blocks into a sequence of items, one
per cycle at most: ``H`` (encrypt 0 to get the hash key), ``J0`` (encrypt the
pre-counter block for the tag mask), optional bubbles while the powers of H are
computed, the AAD blocks, the text blocks (each paired with its counter block),
the received tag (decrypt) and the length block. Every item travels through the
AES unit with its role in the sideband, so the stages after it need no state
machine of their own and a new key costs nothing: the key travels with its
blocks.

GHASH with ``k`` lanes (aggregated reduction): block ``g`` of ``n`` is folded
into lane ``g mod k`` and multiplied by ``H**min(k, n-g)``, so every product has
``k`` cycles to come back before its lane is needed again and the last ``k``
products, XORed together, are the hash. The injector knows ``n`` from the
command's lengths, so it tags each block with its power up front.

Flow control: the AES pipeline and the pipelined multiplier never stall (no
high-fanout enables), so the injector only admits a text block when a place in
the output FIFO is reserved for it (credits), and a command only when a place
in the result FIFO is.
"""

from amaranth import *
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..aes import ROUNDS_128, AesIterative, AesPipeline
from ..packet.credit import credit_counter
from ..packet.layouts import big_endian
from ..packet.register import SkidBuffer, StreamRegister
from .ghash import GfMulPipeline, GfMulSerial
from .layouts import BLOCK_BYTES, GCM_COMMAND, GCM_OUTPUT, GCM_RESULT
from .profiles import GcmProfile, resolve_profile

__all__ = ["GcmCore"]


class _Kind(enum.Enum, shape=3):
    H    = 0   # AES_K(0^128): the hash key
    J0   = 1   # AES_K(J0): the tag mask
    AAD  = 2
    TEXT = 3
    TAG  = 4   # the received tag (decrypt), XORed with AES_K(J0) again
    LEN  = 5   # len(A) || len(C) in bits, the last GHASH block


class _MulOp(enum.Enum, shape=1):
    DATA  = 0
    POWER = 1   # computing H**j for the lanes


def _item_layout(lanes):
    return data.StructLayout({
        "kind":     _Kind,
        "data":     128,           # AAD/text/tag/length block
        "nbytes":   range(BLOCK_BYTES + 1),
        "decrypt":  1,
        "text_last": 1,
        # GHASH schedule, see the module docstring.
        "lane":     range(lanes),
        "first":    1,             # first block of its lane: nothing to fold in
        "final":    1,             # one of the last `lanes` blocks
        "last":     1,             # the length block
        # H**power multiplies the block; with one lane always H (no field).
        **({"power": range(1, lanes + 1)} if lanes > 1 else {}),
    })


def _mul_sideband(lanes):
    return data.StructLayout({
        "op":      _MulOp,
        "lane":    range(lanes),
        "final":   1,
        "last":    1,
        "decrypt": 1,                     # of the message the length block closes
        "power":   range(1, lanes + 2),   # POWER op: the power being computed
    })


def _byte_mask(nbytes):
    """128-bit mask keeping the first `nbytes` bytes of a block."""
    return Cat(*(Mux(nbytes > i, 0xff, 0x00) for i in range(BLOCK_BYTES)))


class _SidebandUnit(wiring.Component):
    """Gives an arithmetic unit (AES or GF multiplier) a sideband that travels with each item.

    A pipelined core carries the sideband itself and cannot wait: both streams
    are ``always_ready``. A core with back-pressure (the compact profile's)
    holds one item at a time, so the sideband waits in a register beside it.
    """
    def __init__(self, core, *, operands, result, sideband, pipelined):
        self.core, self._operands, self._result = core, list(operands), result
        self._pipelined = pipelined
        request = data.StructLayout({**operands, "sideband": sideband})
        response = data.StructLayout({result: 128, "sideband": sideband})
        super().__init__({
            "i": In(stream.Signature(request, always_ready=pipelined)),
            "o": Out(stream.Signature(response, always_ready=pipelined)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        for name in self._operands:
            m.d.comb += getattr(core.i.payload, name).eq(getattr(self.i.payload, name))
        m.d.comb += core.i.valid.eq(self.i.valid)
        if self._pipelined:
            m.d.comb += [
                core.i.payload.sideband.eq(self.i.payload.sideband),
                self.o.payload.eq(core.o.payload),
                self.o.valid.eq(core.o.valid),
            ]
            return m

        # Both back-pressured cores hold one item and take the next one in the
        # cycle their result is taken, so one register, refilled as it empties,
        # keeps the sideband.
        held = Signal.like(self.i.payload.sideband)
        full = Signal()
        take = core.o.valid & self.o.ready
        room = ~full | take
        m.d.comb += [
            core.i.valid.eq(self.i.valid & room),
            self.i.ready.eq(core.i.ready & room),
            getattr(self.o.payload, self._result).eq(core.o.payload),
            self.o.payload.sideband.eq(held),
            self.o.valid.eq(core.o.valid),
            core.o.ready.eq(self.o.ready),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload.sideband), full.eq(1)]
        with m.Elif(take):
            m.d.sync += full.eq(0)
        return m


def _aes_unit(profile: GcmProfile, sideband):
    """AES forward cipher with an item sideband, for either profile.

    Every item goes through the cipher, also those that need no encryption
    (AAD, tag, length): in the pipeline that costs nothing, and in the
    iterative core a path around the rounds would cost more LUTs (a 128-bit
    multiplexer and its register) than the ten cycles are worth there.
    """
    pipelined = profile.aes == "pipeline"
    core = (AesPipeline(sideband=sideband, sbox=profile.sbox, sbox_latency=profile.sbox_latency,
                        input_register=profile.aes_input_register,
                        round_key_register=profile.aes_round_key_register)
            if pipelined else AesIterative(sbox=profile.sbox, output_register=profile.post_register))
    return _SidebandUnit(core, operands={"block": 128, "key": 256, "key_256": 1},
                         result="block", sideband=sideband, pipelined=pipelined)


def _mul_unit(profile: GcmProfile, sideband):
    """GF(2^128) multiplier with a sideband, for either profile."""
    pipelined = profile.ghash == "pipeline"
    core = (GfMulPipeline(stages=profile.ghash_stages, sideband=sideband,
                          input_register=profile.ghash_input_register,
                          karatsuba=profile.ghash_karatsuba) if pipelined
            else GfMulSerial(digit=profile.ghash_digit))
    return _SidebandUnit(core, operands={"a": 128, "b": 128}, result="p", sideband=sideband,
                         pipelined=pipelined)


def _register(m, value, name, *, reset_less=True):
    """`value` one cycle later, in a register of `m` named `name`."""
    register = Signal(len(Value.cast(value)), name=name, reset_less=reset_less)
    m.d.sync += register.eq(value)
    return register


def _tag_mask_needs_copy(aes_core, mul_core):
    """Whether the tag mask needs a copy per message whose last product is in flight.

    A message's tag mask is used when its last product (of the length block)
    comes back; the next message's J0 overwrites it. With the iterative AES unit,
    which holds one item, the next message's H and J0 enter it only after the
    length block has left it for the multiplier, so J0 overwrites the mask
    2 * ROUNDS_128 cycles later at the earliest: a serial multiplier quicker than
    that needs no copy. The pipelines overlap messages and need one.
    """
    if isinstance(aes_core, AesPipeline) or isinstance(mul_core, GfMulPipeline):
        return True
    return mul_core.cycles >= 2 * ROUNDS_128


def _blocks(length):
    """The 16-byte blocks `length` bytes take (the last one partial)."""
    return (length + BLOCK_BYTES - 1) >> 4


class _Countdown:
    """Blocks of one kind (AAD, text) still to inject, with "some left" and "one left"
    kept in flip-flops beside the count, so that the injector's multiplexers select on
    registers instead of comparing a 13-bit count in the same cycle."""

    def __init__(self, name):
        self.left = Signal(range(2**16 // BLOCK_BYTES + 2), name=f"{name}_left")
        self.more = Signal(name=f"{name}_more")     # left != 0
        self.final = Signal(name=f"{name}_final")   # left == 1

    def load(self, m, length):
        """Start with the blocks of `length` bytes."""
        m.d.sync += [
            self.left.eq(_blocks(length)),
            self.more.eq(length != 0),
            self.final.eq((length != 0) & (length <= BLOCK_BYTES)),
        ]

    def step(self, m):
        """One block injected (only while `more`)."""
        m.d.sync += [
            self.left.eq(self.left - 1),
            self.more.eq(~self.final),
            self.final.eq(self.left == 2),
        ]


class GcmCore(wiring.Component):
    """AES-GCM encrypt/decrypt of back-to-back messages, each with its own key.

    Parameters
    ----------
    profile : ``"compact"`` or ``"fast"`` (see :mod:`.profiles`); keyword
        overrides (``sbox``, ``ghash_digit``, ``ghash_stages``) replace single
        fields of the profile.

    Interface
    ---------
    cmd : stream of :data:`GCM_COMMAND`, one per message.
    data_in : stream of 128-bit blocks: AAD blocks, text blocks, then for
        decrypt the received tag; see :data:`GCM_COMMAND`.
    data_out : stream of :data:`GCM_OUTPUT`, one per text block.
    result : stream of :data:`GCM_RESULT`, one per message, after its text.
    overrun : sticky; set (a cycle after the event) if the fixed schedule of the
        fast profile was ever violated. It never is by construction; exported for
        status and tests.

    Throughput: *fast* takes one 16-byte block per cycle, *compact* one per 10
    (AES-128) or 14 (AES-256) cycles; every message also pays a fixed number of
    cycles (H, E(J0), the powers of H, the length block), the same whether its
    key is new or not. Measured by ``bench/gcm.py``, listed in
    ``docs/performance.md``.
    """

    def __init__(self, profile="compact", **overrides):
        self._profile = resolve_profile(profile, **overrides)
        lanes = self._profile.lanes
        self._item = _item_layout(lanes)
        self._mul_sideband = _mul_sideband(lanes)
        self._aes = _aes_unit(self._profile, self._item)
        self._mul = _mul_unit(self._profile, self._mul_sideband)
        super().__init__({
            "cmd":      In(stream.Signature(GCM_COMMAND)),
            "data_in":  In(stream.Signature(128)),
            "data_out": Out(stream.Signature(GCM_OUTPUT)),
            "result":   Out(stream.Signature(GCM_RESULT)),
            "overrun":  Out(1),
        })

    @property
    def profile(self) -> GcmProfile:
        return self._profile

    @property
    def power_bubbles(self):
        """Idle cycles after J0 while H**2 .. H**lanes are computed.

        H leaves the AES unit at cycle 0 and starts H*H; each power takes
        ``lanes`` cycles (the multiplier's latency) and starts the next, so
        H**lanes is in its register at cycle (lanes-1)*lanes + 1, and the first
        GHASH block, which follows H, J0 and the bubbles, must not come earlier.
        """
        k = self._profile.lanes
        return max(0, (k - 1) * k - 1)

    def elaborate(self, platform):
        m = Module()
        lanes = self._profile.lanes
        out_depth = self._profile.out_depth
        m.submodules.aes = aes = self._aes
        m.submodules.mul = mul = self._mul
        m.submodules.res_fifo = res_fifo = fifo.SyncFIFOBuffered(
            width=GCM_RESULT.size, depth=self._profile.result_depth)
        m.d.comb += [
            self.result.payload.eq(res_fifo.r_data),
            self.result.valid.eq(res_fifo.r_rdy),
            res_fifo.r_en.eq(self.result.ready),
        ]
        # With no output FIFO the post stage hands text blocks straight to
        # `data_out` and holds the AES unit while the consumer is not ready.
        if out_depth:
            m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(
                width=GCM_OUTPUT.size, depth=out_depth)
            out_head = self.data_out
            if self._profile.output_register:
                # The FIFO's block RAM has no output register (5.8 ns from clock to
                # data on ECP5): the consumer gets `data_out` from flip-flops instead.
                m.submodules.out_register = out_register = SkidBuffer(GCM_OUTPUT)
                wiring.connect(m, out_register.o, wiring.flipped(self.data_out))
                out_head = wiring.flipped(out_register.i)
            m.d.comb += [
                out_head.payload.eq(out_fifo.r_data),
                out_head.valid.eq(out_fifo.r_rdy),
                out_fifo.r_en.eq(out_head.ready),
            ]

        # ---- injector -------------------------------------------------------
        cmd_in, data_in = self.cmd, self.data_in
        if self._profile.input_registers:
            # The injector's handshakes and multiplexers then start from flip-flops
            # of the core's own rather than from wherever the producer is placed.
            m.submodules.cmd_register = cmd_register = StreamRegister(GCM_COMMAND)
            m.submodules.data_register = data_register = SkidBuffer(128)
            wiring.connect(m, wiring.flipped(self.cmd), cmd_register.i)
            wiring.connect(m, wiring.flipped(self.data_in), data_register.i)
            cmd_in, data_in = cmd_register.o, data_register.o
        cmd = Signal(GCM_COMMAND)
        aad, text = _Countdown("aad"), _Countdown("text")
        tag_left = Signal()
        # GCM's inc32 counter of the next text block. It starts at 2 and a
        # 16-bit text length takes it at most 4096 blocks further, so the
        # upper bits of the 32 are always zero.
        counter = Signal(range(2 + 2**16 // BLOCK_BYTES + 1))
        # GHASH blocks still to come; one lane needs no count: only the length
        # block is final, and it multiplies by H.
        remaining = Signal(range(2 * 2**16 // BLOCK_BYTES + 4)) if lanes > 1 else None
        lane = Signal(range(lanes))
        first_left = Signal(range(lanes + 1))      # lanes that have not seen a block yet
        bubbles = Signal(range(self.power_bubbles + 1))

        text_inject = Signal()
        # A message's result place is taken when it leaves J0, not when its
        # command is taken: no other command can be taken in between, and the
        # count then never waits for the command's valid.
        result_promised = Signal()
        # The pipeline cannot wait, so its text blocks and results need a place
        # reserved in their FIFOs (credits); there the credit loop is counted from
        # registers, for timing. The iterative unit keeps the plain count: with
        # its one-entry result FIFO a credit back a cycle late would be a cycle
        # per message.
        registered_credits = self._profile.aes == "pipeline"
        if out_depth:
            text_room = credit_counter(m, "out", out_depth, spent=text_inject,
                                        freed=out_fifo.r_en & out_fifo.r_rdy,
                                        registered=registered_credits)
        else:
            text_room = C(1)
        res_room = credit_counter(m, "res", self._profile.result_depth, spent=result_promised,
                                   freed=res_fifo.r_en & res_fifo.r_rdy,
                                   registered=registered_credits)

        item = Signal(self._item)
        # What the injector sends the AES unit, straight or through a register.
        req = Signal(aes.i.payload.shape())
        req_valid, req_ready = Signal(), aes.i.ready
        if self._profile.injector_register:
            # The pipeline cannot stall, so a register in front of it is only a
            # cycle: the injector's multiplexers and the AES unit's request
            # register (beside round 1's block RAMs) get a wire each.
            m.d.comb += aes.i.payload.eq(_register(m, req, "injected"))
            m.d.sync += aes.i.valid.eq(req_valid)
        else:
            m.d.comb += [aes.i.payload.eq(req), aes.i.valid.eq(req_valid)]
        m.d.comb += [
            req.key.eq(cmd.key),
            req.key_256.eq(cmd.key_256),
            req.sideband.eq(item),
            item.decrypt.eq(cmd.decrypt),
            item.lane.eq(lane),
            item.first.eq(first_left != 0),
        ]
        # With one lane `final` and `last` are set with the length block. (Not
        # as constants here: Yosys writes a constant driving part of a comb
        # signal as an `always @*` without inputs, which Verilog simulators
        # never run.)
        if remaining is not None:
            m.d.comb += [
                item.final.eq(remaining <= lanes),
                item.last.eq(remaining == 1),
                item.power.eq(Mux(remaining < lanes, remaining, lanes)),
            ]

        def ghash_block_injected():
            m.d.sync += [
                lane.eq(Mux(lane == lanes - 1, 0, lane + 1)),
                first_left.eq(Mux(first_left != 0, first_left - 1, 0)),
            ]
            if remaining is not None:
                m.d.sync += remaining.eq(remaining - 1)

        def last_bytes(length):
            return Mux(length[:4] == 0, BLOCK_BYTES, length[:4])

        with m.FSM(name="injector"):
            c = cmd_in.payload

            def accept_command():
                m.d.comb += cmd_in.ready.eq(1)
                m.d.sync += cmd.eq(c)

            def load_counts():
                # In J0, from the latched command: the counters' enables then never
                # wait for the command handshake (and its result credit), only for
                # the state and the block handshake.
                m.d.sync += [
                    tag_left.eq(cmd.decrypt),
                    counter.eq(2),
                    lane.eq(0),
                    first_left.eq(lanes),
                ]
                aad.load(m, cmd.aad_len)
                text.load(m, cmd.text_len)
                if remaining is not None:
                    m.d.sync += remaining.eq(_blocks(cmd.aad_len) + _blocks(cmd.text_len) + 1)

            with m.State("IDLE"):
                can_start = cmd_in.valid & res_room
                if self._profile.aes == "pipeline":
                    # H goes in with the command's own key in the cycle the
                    # command is taken: one cycle less per message for a 256-bit
                    # multiplexer, cheap on the parts that hold this profile.
                    m.d.comb += [
                        req.key.eq(c.key),
                        req.key_256.eq(c.key_256),
                        req.block.eq(0),
                        item.kind.eq(_Kind.H),
                        req_valid.eq(can_start),
                    ]
                    with m.If(can_start):
                        accept_command()
                        m.next = "J0"
                else:
                    with m.If(can_start):
                        accept_command()
                        m.next = "H"
            if self._profile.aes != "pipeline":
                with m.State("H"):
                    m.d.comb += [req.block.eq(0), item.kind.eq(_Kind.H), req_valid.eq(1)]
                    with m.If(req_ready):
                        m.next = "J0"
            with m.State("J0"):
                m.d.comb += [
                    req.block.eq(Cat(cmd.nonce, big_endian(1, 4))),
                    item.kind.eq(_Kind.J0),
                    req_valid.eq(1),
                ]
                load_counts()
                with m.If(req_ready):
                    m.d.comb += result_promised.eq(1)
                    if self.power_bubbles:
                        m.d.sync += bubbles.eq(self.power_bubbles - 1)
                        m.next = "POWERS"
                    else:
                        m.next = "BLOCKS"
            if self.power_bubbles:
                with m.State("POWERS"):
                    m.d.sync += bubbles.eq(bubbles - 1)
                    with m.If(bubbles == 0):
                        m.next = "BLOCKS"
            with m.State("BLOCKS"):
                m.d.comb += item.data.eq(data_in.payload)
                with m.If(aad.more):
                    m.d.comb += [
                        item.kind.eq(_Kind.AAD),
                        item.nbytes.eq(Mux(aad.final, last_bytes(cmd.aad_len), BLOCK_BYTES)),
                        req_valid.eq(data_in.valid),
                        data_in.ready.eq(req_ready),
                    ]
                    with m.If(data_in.valid & req_ready):
                        aad.step(m)
                        ghash_block_injected()
                with m.Elif(text.more):
                    m.d.comb += [
                        item.kind.eq(_Kind.TEXT),
                        req.block.eq(Cat(cmd.nonce, big_endian(counter, 4))),
                        item.nbytes.eq(Mux(text.final, last_bytes(cmd.text_len), BLOCK_BYTES)),
                        item.text_last.eq(text.final),
                        req_valid.eq(data_in.valid & text_room),
                        data_in.ready.eq(req_ready & text_room),
                    ]
                    with m.If(data_in.valid & req_ready & text_room):
                        m.d.comb += text_inject.eq(1)
                        m.d.sync += counter.eq(counter + 1)
                        text.step(m)
                        ghash_block_injected()
                with m.Elif(tag_left):
                    # Before the length block, so that the tag is in place when
                    # the last product comes back. Encrypting J0 again gives
                    # AES_K(J0) ^ tag, what the last product must equal.
                    m.d.comb += [
                        item.kind.eq(_Kind.TAG),
                        req.block.eq(Cat(cmd.nonce, big_endian(1, 4))),
                        req_valid.eq(data_in.valid),
                        data_in.ready.eq(req_ready),
                    ]
                    with m.If(data_in.valid & req_ready):
                        m.d.sync += tag_left.eq(0)
                with m.Else():
                    m.d.comb += [
                        item.kind.eq(_Kind.LEN),
                        item.data.eq(Cat(big_endian(cmd.aad_len << 3, 8),
                                         big_endian(cmd.text_len << 3, 8))),
                        item.nbytes.eq(BLOCK_BYTES),
                        req_valid.eq(1),
                    ]
                    if remaining is None:
                        m.d.comb += [item.final.eq(1), item.last.eq(1)]
                    with m.If(req_ready):
                        ghash_block_injected()
                        m.next = "IDLE"

        # ---- post: after the AES unit ---------------------------------------
        # Each way the schedule could break is registered where it arises and
        # only the registers meet in the sticky flag: it is status, a cycle late
        # is harmless, and the conditions come from all over the core.
        schedule_breaks = []

        def schedule_broken(condition, name):
            schedule_breaks.append(_register(m, condition, f"overrun_{name}", reset_less=False))

        aes_out, aes_valid = aes.o.payload, aes.o.valid
        if self._profile.post_register and self._profile.aes == "pipeline":
            # The item's control fields select 128-bit multiplexers in front of the
            # multiplier (lane accumulator, power of H); from a register placed
            # near them rather than from the AES unit's last round. (The iterative
            # unit, which can be held, registers its result itself.)
            aes_out = Signal(aes.o.payload.shape(), name="post", reset_less=True)
            aes_valid = Signal(name="post_valid")
            m.d.sync += [aes_out.eq(aes.o.payload), aes_valid.eq(aes.o.valid)]
        got = aes_out.sideband
        keystream = aes_out.block
        mask = _byte_mask(got.nbytes)
        ciphered = keystream ^ got.data
        text_out = ciphered & mask

        h_power = Array(Signal(128, name=f"h_power{j}") for j in range(1, lanes + 1))
        lane_acc = Array(Signal(128, name=f"lane{j}") for j in range(lanes))
        # XOR of the final products but the last; with one lane there are none.
        tag_acc = Signal(128) if lanes > 1 else C(0, 128)
        # AES_K(J0) when encrypting; when decrypting AES_K(J0) ^ received tag, so
        # one register serves both and the check is an equality.
        tag_mask = Signal(128)

        if self._profile.ghash != "pipeline":
            m.d.comb += mul.o.ready.eq(1)     # products are always taken
        ret = mul.o.payload
        ret_side = ret.sideband
        ret_data = mul.o.valid & (ret_side.op == _MulOp.DATA)
        ret_power = mul.o.valid & (ret_side.op == _MulOp.POWER)

        # The power chain has the multiplier's input to itself: the injector's
        # bubbles keep GHASH blocks away until it is done.
        chain_issue = Signal()
        chain_a = Signal(128)
        chain_power = Signal(range(1, lanes + 2))
        chain_from_h = aes_valid & (got.kind == _Kind.H)
        chain_from_power = ret_power & (ret_side.power < lanes)
        if lanes > 1:
            with m.If(chain_from_h):
                m.d.comb += [chain_issue.eq(1), chain_a.eq(keystream), chain_power.eq(2)]
            with m.Elif(chain_from_power):
                m.d.comb += [chain_issue.eq(1), chain_a.eq(ret.p),
                             chain_power.eq(ret_side.power + 1)]
            schedule_broken(chain_from_h & chain_from_power, "chain")

        is_ghash = (got.kind == _Kind.AAD) | (got.kind == _Kind.TEXT) | (got.kind == _Kind.LEN)
        # GHASH takes the ciphertext: what leaves when encrypting, what came in
        # otherwise. Written as one masked multiplexer: a LUT per bit.
        encrypting = (got.kind == _Kind.TEXT) & ~got.decrypt
        ghash_in = Mux(encrypting, ciphered, got.data) & mask
        folded = Mux(got.first, 0,
                     Mux(ret_data & ~ret_side.final & (ret_side.lane == got.lane),
                         ret.p, lane_acc[got.lane]))
        is_text = got.kind == _Kind.TEXT
        data_ready = mul.i.ready & ~chain_issue
        h_key = Mux(chain_from_h, keystream, h_power[0])

        if self._profile.aes == "pipeline":
            # The pipeline cannot wait; the schedule guarantees it never has to.
            data_issue = aes_valid & is_ghash
            fire = aes_valid
            schedule_broken(data_issue & ~data_ready, "mul_busy")
        else:
            # A text block goes to the multiplier and out in the same cycle.
            text_wait = is_text & ~self.data_out.ready if not out_depth else C(0)
            data_issue = aes.o.valid & is_ghash & ~text_wait
            m.d.comb += aes.o.ready.eq(~is_ghash | data_ready & ~text_wait)
            fire = aes.o.valid & aes.o.ready
        m.d.comb += mul.i.valid.eq(chain_issue | data_issue)
        with m.If(chain_issue):
            m.d.comb += [
                mul.i.payload.a.eq(chain_a),
                mul.i.payload.b.eq(h_key),
                mul.i.payload.sideband.op.eq(_MulOp.POWER),
                mul.i.payload.sideband.power.eq(chain_power),
            ]
        with m.Else():
            m.d.comb += [
                mul.i.payload.a.eq(folded ^ ghash_in),
                mul.i.payload.b.eq(h_power[got.power - 1] if lanes > 1 else h_power[0]),
                mul.i.payload.sideband.op.eq(_MulOp.DATA),
                mul.i.payload.sideband.lane.eq(got.lane),
                mul.i.payload.sideband.final.eq(got.final),
                mul.i.payload.sideband.last.eq(got.last),
                mul.i.payload.sideband.decrypt.eq(got.decrypt),
            ]

        with m.If(fire):
            with m.Switch(got.kind):
                with m.Case(_Kind.H):
                    m.d.sync += h_power[0].eq(keystream)
                with m.Case(_Kind.J0, _Kind.TAG):
                    # J0 carries no data: its `ciphered` is the keystream.
                    m.d.sync += tag_mask.eq(ciphered)
        text_block = Signal(GCM_OUTPUT)
        m.d.comb += [text_block.data.eq(text_out), text_block.last.eq(got.text_last)]
        if out_depth:
            m.d.comb += [
                out_fifo.w_data.eq(text_block),
                out_fifo.w_en.eq(fire & is_text),
            ]
            schedule_broken(out_fifo.w_en & ~out_fifo.w_rdy, "out_full")
        else:
            m.d.comb += [
                self.data_out.payload.eq(text_block),
                self.data_out.valid.eq(aes.o.valid & is_text & data_ready),
            ]

        length_fire = fire & (got.kind == _Kind.LEN)
        if _tag_mask_needs_copy(aes.core, mul.core):
            # One entry: a message's length block reaches the multiplier later
            # than the previous message's last product comes back -- with the
            # pipeline at least H, J0 and `power_bubbles` cycles later against a
            # latency of `lanes`; with the serial unit after two 10+ cycle AES
            # blocks (H, J0) against one multiply -- so two never wait at once.
            m.submodules.pending = pending = fifo.SyncFIFO(width=128, depth=1)
            m.d.comb += [pending.w_data.eq(tag_mask), pending.w_en.eq(length_fire)]
            schedule_broken(pending.w_en & ~pending.w_rdy, "mask_pending")
            mask_of_last, mask_taken = pending.r_data, pending.r_en
        else:
            # `_tag_mask_needs_copy` says why the register itself lasts.
            mask_of_last, mask_taken = tag_mask, Signal()
            awaiting = Signal()
            with m.If(length_fire):
                m.d.sync += awaiting.eq(1)
            with m.Elif(mask_taken):
                m.d.sync += awaiting.eq(0)
            schedule_broken(awaiting & fire & (got.kind == _Kind.J0), "mask_overwritten")

        with m.If(Cat(*schedule_breaks).any()):
            m.d.sync += self.overrun.eq(1)

        # ---- GHASH results ---------------------------------------------------
        if lanes > 1:
            with m.If(ret_power):
                m.d.sync += h_power[ret_side.power - 1].eq(ret.p)
        # With one lane the last product is the only final one. `difference` is
        # zero exactly when the hash matches the mask (a decrypt's tag is good).
        difference = tag_acc ^ ret.p ^ mask_of_last
        check_decrypt, check_valid = ret_side.decrypt, ret_data & ret_side.final & ret_side.last
        if self._profile.tag_check_register:
            # The 128-bit zero test and the result FIFO get a cycle of their own
            # instead of following the product and the XORs. The result credit
            # was reserved when the command was taken, so a write a cycle later
            # still finds room.
            difference = _register(m, difference, "tag_difference")
            check_decrypt = _register(m, check_decrypt, "tag_check_decrypt")
            check_valid = _register(m, check_valid, "tag_check_valid", reset_less=False)
        res_in = Signal(GCM_RESULT)
        m.d.comb += [
            res_in.tag.eq(Mux(check_decrypt, 0, difference)),
            res_in.tag_ok.eq(~check_decrypt | (difference == 0)),
            res_fifo.w_data.eq(res_in),
            res_fifo.w_en.eq(check_valid),
        ]
        with m.If(ret_data):
            with m.If(~ret_side.final):
                m.d.sync += lane_acc[ret_side.lane].eq(ret.p)
            with m.Elif(ret_side.last):
                m.d.comb += mask_taken.eq(1)
                if lanes > 1:
                    m.d.sync += tag_acc.eq(0)
            if lanes > 1:
                with m.Else():
                    m.d.sync += tag_acc.eq(tag_acc ^ ret.p)
        return m
