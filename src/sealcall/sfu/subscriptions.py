"""The forwarder's per-room state and its decisions on layers and sender bitrates.

``allocate`` picks, for one subscriber, the layer of each publisher's video: none, thumbnail, or
full when asked for and the subscriber's network allows it. It runs on every REMB and once a
second, never per packet.

Why not "go up when the full layer's cost fits the estimate": receivers' REMB estimators
(aiortc's, Chromium's) never report much more than 1.5x what they receive now, so a subscriber
on thumbnails never sees an estimate that covers a full layer. Real SFUs either probe (padding or
duplicate packets that lift the incoming rate) or ramp with media. Probing is out here: aiortc
cannot receive RTX with several video m-lines; padding-only packets on a media SSRC go into its
jitter buffer as empty frame parts (it assembles frames by timestamp); and both estimators need a
probe to carry abs-send-time on the media's clock, which only the publisher stamps (the SFU
forwards the publisher's). So we ramp with media through the clamp:

- the *room* of a stream asked for in full is its share of the estimate: the per-stream estimate
  when the subscriber's REMB names that stream alone (aiortc: one estimator, one REMB per m-line),
  otherwise what it receives now plus an equal share of the headroom (estimate minus what the
  subscriber receives, over the streams asked for in full);
- on the thumbnail, it goes up once the room has stayed *calm* for ``UP_HOLD`` seconds: at least
  ``UP_RATIO`` times what the stream receives now (and, while a backoff runs, ``CEILING_MARGIN``
  times what the full layer received when it last failed). Not more: Chromium on thumbnails
  reports about 110 kbit/s in all;
- the publisher's full layer is clamped by REMB to the lowest room among the subscribers asking
  for it (``remb_target``), so after a switch the full layer starts where the subscriber has room
  and the incoming rate and the estimate climb together;
- on the full layer, while the estimate is not rising, it goes down at once when the room is
  under ``REMB_MIN`` (*starved*: not even the clamp's floor fits), and after ``DOWN_HOLD``
  seconds of *congestion*: the room under ``DOWN_RATIO`` times what the stream receives, or under
  ``FULL_FLOOR`` of the layer's nominal rate (squeezed further, a full layer looks worse than
  the thumbnail). An estimate that rises (an estimator catching up with a switch: about 8 % a
  second) is no congestion, a flat one (a capped link) or a falling one (an overuse decrease)
  is. Congestion is judged ``UP_HOLD`` seconds after going up at the earliest. The price: a
  full layer whose scene is so cheap that the estimator, bound to 1.5x what it receives, never
  reaches the floor goes down again and tries after each backoff;
- each congestion doubles the wait before the next try (``BACKOFF_MIN``..``BACKOFF_MAX``: a
  genuinely capped subscriber tries again after 8, 16, 32, 64 s, not every 2 s); ``STABLE``
  seconds on the full layer, or a new ask, forget the backoff.

Rates are the publishers' measured rates over the last second (``Source.rate``).
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
    "forget_backoff",
    "remb_target",
]

AUDIO, THUMBNAIL, FULL = 0, 1, 2
QUALITIES = ("thumbnail", "full", "none")
UP_RATIO = 1.2  # a room this many times what a stream receives is calm
UP_HOLD = 2.0  # seconds of calm before going up; also the least time after going down or up
DOWN_RATIO = 0.9  # a room under this fraction of what a stream receives is congestion
DOWN_HOLD = 2.0  # seconds of congestion (room not rising) before going down
TREND = 2.0  # seconds between the estimates compared for a trend
RISING = 1.06  # an estimate this many times the one TREND seconds before is rising
FULL_FLOOR = 0.5  # a full layer held under this share of its nominal rate is not worth it
BACKOFF_MIN, BACKOFF_MAX = 8.0, 64.0  # seconds before trying again after a congestion
CEILING_MARGIN = 1.25  # a room this far above the one that failed may try at once
STABLE = 20.0  # seconds on the full layer that forget the backoff and the ceiling
RATE_TTL = 2.0  # a source silent this long is counted as sending nothing
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

    def rate(self, now: float) -> int:
        """Bits per second measured over the last second (0 once silent for ``RATE_TTL``)."""
        return self.bitrate if now - self._since < RATE_TTL else 0


class Out:
    """One outgoing stream: a publisher's audio or video, rewritten for one subscriber."""

    __slots__ = (
        "cache",
        "calm_since",
        "ceiling",
        "congested_since",
        "down_at",
        "estimate",
        "estimate_at",
        "ext_table",
        "full_ssrc",
        "hold",
        "publisher",
        "quality",
        "rising",
        "room",
        "rw",
        "subscriber",
        "trend_at",
        "trend_estimate",
        "up_at",
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
        self.estimate: int | None = None  # from a REMB naming this stream alone
        self.estimate_at = -math.inf
        self.room: float | None = None  # this stream's share of the estimate (None: no limit)
        self.up_at = -math.inf  # when the full layer was last chosen
        self.down_at = -math.inf  # when the full layer was last given up
        self.calm_since = math.inf  # since when the room would allow going up
        self.congested_since = math.inf
        self.full_ssrc: int | None = None  # the publisher's full layer, once asked for
        self.hold = 0.0  # the backoff after a congestion
        self.ceiling: float | None = None  # the room at the last congestion
        self.trend_estimate = 0.0
        self.trend_at = -math.inf
        self.rising = False
        self.ext_table = extension_id_table(
            dict(publisher.config.extensions), dict(cfg.extensions), hide=(MID_URI,)
        )
        """Header-extension ids from the publisher's to the subscriber's (None: the same)."""


class Participant:
    """A member of the room: its sources (as publisher) and outgoing streams (as subscriber)."""

    __slots__ = (
        "config",
        "estimate",
        "estimate_at",
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
        self.estimate_at = -math.inf
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


# The layer decision: (on the full layer, signal) -> go to the full layer (True) or not. A pair
# not in the table keeps the layer the stream has.
CALM, STARVED, CONGESTED = "calm", "starved", "congested"
_NEXT: dict[tuple[bool, str], bool] = {
    (False, CALM): True,
    (True, STARVED): False,
    (True, CONGESTED): False,
}


def _rooms(sub: Participant, now: float) -> dict[Out, tuple[float | None, int, int]]:
    """Each video stream ``sub`` asked for in full: its room (None: no limit), what it receives
    now, and the estimate the room comes from."""
    received = 0
    asked: list[tuple[Out, int]] = []
    for outs in sub.receiving.values():
        for o in outs:
            src = o.publisher.sources.get(o.rw.current) if o.rw.current is not None else None
            rate = src.rate(now) if src is not None else 0
            received += rate
            if o.video and o.quality == "full":
                asked.append((o, rate))
    rooms: dict[Out, tuple[float | None, int, int]] = {}
    whole = sub.estimate
    for o, rate in asked:
        if o.estimate is not None and o.estimate_at >= sub.estimate_at:
            rooms[o] = (float(o.estimate), rate, o.estimate)
        elif whole is not None:
            rooms[o] = (rate + (whole - received) / len(asked), rate, whole)
        else:
            rooms[o] = (None, rate, 0)
    return rooms


def _signal(
    o: Out, room: float | None, rate: int, estimate: int, floor: float, now: float
) -> str | None:
    """What the room of ``o`` says now (CALM, STARVED, CONGESTED or None), tracking the trend of
    the estimate it comes from (the room itself moves with the other streams' measured rates),
    calm and congestion times; ``floor`` is the least its full layer is worth."""
    if room is None:  # no estimate: nothing limits it
        o.congested_since = math.inf
        return CALM
    if now - o.trend_at >= TREND:
        o.rising = estimate > o.trend_estimate * RISING
        o.trend_estimate, o.trend_at = estimate, now
    if o.rw.target != o.full_ssrc:
        o.congested_since = math.inf
        calm = room >= UP_RATIO * rate
        if calm and o.ceiling is not None and now - o.down_at < o.hold:
            calm = room >= CEILING_MARGIN * o.ceiling
        if not calm:
            o.calm_since = math.inf
            return None
        o.calm_since = min(o.calm_since, now)
        waited = now - o.down_at >= UP_HOLD
        return CALM if waited and now - o.calm_since >= UP_HOLD else None
    o.calm_since = math.inf
    short = room < DOWN_RATIO * rate  # it receives more than its room
    thin = room < floor  # under what a full layer is worth: a thumbnail looks better
    if now - o.up_at < UP_HOLD or o.rising or not (short or thin):
        o.congested_since = math.inf
        if now - o.up_at >= STABLE:
            o.hold, o.ceiling = 0.0, None
        return None
    if room < REMB_MIN:
        return STARVED
    o.congested_since = min(o.congested_since, now)
    return CONGESTED if now - o.congested_since >= DOWN_HOLD else None


def allocate(sub: Participant, now: float) -> list[tuple[Out, Source | None]]:
    """For each video ``sub`` receives, the layer it should now get (None: none)."""
    rooms = _rooms(sub, now)
    plan: list[tuple[Out, Source | None]] = []
    for o in sub.video_outs():
        pub = o.publisher
        if o.quality == "none":
            plan.append((o, None))
            continue
        thumb = _layer(pub, THUMBNAIL)
        full = pub.layer_source(FULL)
        if o.quality != "full" or full is None or thumb is None or full is thumb:
            o.room = None
            plan.append((o, thumb))
            continue
        room, rate, estimate = rooms[o]
        o.room = room
        o.full_ssrc = full.ssrc
        on_full = o.rw.target == full.ssrc
        signal = _signal(o, room, rate, estimate, FULL_FLOOR * full.nominal, now)
        go_full = _NEXT.get((on_full, signal), on_full) if signal is not None else on_full
        if go_full and not on_full:
            o.up_at = now
        elif on_full and not go_full:
            o.down_at = now
            o.congested_since = math.inf
            o.ceiling = max(rate, REMB_MIN)  # what it received when it failed
            o.hold = min(BACKOFF_MAX, max(BACKOFF_MIN, 2 * o.hold))
        plan.append((o, full if go_full else thumb))
    return plan


def forget_backoff(o: Out) -> None:
    """A new ask for the full layer: it may go up at once if its room allows."""
    o.down_at = o.up_at = -math.inf
    o.calm_since = -math.inf
    o.hold, o.ceiling = 0.0, None


def remb_target(pub: Participant, participants: Mapping[str, Participant]) -> int | None:
    """The bitrate to clamp ``pub``'s full layer to: the lowest room among the subscribers that
    ask for it, or None if none of them has an estimate."""
    lowest: float | None = None
    for sub in participants.values():
        if sub is pub:
            continue
        for o in sub.receiving.get(pub.id, ()):
            if o.video and o.quality == "full" and o.room is not None:
                lowest = o.room if lowest is None else min(lowest, o.room)
    if lowest is None:
        return None
    return int(min(REMB_MAX, max(REMB_MIN, lowest)))
