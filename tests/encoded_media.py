"""Real encoded frames for tests: a few VP8, H.264 and Opus frames made with PyAV."""

import contextlib
import fractions
import math
import zlib

import av
import numpy as np

WIDTH, HEIGHT = 320, 240


def _video_frames(count: int) -> list[av.VideoFrame]:
    """A moving gradient, so encoders emit real delta frames after the key frame."""
    frames = []
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    for i in range(count):
        rgb = np.stack(
            [(xs + 4 * i) % 256, (ys + 2 * i) % 256, ((xs + ys) // 2 + 8 * i) % 256], axis=-1
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = fractions.Fraction(1, 30)
        frames.append(frame)
    return frames


def encode_video(codec_name: str, count: int = 10) -> list[bytes]:
    """Encode ``count`` frames with ``libvpx`` (VP8) or ``libx264`` (H.264, Annex B)."""
    context = av.CodecContext.create(codec_name, "w")
    context.width = WIDTH
    context.height = HEIGHT
    context.pix_fmt = "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    context.framerate = fractions.Fraction(30, 1)
    context.bit_rate = 500_000
    if codec_name == "libx264":
        context.options = {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0"}
    else:
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets = []
    for frame in _video_frames(count):
        packets.extend(context.encode(frame))
    packets.extend(context.encode(None))
    return [bytes(p) for p in packets]


def encode_opus(count: int = 10) -> list[bytes]:
    """Encode ``count`` 20 ms Opus frames of a 440 Hz tone at 48 kHz."""
    context = av.CodecContext.create("libopus", "w")
    context.sample_rate = 48000
    context.layout = "stereo"
    context.format = "s16"
    context.bit_rate = 64000
    context.time_base = fractions.Fraction(1, 48000)
    packets = []
    samples = 960
    for i in range(count + 2):
        t = (np.arange(samples) + i * samples) / 48000
        tone = (np.sin(2 * math.pi * 440 * t) * 12000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = i * samples
        frame.time_base = fractions.Fraction(1, 48000)
        packets.extend(context.encode(frame))
    return [bytes(p) for p in packets][:count]


def decodable_frames(decoder_name: str, frames: list[bytes]) -> int:
    """How many pictures (or audio frames) a fresh decoder gets out of ``frames``."""
    decoder = av.CodecContext.create(decoder_name, "r")
    decoded = 0
    for frame in frames:
        with contextlib.suppress(av.error.FFmpegError):
            decoded += len(decoder.decode(av.Packet(frame)))
    return decoded


def incompressible(data: bytes) -> bool:
    """Whether ``data`` looks random (zlib saves under 2 %): ciphertext, not media."""
    return len(zlib.compress(data, 9)) >= 0.98 * len(data)
