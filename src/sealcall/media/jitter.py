"""Jitter buffers that give up on a lost packet in bounded time, conceal lost audio and say so.

aiortc 1.16's receivers reassemble frames in ``aiortc.jitterbuffer.JitterBuffer``, which emits a
frame only when the packets from its origin on are contiguous. A packet that never comes (audio
has no retransmission) blocks everything behind it until the buffer overflows, and the overflow
then *discards* the complete frames queued in front of the hole instead of playing them. Audio
uses 16 slots and a prefetch of 4: each lost packet costs up to 15 good frames, so at 20 % loss
only runs of five intact packets get through, about 0.8**5 = 33 % of frames (28 % was measured).
Video uses 512 slots: an unrecoverable packet freezes the picture until 512 more packets came.

:class:`FrameBuffer` is the sans-I/O replacement (packets and ``now`` in, frames out): it emits
every complete frame in order, waits for a missing packet at most ``max_wait`` seconds (reordering;
for video also NACK retransmission), then gives up on it. Audio frames lost that way are replaced
by concealment frames (a one-byte Opus packet: the decoder's packet-loss concealment for one frame
of the same duration, RFC 6716 section 3.2.1), so playback time does not shrink. For video the
broken frame is dropped, and the next emitted frame is marked ``after_gap``: the receiver's
:class:`~sealcall.media.crypto_taps.ReceiverTap` then lets no delta frame reach the decoder
until a key frame, and asks for one. :func:`install_jitter_buffer` puts it into one aiortc
receiver (no module of aiortc is patched) and counts NACKs, retransmissions and PLIs there.
It also replaces the receiver's NACK generator with a :class:`NackScheduler`, which does not
NACK a packet that is only overtaken by later ones (reordering) as aiortc's does.
"""

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.codecs import is_rtx
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket

from .remote_tracks import BoundedRtpReceiver

# How long a missing packet is waited for. Audio is never retransmitted: only reordering is
# waited for (a path with 100 +- 30 ms delay reorders by up to 60 ms). Video waits for NACK
# retransmissions: about four rounds on a path with a 200 ms round trip (at 20 % loss each way a
# round fails about a third of the time), but never for a packet the sender no longer keeps
# (aiortc's NACKs and its sender's history cover the last RTP_HISTORY_SIZE packets).
AUDIO_MAX_WAIT = 0.08
VIDEO_MAX_WAIT = 1.0
AUDIO_CAPACITY = 64  # packets held (1.3 s of 20 ms audio)
VIDEO_CAPACITY = 512  # as aiortc's
MAX_CONCEALED = 50  # concealment frames for one gap (1 s of 20 ms frames); longer gaps skip ahead
# A packet further back than this may be a new start of the stream (a new sender, a restart);
# it restarts the buffer only when the next packet follows it (RFC 3550 A.1's probation), so a
# stray old packet, such as a retransmission of one that already came late, is dropped as late.
MAX_MISORDER = 100
# aiortc NACKs a video packet at the first gap after it, so every packet overtaken by a later
# one (reordering) was NACKed and sent twice. A missing packet is NACKed once it has been missing
# longer than packets have recently come late (at most NACK_REORDER_MAX; 100 +- 30 ms delay
# reorders by up to 60 ms), and at once on a path that does not reorder. Unanswered NACKs are
# repeated (a NACK or its retransmission lost too) often enough that several rounds fit in
# VIDEO_MAX_WAIT even on a 200 ms round trip (at 20 % loss each way a round fails a third of the
# time): aiortc repeated every missing packet at every new gap, which kept 20 % loss repairable.
NACK_REORDER_MAX = 0.1
NACK_REORDER_MARGIN = 0.02
NACK_REORDER_MEMORY = 10.0  # seconds a late packet counts for the wait
NACK_RETRY_INTERVAL = 0.12
NACK_TRIES = 8


class BufferedFrame(JitterFrame):
    """A reassembled frame; ``after_gap``: frames before it were lost; ``concealed``: it stands
    in for a lost audio frame (its data is made here, never received)."""

    def __init__(
        self, data: bytes, timestamp: int, *, after_gap: bool = False, concealed: bool = False
    ) -> None:
        super().__init__(data, timestamp)
        self.after_gap = after_gap
        self.concealed = concealed


