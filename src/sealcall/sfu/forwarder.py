"""One room's forwarding, sans-I/O: RTP and RTCP in (with ``now``), packets to send out.

Every participant publishes up to three source streams (audio, a thumbnail and a full-resolution
video layer, each its own SSRC) and subscribes to everyone else: the audio of each member and the
video of each member at one layer. Each such outgoing stream has its own ``StreamRewriter`` (SSRC,
sequence numbers, timestamps, picture ids stay seamless across layer switches) and its own
``PacketCache`` of the packets as sent, so a NACK can only ever return what that subscriber was
sent. Payloads are SFrame ciphertext and are never looked at beyond the clear VP8 prefix.

Layer choice (``subscriptions``): thumbnails of everyone by default; the full layer of those a
subscriber asked for while its bandwidth estimate (REMB) allows it. Key-frame requests towards a
publisher (PLI) go out at most once a second per stream. REMB towards a publisher clamps its full
layer to the lowest estimate among the subscribers that want it. Who is speaking comes from the
RFC 6464 audio level through ``group.speaking.SpeakingDetector``.

Transport bindings call :meth:`Forwarder.packet`, :meth:`Forwarder.rtcp`, :meth:`Forwarder.tick`
(at :meth:`Forwarder.next_deadline`) and send the ``SendRtp``/``SendRtcp`` they get back.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field

from ..group.speaking import SpeakingChanged, SpeakingDetector
from .rewriter import DROPPED_WAITING_KEYFRAME, FORWARDED
from .rtcp import Fir, Nack, Pli, Remb, RtcpError, SenderReport, build_rtcp, parse_rtcp
from .rtp import RtpError, RtpView, remap_extension_ids, rewrite_header
from .subscriptions import (
    FULL,
    QUALITIES,
    Out,
    Participant,
    ParticipantConfig,
    Source,
    allocate,
    forget_backoff,
    remb_target,
)
from .vp8 import Vp8Descriptor, Vp8Error

__all__ = [
    "Forwarder",
    "ForwarderStats",
    "LayerChanged",
    "Output",
    "ParticipantConfig",
    "RoomFullError",
    "SendRtcp",
    "SendRtp",
    "SpeakingChanged",
]

log = logging.getLogger(__name__)

MAX_PARTICIPANTS = 32
MAX_RTP_SIZE = 1500  # bigger than any MTU-sized SRTP packet after decryption
MAX_RTCP_SIZE = 1500
MAX_PACKETS_PER_SECOND = 2000  # per source stream; a 4K stream sends well under this
MAX_NACKED_PER_PACKET = 64
MAX_UPSTREAM_GAP = 64  # a bigger jump in a publisher's numbers is a restart, not a loss
MAX_RETRANSMISSIONS_PER_SECOND = 400  # per subscriber
KEYFRAME_INTERVAL = 1.0  # PLI at most this often per source stream
REMB_INTERVAL = 0.5
REMB_CHANGE = 0.10
REALLOCATE_INTERVAL = 1.0  # layers are also re-chosen this often (measured rates, hold ends)

# Drop reasons (the keys of ForwarderStats.drops).
UNKNOWN_PARTICIPANT = "unknown_participant"
TOO_LARGE = "too_large"
MALFORMED_RTP = "malformed_rtp"
MALFORMED_VP8 = "malformed_vp8"
MALFORMED_RTCP = "malformed_rtcp"
UNKNOWN_SSRC = "unknown_ssrc"
PADDING = "padding"
FLOOD = "flood"
TOO_OLD = "too_old"
NACK_MISS = "nack_miss"
NACK_FLOOD = "nack_flood"
MALFORMED_RTX = "malformed_rtx"
BAD_SUBSCRIPTION = "bad_subscription"


class RoomFullError(Exception):
    """A join beyond the room's participant limit."""


@dataclass(frozen=True, slots=True)
class SendRtp:
    """Send ``data`` (an RTP packet; do not mutate it, the NACK cache keeps it) to a participant."""

    participant: str
    data: bytes | bytearray


