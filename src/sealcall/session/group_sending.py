"""What one device sends in a group call: one shared encoder per role, all protected with our
current group key, and the mute and screen-share state they follow.

Each role (microphone, camera, screen share) has one :class:`~sealcall.media.SharedEncoder`:
every frame is encoded once and SFrame-protected once with :attr:`GroupSending.send_keys`, and
the same bytes go to every pair's connection. Muting pauses an encoder for every pair at once.

Through an SFU (:attr:`GroupSending.layers` set before ``start``) the camera has two encoders:
``camera`` is the thumbnail (320x180, at most :data:`THUMBNAIL_MAX_BITRATE`) and ``camera_full``
the full resolution, whose bitrate follows the SFU's REMB; the microphone keeps each frame's
level for the RFC 6464 header.
"""

from __future__ import annotations

from typing import Any

from aiortc.mediastreams import MediaStreamTrack

from sealcall.e2ee import GroupKey
from sealcall.media import MediaKeys, SenderTap, SharedEncoder
from sealcall.media.video_layers import CameraLayers

from .local_media import LocalMedia

THUMBNAIL_BITRATES = (60_000, 150_000)
THUMBNAIL_MAX_BITRATE = THUMBNAIL_BITRATES[1]


class GroupSending:
    """Our outgoing media in one group call (used by :class:`GroupCallSession`)."""

    def __init__(self, media: LocalMedia, *, video: bool) -> None:
        self.media = media
        self.video = video
        self.send_keys = MediaKeys()
        """Our sender key (the group key in use); every shared encoder protects with it."""
        self.encoders: dict[str, SharedEncoder] = {}  # microphone / camera / screenshare
        self.audio_muted = False
        self.video_muted = False
        self.screensharing = False
        self.layers = False
        """Through an SFU: the camera as a thumbnail and a full-resolution layer, and the
        microphone's levels kept for the RFC 6464 header (set before :meth:`start`)."""

    def use_key(self, key: GroupKey) -> None:
        """Protect from the next frame on with ``key`` (GroupKeys says when)."""
        self.send_keys.set_send_key(key.index, key.key)

    def start(self) -> None:
        """Start the microphone (and the camera, for a video call); with :attr:`layers` (an
        SFU call) the camera as a thumbnail and a full-resolution layer."""
        layers = self.layers
        self._add("microphone", self.media.microphone(), audio_levels=layers)
        if self.video and layers:
            camera = CameraLayers(self.media.camera())
            self._add("camera", camera.thumbnail, bitrates=THUMBNAIL_BITRATES)
            self._add("camera_full", camera.full)
        elif self.video:
            self._add("camera", self.media.camera())

    def _add(
        self,
        role: str,
        track: MediaStreamTrack,
        *,
        bitrates: tuple[int, int] | None = None,
        audio_levels: bool = False,
    ) -> SharedEncoder:
        encoder = SharedEncoder(
            track,
            SenderTap(self.send_keys, track.kind),
            bitrates=bitrates,
            audio_levels=audio_levels,
        )
        # Muted before the encoder existed (before or while joining): it starts paused.
        video = self.video_muted
        encoder.tap.set_paused(
            {"microphone": self.audio_muted, "camera": video, "camera_full": video}.get(role, False)
        )
        self.encoders[role] = encoder
        return encoder

    def set_muted(self, audio: bool | None, video: bool | None) -> None:
        """Pause or resume the microphone and the camera (None leaves one as it is)."""
        if audio is not None:
            self.audio_muted = audio
            if "microphone" in self.encoders:
                self.encoders["microphone"].tap.set_paused(audio)
        if video is not None:
            self.video_muted = video
            for role in ("camera", "camera_full"):
                if role in self.encoders:
                    self.encoders[role].tap.set_paused(video)

    def screen_encoder(self, on: bool) -> SharedEncoder | None:
        """The shared screen-share encoder, made on first use (None once it is off and no
        pair sends it)."""
        encoder = self.encoders.get("screenshare")
        if on and encoder is None:
            encoder = self._add("screenshare", self.media.screen())
        return encoder

    async def release_screen(self) -> None:
        """Stop capturing the screen once sharing is off and no pair sends it any more."""
        encoder = self.encoders.get("screenshare")
        if encoder is not None and not self.screensharing and not encoder.subscribers:
            del self.encoders["screenshare"]
            await encoder.stop()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per role: frames encrypted (once, whatever the number of peers), failed, paused,
        and the encoder's target bitrate (bit/s)."""
        return {
            role: {
                "frames_encrypted": enc.tap.counters.frames_encrypted,
                "frames_failed": enc.tap.counters.frames_failed,
                "frames_paused": enc.tap.counters.frames_paused,
                "target_bitrate": enc.target_bitrate,
            }
            for role, enc in self.encoders.items()
        }

    async def stop(self) -> None:
        """Stop every encoder (and its source) and forget the key."""
        for encoder in self.encoders.values():
            await encoder.stop()
        self.encoders.clear()
        self.send_keys.forget()