def concealment_packet(toc: int) -> bytes:
    """A one-frame Opus packet of zero length with the configuration of TOC byte ``toc``: the
    decoder conceals one frame of that duration (RFC 6716 section 3.2.1)."""
    return bytes([toc & 0xFC])


@dataclass
class LossCounters:
    """What loss did to one receiver: packets late or given up on, frames lost or concealed,
    and the feedback sent (NACK, PLI) and retransmissions received."""

    packets_late: int = 0  # arrived after their frame was played or given up on
    packets_given_up: int = 0
    frames_lost: int = 0  # given up on (audio: each lost frame; video: each gap)
    frames_concealed: int = 0
    nacks_sent: int = 0  # RTCP NACK packets
    packets_nacked: int = 0  # sequence numbers they named
    retransmissions_received: int = 0  # RTX packets
    plis_sent: int = 0


@dataclass
class _Packet:
    timestamp: int
    marker: bool
    data: bytes
    arrival: float


class FrameBuffer:
    """Reassembles the frames of one RTP stream (sans-I/O: ``add(…, now)`` returns frames).

    Audio: each packet is a frame. Video: a frame is the contiguous packets of one timestamp up
    to the one with the marker bit (or up to a packet of the next timestamp).
    """

    def __init__(
        self, kind: str, *, capacity: int | None = None, max_wait: float | None = None
    ) -> None:
        self.kind = kind
        self._audio = kind == "audio"
        self.capacity = capacity or (AUDIO_CAPACITY if self._audio else VIDEO_CAPACITY)
        self.max_wait = (
            (AUDIO_MAX_WAIT if self._audio else VIDEO_MAX_WAIT) if max_wait is None else max_wait
        )
        self.counters = LossCounters()
        self._packets: dict[int, _Packet] = {}
        self._next: int | None = None  # sequence number of the next packet to emit
        self._newest: int | None = None  # the highest sequence number received
        self._synced = True  # _next starts a frame (false after a video gap until a marker)
        self._gap = False
        self._last_timestamp: int | None = None
        self._toc: int | None = None  # first byte of the last audio frame (Opus TOC, clear)
        self._probation: int | None = None  # restart there: it follows a packet far back

    def add(
        self,
        seq: int,
        timestamp: int,
        marker: bool,
        data: bytes,
        now: float,
        *,
        retransmission: bool = False,
    ) -> list[BufferedFrame]:
        """Take one packet; return the frames it completed (and those given up waiting for).
        A ``retransmission`` (RTX) is an old packet by nature: it never restarts the buffer."""
        if self._next is None:
            self._next = seq
        ahead = (seq - self._next) & 0xFFFF
        if ahead >= 0x8000:
            far = 0x10000 - ahead >= MAX_MISORDER and not retransmission
            if not far or seq != self._probation:
                self._probation = (seq + 1) & 0xFFFF if far else None
                self.counters.packets_late += 1
                return []
            self._restart(seq)  # the stream jumped back: a new sender or a restart
        elif ahead >= self.capacity:
            self._skip_to((seq - self.capacity + 1) & 0xFFFF)
        if seq in self._packets:
            return []  # a duplicate
        self._packets[seq] = _Packet(timestamp, marker, data, now)
        if self._newest is None or self._after(seq, self._newest):
            self._newest = seq
        return self._drain(now)

    def _restart(self, seq: int) -> None:
        self.counters.packets_given_up += len(self._packets)
        self._packets.clear()
        self._next = self._newest = seq
        self._gap = True
        self._synced = self._audio
        self._probation = None

    def _skip_to(self, seq: int) -> None:
        """Give up on everything before ``seq`` (the buffer is full)."""
        assert self._next is not None
        # Over the packets held, not the sequence numbers skipped: a hostile sender jumping by
        # half the sequence space per packet must not cost 32k steps a packet.
        start, distance = self._next, (seq - self._next) & 0xFFFF
        skipped = [s for s in self._packets if (s - start) & 0xFFFF < distance]
        for s in skipped:
            del self._packets[s]
        self.counters.packets_given_up += len(skipped)
        missing = distance - len(skipped)
        self._next = seq
        self.counters.frames_lost += missing if self._audio else 1
        self._gap = True
        self._synced = self._audio

    def _drain(self, now: float) -> list[BufferedFrame]:
        out: list[BufferedFrame] = []
        while self._packets:
            if not self._synced and not self._resync():
                break
            frame = self._take_frame()
            if frame is not None:
                out.append(frame)
                continue
            hole = self._first_hole()
            if hole is None:
                break  # the frame at the head is still arriving: nothing is missing yet
            noticed = min(p.arrival for s, p in self._packets.items() if self._after(s, hole))
            if now - noticed < self.max_wait and not self._beyond_retransmission(hole):
                break
            out.extend(self._give_up())
        return out

    def _beyond_retransmission(self, hole: int) -> bool:
        """True when a video packet is too old to be NACKed or retransmitted any more."""
        assert self._newest is not None
        return not self._audio and (self._newest - hole) & 0xFFFF >= RTP_HISTORY_SIZE

    def _after(self, seq: int, other: int) -> bool:
        return 0 < (seq - other) & 0xFFFF < 0x8000

    def _first_hole(self) -> int | None:
        """The first missing sequence number before the newest packet held, if any."""
        assert self._next is not None
        seq = self._next
        for _ in range(len(self._packets) + 1):
            if seq not in self._packets:
                return seq if any(self._after(s, seq) for s in self._packets) else None
            seq = (seq + 1) & 0xFFFF
        return None

    def _take_frame(self) -> BufferedFrame | None:
        """The complete frame at the head, removed from the buffer, or None."""
        assert self._next is not None
        first = self._packets.get(self._next)
        if first is None:
            return None
        seqs = [self._next]
        if not self._audio:
            last = first
            while not last.marker:
                following = self._packets.get((seqs[-1] + 1) & 0xFFFF)
                if following is None:
                    return None
                if following.timestamp != first.timestamp:
                    break  # a sender that sets no marker bit: the next frame has begun
                seqs.append((seqs[-1] + 1) & 0xFFFF)
                last = following
        data = b"".join(self._packets.pop(s).data for s in seqs)
        self._next = (seqs[-1] + 1) & 0xFFFF
        frame = BufferedFrame(data, first.timestamp, after_gap=self._gap)
        self._gap = False
        self._last_timestamp = first.timestamp
        if self._audio and data:
            self._toc = data[0]
        return frame

    def _give_up(self) -> list[BufferedFrame]:
        """Give up on the packet missing at the head: conceal it (audio) or drop its frame."""
        assert self._next is not None
        self._gap = True
        if not self._audio:
            self.counters.frames_lost += 1
            self._synced = False  # the next frame starts after the next marker bit
            return []
        missing = 0
        while self._next not in self._packets:
            missing += 1
            self._next = (self._next + 1) & 0xFFFF
        self.counters.frames_lost += missing
        following = self._packets[self._next].timestamp
        if self._toc is None or self._last_timestamp is None or missing > MAX_CONCEALED:
            return []  # nothing to imitate yet, or a long outage: skip ahead in time
        step = ((following - self._last_timestamp) & 0xFFFFFFFF) // (missing + 1)
        packet = concealment_packet(self._toc)
        frames = []
        for k in range(1, missing + 1):
            timestamp = (self._last_timestamp + k * step) & 0xFFFFFFFF
            frames.append(BufferedFrame(packet, timestamp, after_gap=True, concealed=True))
        self.counters.frames_concealed += missing
        self._last_timestamp = frames[-1].timestamp
        return frames

    def _resync(self) -> bool:
        """Drop packets up to the next marker bit (the end of a frame); True once synced."""
        assert self._next is not None
        for seq in sorted(self._packets, key=lambda s: (s - self._next) & 0xFFFF):  # type: ignore[operator]
            if self._packets[seq].marker:
                while True:
                    if self._packets.pop(self._next, None) is not None:
                        self.counters.packets_given_up += 1
                    done = self._next == seq
                    self._next = (self._next + 1) & 0xFFFF
                    if done:
                        break
                self._synced = True
                return True
        return False


