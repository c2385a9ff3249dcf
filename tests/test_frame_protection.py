"""Codec-aware frame protection over real VP8, H.264 and Opus frames encoded by PyAV."""

import math
import zlib

import av
import pytest

from sealcall.e2ee import (
    Codec,
    h264,
    protect_frame,
    unprotect_frame,
    vp8_dimensions,
    vp8_is_key_frame,
)
from sealcall.sframe import (
    AuthenticationError,
    FrameFormatError,
    SFrameError,
    SFrameReceiver,
    SFrameSender,
)

from encoded_media import HEIGHT, WIDTH, decodable_frames

KEY = bytes(range(32))


def endpoints() -> tuple[SFrameSender, SFrameReceiver]:
    receiver = SFrameReceiver()
    receiver.add_key(5, KEY)
    return SFrameSender(5, KEY), receiver


def round_trip(codec: Codec, frames: list[bytes]) -> list[bytes]:
    sender, receiver = endpoints()
    protected = [protect_frame(codec, sender, f) for f in frames]
    for original, sealed in zip(frames, protected, strict=True):
        assert sealed != original
        assert unprotect_frame(codec, receiver, sealed) == original
    return protected


def looks_random(data: bytes) -> bool:
    # Ciphertext does not compress; encoded media headers and structure would.
    return len(zlib.compress(data, 9)) >= len(data) * 0.98


def test_vp8_round_trip_keeps_key_frame_and_dimensions(vp8_frames: list[bytes]) -> None:
    protected = round_trip(Codec.VP8, vp8_frames)
    assert vp8_is_key_frame(vp8_frames[0])
    assert vp8_is_key_frame(protected[0])
    assert vp8_dimensions(protected[0]) == (WIDTH, HEIGHT) == vp8_dimensions(vp8_frames[0])
    assert protected[0][:10] == vp8_frames[0][:10]
    for plain, sealed in zip(vp8_frames[1:], protected[1:], strict=True):
        assert not vp8_is_key_frame(sealed)
        assert sealed[:3] == plain[:3]
        assert plain[3:] not in sealed  # the body is not left readable
    assert looks_random(protected[0][10 + 2 :])


def test_protected_vp8_cannot_be_decoded_without_the_key(vp8_frames: list[bytes]) -> None:
    sender, _ = endpoints()
    protected = [protect_frame(Codec.VP8, sender, f) for f in vp8_frames]
    assert decodable_frames("vp8", protected) == 0
    assert decodable_frames("vp8", vp8_frames) == len(vp8_frames)


def test_h264_round_trip_keeps_annex_b_structure(h264_frames: list[bytes]) -> None:
    protected = round_trip(Codec.H264, h264_frames)
    first = protected[0]
    # SPS, PPS (and SEI) stay readable, the IDR slice header too; nothing after it is a start code.
    types = [first[s] & 0x1F for s, _ in h264.nal_units(first)]
    assert types[:2] == [7, 8]
    assert types[-1] == 5
    assert [h264_frames[0][s] & 0x1F for s, _ in h264.nal_units(h264_frames[0])][-1] == 5
    for sealed in protected[1:]:
        assert [sealed[s] & 0x1F for s, _ in h264.nal_units(sealed)] == [1]


def test_h264_survives_start_code_rewriting(h264_frames: list[bytes]) -> None:
    # A depacketizer rebuilds the access unit with 4-byte start codes; authentication must hold.
    sender, receiver = endpoints()
    for frame in h264_frames[:3]:
        sealed = protect_frame(Codec.H264, sender, frame)
        units = h264.nal_units(sealed)
        rebuilt = b"".join(b"\x00\x00\x00\x01" + sealed[s:e] for s, e in units)
        restored = unprotect_frame(Codec.H264, receiver, rebuilt)
        assert [restored[s:e] for s, e in h264.nal_units(restored)] == [
            frame[s:e] for s, e in h264.nal_units(frame)
        ]


def test_h264_tampered_parameter_set_fails(h264_frames: list[bytes]) -> None:
    sender, receiver = endpoints()
    sealed = bytearray(protect_frame(Codec.H264, sender, h264_frames[0]))
    sps_start = h264.nal_units(bytes(sealed))[0][0]
    sealed[sps_start + 2] ^= 0x01
    with pytest.raises(AuthenticationError):
        unprotect_frame(Codec.H264, receiver, bytes(sealed))


def test_protected_h264_cannot_be_decoded_without_the_key(h264_frames: list[bytes]) -> None:
    sender, _ = endpoints()
    protected = [protect_frame(Codec.H264, sender, f) for f in h264_frames]
    assert decodable_frames("h264", protected) == 0
    assert decodable_frames("h264", h264_frames) > 0


def test_opus_round_trip_keeps_toc(opus_frames: list[bytes]) -> None:
    protected = round_trip(Codec.OPUS, opus_frames)
    for plain, sealed in zip(opus_frames, protected, strict=True):
        assert sealed[0] == plain[0]
        assert looks_random(sealed[3:]) or len(sealed) < 64


def test_protected_opus_is_not_the_tone(opus_frames: list[bytes]) -> None:
    sender, _ = endpoints()
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate = 48000
    decoder.layout = "stereo"
    energy_in_440 = []
    for frame in opus_frames[2:]:
        try:
            out = decoder.decode(av.Packet(protect_frame(Codec.OPUS, sender, frame)))
        except av.error.FFmpegError:
            continue
        for decoded in out:
            samples = decoded.to_ndarray().astype(float).ravel()[::2]
            # Correlate with a 440 Hz tone: the real audio correlates strongly, noise does not.
            n = len(samples)
            phase = [2 * math.pi * 440 * i / 48000 for i in range(n)]
            corr = abs(sum(s * math.sin(p) for s, p in zip(samples, phase, strict=True)))
            power = math.sqrt(sum(s * s for s in samples) * n / 2) or 1.0
            energy_in_440.append(corr / power)
    assert all(c < 0.5 for c in energy_in_440)


def test_wrong_key_raises_sframe_error(vp8_frames: list[bytes]) -> None:
    sender, _ = endpoints()
    receiver = SFrameReceiver()
    receiver.add_key(5, bytes(32))
    with pytest.raises(AuthenticationError):
        unprotect_frame(Codec.VP8, receiver, protect_frame(Codec.VP8, sender, vp8_frames[1]))


@pytest.mark.parametrize(
    ("codec", "frame"),
    [(Codec.OPUS, b""), (Codec.VP8, b""), (Codec.VP8, b"\x00\x01"), (Codec.H264, b"no start code")],
)
def test_malformed_frames_are_refused(codec: Codec, frame: bytes) -> None:
    sender, receiver = endpoints()
    with pytest.raises(FrameFormatError):
        protect_frame(codec, sender, frame)
    with pytest.raises(SFrameError):
        unprotect_frame(codec, receiver, frame)


def test_codec_from_mime() -> None:
    assert Codec.from_mime("video/VP8") is Codec.VP8
    assert Codec.from_mime("audio/opus") is Codec.OPUS
    assert Codec.from_mime("video/H264") is Codec.H264
    with pytest.raises(FrameFormatError):
        Codec.from_mime("video/AV1")
