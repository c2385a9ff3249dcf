"""The five RFC 9605 cipher suites (section 4.5) and their AEADs, built from ``cryptography``.

AES-GCM suites use :class:`~cryptography.hazmat.primitives.ciphers.aead.AESGCM` directly. The
AES-CTR + HMAC suites compose AES-CTR and a truncated HMAC exactly as RFC 9605 section 4.5.1 says;
no primitive below AES, HMAC and HKDF is written here.
"""

import hmac as _hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import SuiteError
from .header import BytesLike


class CipherSuite(IntEnum):
    """SFrame cipher suite identifiers (IANA "SFrame Cipher Suites" registry)."""

    AES_128_CTR_HMAC_SHA256_80 = 0x0001
    AES_128_CTR_HMAC_SHA256_64 = 0x0002
    AES_128_CTR_HMAC_SHA256_32 = 0x0003
    AES_128_GCM_SHA256_128 = 0x0004
    AES_256_GCM_SHA512_128 = 0x0005


@dataclass(frozen=True)
class SuiteParams:
    """Sizes of one suite: hash, key (Nk), nonce (Nn), tag (Nt), and the CTR-mode AES key (Ke)."""

    suite: CipherSuite
    hash_name: str
    nh: int
    nk: int
    nn: int
    nt: int
    ke: int  # 0 for AES-GCM suites

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """A fresh ``cryptography`` hash object for this suite's HKDF/HMAC."""
        return hashes.SHA512() if self.hash_name == "sha512" else hashes.SHA256()


_PARAMS = {
    CipherSuite.AES_128_CTR_HMAC_SHA256_80: SuiteParams(
        CipherSuite.AES_128_CTR_HMAC_SHA256_80, "sha256", 32, 48, 12, 10, 16
    ),
    CipherSuite.AES_128_CTR_HMAC_SHA256_64: SuiteParams(
        CipherSuite.AES_128_CTR_HMAC_SHA256_64, "sha256", 32, 48, 12, 8, 16
    ),
    CipherSuite.AES_128_CTR_HMAC_SHA256_32: SuiteParams(
        CipherSuite.AES_128_CTR_HMAC_SHA256_32, "sha256", 32, 48, 12, 4, 16
    ),
    CipherSuite.AES_128_GCM_SHA256_128: SuiteParams(
        CipherSuite.AES_128_GCM_SHA256_128, "sha256", 32, 16, 12, 16, 0
    ),
    CipherSuite.AES_256_GCM_SHA512_128: SuiteParams(
        CipherSuite.AES_256_GCM_SHA512_128, "sha512", 64, 32, 12, 16, 0
    ),
}


def suite_params(suite: int) -> SuiteParams:
    """Look up a suite's sizes; raise :class:`SuiteError` for an unknown id."""
    try:
        return _PARAMS[CipherSuite(suite)]
    except ValueError:
        raise SuiteError(f"unknown SFrame cipher suite {suite!r}") from None


class Aead(Protocol):
    """The AEAD interface SFrame needs: the shape of ``cryptography``'s ``AESGCM``.

    ``decrypt``/``decrypt_into`` raise ``cryptography.exceptions.InvalidTag`` on a bad tag.
    """

    def encrypt(self, nonce: bytes, data: BytesLike, associated_data: bytes) -> bytes: ...

    def decrypt(self, nonce: bytes, data: BytesLike, associated_data: bytes) -> bytes: ...

    def encrypt_into(
        self, nonce: bytes, data: BytesLike, associated_data: bytes, buf: memoryview
    ) -> int: ...

    def decrypt_into(
        self, nonce: bytes, data: BytesLike, associated_data: bytes, buf: memoryview
    ) -> int: ...


class AesCtrHmac:
    """The AES-CTR + truncated HMAC AEAD of RFC 9605 section 4.5.1."""

    def __init__(self, params: SuiteParams, key: bytes) -> None:
        self._params = params
        self._enc_key = algorithms.AES(key[: params.ke])
        self._auth_key = bytes(key[params.ke :])
        self._tag_len = params.nt.to_bytes(8, "big")

    def _tag(self, nonce: bytes, aad: bytes, ct: BytesLike) -> bytes:
        mac = crypto_hmac.HMAC(self._auth_key, self._params.hash_algorithm())
        mac.update(len(aad).to_bytes(8, "big") + len(ct).to_bytes(8, "big") + self._tag_len)
        mac.update(nonce)
        mac.update(aad)
        mac.update(ct)
        return mac.finalize()[: self._params.nt]

    def _ctr(self, nonce: bytes, data: BytesLike) -> bytes:
        # The initial counter block is the 12-byte nonce followed by a 32-bit zero block counter.
        encryptor = Cipher(self._enc_key, modes.CTR(nonce + b"\x00\x00\x00\x00")).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def encrypt(self, nonce: bytes, data: BytesLike, associated_data: bytes) -> bytes:
        """Return ``ciphertext || tag``."""
        ct = self._ctr(nonce, data)
        return ct + self._tag(nonce, associated_data, ct)

    def decrypt(self, nonce: bytes, data: BytesLike, associated_data: bytes) -> bytes:
        """Verify the tag in constant time, then return the plaintext."""
        nt = self._params.nt
        if len(data) < nt:
            raise InvalidTag
        view = memoryview(data)
        ct, tag = view[:-nt], view[-nt:]
        if not _hmac.compare_digest(self._tag(nonce, associated_data, ct), tag):
            raise InvalidTag
        return self._ctr(nonce, ct)

    def encrypt_into(
        self, nonce: bytes, data: BytesLike, associated_data: bytes, buf: memoryview
    ) -> int:
        """:meth:`encrypt` writing into ``buf``; returns the bytes written."""
        out = self.encrypt(nonce, data, associated_data)
        buf[: len(out)] = out
        return len(out)

    def decrypt_into(
        self, nonce: bytes, data: BytesLike, associated_data: bytes, buf: memoryview
    ) -> int:
        """:meth:`decrypt` writing into ``buf``; returns the bytes written."""
        out = self.decrypt(nonce, data, associated_data)
        buf[: len(out)] = out
        return len(out)


def make_aead(suite: int, key: bytes) -> Aead:
    """Build the suite's AEAD keyed with ``key`` (Nk bytes: the ``sframe_key``)."""
    params = suite_params(suite)
    if len(key) != params.nk:
        raise SuiteError(f"suite {params.suite.name} needs a {params.nk}-byte key, got {len(key)}")
    if params.ke:
        return AesCtrHmac(params, key)
    return AESGCM(key)