class NackScheduler:
    """Decides which missing video packets to NACK (sans-I/O: ``add(seq, now)`` returns them).

    A sequence number is missing once a later one arrived. It is NACKed when it has been missing
    longer than any packet came late in the last :data:`NACK_REORDER_MEMORY` seconds (plus
    :data:`NACK_REORDER_MARGIN`, at most :data:`NACK_REORDER_MAX`): a reordered packet arrives
    before that and is never NACKed, while on a path that keeps order loss is NACKed at once.
    Unanswered, it is NACKed again every :data:`NACK_RETRY_INTERVAL` up to :data:`NACK_TRIES`
    times, and forgotten once the sender no longer keeps it (``RTP_HISTORY_SIZE`` packets back).
    Decisions are taken when packets arrive (video packets come many times a second).
    """

    def __init__(self) -> None:
        self._newest: int | None = None
        # sequence number -> (found missing, last NACKed or None, NACKs sent for it)
        self._missing: dict[int, tuple[float, float | None, int]] = {}
        self._lateness: deque[tuple[float, float]] = deque(maxlen=64)  # (arrival, how late)

    @property
    def reorder_wait(self) -> float:
        """How long a missing packet is waited for before its first NACK."""
        if not self._lateness:
            return 0.0
        return min(NACK_REORDER_MAX, max(late for _, late in self._lateness) + NACK_REORDER_MARGIN)

    def add(self, seq: int, now: float, *, retransmission: bool = False) -> list[int]:
        """Note the arrival of packet ``seq``; return the sequence numbers to NACK now. A
        ``retransmission`` (RTX) answers a NACK: it says nothing about reordering."""
        if self._newest is None:
            self._newest = seq
            return []
        ahead = (seq - self._newest) & 0xFFFF
        if ahead == 0 or ahead >= 0x8000:
            found = self._missing.pop(seq, None)
            if found is not None and not retransmission and now - found[0] <= NACK_REORDER_MAX:
                self._lateness.append((now, now - found[0]))  # overtaken: reordering
        elif ahead >= RTP_HISTORY_SIZE:
            self._missing.clear()  # a jump: what lay before is beyond the sender's history
            self._newest = seq
        else:
            for k in range(1, ahead):
                self._missing[(self._newest + k) & 0xFFFF] = (now, None, 0)
            self._newest = seq
        while self._lateness and now - self._lateness[0][0] > NACK_REORDER_MEMORY:
            self._lateness.popleft()
        wait = self.reorder_wait
        due = []
        for missing, (since, nacked, sent) in list(self._missing.items()):
            if (self._newest - missing) & 0xFFFF >= RTP_HISTORY_SIZE or sent >= NACK_TRIES:
                del self._missing[missing]
            elif (nacked is None and now - since >= wait) or (
                nacked is not None and now - nacked >= NACK_RETRY_INTERVAL
            ):
                self._missing[missing] = (since, now, sent + 1)
                due.append(missing)
        return due


