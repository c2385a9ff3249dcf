"""The frame vectors the web client is checked against (tests/js/data/frame-vectors.json).

tests/js/frames.test.mjs checks that frames.js makes these bytes; here the Python side must still
make them too, and open them, so the two implementations cannot drift apart unnoticed.
"""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sealcall.e2ee import Codec, h264, protect_frame, unprotect_frame
from sealcall.media.keys import MediaKeys
from sealcall.sframe.errors import ReplayError, SFrameError
from sealcall.sframe.receiver import SFrameReceiver
from sealcall.sframe.sender import SFrameSender

VECTOR_FILE = Path(__file__).parent / "js" / "data" / "frame-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text())
STATIC = Path(__file__).resolve().parent.parent / "src" / "sealcall" / "web" / "static"
NODE = shutil.which("node")


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


def test_python_media_keys_make_the_context_vectors() -> None:
    """The ``context`` frames: one MediaKeys across a key change (KID 0, then KID 1), whose
    counter runs on; tests/js/sframe_context.test.mjs opens them with the worker's ring."""
    context = VECTORS["context"]
    (kid0, key0), *rest = [(k["kid"], bytes.fromhex(k["key"])) for k in context["keys"]]
    keys = MediaKeys(kid0, key0, VECTORS["suite"])
    made = []
    for kid, key in [(kid0, key0), *rest]:
        keys.set_send_key(kid, key)
        made += [
            keys.protect(Codec(f["codec"]), bytes.fromhex(f["frame"])).hex()
            for f in context["frames"]
            if f["kid"] == kid
        ]
    assert made == [f["protected"] for f in context["frames"]]


# Protects the context frames with the worker's FrameContexts (sframe_context.js) in Node and
# prints them as JSON: {codec, kid, frame, protected} (hex).
NODE_PROTECT = """
import { readFileSync } from "node:fs";
if (!globalThis.crypto?.subtle) {
  Object.defineProperty(globalThis, "crypto", { value: (await import("node:crypto")).webcrypto });
}
const { FrameContexts } = await import(process.argv[1]);
const V = JSON.parse(readFileSync(process.argv[2], "utf8"));
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));
const ctx = new FrameContexts();
const out = [];
for (const { kid, key } of V.context.keys) {
  await ctx.setSendKey("call", V.suite, kid, hex(key));
  for (const f of V.context.frames) {
    const kind = f.codec === "opus" ? "audio" : "video";
    const data = await ctx.protect("call", kind, undefined, hex(f.frame));
    out.push({ codec: f.codec, kid, frame: f.frame, protected: Buffer.from(data).toString("hex") });
  }
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="node is not on PATH (.ci/run installs nodejs)")
def test_frames_the_worker_context_protects_open_in_python_media_keys() -> None:
    assert NODE is not None
    result = subprocess.run(
        [
            NODE,
            "--input-type=module",
            "-e",
            NODE_PROTECT,
            (STATIC / "sframe_context.js").as_uri(),
            str(VECTOR_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frames = json.loads(result.stdout)
    assert len(frames) == 2 * len(VECTORS["context"]["frames"])
    receiver = MediaKeys(suite=VECTORS["suite"])
    for k in VECTORS["context"]["keys"]:
        receiver.add_receive_key(k["kid"], bytes.fromhex(k["key"]))
    for f in frames:
        protected = bytes.fromhex(f["protected"])
        assert protected != bytes.fromhex(f["frame"])
        assert receiver.unprotect(Codec(f["codec"]), protected).hex() == f["frame"]
    # Each frame opens once: the counters never repeated, across the key change too.
    with pytest.raises(ReplayError):
        receiver.unprotect(Codec(frames[0]["codec"]), bytes.fromhex(frames[0]["protected"]))
