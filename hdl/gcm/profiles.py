# SPDX-License-Identifier: BSD-2-Clause
"""Datapath profiles of the AES-GCM core.

A profile is a named set of construction parameters; every field can be
overridden one by one (``GcmCore("fast", ghash_stages=4)``).
"""

from dataclasses import dataclass, fields, replace

from ..aes.sbox import SBOX_LATENCIES

__all__ = ["GcmProfile", "PROFILES", "resolve_profile"]

SBOX_MAPPINGS = ("rom", "logic")
GHASH_DIGITS = (1, 2, 4, 8, 11, 12, 13, 16, 32)
GHASH_STAGES = (1, 2, 4, 8)


@dataclass(frozen=True)
class GcmProfile:
    name: str
    aes: str               # "iterative" (a round per cycle) | "pipeline" (a block per cycle)
    ghash: str             # "serial" (a digit per cycle) | "pipeline" (a product per cycle)
    sbox: str = "rom"      # "rom": block RAM; "logic": LUTs. Same timing either way.
    sbox_latency: int = 1  # AES pipeline: cycles a round (2, 3: S-box output registers)
    aes_input_register: bool = False  # AES pipeline: register its request (one cycle more)
    aes_round_key_register: bool = False  # AES pipeline: round keys a cycle ahead (one more)
    ghash_digit: int = 8   # serial multiplier: bits of the operand per cycle
    ghash_stages: int = 2  # pipelined multiplier: stages (+ input register = GHASH lanes)
    ghash_input_register: bool = False  # pipelined multiplier: register its operands
    ghash_karatsuba: int = 0  # pipelined multiplier, 2 stages: Karatsuba levels (0: Horner)
    out_depth: int = 0     # output FIFO blocks; 0: none, the AES unit waits for the consumer
    result_depth: int = 1  # result FIFO; bounds the messages in flight
    tag_check_register: bool = False  # register the tag check ahead of the result FIFO
    input_registers: bool = False  # cmd and data_in through registers (a cycle each)
    post_register: bool = False  # the AES unit's output registered once more (a cycle)
    output_register: bool = False  # data_out from a register after the output FIFO (a cycle)
    injector_register: bool = False  # AES pipeline: the injector's request registered (a cycle)

    @property
    def lanes(self) -> int:
        # One lane per cycle of the multiplier's latency (see GcmCore).
        if self.ghash != "pipeline":
            return 1
        return self.ghash_stages + self.ghash_input_register


PROFILES = {
    # iCE40UP5K: 16+4 S-box ROMs in EBR; an 8-bit digit (16 cycles per block,
    # 128/16 = 8 bits per cycle) is the smallest multiplier that meets the
    # 8 bits/cycle target. No output FIFO (the iterative AES unit holds its
    # block until the consumer takes it) and a one-entry result FIFO: a block
    # takes 10+ cycles here, so deeper ones would only cost flip-flops.
    # The AES unit's result is registered, so the last round (an S-box read, the
    # key step and AddRoundKey) does not share a cycle with the keystream XOR and
    # the multiplier's or the consumer's input, and its input's ready comes from
    # registers (two cycles a block: 12 / 16 of the multiplier's 16). The tag
    # check has a cycle of its own after the last product (a decrypt's 128-bit
    # compare was one path with the multiplier's last step and the lane XORs).
    "compact": GcmProfile("compact", aes="iterative", ghash="serial", ghash_digit=8,
                          post_register=True, tag_check_register=True),
    # ECP5: one block per cycle at 100 MHz. Every S-box read has its block RAM's
    # output register and then a fabric register (three cycles a round: the
    # wire from one round's block RAMs to the next round's logic gets a cycle
    # of its own, the rounds' 140 block RAMs being spread over the die), and the
    # multiplier its input register, so neither the RAM's clock-to-output delay
    # nor the GHASH input multiplexers share a cycle with round or Horner logic.
    # The AES pipeline's request register keeps the injector's multiplexers out
    # of round 1's block RAM address paths, and its round key register the key
    # step out of the rounds' (a cycle more each): AES latency 45, and a third
    # GHASH lane. The output FIFO covers that latency plus the credit loop, so a
    # consumer that is always ready sees no bubbles. Short messages: a message
    # is in flight for ~60 cycles and can start every 9 + blocks cycles, so 8
    # results in flight keep 64-byte messages back to back. For routing: the
    # multiplier is Karatsuba's (27 products of 16x16 bits, not two Horner
    # steps of 64x128: the Horner multiplier with the GCM glue around it did
    # not route), the core's inputs and the AES output are registered once more
    # (the injector and the post stage's multiplexers start from nearby
    # flip-flops), and so is the tag check (a 128-bit zero test) in front of
    # the result FIFO, and `data_out` leaves from flip-flops after the output
    # FIFO's block RAM; the injector's request is registered before the AES
    # unit's own request register (the AES unit cannot stall, so it is one more
    # cycle and a wire between the two). None of these cycles shows in the
    # throughput.
    "fast": GcmProfile("fast", aes="pipeline", ghash="pipeline", ghash_stages=2,
                       sbox_latency=3, aes_input_register=True, aes_round_key_register=True,
                       ghash_input_register=True, ghash_karatsuba=3, out_depth=64, result_depth=8,
                       tag_check_register=True, input_registers=True, post_register=True,
                       output_register=True, injector_register=True),
}


