"""The forwarder's per-room state and its decisions on layers and sender bitrates.

``allocate`` picks, for one subscriber, the layer of each publisher's video: none, thumbnail, or
full when asked for and the subscriber's bandwidth estimate covers it. Hysteresis keeps it from
flapping: a subscriber on the full layer keeps it while the total fits the estimate; one on the
thumbnail goes up only when the total fits within ``UP_FRACTION`` of it and ``UP_HOLD`` seconds
after it last went down. A layer costs the larger of its nominal bitrate (from the configuration)
and the rate measured over the last second, so a quiet scene does not invite a switch that the
next burst would undo.

``remb_target`` is what a publisher's full layer is clamped to: the lowest estimate among the
subscribers that want it, within ``REMB_MIN``..``REMB_MAX``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .packet_cache import PacketCache
from .rewriter import StreamRewriter
from .rtcp import SenderReport
from .rtp import MID_URI, extension_id_table

__all__ = [
    "AUDIO",
    "FULL",
    "QUALITIES",
    "THUMBNAIL",
    "Out",
    "Participant",
    "ParticipantConfig",
    "Source",
    "allocate",
    "remb_target",
]

AUDIO, THUMBNAIL, FULL = 0, 1, 2
QUALITIES = ("thumbnail", "full", "none")
UP_FRACTION = 0.8
UP_HOLD = 2.0
REMB_MIN = 100_000
REMB_MAX = 20_000_000
AUDIO_CLOCK, VIDEO_CLOCK = 48_000, 90_000
AUDIO_CACHE_PACKETS = 64  # over a second of 20 ms audio
VIDEO_CACHE_PACKETS = 256  # about a second of full-resolution video
VIDEO_CACHE_BYTES = 256 * 1200


@dataclass(frozen=True, slots=True)
class ParticipantConfig:
    """What a participant publishes (source SSRCs) and what it negotiated for receiving.

    ``audio_level_id``: the RFC 6464 header-extension id it sends (None: no speaking detection).
    ``extensions``: the RTP header extensions its connection negotiated (URI, id); forwarded
    packets get the receiver's ids (``rtp.extension_id_table``). ``rtx_ssrcs``: (RTX SSRC, media
    SSRC) of its video layers, so that its retransmissions (RFC 4588) go into their streams.
    Payload types and ``rtx_payload_type`` are the ones its connection negotiated; RTX answers
    NACKs of video when set. Nominal bitrates size the layers before any is measured.
    """

    audio_ssrc: int | None = None
    thumbnail_ssrc: int | None = None
    full_ssrc: int | None = None
    audio_level_id: int | None = None
    audio_payload_type: int = 111
    video_payload_type: int = 96
    rtx_payload_type: int | None = None
    audio_bitrate: int = 50_000
    thumbnail_bitrate: int = 150_000
    full_bitrate: int = 1_200_000
    extensions: tuple[tuple[str, int], ...] = ()
    rtx_ssrcs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        ssrcs = [s for s in (self.audio_ssrc, self.thumbnail_ssrc, self.full_ssrc) if s is not None]
        ssrcs += [rtx for rtx, _ in self.rtx_ssrcs]
        if len(set(ssrcs)) != len(ssrcs) or any(not 0 <= s <= 0xFFFFFFFF for s in ssrcs):
            raise ValueError("source SSRCs must be distinct 32-bit values")
        if self.audio_level_id is not None and not 1 <= self.audio_level_id <= 255:
            raise ValueError("audio_level_id must be 1..255")


class Source:
    """One stream a participant publishes: its SSRC, layer, subscribers and measured rate."""

    __slots__ = (
        "_bytes",
        "_packets",
        "_since",
        "bitrate",
        "high_seq",
        "last_keyframe_request",
        "layer",
        "nominal",
        "outs",
        "owner",
        "sender_report",
        "sender_report_at",
        "ssrc",
        "video",
    )

    def __init__(self, owner: Participant, ssrc: int, layer: int, nominal: int) -> None:
        self.owner = owner
        self.ssrc = ssrc
        self.layer = layer
        self.video = layer != AUDIO
        self.nominal = nominal
        self.outs: list[Out] = []  # the outgoing streams this source may feed
        self.bitrate = 0
        self.high_seq = -1  # the highest sequence number received (-1: none yet)
        self.last_keyframe_request = -math.inf
        self.sender_report: SenderReport | None = None
        self.sender_report_at = 0.0
        self._bytes = 0
        self._packets = 0
        self._since = -math.inf

    def count(self, size: int, now: float, max_packets: int) -> bool:
        """Account one packet; False when over ``max_packets`` in the current second (a flood)."""
        if now - self._since >= 1.0:
            if self._since > -math.inf:
                self.bitrate = int(self._bytes * 8 / max(1.0, now - self._since))
            self._since = now
            self._bytes = 0
            self._packets = 0
        self._packets += 1
        if self._packets > max_packets:
            return False
        self._bytes += size
        return True

    @property
    def cost(self) -> int:
        """Bits per second this layer is assumed to take."""
        return max(self.nominal, self.bitrate)


class Out:
    """One outgoing stream: a publisher's audio or video, rewritten for one subscriber."""

    __slots__ = (
        "cache",
        "down_at",
        "ext_table",
        "publisher",
        "quality",
        "rw",
        "subscriber",
        "video",
    )

    def __init__(
        self,
        subscriber: Participant,
        publisher: Participant,
        ssrc: int,
        rtx_ssrc: int | None,
        video: bool,
        rng: random.Random,
    ) -> None:
        self.subscriber = subscriber.id
        self.publisher = publisher
        self.video = video
        cfg = subscriber.config
        pt = cfg.video_payload_type if video else cfg.audio_payload_type
        self.rw = StreamRewriter(
            ssrc,
            pt,
            VIDEO_CLOCK if video else AUDIO_CLOCK,
            video=video,
            first_sequence=rng.getrandbits(16),
            first_timestamp=rng.getrandbits(32),
        )
        if video:
            self.cache = PacketCache(
                VIDEO_CACHE_PACKETS,
                VIDEO_CACHE_BYTES,
                rtx_ssrc=rtx_ssrc,
                rtx_payload_type=cfg.rtx_payload_type if rtx_ssrc is not None else None,
                rtx_first_sequence=rng.getrandbits(16),
            )
        else:
            self.cache = PacketCache(AUDIO_CACHE_PACKETS, AUDIO_CACHE_PACKETS * 1500)
        self.quality = "thumbnail"
        self.down_at = -math.inf  # when the full layer was last given up
        self.ext_table = extension_id_table(
            dict(publisher.config.extensions), dict(cfg.extensions), hide=(MID_URI,)
        )
        """Header-extension ids from the publisher's to the subscriber's (None: the same)."""


