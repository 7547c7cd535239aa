# SPDX-License-Identifier: BSD-2-Clause
"""Transforms (RFC 7296 section 3.3.2, IANA IKEv2 registry), proposals written
the strongSwan way (``aes128gcm16-prfsha256-ecp256``, ``aes256gcm16-esn``) and
the choice of a proposal by a responder.

A *suite* is one choice per transform type: a frozen dict ``{type: Transform}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import PROTO_ESP, PROTO_IKE, Proposal, Transform

T_ENCR, T_PRF, T_INTEG, T_DH, T_ESN = 1, 2, 3, 4, 5

ENCR_AES_CBC, ENCR_AES_GCM_16 = 12, 20
PRF_HMAC_SHA2_256 = 5
AUTH_HMAC_SHA2_256_128 = 12
DH_MODP2048, DH_ECP256, DH_CURVE25519 = 14, 19, 31
ESN_NO, ESN_YES = 0, 1

_ENCR_NAMES = {f"aes{bits}gcm16": (ENCR_AES_GCM_16, bits) for bits in (128, 256)}
_ENCR_NAMES.update({f"aes{bits}gcm": (ENCR_AES_GCM_16, bits) for bits in (128, 256)})
_ENCR_NAMES.update({f"aes{bits}": (ENCR_AES_CBC, bits) for bits in (128, 256)})
_DH_NAMES = {"modp2048": DH_MODP2048, "ecp256": DH_ECP256, "x25519": DH_CURVE25519,
             "curve25519": DH_CURVE25519}


class ProposalError(ValueError):
    """A proposal name espnic cannot read or does not support; the message says which
    part and why."""


@dataclass(frozen=True)
class Suite:
    """One negotiated (or proposed) transform set."""
    protocol: int
    transforms: tuple            # of Transform, one per type, sorted by type
    name: str = ""

    def get(self, ttype: int):
        return next((t for t in self.transforms if t.type == ttype), None)

    @property
    def aead(self) -> bool:
        return self.get(T_ENCR).id == ENCR_AES_GCM_16

    @property
    def key_bytes(self) -> int:
        return self.get(T_ENCR).key_len // 8

    @property
    def dh_group(self) -> int | None:
        t = self.get(T_DH)
        return None if t is None else t.id

    @property
    def esn(self) -> bool:
        t = self.get(T_ESN)
        return t is not None and t.id == ESN_YES

    def proposal(self, num: int, spi: bytes) -> Proposal:
        return Proposal(num, self.protocol, spi, list(self.transforms))

    def describe(self) -> str:
        return self.name or "-".join(f"{t.type}:{t.id}" for t in self.transforms)


def parse_ike_proposal(name: str) -> Suite:
    """An IKE proposal name: encryption, [integrity,] [PRF,] DH group, e.g.
    ``aes128gcm16-prfsha256-ecp256`` or ``aes256-sha256-modp2048``."""
    parts, found = name.lower().split("-"), {}
    for part in parts:
        if part in _ENCR_NAMES:
            encr, bits = _ENCR_NAMES[part]
            found[T_ENCR] = Transform(T_ENCR, encr, bits)
        elif part == "sha256":
            found[T_INTEG] = Transform(T_INTEG, AUTH_HMAC_SHA2_256_128)
        elif part == "prfsha256":
            found[T_PRF] = Transform(T_PRF, PRF_HMAC_SHA2_256)
        elif part in _DH_NAMES:
            found[T_DH] = Transform(T_DH, _DH_NAMES[part])
        else:
            raise ProposalError(f"{name!r}: not supported: {part!r} (IKE proposals here: "
                                f"aes128gcm16|aes256gcm16|aes128|aes256, sha256, prfsha256, "
                                f"modp2048|ecp256|x25519)")
    if T_ENCR not in found or T_DH not in found:
        raise ProposalError(f"{name!r}: needs an encryption algorithm and a DH group")
    gcm = found[T_ENCR].id == ENCR_AES_GCM_16
    if gcm and T_INTEG in found:
        raise ProposalError(f"{name!r}: AES-GCM takes no integrity algorithm")
    if not gcm:
        found.setdefault(T_INTEG, Transform(T_INTEG, AUTH_HMAC_SHA2_256_128))
    # strongSwan derives the PRF from the integrity algorithm when none is named.
    found.setdefault(T_PRF, Transform(T_PRF, PRF_HMAC_SHA2_256))
    return Suite(PROTO_IKE, tuple(found[t] for t in sorted(found)), name.lower())


def parse_esp_proposal(name: str) -> Suite:
    """An ESP proposal name: ``aes128gcm16`` or ``aes256gcm16``, then ``-esn`` or
    ``-noesn`` (the default)."""
    parts, found = name.lower().split("-"), {}
    for part in parts:
        if part in _ENCR_NAMES and _ENCR_NAMES[part][0] == ENCR_AES_GCM_16:
            encr, bits = _ENCR_NAMES[part]
            found[T_ENCR] = Transform(T_ENCR, encr, bits)
        elif part in ("esn", "noesn"):
            found[T_ESN] = Transform(T_ESN, ESN_YES if part == "esn" else ESN_NO)
        elif part in _DH_NAMES:
            raise ProposalError(f"{name!r}: not supported: PFS ({part}) for CHILD_SAs")
        else:
            raise ProposalError(f"{name!r}: not supported: {part!r} (ESP proposals here: "
                                f"aes128gcm16|aes256gcm16, esn|noesn)")
    if T_ENCR not in found:
        raise ProposalError(f"{name!r}: needs aes128gcm16 or aes256gcm16")
    found.setdefault(T_ESN, Transform(T_ESN, ESN_NO))
    return Suite(PROTO_ESP, tuple(found[t] for t in sorted(found)), name.lower())


def choose(offered, ours) -> tuple[Proposal, Suite] | None:
    """The responder's choice: the first of ``ours`` (suites, in our order of
    preference) that one of the ``offered`` proposals allows, as ``(that proposal,
    suite)``. A proposal allows a suite when it offers every transform of the suite
    and has no transform type the suite lacks (ESN absent counts as "no ESN")."""
    for suite in ours:
        for prop in offered:
            if prop.protocol != suite.protocol:
                continue
            types = {t.type for t in prop.transforms}
            if suite.protocol == PROTO_ESP and T_ESN not in types:
                types.add(T_ESN)
                offered_t = set(prop.transforms) | {Transform(T_ESN, ESN_NO)}
            else:
                offered_t = set(prop.transforms)
            if types != {t.type for t in suite.transforms}:
                continue
            if all(t in offered_t for t in suite.transforms):
                return prop, suite
    return None


def accepted(chosen: Proposal, ours) -> Suite | None:
    """The initiator's check of the responder's answer: one transform per type, and
    the set one of ours."""
    transforms = {}
    for t in chosen.transforms:
        if t.type in transforms:
            return None
        transforms[t.type] = t
    for suite in ours:
        want = {t.type: t for t in suite.transforms}
        got = dict(transforms)
        if suite.protocol == PROTO_ESP:
            got.setdefault(T_ESN, Transform(T_ESN, ESN_NO))
        if chosen.protocol == suite.protocol and got == want:
            return suite
    return None
