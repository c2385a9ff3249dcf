"""The frame vectors the web client is checked against (tests/js/data/frame-vectors.json).

tests/js/frames.test.mjs checks that frames.js makes these bytes; here the Python side must still
make them too, and open them, so the two implementations cannot drift apart unnoticed.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from sealcall.e2ee import Codec, h264, protect_frame, unprotect_frame
from sealcall.sframe.errors import SFrameError
from sealcall.sframe.receiver import SFrameReceiver
from sealcall.sframe.sender import SFrameSender

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "js" / "data" / "frame-vectors.json").read_text()
)


@pytest.mark.parametrize("codec", list(Codec))
def test_python_makes_and_opens_the_web_client_vectors(codec: Codec) -> None:
    cases = VECTORS[codec.value]
    assert len(cases) >= 3
    base_key = bytes.fromhex(VECTORS["base_key"])
    sender = SFrameSender(VECTORS["kid"], base_key, VECTORS["suite"], first_ctr=cases[0]["ctr"])
    receiver = SFrameReceiver(VECTORS["suite"])
    receiver.add_key(VECTORS["kid"], base_key)
    for case in cases:
        frame = bytes.fromhex(case["frame"])
        protected = protect_frame(codec, sender, frame)
        assert protected.hex() == case["protected"]
        assert unprotect_frame(codec, receiver, protected) == frame


def test_python_escape_matches_the_vectors() -> None:
    for case in VECTORS["h264_escape"]:
        assert h264.escape(bytes.fromhex(case["data"])).hex() == case["escaped"]


def test_a_flipped_vector_byte_is_refused() -> None:
    receiver = SFrameReceiver(VECTORS["suite"])
    receiver.add_key(VECTORS["kid"], bytes.fromhex(VECTORS["base_key"]))
    bad = bytearray.fromhex(VECTORS["vp8"][0]["protected"])
    bad[-1] ^= 0x01
    with pytest.raises(SFrameError):
        unprotect_frame(Codec.VP8, receiver, bytes(bad))