class Participant:
    """A member of the room: its sources (as publisher) and outgoing streams (as subscriber)."""

    __slots__ = (
        "config",
        "estimate",
        "id",
        "outs_by_ssrc",
        "receiving",
        "remb_pending",
        "remb_release",
        "remb_sent",
        "remb_sent_at",
        "retransmit_window",
        "retransmitted",
        "rtcp_ssrc",
        "rtx_sources",
        "sources",
    )

    def __init__(self, participant: str, config: ParticipantConfig, rtcp_ssrc: int) -> None:
        self.id = participant
        self.config = config
        self.rtcp_ssrc = rtcp_ssrc  # the SFU's sender SSRC in RTCP towards this participant
        self.sources: dict[int, Source] = {}
        for ssrc, layer, nominal in (
            (config.audio_ssrc, AUDIO, config.audio_bitrate),
            (config.thumbnail_ssrc, THUMBNAIL, config.thumbnail_bitrate),
            (config.full_ssrc, FULL, config.full_bitrate),
        ):
            if ssrc is not None:
                self.sources[ssrc] = Source(self, ssrc, layer, nominal)
        self.rtx_sources: dict[int, Source] = {
            rtx: self.sources[media]
            for rtx, media in config.rtx_ssrcs
            if media in self.sources and self.sources[media].video
        }
        self.receiving: dict[str, list[Out]] = {}  # publisher -> its audio/video outs to us
        self.outs_by_ssrc: dict[int, Out] = {}
        self.estimate: int | None = None  # from REMB; None: not known yet (no limit)
        self.remb_sent: int | None = None
        self.remb_sent_at = -math.inf
        self.remb_pending = False
        self.remb_release = REMB_MAX
        self.retransmit_window = -math.inf
        self.retransmitted = 0

    def layer_source(self, layer: int) -> Source | None:
        """The source publishing ``layer``, if any."""
        for src in self.sources.values():
            if src.layer == layer:
                return src
        return None

    def video_outs(self) -> Iterator[Out]:
        """The outgoing video streams this participant receives."""
        for outs in self.receiving.values():
            for o in outs:
                if o.video:
                    yield o


def _layer(pub: Participant, wanted: int) -> Source | None:
    """The source for ``wanted`` (THUMBNAIL or FULL), or the other video layer if it is absent."""
    src = pub.layer_source(wanted)
    if src is None:
        src = pub.layer_source(FULL if wanted == THUMBNAIL else THUMBNAIL)
    return src


def allocate(sub: Participant, now: float) -> list[tuple[Out, Source | None]]:
    """For each video ``sub`` receives, the layer it should now get (None: none)."""
    budget = math.inf if sub.estimate is None else float(sub.estimate)
    spent = 0
    plan: list[tuple[Out, Source | None]] = []
    for outs in sub.receiving.values():
        for o in outs:
            src = o.publisher.layer_source(AUDIO) if not o.video else None
            if src is not None:
                spent += src.cost
            if o.video and o.quality != "none":
                thumb = _layer(o.publisher, THUMBNAIL)
                spent += thumb.cost if thumb is not None else 0
    for o in sub.video_outs():
        pub = o.publisher
        if o.quality == "none":
            plan.append((o, None))
            continue
        thumb = _layer(pub, THUMBNAIL)
        full = pub.layer_source(FULL)
        if o.quality != "full" or full is None or thumb is None or full is thumb:
            plan.append((o, thumb))
            continue
        extra = full.cost - thumb.cost
        on_full = o.rw.target == full.ssrc
        if on_full:
            fits = spent + extra <= budget
        else:
            fits = now - o.down_at >= UP_HOLD and spent + extra <= budget * UP_FRACTION
        if fits:
            spent += extra
            plan.append((o, full))
        else:
            if on_full:
                o.down_at = now
            plan.append((o, thumb))
    return plan


def remb_target(pub: Participant, participants: Mapping[str, Participant]) -> int | None:
    """The bitrate to clamp ``pub``'s full layer to, or None if no subscriber with an estimate
    wants it."""
    lowest: int | None = None
    for sub in participants.values():
        if sub is pub or sub.estimate is None:
            continue
        for o in sub.receiving.get(pub.id, ()):
            if o.video and o.quality == "full":
                lowest = sub.estimate if lowest is None else min(lowest, sub.estimate)
    if lowest is None:
        return None
    return min(REMB_MAX, max(REMB_MIN, lowest))
