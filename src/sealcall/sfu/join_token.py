"""The SFU's short-lived join tokens: what an admitted member presents for its WebRTC join.

A token is ``base64url(claims JSON) "." base64url(HMAC-SHA256(secret, claims JSON))``; the
secret lives in this process only (a restarted SFU admits afresh), the claims name the user,
device, room and membership it was issued for and when it stops being valid. Nothing in it is
secret: it proves only that this SFU checked that member a moment ago.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum

JOIN_TOKEN_LIFETIME_MS = 60_000
SECRET_BYTES = 32
MAX_JOIN_TOKEN_LENGTH = 4096  # four ids of at most 255 characters, base64 and JSON-escaped


class JoinTokenRefusal(StrEnum):
    """Why a join token was refused."""

    MALFORMED = "malformed"
    FORGED = "forged"  # the MAC does not match: not ours, or altered
    EXPIRED = "expired"


class JoinTokenError(ValueError):
    """A join token that does not admit anyone; :attr:`reason` says why."""

    def __init__(self, reason: JoinTokenRefusal) -> None:
        super().__init__(f"join token refused: {reason.value}")
        self.reason = reason


@dataclass(frozen=True)
class JoinClaims:
    """Whom a join token admits, to which room, under which membership, until when (Unix ms)."""

    user_id: str
    device_id: str
    room_id: str
    membership_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise JoinTokenError(JoinTokenRefusal.MALFORMED)
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True)  # no ignored junk
    except (binascii.Error, ValueError):
        raise JoinTokenError(JoinTokenRefusal.MALFORMED) from None


class JoinTokens:
    """Issues and verifies join tokens with one per-process secret."""

    def __init__(
        self, secret: bytes | None = None, lifetime_ms: int = JOIN_TOKEN_LIFETIME_MS
    ) -> None:
        if secret is not None and len(secret) < 16:
            raise ValueError("a join token secret needs at least 16 bytes")
        self._secret = secret if secret is not None else secrets.token_bytes(SECRET_BYTES)
        self.lifetime_ms = lifetime_ms

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()

    def issue(
        self, *, user_id: str, device_id: str, room_id: str, membership_id: str, now_ms: int
    ) -> tuple[str, JoinClaims]:
        """A token for this member, valid for :attr:`lifetime_ms` from ``now_ms``."""
        claims = JoinClaims(user_id, device_id, room_id, membership_id, now_ms + self.lifetime_ms)
        body = json.dumps(
            [user_id, device_id, room_id, membership_id, claims.expires_at],
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}", claims

    def verify(self, token: object, now_ms: int) -> JoinClaims:
        """The claims of a genuine, unexpired token; :class:`JoinTokenError` otherwise."""
        if not isinstance(token, str) or len(token) > MAX_JOIN_TOKEN_LENGTH:
            raise JoinTokenError(JoinTokenRefusal.MALFORMED)
        body_text, dot, mac_text = token.partition(".")
        if not dot:
            raise JoinTokenError(JoinTokenRefusal.MALFORMED)
        body, mac = _unb64(body_text), _unb64(mac_text)
        # The MAC first, in constant time: nothing of an unauthenticated body is read.
        if not hmac.compare_digest(mac, self._mac(body)):
            raise JoinTokenError(JoinTokenRefusal.FORGED)
        try:
            user, device, room, membership, expires_at = json.loads(body)
        except (ValueError, TypeError):  # only our own bodies get here
            raise JoinTokenError(JoinTokenRefusal.MALFORMED) from None
        claims = JoinClaims(user, device, room, membership, expires_at)
        if now_ms >= claims.expires_at:
            raise JoinTokenError(JoinTokenRefusal.EXPIRED)
        return claims
