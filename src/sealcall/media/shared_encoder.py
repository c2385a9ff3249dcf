"""Encode once, send to all: one encoder per local track, its protected frames fanned out.

A mesh participant sends the same camera and microphone to every other member. Browsers run one
encoder per connection; here a :class:`SharedEncoder` encodes each captured frame once (VP8 for
video, Opus for audio), protects it once with the group send key through its
:class:`~sealcall.media.crypto_taps.SenderTap`, and hands the same protected frame, as an
``av.Packet``, to every subscription. Each RTP sender only packetizes it (picture ids, SSRC,
sequence numbers and RTP timestamps stay per connection); see
:mod:`sealcall.media.group_connection`.

Feedback from all peers meets here: a key-frame request (PLI/FIR) from any peer forces one key
frame for all, at most one per ``keyframe_interval``; the video bitrate is the lowest that any
current subscriber's REMB allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import DEFAULT_BITRATE, MAX_BITRATE, MIN_BITRATE, Vp8Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import compute_audio_level_dbov
from av import AudioFrame
from av.frame import Frame

from sealcall.e2ee.codecs import Codec, is_key_frame

from .crypto_taps import SenderTap
from .remote_tracks import LatestFrames

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
OPUS_SAMPLES_PER_PACKET = 960
# Protected frames a subscription holds for a sender that falls behind: about a quarter of a
# second of video at 30 fps, half a second of audio. Older frames make way (and are counted).
VIDEO_FRAMES_QUEUED = 8
AUDIO_FRAMES_QUEUED = 25
LEVELS_KEPT = 2 * AUDIO_FRAMES_QUEUED  # audio levels kept for the senders (see audio_level)


class UnsubscribedError(MediaStreamError):
    """Raised by a subscription's ``recv`` once it was unsubscribed or its encoder stopped."""


@dataclass
class SharedEncoderCounters:
    """What one shared encoder read, encoded, forced and dropped."""

    frames_captured: int = 0
    frames_encoded: int = 0
    frames_idle: int = 0  # read while nobody subscribed: not encoded
    frames_paused: int = 0  # read while paused (muted, camera off): not encoded
    frames_without_key: int = 0  # read before the tap's keys had a send key: not encoded
    packets_sent: int = 0  # protected frames handed to the subscriptions (once each)
    keyframes: int = 0
    keyframes_forced: int = 0
    keyframe_requests: int = 0
    requests_coalesced: int = 0
    frames_dropped_slow: int = 0  # frames a subscriber lost because it did not keep up
    frames_before_keyframe: int = 0  # video frames a new subscriber could not decode: not sent


class SharedTrack(MediaStreamTrack):
    """One subscriber's view of a :class:`SharedEncoder`: protected encoded frames as ``av.Packet``
    (pts in the codec clock, time base 1/clock). Holds only its newest frames; a video
    subscription starts at a key frame."""

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.kind = encoder.kind
        self.encoder = encoder
        capacity = VIDEO_FRAMES_QUEUED if encoder.kind == "video" else AUDIO_FRAMES_QUEUED
        self._queue = LatestFrames(capacity)
        self._awaiting_keyframe = encoder.kind == "video"

    @property
    def frames_dropped(self) -> int:
        """Frames this subscriber lost because it fell behind."""
        return self._queue.frames_dropped

    @property
    def frames_queued(self) -> int:
        """Frames waiting to be read now."""
        return self._queue.qsize()

    def _deliver(self, packet: av.Packet[Any] | None, keyframe: bool = False) -> bool:
        """Queue ``packet`` (None ends the track); False if it was held back because this video
        subscription has not had its first key frame yet (a decoder could not use it)."""
        if packet is not None and self._awaiting_keyframe:
            if not keyframe:
                return False
            self._awaiting_keyframe = False
        self._queue.put_nowait(packet)
        return True

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise UnsubscribedError
        packet = await self._queue.get()
        if packet is None:
            super().stop()
            raise UnsubscribedError
        return packet  # type: ignore[no-any-return]

    def stop(self) -> None:
        """End this subscription (aiortc stops a sender's track when the sender stops)."""
        self.encoder.unsubscribe(self)
        super().stop()


