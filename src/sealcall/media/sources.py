"""Media sources: synthetic audio and video, file playback, and device capture where present."""

import asyncio
import fractions
import math
import os
import shutil
import time
from pathlib import Path

import av
import numpy as np
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

AUDIO_RATE = 48_000
AUDIO_PTIME = 0.020
VIDEO_CLOCK = 90_000


class _Pacer:
    """Releases one frame every ``period`` seconds of wall time, starting at the first call."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.index = 0
        self._start: float | None = None

    async def next(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self.index += 1
            delay = self._start + self.index * self.period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return self.index


class SyntheticAudioTrack(MediaStreamTrack):
    """A 48 kHz mono audio source: a steady tone, a speech-like signal, or silence.

    ``"speech"`` is a voiced sound (a 140 Hz fundamental with formant-like harmonics) shaped into
    syllables four times a second with pauses between phrases, so codecs see speech-like energy
    changes rather than a constant tone.
    """

    kind = "audio"

    def __init__(self, signal: str = "speech", frequency: float = 440.0) -> None:
        super().__init__()
        if signal not in ("speech", "tone", "silence"):
            raise ValueError(f"signal must be 'speech', 'tone' or 'silence', got {signal!r}")
        self.signal = signal
        self.frequency = frequency
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._pacer = _Pacer(AUDIO_PTIME)

    def _wave(self, start: int) -> np.ndarray:
        t = (np.arange(self._samples) + start) / AUDIO_RATE
        if self.signal == "tone":
            return 0.3 * np.sin(2 * math.pi * self.frequency * t)
        if self.signal == "silence":
            return np.zeros_like(t)
        voiced = sum((0.5 / k) * np.sin(2 * math.pi * 140 * k * t) for k in (1, 2, 3, 5, 8, 13))
        syllables = np.clip(np.sin(2 * math.pi * 4 * t), 0, None) ** 2
        phrase = (t % 3.0) < 2.2
        return 0.5 * voiced * syllables * phrase

    async def recv(self) -> av.AudioFrame:
        index = await self._pacer.next()
        start = index * self._samples
        pcm = (self._wave(start) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class PatternVideoTrack(MediaStreamTrack):
    """A moving test pattern (scrolling gradient and a bouncing block) at a fixed frame rate.

    Every frame differs from the last, so encoders produce realistic delta frames.
    """

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0) -> None:
        super().__init__()
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError("width and height must be positive and even")
        self.width, self.height, self.fps = width, height, fps
        self._pacer = _Pacer(1.0 / fps)
        # Wide gradients are scrolled through a window: one slice and copy per frame.
        # uint8 sums wrap at 256 by themselves: no wide intermediate array (this runs while a
        # call is being set up).
        rows = (np.arange(height) % 256).astype(np.uint8)
        columns = (np.arange(2 * width) % 256).astype(np.uint8)
        self._luma = np.add.outer(rows, columns)
        half_w, half_h = width // 2, height // 2
        self._chroma = (np.arange(2 * half_w) % 256).astype(np.uint8)[None, :].repeat(half_h, 0)

    async def recv(self) -> av.VideoFrame:
        index = await self._pacer.next()
        w, h = self.width, self.height
        shift = (index * 4) % w
        planes = np.empty((h * 3 // 2, w), dtype=np.uint8)
        planes[:h] = self._luma[:, shift : shift + w]
        block = max(8, min(w, h) // 6)
        x = abs((index * 7) % (2 * (w - block)) - (w - block))
        y = abs((index * 5) % (2 * (h - block)) - (h - block))
        planes[y : y + block, x : x + block] = 255 - (index % 200)
        quarter = h // 4
        u_shift = (index * 2) % (w // 2)
        chroma = self._chroma[:, u_shift : u_shift + w // 2]
        planes[h : h + quarter] = chroma.reshape(quarter, w)
        planes[h + quarter :] = (255 - chroma).reshape(quarter, w)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = int(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class CaptureUnavailableError(RuntimeError):
    """This machine has no such capture device; the message says what is missing."""


def file_source(path: str | Path, *, loop: bool = False) -> MediaPlayer:
    """Play a media file: its ``.audio`` and ``.video`` tracks (either may be None)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no media file at {path}")
    return MediaPlayer(str(path), loop=loop)


def camera_source(device: str = "/dev/video0", size: str = "640x480") -> MediaPlayer:
    """Capture a V4L2 camera (Linux); raise :class:`CaptureUnavailableError` if there is none."""
    if not os.path.exists(device):
        raise CaptureUnavailableError(f"no camera: {device} does not exist")
    return MediaPlayer(device, format="v4l2", options={"video_size": size})


def _sound_system() -> str | None:
    if shutil.which("pulseaudio") or os.environ.get("PULSE_SERVER"):
        return "pulse"
    cards = Path("/proc/asound/cards")
    if cards.exists() and "no soundcards" not in cards.read_text():
        return "alsa"
    return None


def microphone_unavailable_reason() -> str | None:
    """Why :func:`microphone_source` cannot capture here, or None if it can try."""
    if _sound_system() is None:
        return "no microphone: no PulseAudio server and no ALSA sound card"
    return None


def microphone_source(device: str = "default") -> MediaPlayer:
    """Capture a microphone through PulseAudio or ALSA; raise :class:`CaptureUnavailableError`."""
    system = _sound_system()
    if system is None:
        raise CaptureUnavailableError(microphone_unavailable_reason())
    if system == "alsa" and device == "default":
        device = "hw:0"
    return MediaPlayer(device, format=system)


def screen_source(display: str | None = None, size: str = "640x480", fps: int = 15) -> MediaPlayer:
    """Capture an X11 screen (``DISPLAY`` by default); raise :class:`CaptureUnavailableError`."""
    display = display or os.environ.get("DISPLAY")
    if not display:
        raise CaptureUnavailableError("no screen to capture: DISPLAY is not set")
    number = display.split(":")[-1].split(".")[0]
    socket = Path("/tmp/.X11-unix") / f"X{number}"  # noqa: S108 - the X server's socket, not a temp file
    if not socket.exists():
        raise CaptureUnavailableError(f"no X server answers on display {display}")
    return MediaPlayer(
        display, format="x11grab", options={"video_size": size, "framerate": str(fps)}
    )
