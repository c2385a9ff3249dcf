"""A subscriber's forwarded video starts at a key frame even when its stream was negotiated late.

The server sends a forwarded stream only once the subscriber's answer made it known; whatever the
forwarder rewrote before that never left (the key frame included). ``Forwarder.restart`` makes
the stream wait for the next key frame, so the subscriber's first video frame is decodable.
"""

from sealcall.sfu.rtcp import Pli, parse_rtcp
from sealcall.sfu.rtp import parse_rtp
from sealcall.sfu.vp8 import parse_vp8
from test_sfu_forwarder import Room, contiguous, ssrcs


def keyframes(packets: list[bytes]) -> list[bool]:
    out = []
    for p in packets:
        view = parse_rtp(p)
        out.append(parse_vp8(p, view.payload_offset, view.payload_end).is_keyframe)
    return out


def test_a_restarted_video_stream_resumes_only_at_the_next_key_frame() -> None:
    room = Room(2)
    video = room.out_ssrc(1, 0, "video")
    room.video(0, 1, keyframe=True)  # forwarded, but (in the server) not yet sent: no answer
    room.video(0, 1, keyframe=False)
    assert keyframes(room.streams("p1")[video]) == [True, False]
    room.now += 1.5
    outputs = room.fw.restart("p1", video, room.now)
    room.record(outputs)
    # A key frame is asked for, and no delta frame goes out before it.
    assert any(
        isinstance(p, Pli) and p.media_ssrc == ssrcs(0)[1]
        for o in outputs
        for p in parse_rtcp(o.data).packets  # type: ignore[union-attr]
    )
    room.rtp.clear()
    room.video(0, 1, keyframe=False)
    room.video(0, 1, keyframe=False)
    assert video not in room.streams("p1")
    room.video(0, 1, keyframe=True)
    room.video(0, 1, keyframe=False)
    sent = room.streams("p1")[video]
    assert keyframes(sent) == [True, False]
    assert contiguous(sent)
    # Audio, and unknown streams, are left as they are.
    audio = room.out_ssrc(1, 0, "audio")
    assert room.fw.restart("p1", audio, room.now) == []
    assert room.fw.restart("p1", 12345, room.now) == []
    assert room.fw.restart("nobody", video, room.now) == []