def resolve_profile(profile, **overrides) -> GcmProfile:
    """The profile named `profile` (or a `GcmProfile`) with `overrides` applied, checked."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, not {profile!r}")
        profile = PROFILES[profile]
    elif not isinstance(profile, GcmProfile):
        raise TypeError(f"profile must be a profile name or a GcmProfile, not {profile!r}")
    known = {f.name for f in fields(GcmProfile)} - {"name", "aes", "ghash"}
    for key in overrides:
        if key not in known:
            raise TypeError(f"unknown GCM core parameter {key!r}; known: {sorted(known)}")
    overrides = {key: value for key, value in overrides.items() if value is not None}
    profile = replace(profile, **overrides)
    if profile.sbox not in SBOX_MAPPINGS:
        raise ValueError(f"sbox must be one of {SBOX_MAPPINGS}, not {profile.sbox!r}")
    if profile.ghash_digit not in GHASH_DIGITS:
        raise ValueError(f"ghash_digit must be one of {GHASH_DIGITS}, not {profile.ghash_digit!r}")
    if profile.ghash_stages not in GHASH_STAGES:
        raise ValueError(f"ghash_stages must be one of {GHASH_STAGES}, not {profile.ghash_stages!r}")
    # The iterative unit's round loop and the serial multiplier have no such registers.
    if (type(profile.sbox_latency) is not int
            or profile.sbox_latency not in (SBOX_LATENCIES if profile.aes == "pipeline" else (1,))):
        raise ValueError(f"sbox_latency must be 1{', 2 or 3' if profile.aes == 'pipeline' else ''} "
                         f"with the {profile.aes} AES unit, not {profile.sbox_latency!r}")
    for name in ("aes_input_register", "aes_round_key_register", "injector_register"):
        value = getattr(profile, name)
        if type(value) is not bool or value and profile.aes != "pipeline":
            raise ValueError(f"{name} must be "
                             f"{'True or False' if profile.aes == 'pipeline' else 'False'} "
                             f"with the {profile.aes} AES unit, not {value!r}")
    if (type(profile.ghash_input_register) is not bool
            or profile.ghash_input_register and profile.ghash != "pipeline"):
        raise ValueError(f"ghash_input_register must be "
                         f"{'True or False' if profile.ghash == 'pipeline' else 'False'} "
                         f"with the {profile.ghash} multiplier, "
                         f"not {profile.ghash_input_register!r}")
    if (type(profile.ghash_karatsuba) is not int or profile.ghash_karatsuba not in (0, 1, 2, 3)
            or profile.ghash_karatsuba and (profile.ghash != "pipeline"
                                            or profile.ghash_stages != 2)):
        raise ValueError(f"ghash_karatsuba must be 0 to 3 with the pipelined multiplier "
                         f"of 2 stages, 0 otherwise, not {profile.ghash_karatsuba!r}")
    for name in ("tag_check_register", "input_registers", "post_register"):
        if type(getattr(profile, name)) is not bool:
            raise ValueError(f"{name} must be True or False, not {getattr(profile, name)!r}")
    # The pipelined AES unit cannot wait, so its blocks need a place reserved
    # in a FIFO; every profile needs one for results (see GcmCore).
    for name, least in (("out_depth", 1 if profile.aes == "pipeline" else 0),
                        ("result_depth", 1)):
        depth = getattr(profile, name)
        if type(depth) is not int or depth < least:
            raise ValueError(f"{name} must be an integer >= {least} with the {profile.aes} "
                             f"AES unit, not {depth!r}")
        # A 2-entry buffered FIFO (one memory entry and its output register) cannot
        # take two writes in a row, however its places are counted.
        if depth == 2:
            raise ValueError(f"{name} must not be 2 (a 2-entry FIFO takes no two writes "
                             f"in a row), not {depth!r}")
    if type(profile.output_register) is not bool or profile.output_register and not profile.out_depth:
        raise ValueError(f"output_register must be {'True or False' if profile.out_depth else 'False'}"
                         f" with out_depth={profile.out_depth!r}, not {profile.output_register!r}")
    return profile
