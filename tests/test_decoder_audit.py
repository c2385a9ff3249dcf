"""The lab's decoder audit counts what it must: frames the tap did not vet, and video deltas
after a gap before a key frame (the network tests assert both stay 0 over a real call)."""

import queue
from types import SimpleNamespace
from typing import Any

from sealcall.bench.decoder_audit import AuditedQueue, audit
from sealcall.media.connection import _DecryptingQueue
from sealcall.media.crypto_taps import CallbackOpener, ReceiverTap
from sealcall.media.jitter import BufferedFrame

VP8 = SimpleNamespace(mimeType="video/VP8")
KEY, DELTA = b"\x10" + bytes(9), b"\x11" + bytes(9)  # VP8: bit 0 of the first byte clear: key


def audited() -> AuditedQueue:
    tap = ReceiverTap(CallbackOpener(lambda codec, data: data), "video", lambda: None)
    receiver: Any = SimpleNamespace(_RTCRtpReceiver__decoder_queue=_DecryptingQueue(tap))
    decoder = audit(receiver)
    assert decoder is not None
    assert audit(receiver) is decoder
    return decoder


def test_the_tap_s_frames_pass_clean_and_a_frame_around_it_is_unvetted() -> None:
    decoder = audited()
    decoder.put((VP8, BufferedFrame(KEY, 0)))
    decoder.put((VP8, BufferedFrame(DELTA, 1)))
    assert (decoder.inputs, decoder.unvetted, decoder.deltas_after_gap) == (2, 0, 0)
    queue.Queue.put(decoder, (VP8, BufferedFrame(DELTA, 2)))  # past the tap
    assert (decoder.inputs, decoder.unvetted) == (3, 1)


def test_a_delta_after_a_gap_is_withheld_and_one_past_the_tap_is_counted() -> None:
    decoder = audited()
    decoder.put((VP8, BufferedFrame(KEY, 0)))
    decoder.put((VP8, BufferedFrame(DELTA, 2, after_gap=True)))  # the tap withholds it
    assert decoder.inputs == 1
    decoder._tap._awaiting_keyframe = False  # a tap that would let it through
    decoder.put((VP8, BufferedFrame(DELTA, 3)))
    assert decoder.deltas_after_gap == 1
    decoder.put((VP8, BufferedFrame(KEY, 4)))
    decoder.put((VP8, BufferedFrame(DELTA, 5)))
    assert (decoder.inputs, decoder.deltas_after_gap, decoder.unvetted) == (4, 1, 0)
