"""Where a call's outgoing media comes from: microphone, camera and screen tracks."""

from collections.abc import Callable
from dataclasses import dataclass

from aiortc.mediastreams import MediaStreamTrack

from sealcall.media import PatternVideoTrack, SyntheticAudioTrack

TrackFactory = Callable[[], MediaStreamTrack]


@dataclass
class LocalMedia:
    """Factories for the tracks a call sends; each call gets fresh tracks.

    The default is synthetic media (a speech-like signal, a moving pattern), so that calls work
    on machines without devices; pass ``sealcall.media.camera_source(...)`` and friends for real
    capture.
    """

    microphone: TrackFactory = SyntheticAudioTrack
    camera: TrackFactory = lambda: PatternVideoTrack(640, 480)
    screen: TrackFactory = lambda: PatternVideoTrack(1280, 720, fps=5)