class _ReceiverNackGenerator:
    """Stands in for an aiortc video receiver's ``NackGenerator``: aiortc NACKs what
    ``missing`` holds whenever ``add`` returns True, here the packets a :class:`NackScheduler`
    finds due."""

    def __init__(self, receiver: RTCRtpReceiver, clock: Callable[[], float]) -> None:
        self.scheduler = NackScheduler()
        self.missing: list[int] = []
        self._receiver = receiver
        self._clock = clock

    def add(self, packet: RtpPacket) -> bool:
        rtx = getattr(self._receiver, "_sealcall_rtx", False)
        self.missing = self.scheduler.add(packet.sequence_number, self._clock(), retransmission=rtx)
        return bool(self.missing)


class _ReceiverJitterBuffer:
    """Stands in for an aiortc receiver's jitter buffer: frames go to its decoder queue here,
    several at once when a gap is given up (aiortc's buffer hands back at most one)."""

    def __init__(self, receiver: RTCRtpReceiver, kind: str, clock: Callable[[], float]) -> None:
        self.buffer = FrameBuffer(kind)
        self.capacity = self.buffer.capacity
        self._receiver = receiver
        self._clock = clock
        self._mapper = TimestampMapper()

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        data: bytes = getattr(packet, "_data", b"")
        frames = self.buffer.add(
            packet.sequence_number,
            packet.timestamp,
            bool(packet.marker),
            data,
            self._clock(),
            retransmission=getattr(self._receiver, "_sealcall_rtx", False),
        )
        receiver = self._receiver
        codec = getattr(receiver, "_RTCRtpReceiver__codecs").get(packet.payload_type)  # noqa: B009
        if frames and codec is not None and getattr(receiver, "_RTCRtpReceiver__decoder_thread"):  # noqa: B009
            decoder_queue = getattr(receiver, "_RTCRtpReceiver__decoder_queue")  # noqa: B009
            for frame in frames:
                frame.timestamp = self._mapper.map(frame.timestamp)
                decoder_queue.put((codec, frame))
        # Key frames are asked for where frames are decrypted (ReceiverTap), not here.
        return False, None


