"""All 297 RFC 9605 test vectors, through the public functions of sealcall.sframe."""

import pytest

from sealcall.sframe import (
    AuthenticationError,
    decode_header,
    decrypt,
    derive_key_salt,
    encode_header,
    encrypt,
    make_aead,
)

from conftest import load_vectors

VECTORS = load_vectors()
HEADER = VECTORS["header"]
AEAD = VECTORS["aes_ctr_hmac"]
SFRAME = VECTORS["sframe"]


def test_vector_file_holds_297_vectors() -> None:
    assert (len(HEADER), len(AEAD), len(SFRAME)) == (289, 3, 5)


@pytest.mark.parametrize("v", HEADER, ids=lambda v: f"kid{v['kid']}-ctr{v['ctr']}")
def test_header_vector(v: dict) -> None:
    encoded = bytes.fromhex(v["encoded"])
    assert encode_header(v["kid"], v["ctr"]) == encoded
    assert decode_header(encoded) == (v["kid"], v["ctr"], len(encoded))
    # Trailing payload bytes are not part of the header.
    assert decode_header(encoded + b"\xff\x00") == (v["kid"], v["ctr"], len(encoded))


@pytest.mark.parametrize("v", AEAD, ids=lambda v: f"suite{v['cipher_suite']}")
def test_aes_ctr_hmac_vector(v: dict) -> None:
    key = bytes.fromhex(v["key"])
    assert key == bytes.fromhex(v["enc_key"]) + bytes.fromhex(v["auth_key"])
    aead = make_aead(v["cipher_suite"], key)
    nonce, aad, pt, ct = (bytes.fromhex(v[k]) for k in ("nonce", "aad", "pt", "ct"))
    assert aead.encrypt(nonce, pt, aad) == ct
    assert aead.decrypt(nonce, ct, aad) == pt


@pytest.mark.parametrize("v", SFRAME, ids=lambda v: f"suite{v['cipher_suite']}")
def test_sframe_vector(v: dict) -> None:
    suite, kid, ctr = v["cipher_suite"], v["kid"], v["ctr"]
    base_key, metadata, pt, ct = (bytes.fromhex(v[k]) for k in ("base_key", "metadata", "pt", "ct"))
    key, salt = derive_key_salt(suite, base_key, kid)
    assert key.hex() == v["sframe_key"]
    assert salt.hex() == v["sframe_salt"]
    assert encrypt(suite, base_key, kid, ctr, metadata, pt) == ct
    assert decrypt(suite, base_key, metadata, ct) == (kid, ctr, pt)
    # The metadata is authenticated: any other metadata fails.
    with pytest.raises(AuthenticationError):
        decrypt(suite, base_key, metadata + b"x", ct)
