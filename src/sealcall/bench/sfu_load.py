"""A cheap SFU load: P publishers and S subscribers as aiortc connections in one process.

Publishers send PRE-ENCODED media: a short VP8 clip and Opus frames are encoded once with PyAV
(:class:`EncodedClip`) and replayed in real time as ``av.Packet`` objects, which aiortc's RTP
sender only packetizes (as :mod:`sealcall.media.forwarding` does). Subscribers never depacketize
or decode: :func:`count_rtp` replaces a receiver's RTP handler with one that counts packets and
bytes per kind and samples the publish-to-receive time of marked audio payloads (each
publisher's Opus frames are distinct, so a payload names when it was sent; same process, same
clock). Header extensions are no use for that: Janus restamps abs-send-time.

The SFU under test only supplies signaling; see :mod:`sealcall.bench.janus` for Janus.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from sealcall.media import LOOPBACK, PeerConnection

from .proc import process_cpu_seconds, process_rss_bytes

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
FPS = 30
OPUS_FRAME_SAMPLES = 960  # 20 ms
LATENCY_SAMPLES_KEPT = 200_000


@dataclass(frozen=True)
class EncodedClip:
    """VP8 frames (first one a key frame) and Opus voices, encoded once, replayed in a loop.

    Each publisher gets its own Opus voice (a tone of its own pitch and loudness ramp), so an
    audio payload names its publisher and position in the clip: ``marked`` holds the payloads
    that occur exactly once, whose publish-to-receive time the load measures.
    """

    video: tuple[bytes, ...]
    voices: tuple[tuple[bytes, ...], ...]
    marked: frozenset[bytes]

    @classmethod
    def make(
        cls,
        seconds: float = 2.0,
        voices: int = 8,
        width: int = 640,
        height: int = 360,
        video_bitrate: int = 600_000,
    ) -> EncodedClip:
        """Encode a moving gradient and ``voices`` tones for ``seconds``."""
        audio = tuple(_encode_opus(int(seconds * 50), 300 + 55 * i) for i in range(voices))
        seen = Counter(frame for voice in audio for frame in voice)
        return cls(
            _encode_vp8(int(seconds * FPS), width, height, video_bitrate),
            audio,
            frozenset(frame for frame, n in seen.items() if n == 1),
        )

    def voice(self, publisher: int) -> tuple[bytes, ...]:
        """The Opus frames publisher number ``publisher`` sends."""
        return self.voices[publisher % len(self.voices)]


class LatencyProbe:
    """When each marked audio payload was last handed to a sender (monotonic seconds)."""

    def __init__(self, marked: frozenset[bytes]) -> None:
        self.marked = marked
        self.sent: dict[bytes, float] = {}

    def on_send(self, payload: bytes) -> None:
        """Note the send time of ``payload`` if it is marked."""
        if payload in self.marked:
            self.sent[payload] = time.monotonic()

    def age(self, payload: bytes) -> float | None:
        """Seconds since ``payload`` was sent, or None if it is not a marked payload."""
        sent = self.sent.get(payload)
        return None if sent is None else time.monotonic() - sent


def _encode_vp8(count: int, width: int, height: int, bitrate: int) -> tuple[bytes, ...]:
    context = av.CodecContext.create("libvpx", "w")
    context.width, context.height = width, height
    context.pix_fmt = "yuv420p"
    context.time_base = fractions.Fraction(1, FPS)
    context.framerate = fractions.Fraction(FPS, 1)
    context.bit_rate = bitrate
    context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    ys, xs = np.mgrid[0:height, 0:width]
    packets: list[bytes] = []
    for i in range(count):
        rgb = np.stack(
            [(xs + 4 * i) % 256, (ys + 2 * i) % 256, ((xs + ys) // 2 + 8 * i) % 256], axis=-1
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets.extend(bytes(p) for p in context.encode(frame))
    packets.extend(bytes(p) for p in context.encode(None))
    return tuple(packets)


def _encode_opus(count: int, frequency: float) -> tuple[bytes, ...]:
    context = av.CodecContext.create("libopus", "w")
    context.sample_rate = AUDIO_CLOCK
    context.layout = "stereo"
    context.format = "s16"
    context.bit_rate = 48_000
    context.time_base = fractions.Fraction(1, AUDIO_CLOCK)
    packets: list[bytes] = []
    for i in range(count + 2):
        t = (np.arange(OPUS_FRAME_SAMPLES) + i * OPUS_FRAME_SAMPLES) / AUDIO_CLOCK
        # A rising loudness keeps every frame's input, hence its bytes, distinct.
        loudness = 4000 + 8000 * i / (count + 2)
        tone = (np.sin(2 * math.pi * frequency * t) * loudness).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * OPUS_FRAME_SAMPLES
        packets.extend(bytes(p) for p in context.encode(frame))
    return tuple(packets[:count])


class ReplayTrack(MediaStreamTrack):
    """Replays encoded frames in real time as ``av.Packet`` objects (packetized, never encoded)."""

    def __init__(
        self, kind: str, frames: Sequence[bytes], probe: LatencyProbe | None = None
    ) -> None:
        super().__init__()
        self._probe = probe
        self.kind = kind
        self._frames = frames
        self._clock = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self._step = VIDEO_CLOCK // FPS if kind == "video" else OPUS_FRAME_SAMPLES
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._index * self._step / self._clock
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        frame = self._frames[self._index % len(self._frames)]
        if self._probe is not None:
            self._probe.on_send(frame)
        packet = av.Packet(frame)
        packet.pts = self._index * self._step
        packet.time_base = fractions.Fraction(1, self._clock)
        self._index += 1
        return packet


@dataclass
class RtpCounts:
    """What one subscriber received: packets and bytes per kind, latency samples in seconds."""

    packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    ssrcs: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    measuring: bool = False
    probe: LatencyProbe | None = None

    @property
    def total_packets(self) -> int:
        """Packets of both kinds."""
        return sum(self.packets.values())


def count_rtp(receiver: RTCRtpReceiver, kind: str, counts: RtpCounts) -> None:
    """Make ``receiver`` count its RTP instead of reassembling and decoding it.

    Call in the connection's ``track`` event, before media flows. No receiver reports, NACKs or
    PLIs are sent from then on: the load stays on the SFU, not on the load generator.
    """

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        counts.packets[kind] += 1
        counts.bytes[kind] += len(packet.payload) + 12
        counts.ssrcs.add(packet.ssrc)
        if counts.measuring and counts.probe is not None and kind == "audio":
            age = counts.probe.age(packet.payload)
            if age is not None and len(counts.latencies) < LATENCY_SAMPLES_KEPT:
                counts.latencies.append(age)

    setattr(receiver, "_handle_rtp_packet", handle)  # noqa: B010 - per-instance hook


def publisher_connection(
    clip: EncodedClip,
    host_addresses: Sequence[str] = LOOPBACK,
    number: int = 0,
    probe: LatencyProbe | None = None,
    counts: RtpCounts | None = None,
) -> PeerConnection:
    """A connection (ICE on ``host_addresses`` only) sending ``clip`` (voice ``number``).

    What an SFU forwards to a publisher (the sealcall SFU sends each member everyone else's
    streams; Janus's VideoRoom sends a publisher nothing) is counted in ``counts``, never decoded.
    """
    pc = PeerConnection(host_addresses=host_addresses)
    pc.addTrack(ReplayTrack("audio", clip.voice(number), probe))
    pc.addTrack(ReplayTrack("video", clip.video))
    if counts is not None:
        _count_tracks(pc, counts)
    return pc


def subscriber_connection(
    counts: RtpCounts, host_addresses: Sequence[str] = LOOPBACK
) -> PeerConnection:
    """A connection (ICE on ``host_addresses`` only) counting every track the SFU offers it."""
    pc = PeerConnection(host_addresses=host_addresses)
    _count_tracks(pc, counts)
    return pc


def _count_tracks(pc: PeerConnection, counts: RtpCounts) -> None:
    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                count_rtp(transceiver.receiver, track.kind, counts)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank) of ``values``, or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def expected_packets_per_second(clip: EncodedClip, publishers: int) -> float:
    """Roughly what one subscriber of all ``publishers`` should receive per second."""
    from aiortc.codecs.vpx import Vp8Encoder

    video = sum(len(Vp8Encoder._packetize(frame, 0)) for frame in clip.video) / len(clip.video)
    return publishers * (video * FPS + 50)


@dataclass(frozen=True)
class LoadReport:
    """One SFU under one load: CPU per forwarded packet, latency, memory (JSON-ready)."""

    publishers: int
    subscribers: int
    seconds: float
    forwarded_packets: int
    """RTP packets the load's connections received: subscribers' plus publishers'."""
    publisher_packets: int
    """The part of ``forwarded_packets`` that publishers received (the other publishers')."""
    expected_packets: int
    """Roughly what the subscribers alone should have received."""
    sfu_cpu_seconds: float
    cpu_us_per_packet: float | None
    """CPU per forwarded packet (all of them, publishers' included)."""
    cpu_us_per_subscriber_packet: float | None
    """CPU per packet the subscribers received (publishers' packets not counted)."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    rss_idle_bytes: int
    rss_loaded_bytes: int
    rss_per_participant_bytes: float
    generator_cpu_seconds: float
    rss_samples: tuple[tuple[float, int], ...] = ()
    """(seconds into the measured stretch, SFU RSS bytes), when sampled (``rss_every``)."""


async def measure_load(
    pid: int,
    publish: Callable[[PeerConnection, str], Awaitable[int]],
    subscribe: Callable[[PeerConnection, list[int]], Awaitable[None]],
    publishers: int,
    subscribers: int,
    seconds: float,
    clip: EncodedClip,
    host_addresses: Sequence[str] = LOOPBACK,
    warmup: float = 2.0,
    rss_every: float | None = None,
    subscribe_publisher: Callable[[PeerConnection, list[int]], Awaitable[None]] | None = None,
) -> LoadReport:
    """Run the load through the SFU process ``pid`` and measure it over ``seconds``.

    ``publish`` offers a publisher's connection and returns its feed id; ``subscribe`` makes a
    subscriber's connection receive every feed. CPU is the SFU process's user+system time over
    the measured stretch divided by the packets forwarded in it: all that subscribers and
    publishers received (an SFU that also sends publishers each other's streams does that work
    too), and, apart, by the subscribers' packets alone. An SFU that does not send publishers
    each other's streams by itself (Janus's VideoRoom: there each member publishes on one
    connection and subscribes to the others on a second one) gets ``subscribe_publisher``: each
    publisher then also has a connection that receives the other publishers' feeds, so that both
    kinds of SFU forward the same packets. With ``rss_every`` the SFU's RSS is
    also sampled that often over the stretch (``LoadReport.rss_samples``, see :func:`rss_trend`).
    """
    rss_idle = process_rss_bytes(pid)
    connections: list[PeerConnection] = []
    probe = LatencyProbe(clip.marked)
    counts = [RtpCounts(probe=probe) for _ in range(subscribers)]
    received = [RtpCounts() for _ in range(publishers)]
    try:
        feeds = []
        for i in range(publishers):
            pc = publisher_connection(clip, host_addresses, i, probe, received[i])
            connections.append(pc)
            feeds.append(await publish(pc, f"publisher-{i}"))
        if subscribe_publisher is not None and publishers > 1:
            for i in range(publishers):
                pc = subscriber_connection(received[i], host_addresses)
                connections.append(pc)
                await subscribe_publisher(pc, feeds[:i] + feeds[i + 1 :])
        for i in range(subscribers):
            pc = subscriber_connection(counts[i], host_addresses)
            connections.append(pc)
            await subscribe(pc, feeds)
        await asyncio.sleep(warmup)
        start_packets = sum(c.total_packets for c in counts)
        start_publishers = sum(c.total_packets for c in received)
        for c in counts:
            c.measuring = True
        start_cpu = process_cpu_seconds(pid)
        start_own = time.process_time()
        samples = await _sample_rss(pid, seconds, rss_every)
        cpu = process_cpu_seconds(pid) - start_cpu
        own = time.process_time() - start_own
        to_subscribers = sum(c.total_packets for c in counts) - start_packets
        to_publishers = sum(c.total_packets for c in received) - start_publishers
        forwarded = to_subscribers + to_publishers
        for c in counts:
            c.measuring = False
        rss_loaded = process_rss_bytes(pid)
    finally:
        await asyncio.gather(*(pc.close() for pc in connections), return_exceptions=True)
    latencies = [x for c in counts for x in c.latencies]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return LoadReport(
        publishers=publishers,
        subscribers=subscribers,
        seconds=seconds,
        forwarded_packets=forwarded,
        publisher_packets=to_publishers,
        expected_packets=round(
            expected_packets_per_second(clip, publishers) * subscribers * seconds
        ),
        sfu_cpu_seconds=round(cpu, 3),
        cpu_us_per_packet=round(cpu / forwarded * 1e6, 2) if forwarded else None,
        cpu_us_per_subscriber_packet=(
            round(cpu / to_subscribers * 1e6, 2) if to_subscribers else None
        ),
        latency_p50_ms=round(p50 * 1e3, 3) if p50 is not None else None,
        latency_p99_ms=round(p99 * 1e3, 3) if p99 is not None else None,
        rss_idle_bytes=rss_idle,
        rss_loaded_bytes=rss_loaded,
        rss_per_participant_bytes=round((rss_loaded - rss_idle) / (publishers + subscribers)),
        generator_cpu_seconds=round(own, 3),
        rss_samples=samples,
    )


async def _sample_rss(
    pid: int, seconds: float, every: float | None
) -> tuple[tuple[float, int], ...]:
    """Wait ``seconds``; meanwhile, if ``every`` is given, sample ``pid``'s RSS that often."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    if every is None:
        await asyncio.sleep(seconds)
        return ()
    samples = [(0.0, process_rss_bytes(pid))]
    n = 1
    while True:
        due = min(n * every, seconds)
        await asyncio.sleep(max(0.0, start + due - loop.time()))
        samples.append((round(loop.time() - start, 1), process_rss_bytes(pid)))
        if due >= seconds:
            return tuple(samples)
        n += 1