class _WholeFrameVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder (its rate control and key-frame forcing) returning whole frames,
    its target bitrate held within ``bitrates`` (aiortc's own range unless given: an SFU's
    thumbnail layer runs below aiortc's minimum)."""

    def __init__(self, bitrates: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.bitrates = bitrates or (MIN_BITRATE, MAX_BITRATE)
        self.target_bitrate = DEFAULT_BITRATE

    @property
    def target_bitrate(self) -> int:
        return int(getattr(self, "_Vp8Encoder__target_bitrate"))  # noqa: B009 - name-mangled

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        low, high = self.bitrates
        setattr(self, "_Vp8Encoder__target_bitrate", max(low, min(bitrate, high)))  # noqa: B010

    def _packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        return [buffer] if buffer else []


class SharedEncoder:
    """Encodes one local track once per frame (VP8 for video, Opus for audio), protects each frame
    once through ``tap`` (a SenderTap: SFrame with our group send key; pause = mute/camera off),
    and hands the same protected frame to every subscribed connection.

    Reading starts at construction when an event loop runs (else at the first subscription) and
    goes on while nobody subscribes or the tap is paused, so a live source never piles up; such
    frames are not encoded. Encoding runs in the default executor, one frame at a time. A video
    encoder restarts with a key frame after a pause or an idle spell.
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        tap: SenderTap,
        *,
        keyframe_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        bitrates: tuple[int, int] | None = None,
        audio_levels: bool = False,
    ) -> None:
        if track.kind not in ("audio", "video"):
            raise ValueError(f"cannot encode a {track.kind!r} track")
        if tap.kind != track.kind:
            raise ValueError(f"a {tap.kind} tap cannot protect a {track.kind} track")
        if keyframe_interval < 0:
            raise ValueError(f"keyframe interval must be >= 0, got {keyframe_interval}")
        self.kind: str = track.kind
        self.tap = tap
        self.counters = SharedEncoderCounters()
        self.keyframe_interval = keyframe_interval
        self._track = track
        self._clock = clock
        self._codec = Codec.VP8 if self.kind == "video" else Codec.OPUS
        self._video: _WholeFrameVp8Encoder | None = None
        self._audio: OpusEncoder | None = None
        self._levels: dict[int, int] | None = {} if audio_levels else None
        if self.kind == "video":
            self._video = _WholeFrameVp8Encoder(bitrates)
        else:
            self._audio = OpusEncoder()
        self._subscribers: list[SharedTrack] = []
        self._bitrates: dict[int, int] = {}
        self._keyframe_pending = False
        self._keyframe_due: float | None = None
        self._restart_with_keyframe = False
        self._last_forced: float | None = None
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            self._start()

    def _start(self) -> None:
        if self._task is None and not self._stopped:
            self._task = asyncio.ensure_future(self._run())

    @property
    def subscribers(self) -> list[SharedTrack]:
        """The current subscriptions."""
        return list(self._subscribers)

    def subscribe(self) -> SharedTrack:
        """A new subscription (one per RTP sender); video subscribers ask for a key frame.
        After :meth:`stop` or the end of the source, the subscription comes back ended."""
        subscription = SharedTrack(self)
        if self._stopped:  # the source ended or the encoder stopped: so has this subscription
            subscription._deliver(None)
            return subscription
        self._subscribers.append(subscription)
        self._start()
        # A video subscriber gets nothing before a key frame: if its request was coalesced, one
        # is due when the interval allows (a coalesced PLI is repeated by its peer instead).
        if self.kind == "video" and not self.request_keyframe() and self._last_forced is not None:
            self._keyframe_due = self._last_forced + self.keyframe_interval
        return subscription

    def unsubscribe(self, track: MediaStreamTrack) -> None:
        """End ``track``'s subscription (idempotent); its REMB no longer limits the bitrate."""
        if not isinstance(track, SharedTrack) or track not in self._subscribers:
            return
        self._subscribers.remove(track)
        self._bitrates.pop(id(track), None)
        self._apply_bitrate()
        track._deliver(None)

    def request_keyframe(self) -> bool:
        """A peer's PLI/FIR: force a key frame for all, unless one was forced within
        ``keyframe_interval`` or is already due (then False: coalesced)."""
        if self.kind != "video":
            return False
        self.counters.keyframe_requests += 1
        now = self._clock()
        recent = self._last_forced is not None and now - self._last_forced < self.keyframe_interval
        if self._keyframe_pending or recent:
            self.counters.requests_coalesced += 1
            return False
        self._keyframe_pending = True
        return True

    def report_bitrate(self, subscriber: MediaStreamTrack, bps: int) -> None:
        """One subscriber's REMB: video is encoded at the lowest rate any subscriber allows
        (within the VP8 encoder's limits). Audio keeps its fixed Opus rate."""
        if not isinstance(subscriber, SharedTrack) or subscriber not in self._subscribers:
            return
        self._bitrates[id(subscriber)] = bps
        self._apply_bitrate()

    def _apply_bitrate(self) -> None:
        if self._video is not None:
            default = min(DEFAULT_BITRATE, self._video.bitrates[1])
            self._video.target_bitrate = min(self._bitrates.values(), default=default)

    def audio_level(self, pts: int) -> int | None:
        """The level of the audio frame sent with ``pts`` (-dBov, 0..127), if kept: only with
        ``audio_levels`` and for the last :data:`LEVELS_KEPT` frames."""
        return None if self._levels is None else self._levels.get(pts)

    @property
    def target_bitrate(self) -> int:
        """The bitrate the encoder aims at now, bits per second."""
        if self._video is not None:
            return self._video.target_bitrate
        assert self._audio is not None
        return int(self._audio.codec.bit_rate or 0)

    async def stop(self) -> None:
        """Stop reading, end every subscription and stop the source track."""
        self._stopped = True
        for subscription in list(self._subscribers):
            self.unsubscribe(subscription)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._track.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._track.readyState == "live":
                frame = await self._track.recv()
                if not isinstance(frame, Frame):
                    raise MediaStreamError("a shared encoder needs raw frames, not packets")
                self.counters.frames_captured += 1
                if not self._subscribers:
                    self.counters.frames_idle += 1
                    self._restart_with_keyframe = True
                    continue
                if self.tap.paused:
                    self.tap.counters.frames_paused += 1
                    self.counters.frames_paused += 1
                    continue
                keys = self.tap.keys
                if keys.encrypted and keys.send_kid is None:
                    # No send key yet: nothing could be sent, and the first frame sent must be
                    # a key frame that the receivers can start from.
                    self.counters.frames_without_key += 1
                    self._restart_with_keyframe = True
                    continue
                force = self._take_keyframe()
                encoded, complete = await loop.run_in_executor(None, self._encode, frame, force)
                if not complete:  # a frame was dropped: what follows would not decode without it
                    self._restart_with_keyframe = True
                self._fan_out(encoded)
        except MediaStreamError as error:
            # The source ended: so does every subscription.
            if str(error):
                logger.error("stopped encoding a %s track: %s", self.kind, error)
        except Exception:  # an encoder failure must not leave subscribers waiting forever
            logger.exception("stopped encoding a %s track", self.kind)
        finally:
            self._stopped = True
            for subscription in list(self._subscribers):
                self.unsubscribe(subscription)

    def _take_keyframe(self) -> bool:
        restart = self._restart_with_keyframe or self.tap.take_keyframe_request()
        self._restart_with_keyframe = False
        if self.kind != "video":
            return False
        now = self._clock()
        if self._keyframe_pending or (self._keyframe_due is not None and now >= self._keyframe_due):
            self._keyframe_pending = False
            self._keyframe_due = None
            self._last_forced = now
            self.counters.keyframes_forced += 1
            return True
        return restart

    def _encode(
        self, frame: Frame, force_keyframe: bool
    ) -> tuple[list[tuple[bytes, int, bool]], bool]:
        """Encode and protect one frame (in the executor): ``(protected, pts, key frame)`` per
        packet, and False if a packet could not be protected (it is dropped, never sent)."""
        level: int | None = None
        if self._video is not None:
            payloads, timestamp = self._video.encode(frame, force_keyframe)
        else:
            assert self._audio is not None
            payloads, timestamp = self._audio.encode(frame)
            if self._levels is not None and isinstance(frame, AudioFrame):
                level = compute_audio_level_dbov(frame)
        self.counters.frames_encoded += 1
        results: list[tuple[bytes, int, bool]] = []
        for index, payload in enumerate(payloads):
            keyframe = self._codec is Codec.VP8 and is_key_frame(Codec.VP8, payload)
            self.counters.keyframes += keyframe
            protected = self.tap.protect(self._codec, payload)
            if protected is None:
                return results, False
            pts = timestamp + index * OPUS_SAMPLES_PER_PACKET
            if level is not None and self._levels is not None:
                self._levels[pts] = level
                if len(self._levels) > LEVELS_KEPT:
                    del self._levels[next(iter(self._levels))]
            results.append((protected, pts, keyframe))
        return results, True

    def _fan_out(self, encoded: list[tuple[bytes, int, bool]]) -> None:
        time_base = fractions.Fraction(1, VIDEO_CLOCK if self.kind == "video" else AUDIO_CLOCK)
        for protected, pts, keyframe in encoded:
            packet = av.Packet(protected)
            packet.pts = pts
            packet.time_base = time_base
            self.counters.packets_sent += 1
            for subscription in self._subscribers:
                dropped = subscription.frames_dropped
                if not subscription._deliver(packet, keyframe):
                    self.counters.frames_before_keyframe += 1
                self.counters.frames_dropped_slow += subscription.frames_dropped - dropped
