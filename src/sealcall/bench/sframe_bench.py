"""``sealcall sframe-bench``: the frame-protection path against bare AES-GCM, side by side.

For each codec and frame size, it times :func:`~sealcall.e2ee.protect_frame` and
:func:`~sealcall.e2ee.unprotect_frame` (suite AES_128_GCM_SHA256_128) and bare
``AESGCM.encrypt``/``AESGCM.decrypt`` on a payload of the same size, alternating the two, and
reports microseconds per call and their ratio.
"""

import os
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealcall.e2ee.codecs import Codec, protect_frame, unprotect_frame
from sealcall.sframe import CipherSuite, SFrameReceiver, SFrameSender

from .timing import side_by_side

SIZES = (100, 20_000)


@dataclass(frozen=True)
class BenchRow:
    """One codec and frame size: microseconds per call and ratios to bare AES-GCM."""

    codec: str
    frame_bytes: int
    protect_us: float
    aesgcm_encrypt_us: float
    protect_ratio: float
    unprotect_us: float
    aesgcm_decrypt_us: float
    unprotect_ratio: float


def synthetic_frame(codec: Codec, size: int) -> bytes:
    """A frame of ``size`` bytes whose header bytes are valid for ``codec`` (a delta frame)."""
    body = os.urandom(size)
    if codec is Codec.VP8:
        return bytes([body[0] | 0x01]) + body[1:]  # inter frame
    if codec is Codec.H264:
        return b"\x00\x00\x00\x01\x41" + body[5:]  # one non-IDR slice
    return body


class _Cursor:
    """Hands out prepared inputs one per call."""

    def __init__(self) -> None:
        self._items: list[bytes] = []
        self._pos = 0

    def load(self, items: list[bytes]) -> None:
        self._items = items
        self._pos = 0

    def next(self) -> bytes:
        item = self._items[self._pos]
        self._pos += 1
        return item


def bench_one(codec: Codec, size: int, number: int, rounds: int) -> BenchRow:
    """Measure one codec at one frame size."""
    key = os.urandom(16)
    suite = CipherSuite.AES_128_GCM_SHA256_128
    sender = SFrameSender(kid=1, base_key=key, suite=suite)
    frame = synthetic_frame(codec, size)
    aesgcm = AESGCM(os.urandom(16))
    nonce = os.urandom(12)

    protect_us, enc_us = side_by_side(
        lambda: protect_frame(codec, sender, frame),
        lambda: aesgcm.encrypt(nonce, frame, b""),
        number,
        rounds,
    )

    # The receiver refuses a replayed frame, so each round decrypts freshly protected frames;
    # the baseline likewise decrypts as many distinct ciphertexts, so both read fresh memory.
    receiver = SFrameReceiver(suite, replay_window=number + 1)
    receiver.add_key(1, key)
    frames = _Cursor()
    ciphertexts = _Cursor()

    def prepare() -> None:
        frames.load([protect_frame(codec, sender, frame) for _ in range(number)])
        ciphertexts.load([aesgcm.encrypt(nonce, frame, b"") for _ in range(number)])

    unprotect_us, dec_us = side_by_side(
        lambda: unprotect_frame(codec, receiver, frames.next()),
        lambda: aesgcm.decrypt(nonce, ciphertexts.next(), b""),
        number,
        rounds,
        prepare,
    )
    return BenchRow(
        codec.value,
        size,
        round(protect_us, 3),
        round(enc_us, 3),
        round(protect_us / enc_us, 2),
        round(unprotect_us, 3),
        round(dec_us, 3),
        round(unprotect_us / dec_us, 2),
    )


def run(number: int = 1000, rounds: int = 7) -> list[BenchRow]:
    """Run every codec at every size (``number`` calls per timed batch, best of ``rounds``)."""
    return [bench_one(codec, size, number, rounds) for codec in Codec for size in SIZES]


def as_json_rows(rows: list[BenchRow]) -> list[dict[str, object]]:
    """Rows as plain dicts for JSON output."""
    return [asdict(row) for row in rows]