@dataclass(frozen=True)
class RssTrend:
    """Whether memory stayed flat after the first ``after`` seconds (JSON-ready).

    ``slope_bytes_per_minute`` is the least-squares slope of the samples taken from ``after`` on;
    ``spread_bytes`` their max - min. Flat: the fitted growth over that stretch is at most
    ``FLAT_GROWTH`` of the RSS at its start, and so is the spread (allocator arenas come and go).
    """

    after_seconds: float
    samples: int
    rss_at_after_bytes: int
    rss_last_bytes: int
    slope_bytes_per_minute: float
    spread_bytes: int
    flat: bool


FLAT_GROWTH = 0.05


def rss_trend(samples: Sequence[tuple[float, int]], after: float = 60.0) -> RssTrend | None:
    """The trend of ``samples`` from ``after`` seconds on; None with fewer than two there."""
    late = [(t, rss) for t, rss in samples if t >= after]
    if len(late) < 2:
        return None
    ts = [t for t, _ in late]
    rs = [float(r) for _, r in late]
    mean_t, mean_r = sum(ts) / len(ts), sum(rs) / len(rs)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (r - mean_r) for t, r in zip(ts, rs, strict=True)) / var
    spread = int(max(rs) - min(rs))
    base = late[0][1]
    growth = slope * (ts[-1] - ts[0])
    return RssTrend(
        after_seconds=after,
        samples=len(late),
        rss_at_after_bytes=base,
        rss_last_bytes=late[-1][1],
        slope_bytes_per_minute=round(slope * 60, 1),
        spread_bytes=spread,
        flat=growth <= FLAT_GROWTH * base and spread <= FLAT_GROWTH * base,
    )


