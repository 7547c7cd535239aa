# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 cryptography on ``cryptography``: the PRF and prf+ (RFC 7296 section 2.13),
SKEYSEED and SK_* (2.14, 2.18), CHILD_SA key material (2.17; RFC 4106 section 8.1:
key then 4-byte salt per direction), Diffie-Hellman groups 14 (MODP 2048,
RFC 3526), 19 (ECP-256, RFC 5903) and 31 (Curve25519, RFC 8031), the SK payload
with AES-GCM-16 (RFC 5282) or AES-CBC + HMAC-SHA2-256-128, and PSK AUTH (2.15).

Keys live in objects whose reprs leave them out.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import warnings
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.exceptions import InvalidTag

from .message import HEADER_LEN, PT_SK, IkeParseError, encode_header
from .proposals import DH_CURVE25519, DH_ECP256, DH_MODP2048, Suite

PRF_LEN = 32                     # HMAC-SHA2-256
INTEG_KEY_LEN, INTEG_ICV_LEN = 32, 16
GCM_SALT_LEN, GCM_IV_LEN, GCM_ICV_LEN = 4, 8, 16
CBC_IV_LEN = 16
KEY_PAD = b"Key Pad for IKEv2"

# RFC 3526 section 3: the 2048-bit MODP group, generator 2.
MODP2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)


with warnings.catch_warnings():
    # cryptography deprecates finite-field DH; group 14 is what strongSwan's
    # aes256-sha256-modp2048 needs, so it stays, warned once here, not per key.
    warnings.simplefilter("ignore")
    from cryptography.hazmat.primitives.asymmetric import dh
    _DHParameterNumbers, _DHPublicNumbers = dh.DHParameterNumbers, dh.DHPublicNumbers


def prf(key: bytes, data: bytes) -> bytes:
    """PRF_HMAC_SHA2_256."""
    return hmac.new(key, data, hashlib.sha256).digest()


def prf_plus(key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 section 2.13): T1 | T2 | ..., Tn = prf(K, Tn-1 | S | n)."""
    if length > 255 * PRF_LEN:
        raise ValueError("prf+ is limited to 255 blocks")
    out, block, n = b"", b"", 1
    while len(out) < length:
        block = prf(key, block + seed + bytes([n]))
        out += block
        n += 1
    return out[:length]


# -- Diffie-Hellman -----------------------------------------------------------------------

class DhError(ValueError):
    """A peer's public value is not valid for its group."""


class DhKey:
    """An ephemeral key of one group: ``public`` as the KE payload carries it,
    ``exchange(peer)`` the shared secret g^ir as SKEYSEED takes it."""

    def __init__(self, group: int):
        self.group = group
        if group == DH_MODP2048:
            params = _DHParameterNumbers(MODP2048_P, 2).parameters()
            self._private = params.generate_private_key()
            y = self._private.public_key().public_numbers().y
            self.public = y.to_bytes(256, "big")
        elif group == DH_ECP256:
            self._private = ec.generate_private_key(ec.SECP256R1())
            nums = self._private.public_key().public_numbers()
            self.public = nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
        elif group == DH_CURVE25519:
            self._private = x25519.X25519PrivateKey.generate()
            self.public = self._private.public_key().public_bytes_raw()
        else:
            raise ValueError(f"DH group {group} is not supported")

    def __repr__(self):
        return f"DhKey(group={self.group})"

    def exchange(self, peer: bytes) -> bytes:
        try:
            if self.group == DH_MODP2048:
                if len(peer) != 256:
                    raise DhError(f"group 14 public value of {len(peer)} bytes")
                y = int.from_bytes(peer, "big")
                if not 1 < y < MODP2048_P - 1:
                    raise DhError("group 14 public value out of range")
                pn = _DHPublicNumbers(y, _DHParameterNumbers(MODP2048_P, 2))
                secret = self._private.exchange(pn.public_key())
                return secret.rjust(256, b"\0")
            if self.group == DH_ECP256:
                if len(peer) != 64:
                    raise DhError(f"group 19 public value of {len(peer)} bytes")
                key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                                   b"\x04" + peer)
                return self._private.exchange(ec.ECDH(), key)
            if len(peer) != 32:
                raise DhError(f"group 31 public value of {len(peer)} bytes")
            return self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        except DhError:
            raise
        except ValueError as error:
            raise DhError(f"group {self.group}: invalid public value ({error})") from None