@dataclass(frozen=True, slots=True)
class SendRtcp:
    """Send ``data`` (a compound RTCP packet) to a participant."""

    participant: str
    data: bytes


@dataclass(frozen=True, slots=True)
class LayerChanged:
    """``subscriber`` now receives ``publisher``'s video at ``quality`` (``thumbnail``/``full``).

    Emitted with the first packet of the new layer (its key frame), not when the switch is chosen.
    """

    subscriber: str
    publisher: str
    quality: str


Output = SendRtp | SendRtcp | SpeakingChanged | LayerChanged


@dataclass(slots=True)
class ForwarderStats:
    """Counters for metrics; ``drops`` by reason (the module's drop-reason constants)."""

    forwarded_packets: int = 0
    forwarded_bytes: int = 0
    layer_switches: int = 0
    keyframe_requests: int = 0
    nacks_served: int = 0
    nacks_sent: int = 0
    """NACKs sent to publishers for packets lost on their way to the SFU."""
    rembs_sent: int = 0
    drops: dict[str, int] = field(default_factory=dict)


class Forwarder:
    """The forwarding core of one room (see the module docstring)."""

    def __init__(
        self,
        *,
        max_participants: int = MAX_PARTICIPANTS,
        seed: int | None = None,
        speaking: SpeakingDetector | None = None,
    ) -> None:
        """``seed`` makes outgoing SSRCs and initial numbers reproducible (tests)."""
        if max_participants < 1:
            raise ValueError("max_participants must be at least 1")
        self.max_participants = max_participants
        self.stats = ForwarderStats()
        # Not secret: SSRCs and initial numbers only need to differ, and tests need them fixed.
        self._rng = random.Random(seed)  # noqa: S311
        self._participants: dict[str, Participant] = {}
        self._speaking = speaking or SpeakingDetector(max_sources=max_participants)
        self._view = RtpView()
        self._vp8 = Vp8Descriptor()
        self._allocated_at = -math.inf

    # Membership

    def join(self, participant: str, config: ParticipantConfig, now: float) -> list[Output]:
        """Add a participant: it receives everyone's audio and thumbnail, everyone receives its."""
        if participant in self._participants:
            raise ValueError("participant already joined")
        if len(self._participants) >= self.max_participants:
            raise RoomFullError(f"room is full ({self.max_participants} participants)")
        new = Participant(participant, config, self._rng.getrandbits(32) or 1)
        out: list[Output] = []
        for other in self._participants.values():
            self._connect(other, new)
            self._connect(new, other)
        self._participants[participant] = new
        for sub in self._participants.values():
            self._allocate(sub, now, out)
        return out

    def leave(self, participant: str, now: float) -> list[Output]:
        """Remove a participant: it gets no further packet, nobody gets its streams."""
        gone = self._participants.pop(participant, None)
        if gone is None:
            return []
        out: list[Output] = list(self._speaking.remove(participant, now))
        for other in self._participants.values():
            o = other.receiving.pop(participant, None)
            if o is not None:
                for ro in o:
                    other.outs_by_ssrc.pop(ro.rw.out_ssrc, None)
            for src in other.sources.values():
                src.outs[:] = [x for x in src.outs if x.subscriber != participant]
        for pub in self._participants.values():
            self._update_remb(pub, now, out)
        return out

    def subscribe(self, subscriber: str, publisher: str, quality: str, now: float) -> list[Output]:
        """``subscriber`` wants ``publisher``'s video at ``quality`` (thumbnail, full or none).

        Remote input (the data channel): unknown names or qualities are dropped and counted.
        """
        sub = self._participants.get(subscriber)
        outs = sub.receiving.get(publisher) if sub is not None else None
        video = [o for o in outs if o.video] if outs else []
        if not video or quality not in QUALITIES:
            self._drop(BAD_SUBSCRIPTION)
            return []
        o = video[0]
        if quality == "full" and o.quality != "full":
            forget_backoff(o)  # an explicit ask may go up at once
        o.quality = quality
        out: list[Output] = []
        assert sub is not None
        self._allocate(sub, now, out)
        self._update_remb(self._participants[publisher], now, out)
        return out

    # Inputs

    def packet(self, participant: str, data: bytes, now: float) -> list[Output]:
        """An RTP packet from ``participant`` (SRTP already removed): forward it to subscribers."""
        p = self._participants.get(participant)
        if p is None:
            return self._drop(UNKNOWN_PARTICIPANT)
        if len(data) > MAX_RTP_SIZE:
            return self._drop(TOO_LARGE)
        view = self._view
        try:
            view.load(data)
        except RtpError:
            return self._drop(MALFORMED_RTP)
        src = p.sources.get(view.ssrc)
        if src is None:
            src = p.rtx_sources.get(view.ssrc)
            if src is None:
                return self._drop(UNKNOWN_SSRC)
            unwrapped = self._unwrap_rtx(view, src, p.config.video_payload_type)
            if unwrapped is None:
                return []
            data = unwrapped
            view.load(data)
        if not src.count(len(data), now, MAX_PACKETS_PER_SECOND):
            return self._drop(FLOOD)
        out: list[Output] = []
        if src.video:
            # Loss between the publisher and the SFU: NACK it once (RFC 4585); the answer comes
            # back as RTX or a plain retransmission and is forwarded like any late packet.
            seq = view.sequence_number
            gap = (seq - src.high_seq) & 0xFFFF if src.high_seq >= 0 else 1
            if gap < 0x8000:
                if 1 < gap <= MAX_UPSTREAM_GAP:
                    lost = tuple((src.high_seq + i) & 0xFFFF for i in range(1, gap))
                    self.stats.nacks_sent += 1
                    nack = Nack(p.rtcp_ssrc, src.ssrc, lost)
                    out.append(SendRtcp(participant, build_rtcp([nack])))
                src.high_seq = seq
        keyframe = False
        vp8: Vp8Descriptor | None = None
        if src.video:
            if view.payload_end <= view.payload_offset:
                # Padding only (bandwidth probes): no descriptor, nothing for subscribers.
                return self._drop(PADDING)
            try:
                vp8 = self._vp8.load(data, view.payload_offset, view.payload_end)
            except Vp8Error:
                return self._drop(MALFORMED_VP8)
            keyframe = vp8.is_keyframe
        elif p.config.audio_level_id is not None:
            try:
                level = view.audio_level(p.config.audio_level_id)
            except RtpError:
                level = -1
            if level >= 0:
                out.extend(self._speaking.level(participant, -float(level & 0x7F), now))
        ssrc = view.ssrc
        stats = self.stats
        remapped: dict[bytes, bytes] | None = None
        append = out.append
        forwarded = 0
        for o in src.outs:
            rw = o.rw
            previous = rw.current
            if ssrc != previous and ssrc != rw.target:
                continue
            buf = bytearray(data)
            table = o.ext_table
            if table is not None and view.ext_end > view.ext_start:
                # Extension ids are per connection: once per packet and distinct mapping.
                if remapped is None:
                    remapped = {}
                block = remapped.get(table)
                if block is None:
                    block = remapped[table] = remap_extension_ids(view, table)
                buf[view.ext_start : view.ext_end] = block
            result = rw.rewrite(view, buf, now, keyframe, vp8)
            if result == FORWARDED:
                if ssrc != previous:
                    if previous is not None:
                        stats.layer_switches += 1
                    if src.video:
                        quality = "full" if src.layer == FULL else "thumbnail"
                        out.append(LayerChanged(o.subscriber, participant, quality))
                o.cache.insert(rw.out_sequence, buf)
                append(SendRtp(o.subscriber, buf))
                forwarded += 1
            elif result == DROPPED_WAITING_KEYFRAME:
                self._request_keyframe(src, now, out)
            else:
                self._drop(TOO_OLD)
        stats.forwarded_packets += forwarded
        stats.forwarded_bytes += forwarded * len(data)
        return out

    def rtcp(self, participant: str, data: bytes, now: float) -> list[Output]:
        """A compound RTCP packet from ``participant``: feedback as a subscriber, SR as a sender."""
        p = self._participants.get(participant)
        if p is None:
            return self._drop(UNKNOWN_PARTICIPANT)
        if len(data) > MAX_RTCP_SIZE:
            return self._drop(TOO_LARGE)
        try:
            parsed = parse_rtcp(data)
        except RtcpError:
            return self._drop(MALFORMED_RTCP)
        out: list[Output] = []
        for packet in parsed.packets:
            if isinstance(packet, Nack):
                self._nack(p, packet, now, out)
            elif isinstance(packet, Pli):
                self._keyframe_feedback(p, packet.media_ssrc, now, out)
            elif isinstance(packet, Fir):
                for entry in packet.entries[:MAX_PARTICIPANTS]:
                    self._keyframe_feedback(p, entry.ssrc, now, out)
            elif isinstance(packet, Remb):
                self._estimate(p, packet, now)
                self._allocate(p, now, out)
                for publisher in p.receiving:
                    self._update_remb(self._participants[publisher], now, out)
            elif isinstance(packet, SenderReport):
                src = p.sources.get(packet.ssrc)
                if src is None:
                    self._drop(UNKNOWN_SSRC)
                else:
                    src.sender_report = packet
                    src.sender_report_at = now
        return out

    def tick(self, now: float) -> list[Output]:
        """Time passed: speakers fall silent, paced REMBs go out, layers are re-chosen."""
        out: list[Output] = list(self._speaking.tick(now))
        if now - self._allocated_at >= REALLOCATE_INTERVAL:
            self._allocated_at = now
            for sub in self._participants.values():
                self._allocate(sub, now, out)
            for pub in self._participants.values():  # the rooms follow the measured rates
                self._update_remb(pub, now, out)
        for pub in self._participants.values():
            if pub.remb_pending:
                self._update_remb(pub, now, out)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None."""
        times = [
            p.remb_sent_at + REMB_INTERVAL for p in self._participants.values() if p.remb_pending
        ]
        speaking = self._speaking.next_deadline()
        if speaking is not None:
            times.append(speaking)
        if self._participants:
            times.append(self._allocated_at + REALLOCATE_INTERVAL)
        return min(times, default=None)

    # Queries

    def participants(self) -> list[str]:
        """Who is in the room, in join order."""
        return list(self._participants)

    def outgoing(self, subscriber: str) -> dict[int, tuple[str, str]]:
        """``subscriber``'s outgoing streams: SSRC -> (publisher, "audio" or "video")."""
        p = self._participants.get(subscriber)
        if p is None:
            return {}
        return {
            ssrc: (o.publisher.id, "video" if o.video else "audio")
            for ssrc, o in p.outs_by_ssrc.items()
        }

    def restart(self, subscriber: str, ssrc: int, now: float) -> list[Output]:
        """``subscriber`` got nothing of its outgoing stream ``ssrc`` so far (it was not yet
        negotiated on its connection): video resumes only at the next key frame (asked for)."""
        p = self._participants.get(subscriber)
        o = None if p is None else p.outs_by_ssrc.get(ssrc)
        if o is None or not o.video or o.rw.current is None:
            return []
        src = o.publisher.sources.get(o.rw.current)
        o.rw.current = None  # the target stays: the rewriter waits for its key frame
        out: list[Output] = []
        if src is not None:
            self._request_keyframe(src, now, out)
        return out

    def use_rtx(
        self, subscriber: str, ssrc: int, rtx_ssrc: int | None, payload_type: int | None
    ) -> bool:
        """Answer NACKs of ``subscriber``'s video stream ``ssrc`` as RTX (RFC 4588) on
        ``rtx_ssrc`` with ``payload_type``, as its answer negotiated for that m-line; either None:
        plain retransmissions on the media SSRC. False (plain) if the SSRC is taken or the
        stream is not video."""
        p = self._participants.get(subscriber)
        o = None if p is None else p.outs_by_ssrc.get(ssrc)
        if p is None or o is None or not o.video:
            return False
        cache = o.cache
        if (
            rtx_ssrc is None
            or payload_type is None
            or not 0 <= payload_type <= 0x7F
            or not _free_rtx_ssrc(p, o, rtx_ssrc)
        ):
            cache.rtx_ssrc = cache.rtx_payload_type = None
            return False
        cache.rtx_ssrc, cache.rtx_payload_type = rtx_ssrc, payload_type
        return True

    def layer(self, subscriber: str, publisher: str) -> str | None:
        """The video layer ``subscriber`` now receives of ``publisher`` ("thumbnail"/"full")."""
        p = self._participants.get(subscriber)
        pub = self._participants.get(publisher)
        if p is None or pub is None:
            return None
        for o in p.receiving.get(publisher, ()):
            if o.video and o.rw.current is not None:
                src = pub.sources.get(o.rw.current)
                return None if src is None else ("full" if src.layer == FULL else "thumbnail")
        return None

    def estimate(self, subscriber: str, publisher: str) -> int | None:
        """The latest REMB figure that covers ``subscriber``'s video of ``publisher`` (its own or
        the subscriber's whole), or None before any."""
        p = self._participants.get(subscriber)
        for o in p.receiving.get(publisher, ()) if p is not None else ():
            if o.video:
                assert p is not None
                own = o.estimate is not None and o.estimate_at >= p.estimate_at
                return o.estimate if own else p.estimate
        return None

    def speaking(self) -> list[str]:
        """The current speakers, loudest first."""
        return [str(s) for s in self._speaking.speaking()]

    # Internals

    def _unwrap_rtx(self, view: RtpView, src: Source, payload_type: int) -> bytes | None:
        """A publisher's RTX packet (RFC 4588) as the original packet of ``src``, or None."""
        data = view.buf
        start, end = view.payload_offset, view.payload_end
        if end - start < 2:
            self._drop(PADDING if end == start else MALFORMED_RTX)  # padding: bandwidth probes
            return None
        header = bytearray(data[:start])
        header[0] &= 0xDF  # the original's padding is gone with the RTX packet's
        osn = data[start] << 8 | data[start + 1]
        rewrite_header(header, payload_type, osn, view.timestamp, src.ssrc)
        return bytes(header) + bytes(data[start + 2 : end])

    def _drop(self, reason: str) -> list[Output]:
        drops = self.stats.drops
        if reason not in drops:
            log.info("sfu: dropping input (%s); further drops are only counted", reason)
        drops[reason] = drops.get(reason, 0) + 1
        return []

    def _connect(self, sub: Participant, pub: Participant) -> None:
        """Outgoing streams of ``pub``'s audio and video to ``sub``."""
        outs: list[Out] = []
        for video in (False, True):
            layers = [s for s in pub.sources.values() if s.video == video]
            if not layers:
                continue
            ssrc = self._fresh_ssrc(sub)
            rtx = None
            if video and sub.config.rtx_payload_type is not None:
                rtx = self._fresh_ssrc(sub)
            o = Out(sub, pub, ssrc, rtx, video, self._rng)
            if not video:
                o.rw.select(layers[0].ssrc)
            outs.append(o)
            sub.outs_by_ssrc[ssrc] = o
            for s in layers:
                s.outs.append(o)
        sub.receiving[pub.id] = outs

    def _fresh_ssrc(self, sub: Participant) -> int:
        while True:
            ssrc = self._rng.getrandbits(32)
            taken = ssrc in sub.outs_by_ssrc or ssrc == sub.rtcp_ssrc
            if (
                ssrc
                and not taken
                and all(o.cache.rtx_ssrc != ssrc for o in sub.outs_by_ssrc.values())
            ):
                return ssrc

    def _estimate(self, p: Participant, remb: Remb, now: float) -> None:
        """A REMB naming one of ``p``'s video streams alone is that stream's estimate (aiortc
        runs one estimator per m-line); any other (Chromium's, one for all) is ``p``'s."""
        named = {o for s in remb.ssrcs[:MAX_PARTICIPANTS] if (o := p.outs_by_ssrc.get(s))}
        if len(named) == 1 and len(remb.ssrcs) <= 2:
            (o,) = named
            if o.video:
                o.estimate, o.estimate_at = remb.bitrate, now
                return
        p.estimate, p.estimate_at = remb.bitrate, now

    def _allocate(self, sub: Participant, now: float, out: list[Output]) -> None:
        for o, src in allocate(sub, now):
            target = src.ssrc if src is not None else None
            if target == o.rw.target:
                continue
            o.rw.select(target)
            if src is not None and o.rw.needs_keyframe:
                self._request_keyframe(src, now, out)

    def _request_keyframe(self, src: Source, now: float, out: list[Output]) -> None:
        if now - src.last_keyframe_request < KEYFRAME_INTERVAL:
            return
        src.last_keyframe_request = now
        self.stats.keyframe_requests += 1
        owner = src.owner
        out.append(SendRtcp(owner.id, build_rtcp([Pli(owner.rtcp_ssrc, src.ssrc)])))

    def _keyframe_feedback(
        self, p: Participant, media_ssrc: int, now: float, out: list[Output]
    ) -> None:
        o = p.outs_by_ssrc.get(media_ssrc)
        if o is None:
            self._drop(UNKNOWN_SSRC)
            return
        if not o.video:
            return
        ssrc = o.rw.target if o.rw.target is not None else o.rw.current
        src = o.publisher.sources.get(ssrc) if ssrc is not None else None
        if src is not None:
            self._request_keyframe(src, now, out)

    def _nack(self, p: Participant, nack: Nack, now: float, out: list[Output]) -> None:
        o = p.outs_by_ssrc.get(nack.media_ssrc)
        if o is None:
            self._drop(UNKNOWN_SSRC)
            return
        lost = nack.lost[:MAX_NACKED_PER_PACKET]
        if now - p.retransmit_window >= 1.0:
            p.retransmit_window = now
            p.retransmitted = 0
        room = MAX_RETRANSMISSIONS_PER_SECOND - p.retransmitted
        if len(lost) > room or len(nack.lost) > len(lost):
            self._drop(NACK_FLOOD)
            lost = lost[: max(0, room)]
        cache = o.cache
        missed = cache.missed
        packets = cache.retransmissions(lost)
        for _ in range(cache.missed - missed):
            self._drop(NACK_MISS)
        p.retransmitted += len(packets)
        self.stats.nacks_served += len(packets)
        out.extend(SendRtp(p.id, packet) for packet in packets)

    def _update_remb(self, pub: Participant, now: float, out: list[Output]) -> None:
        full = pub.layer_source(FULL)
        if full is None:
            return
        target = remb_target(pub, self._participants)
        if target is None:
            if pub.remb_sent is None:
                pub.remb_pending = False
                return
            target = pub.remb_release
        last = pub.remb_sent
        if last is not None and abs(target - last) <= REMB_CHANGE * last:
            pub.remb_pending = False
            return
        if now - pub.remb_sent_at < REMB_INTERVAL:
            pub.remb_pending = True
            return
        pub.remb_pending = False
        pub.remb_sent = target
        pub.remb_sent_at = now
        self.stats.rembs_sent += 1
        remb = Remb(pub.rtcp_ssrc, target, (full.ssrc,))
        out.append(SendRtcp(pub.id, build_rtcp([remb])))


def _free_rtx_ssrc(sub: Participant, out: Out, ssrc: int) -> bool:
    """Whether ``sub`` receives on no stream but ``out`` from ``ssrc`` (media or RTX)."""
    if not 0 < ssrc <= 0xFFFFFFFF or ssrc in sub.outs_by_ssrc or ssrc == sub.rtcp_ssrc:
        return False
    return all(o is out or o.cache.rtx_ssrc != ssrc for o in sub.outs_by_ssrc.values())
