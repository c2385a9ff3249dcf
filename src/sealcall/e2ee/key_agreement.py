"""1:1 call key agreement: ephemeral X25519 in the invite and the answer, HKDF to two base keys.

Each side makes a fresh :class:`KeyShare` per call and sends its public key inside the (already
Olm/Megolm-encrypted) invite or answer. Both then compute::

    shared  = X25519(own_private, peer_public)
    okm     = HKDF-SHA256(ikm=shared, salt=call_id,
                          info="org.sealcall.call-keys.v1" || caller_public || callee_public,
                          length=64)
    caller -> callee base key = okm[:32],  callee -> caller base key = okm[32:]

Binding both public keys into ``info`` ties the keys to this exchange; the call id as salt ties them
to this call. The private key lives only in the :class:`KeyShare` and dies with the call.
"""

from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealcall.sframe.errors import SFrameError

_INFO_LABEL = b"org.sealcall.call-keys.v1"
BASE_KEY_LENGTH = 32
PUBLIC_KEY_LENGTH = 32


class KeyAgreementError(SFrameError):
    """The peer's key share is malformed or a low-order point, or the call id is empty."""


class Role(Enum):
    """Which side of the call we are: the caller sent the invite, the callee the answer."""

    CALLER = "caller"
    CALLEE = "callee"


@dataclass(frozen=True, repr=False)
class CallKeys:
    """The two base keys of a 1:1 call, seen from one side. ``repr`` never shows them."""

    send: bytes
    receive: bytes

    def __repr__(self) -> str:
        return "CallKeys(<secret>)"


class KeyShare:
    """One side's ephemeral X25519 key for one call."""

    __slots__ = ("_private", "public_bytes")

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public_bytes: bytes = self._private.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return f"KeyShare(public={self.public_bytes.hex()})"

    def derive(self, peer_public: bytes, call_id: str, role: Role) -> CallKeys:
        """Derive this side's send and receive base keys; see :func:`derive_call_keys`."""
        return derive_call_keys(self._private, peer_public, call_id, role)


def derive_call_keys(
    private_key: X25519PrivateKey, peer_public: bytes, call_id: str, role: Role
) -> CallKeys:
    """Derive the per-direction base keys of a call from our private key and the peer's public key.

    The caller's ``send`` equals the callee's ``receive`` and vice versa.
    """
    try:
        salt = call_id.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        raise KeyAgreementError("call id must be valid Unicode text") from None
    if not salt:
        raise KeyAgreementError("call id must not be empty")
    if not isinstance(peer_public, bytes) or len(peer_public) != PUBLIC_KEY_LENGTH:
        raise KeyAgreementError(f"peer public key must be {PUBLIC_KEY_LENGTH} bytes")
    own_public = private_key.public_key().public_bytes_raw()
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # cryptography refuses an all-zero shared secret (a low-order peer key).
        raise KeyAgreementError("peer public key is a low-order point") from None
    if role is Role.CALLER:
        caller_public, callee_public = own_public, peer_public
    else:
        caller_public, callee_public = peer_public, own_public
    okm = HKDF(
        hashes.SHA256(),
        2 * BASE_KEY_LENGTH,
        salt=salt,
        info=_INFO_LABEL + caller_public + callee_public,
    ).derive(shared)
    forward, backward = okm[:BASE_KEY_LENGTH], okm[BASE_KEY_LENGTH:]
    if role is Role.CALLER:
        return CallKeys(send=forward, receive=backward)
    return CallKeys(send=backward, receive=forward)
