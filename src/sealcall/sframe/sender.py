"""The sending side of SFrame: one KID at a time, a counter that never repeats, key replacement."""

from .errors import CounterExhaustedError, HeaderError
from .header import MAX_VALUE, BytesLike
from .keys import KeyContext, ratchet_base_key
from .suites import CipherSuite, suite_params


def check_ratchet_bits(bits: int) -> int:
    """Validate ``R``, the number of low KID bits that carry the ratchet step (0 = no ratchet)."""
    if not 0 <= bits <= 32:
        raise ValueError(f"ratchet bits must be in 0 .. 32, got {bits}")
    return bits


class SFrameSender:
    """Encrypts frames for one media sender.

    The counter is monotonic for the sender's whole life and is *not* reset when the key changes:
    a (base key, KID, CTR) triple can then never repeat, even if a caller sets an old key again.
    With ``ratchet_bits = R > 0`` the low R bits of the KID are the RFC 9605 section 5.1 ratchet
    step and :meth:`ratchet` moves to the next base key.
    """

    __slots__ = (
        "_context",
        "_ctr",
        "_ctr_len",
        "_header_start",
        "_ratchet_bits",
        "_roll_at",
        "_suite",
    )

    def __init__(
        self,
        kid: int,
        base_key: bytes,
        suite: int = CipherSuite.AES_128_GCM_SHA256_128,
        *,
        ratchet_bits: int = 0,
        first_ctr: int = 0,
    ) -> None:
        self._suite = suite_params(suite).suite
        self._ratchet_bits = check_ratchet_bits(ratchet_bits)
        if not 0 <= first_ctr <= MAX_VALUE:
            raise HeaderError(f"CTR must be in 0 .. 2**64-1, got {first_ctr}")
        self._ctr = first_ctr
        self._use(KeyContext(self._suite, base_key, kid))

    def _use(self, context: KeyContext) -> None:
        self._context = context
        # The header is cached as (start, counter length) until the counter needs another byte;
        # a counter below _roll_at takes the cached form, anything else goes through _header.
        self._header_start = b""
        self._ctr_len = 0
        self._roll_at = 0

    def _header(self, ctr: int) -> bytes:
        if ctr > MAX_VALUE:
            raise CounterExhaustedError("SFrame counter exhausted: 2**64 frames sent")
        header = self._context.header(ctr)
        if ctr >= 8:
            self._ctr_len = (ctr.bit_length() + 7) >> 3
            self._header_start = header[: -self._ctr_len]
            self._roll_at = 1 << (8 * self._ctr_len)
        return header

    @property
    def suite(self) -> CipherSuite:
        """The cipher suite in use."""
        return self._suite

    @property
    def kid(self) -> int:
        """The KID of the current key."""
        return self._context.kid

    @property
    def next_ctr(self) -> int:
        """The counter the next frame will carry."""
        return self._ctr

    def set_key(self, kid: int, base_key: bytes) -> None:
        """Replace the key: the next frame is encrypted under ``base_key`` with ``kid``."""
        self._use(KeyContext(self._suite, base_key, kid))

    def ratchet(self) -> int:
        """Advance the RFC 9605 section 5.1 ratchet one step; return the new KID."""
        bits = self._ratchet_bits
        if not bits:
            raise ValueError("this sender was created without ratchet bits")
        kid = self._context.kid
        mask = (1 << bits) - 1
        new_kid = (kid & ~mask) | ((kid + 1) & mask)
        self._use(
            KeyContext(self._suite, ratchet_base_key(self._suite, self._context.base_key), new_kid)
        )
        return new_kid

    def encrypt(self, metadata: bytes, plaintext: BytesLike, prefix: bytes = b"") -> bytes:
        """Encrypt one frame with the next counter: ``prefix || header || ciphertext || tag``.

        ``metadata`` is authenticated, not sent; ``prefix`` is copied in front unprotected (the
        caller passes the clear bytes it also authenticates as metadata).
        """
        ctr = self._ctr
        if ctr < self._roll_at:
            header = self._header_start + ctr.to_bytes(self._ctr_len, "big")
        else:
            header = self._header(ctr)
        self._ctr = ctr + 1
        return self._context.seal_with_header(header, ctr, metadata, plaintext, prefix)
