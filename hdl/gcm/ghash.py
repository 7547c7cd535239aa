# SPDX-License-Identifier: BSD-2-Clause
"""Multipliers in GHASH's field GF(2^128) (NIST SP 800-38D, section 6.3).

Every interface carries blocks byte-packed: byte i of the block in bits [8i, 8i+8), so
the signal value is ``int.from_bytes(block, "little")``. Inside this module a field
element is a polynomial in coefficient order (bit j = coefficient of x^j), reduced
modulo P = x^128 + x^7 + x^2 + x + 1; `block_to_poly` and `poly_to_block` convert,
and are pure wiring.

Two multipliers share the combinational Horner step `horner_step`:

* `GfMulSerial` -- digit-serial, one product every 128/digit cycles, few LUTs;
* `GfMulPipeline` -- one product per clock, result `stages` cycles later.

`GfMulPipeline(karatsuba=levels)` replaces the Horner steps by Karatsuba's
split (`karatsuba_operands`, `karatsuba_combine`): 3**levels smaller carry-less
products instead of one 128x128, a quarter fewer AND terms per level.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "block_to_poly", "poly_to_block", "partial_products", "mod_p", "horner_step",
    "clmul", "karatsuba_operands", "karatsuba_combine",
    "GfMulOperands", "GfMulSerial", "GfMulPipeline",
]


def block_to_poly(block):
    """Turn a byte-packed 128-bit block into coefficient order (bit j = coefficient of x^j).

    SP 800-38D numbers block bits from the most significant bit of byte 0 and makes
    bit j the coefficient of x^j, so coefficient j sits at bit 8*(j//8) + 7 - j%8 of
    the byte-packed value: the bits of each byte are reversed, the bytes stay put.
    """
    block = Value.cast(block)
    if len(block) != 128:
        raise ValueError(f"block must be 128 bits wide, not {len(block)}")
    return Cat(block[8 * (j // 8) + 7 - j % 8] for j in range(128))


# Reversing the bits of each byte is its own inverse.
poly_to_block = block_to_poly


def _xor_tree(terms):
    # Balanced, so that each output bit is log2(terms) XORs deep instead of a chain.
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[k] ^ terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


def partial_products(b, digit):
    """The partial products b·x^i for each set bit i of `digit` (coefficient order).

    Their XOR is the carry-less, unreduced product b·digit.
    """
    return [Mux(digit[i], b << i, 0) for i in range(len(digit))]


def mod_p(m, v):
    """Reduce the polynomial `v` (any width, coefficient order) modulo P: 128 bits.

    Intermediate folds are comb signals of `m`, so that each is computed once.
    """
    v = Value.cast(v)
    while len(v) > 128:
        folded = Signal(len(v), name="unreduced")
        m.d.comb += folded.eq(v)
        # x^128 = x^7 + x^2 + x + 1 (mod P): fold the overflow back in. More than 121
        # overflow bits overflow again after the x^7 shift, hence the loop.
        high = folded[128:]
        v = _xor_tree([folded[:128], high, high << 1, high << 2, high << 7])
    reduced = Signal(128, name="reduced")
    m.d.comb += reduced.eq(v)
    return reduced


def horner_step(m, z, b, digit):
    """One Horner step: z·x^d + digit·b (mod P) with d = len(digit), coefficient order.

    Reducing the sum z·x^d + digit·b once, rather than each term, needs one fold
    instead of two. Returns a comb signal of `m`.
    """
    return mod_p(m, _xor_tree([Value.cast(z) << len(digit), *partial_products(b, digit)]))


def clmul(a, b):
    """The carry-less product a·b of two polynomials (coefficient order), unreduced:
    len(a) + len(b) - 1 bits."""
    a, b = Value.cast(a), Value.cast(b)
    return _xor_tree(partial_products(b, a))[:len(a) + len(b) - 1]


def karatsuba_operands(a, b, levels):
    """The 3**levels operand pairs whose carry-less products `karatsuba_combine` joins.

    One level splits a = a1·x^h + a0 (likewise b) and needs a0·b0, a1·b1 and
    (a0+a1)·(b0+b1); each of those splits again for the next level.
    """
    a, b = Value.cast(a), Value.cast(b)
    if levels == 0:
        return [(a, b)]
    h = len(a) // 2
    a0, a1, b0, b1 = a[:h], a[h:], b[:h], b[h:]
    return [*karatsuba_operands(a0, b0, levels - 1), *karatsuba_operands(a1, b1, levels - 1),
            *karatsuba_operands(a0 ^ a1, b0 ^ b1, levels - 1)]


def karatsuba_combine(products, width, levels):
    """a·b (2·width - 1 bits, unreduced) from the products of `karatsuba_operands`.

    With L = a0·b0, H = a1·b1 and M = (a0+a1)·(b0+b1): a·b = H·x^2h + (M+L+H)·x^h + L.
    """
    if levels == 0:
        return Value.cast(products[0])
    h, n = width // 2, 3 ** (levels - 1)
    low, high, middle = (karatsuba_combine(products[k * n:(k + 1) * n], h, levels - 1)
                         for k in range(3))
    return _xor_tree([low, (middle ^ low ^ high) << h, high << 2 * h])[:2 * width - 1]


#: Operands of a product A·B, byte-packed blocks.
GfMulOperands = data.StructLayout({"a": 128, "b": 128})


def _check_int(name, value, allowed, description):
    if type(value) is not int or value not in allowed:
        raise ValueError(f"{name} must be {description}, not {value!r}")


class GfMulSerial(wiring.Component):
    """Digit-serial GF(2^128) multiplier: ``o = i.a · i.b`` as in GHASH.

    Horner's rule over `digit`-bit digits of A, most significant power first:
    Z <- Z·x^digit + digit(A)·B, one step per cycle. B (the hash key H in GCM) is held
    in a register and A shifts, so the only wide logic is one Horner step. A digit
    that does not divide 128 zero-pads A at the top; the first step then uses a
    partial digit.

    Latency: the product is offered on `o` `cycles` = ceil(128/digit) cycles after
    the operands are accepted, and held until taken. Throughput: one product per
    `cycles` cycles; the next operands are accepted in the cycle the product is taken
    (so `i.ready` depends combinationally on `o.ready`). `o.payload` is the last
    Horner step, combinational from registers.
    """

    def __init__(self, *, digit: int = 8):
        _check_int("digit", digit, range(1, 129), "an integer from 1 to 128")
        self.digit = digit
        self.cycles = -(-128 // digit)
        super().__init__({
            "i": In(stream.Signature(GfMulOperands)),
            "o": Out(stream.Signature(128)),
        })

    def elaborate(self, platform):
        m = Module()
        d, n = self.digit, self.cycles

        a = Signal(n * d)          # coefficient order; the top digit is consumed next
        b = Signal(128)
        z = Signal(128)
        busy = Signal()
        steps_left = Signal(range(n))
        last = steps_left == 0

        product = horner_step(m, z, b, a[-d:])
        m.d.comb += [
            self.o.valid.eq(busy & last),
            self.o.payload.eq(poly_to_block(product)),
            self.i.ready.eq(~busy | (last & self.o.ready)),
        ]

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                a.eq(block_to_poly(self.i.payload.a)),
                b.eq(block_to_poly(self.i.payload.b)),
                z.eq(0),
                steps_left.eq(n - 1),
                busy.eq(1),
            ]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += busy.eq(0)
        with m.Elif(busy & ~last):
            m.d.sync += [
                z.eq(product),
                a.eq(a << d),
                steps_left.eq(steps_left - 1),
            ]
        return m


class GfMulPipeline(wiring.Component):
    """Pipelined GF(2^128) multiplier: ``o.p = i.a · i.b`` as in GHASH.

    Stage s does Horner step s over 128/stages-bit digits of A (most significant
    first), reducing modulo P in every stage. The alternative -- accumulate the
    unreduced product and reduce once at the end -- gives shallower middle stages but
    a last stage that is the deepest of all (partial products then the reduction);
    per-stage reduction keeps every stage alike: per output bit, at most
    ~5·(128/stages) AND terms in a balanced XOR tree.

    With ``karatsuba`` = 1, 2 or 3 (``stages`` must be 2) the first stage computes
    the 3**karatsuba carry-less products of Karatsuba's split (64x64, 32x32 or
    16x16 bits) and the second joins them and reduces: 3/4, 9/16 or 27/64 of the
    Horner stages' AND terms, each operand bit feeding fewer of them, so fewer and
    shorter wires between the operand registers and the product trees. The
    input register then holds the split operands (the sums of halves computed
    before it), one pair per product.

    Latency: `latency` = `stages` cycles, one more with `input_register`; `o.valid`
    is `i.valid` delayed by as much. Throughput: one product per cycle, no
    back-pressure. `sideband` (a width or a `data.Layout`) travels unchanged with its
    product. Without `input_register` the first stage's logic is fed straight from
    `i`, so whatever computes the operands shares its cycle with a Horner step.
    """

    def __init__(self, *, stages: int = 4, sideband=0, input_register: bool = False,
                 karatsuba: int = 0):
        _check_int("stages", stages, (1, 2, 4, 8), "1, 2, 4 or 8")
        _check_int("karatsuba", karatsuba, (0, 1, 2, 3), "0, 1, 2 or 3")
        if karatsuba and stages != 2:
            raise ValueError(f"karatsuba needs stages=2 (products, then their sum), "
                             f"not stages={stages}")
        if type(input_register) is not bool:
            raise ValueError(f"input_register must be True or False, not {input_register!r}")
        if not (isinstance(sideband, data.Layout) or
                (type(sideband) is int and sideband >= 0)):
            raise ValueError(f"sideband must be a width (int >= 0) or a data.Layout, "
                             f"not {sideband!r}")
        self.stages, self._input_register = stages, input_register
        self.karatsuba = karatsuba
        self.latency = stages + input_register
        super().__init__({
            "i": In(stream.Signature(
                data.StructLayout({"a": 128, "b": 128, "sideband": sideband}),
                always_ready=True)),
            "o": Out(stream.Signature(
                data.StructLayout({"p": 128, "sideband": sideband}),
                always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        d = 128 // self.stages

        def stage_register(value, name, **kwargs):
            register = Signal(len(value), name=name, **kwargs)
            m.d.sync += register.eq(value)
            return register

        valid = self.i.valid
        sideband = Value.cast(self.i.payload.sideband)
        a, b = block_to_poly(self.i.payload.a), block_to_poly(self.i.payload.b)
        if self.karatsuba:
            return self._elaborate_karatsuba(m, stage_register, a, b, sideband, valid)
        if self._input_register:
            a, b = (stage_register(a, "a_in", reset_less=True),
                    stage_register(b, "b_in", reset_less=True))
            sideband = stage_register(sideband, "sideband_in", reset_less=True)
            valid = stage_register(valid, "valid_in")
        else:
            a_comb, b_comb = Signal(128), Signal(128)
            m.d.comb += [a_comb.eq(a), b_comb.eq(b)]
            a, b = a_comb, b_comb
        z = C(0, 128)
        for s in range(self.stages):
            z = stage_register(horner_step(m, z, b, a[-d:]), f"z_{s}", reset_less=True)
            a = a[:-d]
            if s < self.stages - 1:
                a = stage_register(a, f"a_{s}", reset_less=True)
                b = stage_register(b, f"b_{s}", reset_less=True)
            sideband = stage_register(sideband, f"sideband_{s}", reset_less=True)
            valid = stage_register(valid, f"valid_{s}")

        m.d.comb += [
            self.o.valid.eq(valid),
            self.o.payload.p.eq(poly_to_block(z)),
            self.o.payload.sideband.eq(sideband),
        ]
        return m

    def _elaborate_karatsuba(self, m, stage_register, a, b, sideband, valid):
        levels = self.karatsuba
        operands = karatsuba_operands(a, b, levels)
        if self._input_register:
            # The split operands are registered, not a and b: each register then
            # feeds one product's AND terms (a bit of a feeds four registers through
            # the sums), so no operand bit fans out over the whole multiplier.
            operands = [(stage_register(x, f"a_in_{k}", reset_less=True),
                         stage_register(y, f"b_in_{k}", reset_less=True))
                        for k, (x, y) in enumerate(operands)]
            sideband = stage_register(sideband, "sideband_in", reset_less=True)
            valid = stage_register(valid, "valid_in")
        products = [stage_register(clmul(x, y), f"product_{k}", reset_less=True)
                    for k, (x, y) in enumerate(operands)]
        sideband = stage_register(sideband, "sideband_0", reset_less=True)
        valid = stage_register(valid, "valid_0")
        z = stage_register(mod_p(m, karatsuba_combine(products, 128, levels)), "z",
                           reset_less=True)
        m.d.comb += [
            self.o.valid.eq(stage_register(valid, "valid_1")),
            self.o.payload.p.eq(poly_to_block(z)),
            self.o.payload.sideband.eq(stage_register(sideband, "sideband_1", reset_less=True)),
        ]
        return m
