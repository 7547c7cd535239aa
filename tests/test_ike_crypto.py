# SPDX-License-Identifier: BSD-2-Clause
"""IKEv2 cryptography (host/ike/crypto.py) against independent computations: prf+,
SKEYSEED and SK_*, CHILD_SA KEYMAT recomputed here with ``cryptography``'s HMAC
written from RFC 7296's text; Diffie-Hellman against ``cryptography`` (and plain
modular exponentiation for MODP); the SK payload opened by ``cryptography``'s AES-GCM
/ AES-CBC + HMAC directly, and refused when any byte is changed."""

import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC

from espnic.host.ike import crypto
from espnic.host.ike.message import PT_NONCE, parse_chain, parse_message
from espnic.host.ike.proposals import parse_ike_proposal


def hmac256(key, data):
    h = HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def oracle_prf_plus(key, seed, blocks):
    """RFC 7296 section 2.13, written out block by block."""
    t1 = hmac256(key, seed + b"\x01")
    out, prev = [t1], t1
    for n in range(2, blocks + 1):
        prev = hmac256(key, prev + seed + bytes([n]))
        out.append(prev)
    return b"".join(out)


def test_prf_is_hmac_sha256_rfc4231_case_2():
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert crypto.prf(b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


@pytest.mark.parametrize("length", [1, 32, 33, 100, 224])
def test_prf_plus_matches_the_rfc_construction(length):
    key, seed = os.urandom(32), os.urandom(80)
    assert crypto.prf_plus(key, seed, length) == oracle_prf_plus(key, seed, 8)[:length]


@pytest.mark.parametrize("name", ["aes128gcm16-prfsha256-ecp256", "aes256gcm16-prfsha256-x25519",
                                  "aes256-sha256-modp2048", "aes128-sha256-ecp256"])
def test_ike_keys_are_skeyseed_prf_plus_split_in_rfc_order(name):
    suite = parse_ike_proposal(name)
    ni, nr, shared = os.urandom(32), os.urandom(32), os.urandom(64)
    spi_i, spi_r = 0x1122334455667788, 0x99AABBCCDDEEFF00
    seed = crypto.skeyseed(ni, nr, shared)
    assert seed == hmac256(ni + nr, shared)
    keys = crypto.derive_ike_keys(suite, seed, ni, nr, spi_i, spi_r)
    gcm = "gcm" in name
    integ = 0 if gcm else 32
    encr = suite.key_bytes + (4 if gcm else 0)      # RFC 5282: key and 4-byte salt
    stream = oracle_prf_plus(seed, ni + nr + struct.pack(">QQ", spi_i, spi_r), 12)
    sizes = [32, integ, integ, encr, encr, 32, 32]
    expected, pos = [], 0
    for size in sizes:
        expected.append(stream[pos:pos + size])
        pos += size
    assert keys.secrets() == expected
    assert all(k.hex() not in repr(keys) for k in keys.secrets() if k)


def test_rekey_skeyseed_is_prf_of_old_sk_d():
    sk_d, shared, ni, nr = (os.urandom(n) for n in (32, 32, 32, 32))
    assert crypto.rekey_skeyseed(sk_d, shared, ni, nr) == hmac256(sk_d, shared + ni + nr)


@pytest.mark.parametrize("key_bytes", [16, 32])
def test_child_keymat_is_key_then_salt_per_direction(key_bytes):
    sk_d, ni, nr = os.urandom(32), os.urandom(32), os.urandom(32)
    keys = crypto.child_keys(sk_d, ni, nr, key_bytes)
    keymat = oracle_prf_plus(sk_d, ni + nr, 4)
    each = key_bytes + 4
    assert keys.key_ir + keys.salt_ir == keymat[:each]
    assert keys.key_ri + keys.salt_ri == keymat[each:2 * each]
    assert keymat[:4].hex() not in repr(keys)


def test_psk_auth_follows_section_2_15():
    psk, msg, nonce, sk_p = b"secret", os.urandom(300), os.urandom(32), os.urandom(32)
    idb = b"\x02\0\0\0gw"
    expected = hmac256(hmac256(psk, b"Key Pad for IKEv2"), msg + nonce + hmac256(sk_p, idb))
    assert crypto.psk_auth(psk, msg, nonce, sk_p, idb) == expected


# -- Diffie-Hellman ------------------------------------------------------------------------

def test_modp2048_against_modular_exponentiation():
    ours = crypto.DhKey(14)
    x = int.from_bytes(os.urandom(32), "big")
    y_peer = pow(2, x, crypto.MODP2048_P)
    shared = ours.exchange(y_peer.to_bytes(256, "big"))
    y_ours = int.from_bytes(ours.public, "big")
    assert len(ours.public) == 256 and len(shared) == 256
    assert int.from_bytes(shared, "big") == pow(y_ours, x, crypto.MODP2048_P)
    with pytest.raises(crypto.DhError):
        ours.exchange((1).to_bytes(256, "big"))
    with pytest.raises(crypto.DhError):
        ours.exchange(bytes(255))


def test_ecp256_against_cryptography():
    ours = crypto.DhKey(19)
    peer = ec.generate_private_key(ec.SECP256R1())
    nums = peer.public_key().public_numbers()
    shared = ours.exchange(nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big"))
    # RFC 5903: the KE data is x | y, the shared secret the x coordinate.
    their_view = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + ours.public)
    assert shared == peer.exchange(ec.ECDH(), their_view)
    with pytest.raises(crypto.DhError):
        ours.exchange(bytes(64))                     # not a point on the curve


def test_curve25519_against_cryptography():
    ours = crypto.DhKey(31)
    peer = x25519.X25519PrivateKey.generate()
    shared = ours.exchange(peer.public_key().public_bytes_raw())
    assert shared == peer.exchange(x25519.X25519PublicKey.from_public_bytes(ours.public))
    with pytest.raises(crypto.DhError):
        ours.exchange(bytes(31))


# -- the SK payload ---------------------------------------------------------------------------

def _sealed(name):
    suite = parse_ike_proposal(name)
    encr = os.urandom(crypto.encr_key_len(suite))
    integ = b"" if suite.aead else os.urandom(32)
    cipher = crypto.SkCipher(suite, encr, integ, os.urandom)
    inner = struct.pack("!BBH", 0, 0, 4 + 32) + os.urandom(32)      # one Nonce payload
    data = cipher.seal(0x0102030405060708, 0x1112131415161718, 37, 0x08, 5, PT_NONCE, inner)
    return suite, encr, integ, cipher, inner, data


def test_gcm_sk_payload_opens_with_aesgcm_directly():
    suite, encr, _, cipher, inner, data = _sealed("aes256gcm16-prfsha256-ecp256")
    msg = parse_message(data)
    start = msg.sk_offset + 4
    key, salt = encr[:-4], encr[-4:]
    iv = data[start:start + 8]
    # RFC 5282: nonce salt|IV, AAD the IKE header and the SK generic header.
    body = AESGCM(key).decrypt(salt + iv, data[start + 8:], data[:start])
    assert body[:-1] == inner and body[-1] == 0
    assert cipher.open(data, msg.sk_offset) == inner
    payloads, _, _ = parse_chain(msg.sk_first, cipher.open(data, msg.sk_offset), stop_at_sk=False)
    assert payloads[0].type == PT_NONCE
    second = cipher.seal(1, 2, 37, 0x08, 6, PT_NONCE, inner)
    assert second[start:start + 8] != iv                # a fresh IV per message


def test_cbc_sk_payload_opens_with_aes_cbc_and_hmac_directly():
    suite, encr, integ, cipher, inner, data = _sealed("aes128-sha256-modp2048")
    msg = parse_message(data)
    start = msg.sk_offset + 4
    assert hmac256(integ, data[:-16])[:16] == data[-16:]
    dec = Cipher(algorithms.AES(encr), modes.CBC(data[start:start + 16])).decryptor()
    body = dec.update(data[start + 16:-16]) + dec.finalize()
    assert body[:len(inner)] == inner and len(body) % 16 == 0
    assert cipher.open(data, msg.sk_offset) == inner


@pytest.mark.parametrize("name", ["aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"])
def test_sk_payload_refuses_any_changed_byte(name):
    _, _, _, cipher, _, data = _sealed(name)
    for position in range(0, len(data), 3):
        tampered = bytearray(data)
        tampered[position] ^= 0x40
        with pytest.raises(crypto.IkeParseError):      # the header check or the ICV
            again = parse_message(bytes(tampered))
            cipher.open(again.raw, again.sk_offset)
