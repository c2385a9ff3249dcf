"""Write tests/js/data/frame-vectors.json: real encoded frames protected by the Python side.

tests/js/frames.test.mjs checks that the web client's frames.js makes the same bytes and
decrypts them; tests/js/sframe_context.test.mjs opens the ``context`` frames (a call's
``MediaKeys`` across a key change) with the worker's receive ring; tests/test_frame_vectors.py
checks the Python side still makes them all. Run from the
repository root: ``PYTHONPATH=src:tests python tests/js/make_frame_vectors.py``.
"""

import json
from pathlib import Path

from sealcall.e2ee import Codec, h264, protect_frame
from sealcall.media.keys import MediaKeys
from sealcall.sframe.sender import SFrameSender

from encoded_media import encode_opus, encode_video

OUT = Path(__file__).parent / "data" / "frame-vectors.json"
SUITE = 4  # AES_128_GCM_SHA256_128, the suite calls use.
BASE_KEY = bytes(range(16))
KID = 0x1234
FIRST_CTR = 7

# Hand-made Annex B access units for the edge cases real encoders rarely produce.
SYNTHETIC_H264 = [
    # 4-byte start codes, trailing zeros after the SPS, a non-IDR slice.
    b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x00\x00\x01\x68\xce\x3c\x80"
    b"\x00\x00\x01\x41\x9a\x00\x00\x03\x00\x10\x20",
    # Parameter sets alone: the last unit carries the ciphertext.
    b"\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x01\x68\xce\x3c\x80",
    # An IDR slice alone, with zeros in its payload.
    b"\x00\x00\x01\x65" + bytes(40) + b"\x01",
]
ESCAPE_INPUTS = [
    b"",
    b"\x00\x00\x00\x00",
    b"\x00\x00\x01\x00\x00\x02\x00\x00\x03\x00\x00\x04",
    b"\x00\x00\x00\x03\x00\x00\x03\x03\xff\x00",
    bytes(range(8)) * 3 + bytes(9),
]


def protect_all(codec: Codec, frames: list[bytes]) -> list[dict[str, object]]:
    """Protect ``frames`` in order with one sender: counters FIRST_CTR, FIRST_CTR + 1, ..."""
    sender = SFrameSender(KID, BASE_KEY, SUITE, first_ctr=FIRST_CTR)
    return [
        {
            "ctr": FIRST_CTR + i,
            "frame": frame.hex(),
            "protected": protect_frame(codec, sender, frame).hex(),
        }
        for i, frame in enumerate(frames)
    ]


# The keys of the ``context`` frames: a call's sender switches from KID 0 to KID 1.
CONTEXT_KEYS = [(0, bytes(range(32, 64))), (1, bytes(range(64, 96)))]


def protect_context(frames: list[tuple[Codec, bytes]]) -> dict[str, object]:
    """Protect ``frames`` with one ``MediaKeys`` under each of CONTEXT_KEYS in turn: the
    counter runs on across the key change, as the worker's send context does."""
    keys = MediaKeys(*CONTEXT_KEYS[0], SUITE)
    out = []
    for kid, key in CONTEXT_KEYS:
        keys.set_send_key(kid, key)
        for codec, frame in frames:
            protected = keys.protect(codec, frame)
            out.append(
                {
                    "codec": codec.value,
                    "kid": kid,
                    "frame": frame.hex(),
                    "protected": protected.hex(),
                }
            )
    return {"keys": [{"kid": k, "key": v.hex()} for k, v in CONTEXT_KEYS], "frames": out}


def main() -> None:
    """Encode a few frames per codec, protect them, write the JSON."""
    opus, vp8 = encode_opus(3), encode_video("libvpx", 3)
    vectors = {
        "suite": SUITE,
        "base_key": BASE_KEY.hex(),
        "kid": KID,
        "opus": protect_all(Codec.OPUS, opus),
        "vp8": protect_all(Codec.VP8, vp8),
        "h264": protect_all(Codec.H264, encode_video("libx264", 3) + SYNTHETIC_H264),
        "h264_escape": [
            {"data": data.hex(), "escaped": h264.escape(data).hex()} for data in ESCAPE_INPUTS
        ],
        "context": protect_context(
            [(Codec.OPUS, opus[0]), (Codec.VP8, vp8[0]), (Codec.OPUS, opus[1]), (Codec.VP8, vp8[1])]
        ),
    }
    OUT.write_text(json.dumps(vectors, indent=1) + "\n")


if __name__ == "__main__":
    main()
