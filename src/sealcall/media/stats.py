"""Per-track statistics a user wants on screen, from aiortc's RTP stats and the crypto taps."""

import time
from dataclasses import dataclass, field

from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
)

from .connection import EncryptedPeerConnection
from .jitter import loss_counters


@dataclass(frozen=True)
class OutboundTrackStats:
    """One sending track."""

    kind: str
    role: str | None
    mid: str | None
    paused: bool
    frames_encrypted: int
    bytes_encrypted: int
    frames_unencrypted: int  # sent in the clear (a call accepted without frame encryption)
    packets_sent: int
    bytes_sent: int
    round_trip_time: float | None
    bitrate_bps: float | None
    retransmissions_sent: int = 0  # packets sent again for the far side's NACKs
    keyframe_requests_received: int = 0  # PLI/FIR from the far side


@dataclass(frozen=True)
class InboundTrackStats:
    """One receiving track."""

    kind: str
    mid: str | None
    frames_received: int
    frames_decrypted: int
    frames_unencrypted: int  # taken in the clear (a call accepted without frame encryption)
    frames_dropped: int
    drop_reasons: dict[str, int]
    keyframe_requests: int
    packets_received: int
    packets_lost: int
    bitrate_bps: float | None
    seconds_since_last_frame: float | None
    # Under loss (see sealcall.media.jitter): lost audio frames concealed (Opus PLC), frames
    # given up on, video frames withheld until a key frame, and the feedback sent.
    frames_concealed: int = 0
    frames_lost: int = 0
    frames_skipped: int = 0
    packets_late: int = 0
    nacks_sent: int = 0
    packets_nacked: int = 0
    retransmissions_received: int = 0
    plis_sent: int = 0


@dataclass(frozen=True)
class MediaStats:
    """A snapshot of a connection's media; ``encrypted`` is False once the connection carries
    media without frame encryption (by the user's opt-in)."""

    outbound: list[OutboundTrackStats] = field(default_factory=list)
    inbound: list[InboundTrackStats] = field(default_factory=list)
    encrypted: bool = True


class StatsCollector:
    """Takes snapshots of one connection; bitrates are measured between consecutive snapshots."""

    def __init__(self, connection: EncryptedPeerConnection) -> None:
        self.connection = connection
        self._previous: dict[str, tuple[float, int]] = {}

    def _bitrate(self, key: str, now: float, total_bytes: int) -> float | None:
        previous = self._previous.get(key)
        self._previous[key] = (now, total_bytes)
        if previous is None or now <= previous[0]:
            return None
        return (total_bytes - previous[1]) * 8 / (now - previous[0])

    async def collect(self) -> MediaStats:
        """Gather the current statistics of every transceiver."""
        pc = self.connection
        now = time.monotonic()
        snapshot = MediaStats(encrypted=pc.keys.encrypted)
        for transceiver in pc.getTransceivers():
            sender, receiver = transceiver.sender, transceiver.receiver
            sent = pc.sender_tap(sender).counters
            if sender.track is not None or sent.frames_encrypted or sent.frames_unencrypted:
                report = await sender.getStats()
                out = next(
                    (s for s in report.values() if isinstance(s, RTCOutboundRtpStreamStats)), None
                )
                remote = next(
                    (s for s in report.values() if isinstance(s, RTCRemoteInboundRtpStreamStats)),
                    None,
                )
                tap = pc.sender_tap(sender)
                bytes_sent = out.bytesSent if out else 0
                snapshot.outbound.append(
                    OutboundTrackStats(
                        kind=transceiver.kind,
                        role=pc.role_of(sender),
                        mid=transceiver.mid,
                        paused=tap.paused,
                        frames_encrypted=tap.counters.frames_encrypted,
                        bytes_encrypted=tap.counters.bytes_encrypted,
                        frames_unencrypted=tap.counters.frames_unencrypted,
                        packets_sent=out.packetsSent if out else 0,
                        bytes_sent=bytes_sent,
                        round_trip_time=remote.roundTripTime if remote else None,
                        bitrate_bps=self._bitrate(f"out-{id(sender)}", now, bytes_sent),
                        retransmissions_sent=tap.counters.retransmissions_sent,
                        keyframe_requests_received=tap.counters.keyframe_requests_received,
                    )
                )
            rtap = pc.receiver_tap(receiver)
            counters = rtap.counters
            if not counters.frames_received and receiver.track is None:
                continue
            report = await receiver.getStats()
            inbound = next(
                (s for s in report.values() if isinstance(s, RTCInboundRtpStreamStats)), None
            )
            last = counters.last_frame_time
            loss = loss_counters(receiver)
            snapshot.inbound.append(
                InboundTrackStats(
                    kind=transceiver.kind,
                    mid=transceiver.mid,
                    frames_received=counters.frames_received,
                    frames_decrypted=counters.frames_decrypted,
                    frames_unencrypted=counters.frames_unencrypted,
                    frames_dropped=counters.frames_dropped,
                    drop_reasons=dict(counters.drop_reasons),
                    keyframe_requests=counters.keyframe_requests,
                    packets_received=inbound.packetsReceived if inbound else 0,
                    packets_lost=inbound.packetsLost if inbound else 0,
                    bitrate_bps=self._bitrate(f"in-{id(receiver)}", now, counters.bytes_received),
                    seconds_since_last_frame=None if last is None else now - last,
                    frames_concealed=counters.frames_concealed,
                    frames_lost=loss.frames_lost,
                    frames_skipped=counters.frames_skipped,
                    packets_late=loss.packets_late,
                    nacks_sent=loss.nacks_sent,
                    packets_nacked=loss.packets_nacked,
                    retransmissions_received=loss.retransmissions_received,
                    plis_sent=loss.plis_sent,
                )
            )
        return snapshot