def parse_loads(text: str) -> list[tuple[int, int]]:
    """``"2x4,4x8"`` as [(2, 4), (4, 8)] (publishers, subscribers); ValueError otherwise."""
    loads: list[tuple[int, int]] = []
    for item in text.split(","):
        publishers, _, subscribers = item.strip().partition("x")
        try:
            load = (int(publishers), int(subscribers))
        except ValueError:
            raise ValueError(f"not a load (PxS, such as 2x4): {item!r}") from None
        if min(load) < 1:
            raise ValueError(f"a load needs at least one publisher and one subscriber: {item!r}")
        loads.append(load)
    return loads


def format_load_report(name: str, report: dict[str, Any]) -> str:
    """One SFU's :class:`LoadReport` (as a dict) on one line."""
    return (
        f"{name} {report['publishers']}x{report['subscribers']}:"
        f" {report['cpu_us_per_packet']} µs/packet ({report['forwarded_packets']} packets,"
        f" {report['publisher_packets']} of them to publishers; per packet to subscribers"
        f" {report['cpu_us_per_subscriber_packet']} µs, {report['expected_packets']} expected),"
        f" latency p50 {report['latency_p50_ms']} ms"
        f" p99 {report['latency_p99_ms']} ms, RSS/participant"
        f" {report['rss_per_participant_bytes'] / 1e6:.2f} MB"
    )