class LossAwareRtpReceiver(BoundedRtpReceiver):
    """An RTP receiver with a :class:`FrameBuffer` that counts the loss feedback it sends
    (:class:`LossCounters`); installed per receiver by changing its class."""

    _sealcall_loss: LossCounters
    _sealcall_rtx: bool = False  # the packet being handled came as a retransmission

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        codec = getattr(self, "_RTCRtpReceiver__codecs").get(packet.payload_type)  # noqa: B009
        # aiortc unwraps an RTX packet into its original: the NACK generator and the jitter
        # buffer learn it was a retransmission here (aiortc handles one packet at a time).
        self._sealcall_rtx = codec is not None and is_rtx(codec)
        if self._sealcall_rtx and self._enabled:
            self._sealcall_loss.retransmissions_received += 1
        await super()._handle_rtp_packet(packet, arrival_time_ms)

    async def _send_rtcp_nack(self, media_ssrc: int, lost: list[int]) -> None:
        if getattr(self, "_RTCRtpReceiver__rtcp_ssrc") is not None:  # noqa: B009 - aiortc's check
            self._sealcall_loss.nacks_sent += 1
            self._sealcall_loss.packets_nacked += len(lost)
        await super()._send_rtcp_nack(media_ssrc, lost)

    async def _send_rtcp_pli(self, media_ssrc: int) -> None:
        if getattr(self, "_RTCRtpReceiver__rtcp_ssrc") is not None:  # noqa: B009
            self._sealcall_loss.plis_sent += 1
        await super()._send_rtcp_pli(media_ssrc)


def install_jitter_buffer(
    receiver: RTCRtpReceiver, clock: Callable[[], float] = time.monotonic
) -> LossCounters:
    """Give ``receiver`` a :class:`FrameBuffer` (before it starts); return its counters."""
    kind: str = getattr(receiver, "_RTCRtpReceiver__kind")  # noqa: B009
    jitter = _ReceiverJitterBuffer(receiver, kind, clock)
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", jitter)  # noqa: B010
    if getattr(receiver, "_RTCRtpReceiver__nack_generator", None) is not None:  # video
        nacks = _ReceiverNackGenerator(receiver, clock)
        setattr(receiver, "_RTCRtpReceiver__nack_generator", nacks)  # noqa: B010
    counters = jitter.buffer.counters
    receiver.__class__ = LossAwareRtpReceiver
    receiver._sealcall_loss = counters  # type: ignore[attr-defined]
    return counters


def loss_counters(receiver: RTCRtpReceiver) -> LossCounters:
    """The loss counters of one of our receivers (zeros for a receiver without them)."""
    counters: Any = getattr(receiver, "_sealcall_loss", None)
    return counters if isinstance(counters, LossCounters) else LossCounters()
