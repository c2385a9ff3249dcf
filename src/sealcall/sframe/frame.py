"""Stateless SFrame encryption and decryption of one frame (RFC 9605 section 4.4.3 / 4.4.4).

These functions derive the key for every call: they exist for tests, vectors and one-off use. Media
paths use :class:`~sealcall.sframe.sender.SFrameSender` and
:class:`~sealcall.sframe.receiver.SFrameReceiver`, which derive once per key.
"""

from .header import decode_header, encode_header
from .keys import KeyContext


def encrypt(
    suite: int, base_key: bytes, kid: int, ctr: int, metadata: bytes, plaintext: bytes
) -> bytes:
    """Encrypt ``plaintext`` under ``base_key``/``kid``/``ctr``: ``header || ciphertext || tag``.

    ``metadata`` is authenticated but not sent.
    """
    encode_header(kid, ctr)  # validates the ranges
    return KeyContext(suite, base_key, kid).seal(ctr, metadata, plaintext)


def decrypt(suite: int, base_key: bytes, metadata: bytes, data: bytes) -> tuple[int, int, bytes]:
    """Decrypt one SFrame ciphertext: return ``(kid, ctr, plaintext)``.

    Raises a subclass of :class:`~sealcall.sframe.errors.SFrameError` for any bad input.
    """
    kid, ctr, header_len = decode_header(data)
    context = KeyContext(suite, base_key, kid)
    plaintext = context.open(ctr, bytes(data[:header_len]), metadata, data[header_len:])
    return kid, ctr, plaintext