# -- IKE SA keys --------------------------------------------------------------------------

@dataclass
class IkeKeys:
    """SK_d, SK_ai/ar, SK_ei/er (with the GCM salt at its end), SK_pi/pr."""
    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)

    def secrets(self) -> list:
        return [self.sk_d, self.sk_ai, self.sk_ar, self.sk_ei, self.sk_er, self.sk_pi,
                self.sk_pr]


def skeyseed(ni: bytes, nr: bytes, shared: bytes) -> bytes:
    return prf(ni + nr, shared)


def rekey_skeyseed(old_sk_d: bytes, shared: bytes, ni: bytes, nr: bytes) -> bytes:
    """RFC 7296 section 2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)."""
    return prf(old_sk_d, shared + ni + nr)


def encr_key_len(suite: Suite) -> int:
    return suite.key_bytes + (GCM_SALT_LEN if suite.aead else 0)


def derive_ike_keys(suite: Suite, seed: bytes, ni: bytes, nr: bytes, spi_i: int,
                    spi_r: int) -> IkeKeys:
    integ = 0 if suite.aead else INTEG_KEY_LEN
    encr = encr_key_len(suite)
    stream = prf_plus(seed, ni + nr + struct.pack("!QQ", spi_i, spi_r),
                      3 * PRF_LEN + 2 * integ + 2 * encr)
    parts, pos = [], 0
    for size in (PRF_LEN, integ, integ, encr, encr, PRF_LEN, PRF_LEN):
        parts.append(stream[pos:pos + size])
        pos += size
    return IkeKeys(*parts)


@dataclass
class ChildKeys:
    """One CHILD_SA's ESP keys (RFC 4106: key then salt), initiator-to-responder first."""
    key_ir: bytes = field(repr=False)
    salt_ir: bytes = field(repr=False)
    key_ri: bytes = field(repr=False)
    salt_ri: bytes = field(repr=False)


