"""SFrame key schedule (RFC 9605 sections 4.4.2 and 5.1) and the per-KID key context."""

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .errors import AuthenticationError, HeaderError, SuiteError
from .header import MAX_VALUE, BytesLike, encode_header
from .suites import Aead, SuiteParams, make_aead, suite_params

_KEY_LABEL = b"SFrame 1.0 Secret key "
_SALT_LABEL = b"SFrame 1.0 Secret salt "
_RATCHET_LABEL = b"SFrame 1.0 Ratchet"


def _extract(params: SuiteParams, base_key: bytes) -> bytes:
    """HKDF-Extract with an empty salt (RFC 5869: HMAC keyed with Nh zero bytes)."""
    mac = hmac.HMAC(b"\x00" * params.nh, params.hash_algorithm())
    mac.update(base_key)
    return mac.finalize()


def _expand(params: SuiteParams, prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(params.hash_algorithm(), length, info).derive(prk)


def _check_base_key(base_key: bytes) -> bytes:
    if not isinstance(base_key, (bytes, bytearray, memoryview)) or len(base_key) == 0:
        raise SuiteError("base key must be non-empty bytes")
    return bytes(base_key)


def derive_key_salt(suite: int, base_key: bytes, kid: int) -> tuple[bytes, bytes]:
    """Derive ``(sframe_key, sframe_salt)`` for ``kid`` from ``base_key`` (RFC 9605 4.4.2)."""
    params = suite_params(suite)
    if not 0 <= kid <= MAX_VALUE:
        raise HeaderError(f"KID must be in 0 .. 2**64-1, got {kid}")
    secret = _extract(params, _check_base_key(base_key))
    context = kid.to_bytes(8, "big") + params.suite.to_bytes(2, "big")
    key = _expand(params, secret, _KEY_LABEL + context, params.nk)
    salt = _expand(params, secret, _SALT_LABEL + context, params.nn)
    return key, salt


def ratchet_base_key(suite: int, base_key: bytes) -> bytes:
    """One step of the RFC 9605 section 5.1 ratchet: the next base key (Nh bytes)."""
    params = suite_params(suite)
    secret = _extract(params, _check_base_key(base_key))
    return _expand(params, secret, _RATCHET_LABEL, params.nh)


class KeyContext:
    """The derived key material for one (base key, KID): built once, used for every frame.

    Holds the keyed AEAD, the salt as an integer and the KID's part of every header length, so a
    frame costs one XOR, one concatenation and one AEAD call, never an HKDF.
    """

    __slots__ = (
        "_header_starts",
        "_salt",
        "_small_headers",
        "aead",
        "base_key",
        "kid",
        "nn",
        "nt",
        "suite",
    )

    def __init__(self, suite: int, base_key: bytes, kid: int) -> None:
        params = suite_params(suite)
        key, salt = derive_key_salt(suite, base_key, kid)
        self.suite = params.suite
        self.kid = kid
        self.base_key = bytes(base_key)
        self.nn = params.nn
        self.nt = params.nt
        self._salt = int.from_bytes(salt, "big")
        self.aead: Aead = make_aead(suite, key)
        kid_header = encode_header(kid, 0)
        config, kid_bytes = kid_header[0], kid_header[1:]
        # Counters 0..7 live in the config byte; longer ones follow the KID in n bytes.
        self._small_headers = [encode_header(kid, ctr) for ctr in range(8)]
        self._header_starts = [b""] + [
            bytes((config | 0x08 | (n - 1),)) + kid_bytes for n in range(1, 9)
        ]

    def nonce(self, ctr: int) -> bytes:
        """The AEAD nonce for ``ctr``: the salt XOR the counter, left-padded to Nn bytes."""
        return (self._salt ^ ctr).to_bytes(self.nn, "big")

    def header(self, ctr: int) -> bytes:
        """The SFrame header for this KID and ``ctr`` (as :func:`encode_header`, faster)."""
        if ctr < 8:
            return self._small_headers[ctr]
        length = (ctr.bit_length() + 7) >> 3
        if length > 8:
            raise HeaderError(f"CTR must be < 2**64, got {ctr}")
        return self._header_starts[length] + ctr.to_bytes(length, "big")

    def seal(self, ctr: int, metadata: bytes, plaintext: BytesLike, prefix: bytes = b"") -> bytes:
        """Encrypt one frame: ``prefix || header || ciphertext || tag`` (``metadata`` is AAD)."""
        return self.seal_with_header(self.header(ctr), ctr, metadata, plaintext, prefix)

    def seal_with_header(
        self, header: bytes, ctr: int, metadata: bytes, plaintext: BytesLike, prefix: bytes = b""
    ) -> bytes:
        """:meth:`seal` with ``header`` (which must be ``self.header(ctr)``) already built."""
        nonce = (self._salt ^ ctr).to_bytes(self.nn, "big")
        return prefix + header + self.aead.encrypt(nonce, plaintext, header + metadata)

    def open(
        self, ctr: int, header: bytes, metadata: bytes, body: BytesLike, prefix: bytes = b""
    ) -> bytes:
        """Decrypt ``body`` (``ciphertext || tag``): return ``prefix || plaintext``.

        Raises :class:`AuthenticationError` when the tag does not verify.
        """
        nonce = (self._salt ^ ctr).to_bytes(self.nn, "big")
        try:
            return prefix + self.aead.decrypt(nonce, body, header + metadata)
        except InvalidTag:
            raise AuthenticationError("SFrame authentication tag mismatch") from None