def child_keys(sk_d: bytes, ni: bytes, nr: bytes, key_bytes: int,
               shared: bytes = b"") -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr) (RFC 7296 section 2.17) split for
    ENCR_AES_GCM_16: key‖salt for i->r, then key‖salt for r->i."""
    each = key_bytes + GCM_SALT_LEN
    keymat = prf_plus(sk_d, shared + ni + nr, 2 * each)
    a, b = keymat[:each], keymat[each:]
    return ChildKeys(a[:key_bytes], a[key_bytes:], b[:key_bytes], b[key_bytes:])


# -- AUTH ---------------------------------------------------------------------------------

def psk_auth(psk: bytes, message: bytes, peer_nonce: bytes, sk_p: bytes, id_body: bytes) -> bytes:
    """AUTH = prf(prf(PSK, "Key Pad for IKEv2"), message | peer nonce | prf(SK_p, ID))."""
    return prf(prf(psk, KEY_PAD), message + peer_nonce + prf(sk_p, id_body))


# -- the SK payload -----------------------------------------------------------------------

class IkeIntegrityError(IkeParseError):
    """An SK payload whose ICV does not verify (or whose padding is wrong)."""


class SkCipher:
    """Protects and opens SK payloads with one direction's keys.

    ``encr``: SK_e (GCM: key‖salt), ``integ``: SK_a (empty for GCM). Every
    message sealed gets a fresh IV: a counter for GCM (never repeated for a key),
    random bytes for CBC."""

    def __init__(self, suite: Suite, encr: bytes, integ: bytes, rng):
        self.aead = suite.aead
        self._rng = rng
        self._counter = 0
        if self.aead:
            self._key, self._salt = encr[:-GCM_SALT_LEN], encr[-GCM_SALT_LEN:]
            self._gcm = AESGCM(self._key)
        else:
            self._key, self._integ = encr, integ

    def __repr__(self):
        return f"SkCipher(aead={self.aead})"

    def seal(self, spi_i, spi_r, exchange, flags, msg_id, first, plaintext: bytes) -> bytes:
        """The whole message: header, SK payload with ``plaintext`` (the inner chain
        whose first payload has type ``first``) encrypted."""
        if self.aead:
            self._counter += 1
            if self._counter >= 1 << 64:
                raise OverflowError("IKE SA exhausted its GCM IVs: rekey it")
            iv = self._counter.to_bytes(GCM_IV_LEN, "big")
            body = plaintext + b"\0"                   # pad length 0
            sk_len = 4 + GCM_IV_LEN + len(body) + GCM_ICV_LEN
            head = encode_header(spi_i, spi_r, PT_SK, exchange, flags, msg_id,
                                 HEADER_LEN + sk_len) + struct.pack("!BBH", first, 0, sk_len)
            sealed = self._gcm.encrypt(self._salt + iv, body, head)
            return head + iv + sealed
        iv = self._rng(CBC_IV_LEN)
        pad = (-(len(plaintext) + 1)) % 16
        body = plaintext + bytes(pad) + bytes([pad])
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        ct = enc.update(body) + enc.finalize()
        sk_len = 4 + CBC_IV_LEN + len(ct) + INTEG_ICV_LEN
        head = encode_header(spi_i, spi_r, PT_SK, exchange, flags, msg_id,
                             HEADER_LEN + sk_len) + struct.pack("!BBH", first, 0, sk_len)
        signed = head + iv + ct
        return signed + hmac.new(self._integ, signed, hashlib.sha256).digest()[:INTEG_ICV_LEN]

    def open(self, raw: bytes, sk_offset: int) -> bytes:
        """The inner chain of the SK payload at ``sk_offset`` of message ``raw``;
        :class:`IkeIntegrityError` when it does not verify."""
        start = sk_offset + 4
        if self.aead:
            if len(raw) - start < GCM_IV_LEN + GCM_ICV_LEN + 1:
                raise IkeParseError("SK payload too short")
            iv = raw[start:start + GCM_IV_LEN]
            try:
                body = self._gcm.decrypt(self._salt + iv, raw[start + GCM_IV_LEN:],
                                         raw[:start])
            except InvalidTag:
                raise IkeIntegrityError("SK payload failed its integrity check") from None
        else:
            ct_len = len(raw) - start - CBC_IV_LEN - INTEG_ICV_LEN
            if ct_len < 16 or ct_len % 16:
                raise IkeParseError("SK payload length is not whole AES blocks")
            icv = hmac.new(self._integ, raw[:-INTEG_ICV_LEN], hashlib.sha256).digest()
            if not hmac.compare_digest(icv[:INTEG_ICV_LEN], raw[-INTEG_ICV_LEN:]):
                raise IkeIntegrityError("SK payload failed its integrity check")
            iv = raw[start:start + CBC_IV_LEN]
            dec = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
            body = dec.update(raw[start + CBC_IV_LEN:-INTEG_ICV_LEN]) + dec.finalize()
        pad = body[-1]
        if pad + 1 > len(body):
            raise IkeIntegrityError("SK payload padding longer than its data")
        return body[:-1 - pad]


def nat_hash(spi_i: int, spi_r: int, host: str, port: int) -> bytes:
    """NAT_DETECTION_*_IP data (RFC 7296 section 2.23): SHA-1(SPIs | IP | port)."""
    import ipaddress
    return hashlib.sha1(struct.pack("!QQ", spi_i, spi_r) + ipaddress.ip_address(host).packed
                        + struct.pack("!H", port)).digest()
