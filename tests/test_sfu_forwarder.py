"""The SFU's forwarding core: fan-out, layer choice, key-frame requests, REMB, NACK, speaking."""

import itertools
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.sfu.forwarder import (
    BAD_SUBSCRIPTION,
    FLOOD,
    MALFORMED_RTCP,
    MALFORMED_RTP,
    MALFORMED_VP8,
    NACK_FLOOD,
    NACK_MISS,
    PADDING,
    UNKNOWN_PARTICIPANT,
    UNKNOWN_SSRC,
    Forwarder,
    LayerChanged,
    Output,
    ParticipantConfig,
    RoomFullError,
    SendRtcp,
    SendRtp,
    SpeakingChanged,
)
from sealcall.sfu.rtcp import Fir, FirEntry, Nack, Pli, Remb, SenderReport, build_rtcp, parse_rtcp
from sealcall.sfu.rtp import parse_rtp

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEVEL_ID = 1
KEY_PREFIX = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
DELTA_PREFIX = bytes([0x11, 0x02, 0x00])


def ssrcs(i: int) -> tuple[int, int, int]:
    """Audio, thumbnail and full SSRCs of participant ``i``."""
    base = 0x1000 * (i + 1)
    return base + 1, base + 2, base + 3


def config(i: int, **kw: Any) -> ParticipantConfig:
    audio, thumb, full = ssrcs(i)
    return ParticipantConfig(
        audio_ssrc=audio, thumbnail_ssrc=thumb, full_ssrc=full, audio_level_id=LEVEL_ID, **kw
    )


def audio_packet(ssrc: int, seq: int, level: int = 127) -> bytes:
    """Opus-like packet with an RFC 6464 audio level (``level`` = -dBov) in a one-byte block."""
    header = struct.pack("!BBHII", 0x90, 111, seq & 0xFFFF, 960 * seq & 0xFFFFFFFF, ssrc)
    return header + b"\xbe\xde\x00\x01" + bytes([LEVEL_ID << 4, 0x80 | level, 0, 0]) + b"opus-ct"


def vp8_packet(ssrc: int, seq: int, keyframe: bool, tag: bytes = b"") -> bytes:
    """A frame-starting VP8 packet (picture id = seq) with the clear prefix, then "ciphertext"."""
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, 3000 * seq & 0xFFFFFFFF, ssrc)
    pid = seq & 0x7FFF
    desc = bytes([0x90, 0x80, 0x80 | pid >> 8, pid & 0xFF])
    return header + desc + (KEY_PREFIX if keyframe else DELTA_PREFIX) + tag + b"sframe"


class Room:
    """A forwarder with ``n`` participants p0..p(n-1); records what each one is sent."""

    def __init__(self, n: int, **kw: Any) -> None:
        self.fw = Forwarder(seed=7)
        self.now = 0.0
        self.rtp: dict[str, list[bytes]] = {}
        self.rtcp: dict[str, list[bytes]] = {}
        self.speaking: list[SpeakingChanged] = []
        self.layers: list[LayerChanged] = []
        self.seq: dict[int, int] = {}
        for i in range(n):
            self.join(i, **kw)

    def join(self, i: int, **kw: Any) -> None:
        self.record(self.fw.join(f"p{i}", config(i, **kw), self.now))

    def record(self, outputs: list[Output]) -> list[Output]:
        for o in outputs:
            if isinstance(o, SendRtp):
                self.rtp.setdefault(o.participant, []).append(bytes(o.data))
            elif isinstance(o, SendRtcp):
                self.rtcp.setdefault(o.participant, []).append(o.data)
            elif isinstance(o, LayerChanged):
                self.layers.append(o)
            else:
                self.speaking.append(o)
        return outputs

    def send(self, i: int, packet: bytes) -> list[Output]:
        return self.record(self.fw.packet(f"p{i}", packet, self.now))

    def next_seq(self, ssrc: int) -> int:
        self.seq[ssrc] = self.seq.get(ssrc, 99) + 1
        return self.seq[ssrc]

    def audio(self, i: int, level: int = 127) -> list[Output]:
        a = ssrcs(i)[0]
        return self.send(i, audio_packet(a, self.next_seq(a), level))

    def video(self, i: int, layer: int, keyframe: bool) -> list[Output]:
        ssrc = ssrcs(i)[layer]
        return self.send(
            i, vp8_packet(ssrc, self.next_seq(ssrc), keyframe, b"TF"[layer - 1 : layer])
        )

    def feedback(self, i: int, *packets: Nack | Pli | Remb | SenderReport) -> list[Output]:
        return self.record(self.fw.rtcp(f"p{i}", build_rtcp(list(packets)), self.now))

    def streams(self, sub: str) -> dict[int, list[bytes]]:
        """What ``sub`` received, by outgoing SSRC."""
        out: dict[int, list[bytes]] = {}
        for packet in self.rtp.get(sub, []):
            out.setdefault(parse_rtp(packet).ssrc, []).append(packet)
        return out

    def plis(self, i: int) -> list[int]:
        """Media SSRCs of the PLIs p``i`` was sent."""
        found = []
        for data in self.rtcp.get(f"p{i}", []):
            found += [p.media_ssrc for p in parse_rtcp(data).packets if isinstance(p, Pli)]
        return found

    def rembs(self, i: int) -> list[Remb]:
        found = []
        for data in self.rtcp.get(f"p{i}", []):
            found += [p for p in parse_rtcp(data).packets if isinstance(p, Remb)]
        return found

    def out_ssrc(self, sub: int, pub: int, kind: str) -> int:
        return next(s for s, v in self.fw.outgoing(f"p{sub}").items() if v == (f"p{pub}", kind))


def contiguous(packets: list[bytes]) -> bool:
    seqs = [parse_rtp(p).sequence_number for p in packets]
    return all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))


def tags(packets: list[bytes]) -> bytes:
    """The layer tag (T or F, just before the "ciphertext") of each forwarded video packet."""
    return b"".join(p[-7:-6] for p in packets)


def drive(room: Room, n: int, frames: int, key_every: int = 0) -> None:
    """Every participant sends audio and both video layers, ``frames`` times."""
    for f in range(frames):
        for i in range(n):
            room.audio(i)
            key = f == 0 or (key_every > 0 and f % key_every == 0)
            room.video(i, 1, key)
            room.video(i, 2, key)
        room.now += 0.02


def test_everyone_receives_everyones_audio_and_thumbnail_contiguously() -> None:
    room = Room(6)
    drive(room, 6, 10)
    for s in range(6):
        sub = f"p{s}"
        streams = room.streams(sub)
        assert set(streams) == set(room.fw.outgoing(sub))
        assert len(streams) == 2 * 5  # audio and video of the five others
        for ssrc, packets in streams.items():
            assert len(packets) == 10
            assert contiguous(packets)
            publisher, kind = room.fw.outgoing(sub)[ssrc]
            assert publisher != sub
            if kind == "video":
                assert tags(packets) == b"T" * 10
        assert room.fw.layer(sub, "p0" if s else "p1") == "thumbnail"
    # Each publisher was asked once for a thumbnail key frame at the start.
    assert all(set(room.plis(i)) == {ssrcs(i)[1]} for i in range(6))
    assert room.fw.stats.forwarded_packets == 6 * 5 * 20


def test_full_resolution_switches_at_a_key_frame_after_one_pli_a_second() -> None:
    room = Room(3)
    drive(room, 3, 3)
    room.now += 2
    plis_before = len(room.plis(0))
    assert LayerChanged("p1", "p0", "thumbnail") in room.layers  # the first layer received
    room.layers.clear()
    room.record(room.fw.subscribe("p1", "p0", "full", room.now))
    assert room.plis(0)[plis_before:] == [ssrcs(0)[2]]
    for _ in range(10):  # full-layer delta frames: p1 keeps the thumbnail, no second PLI yet
        room.video(0, 2, False)
        room.video(0, 1, False)
        room.now += 0.05
    assert room.plis(0)[plis_before:] == [ssrcs(0)[2]]
    assert room.fw.layer("p1", "p0") == "thumbnail"
    room.now += 0.6  # past the second: the next waiting packet asks again, once
    room.video(0, 2, False)
    room.video(0, 2, False)
    assert room.plis(0)[plis_before:] == [ssrcs(0)[2]] * 2
    assert room.layers == []  # chosen, not yet switched: no key frame of the full layer so far
    room.video(0, 2, True)
    assert room.layers == [LayerChanged("p1", "p0", "full")]  # with the key frame, to p1 only
    room.video(0, 2, False)
    room.video(0, 1, False)  # the thumbnail is no longer forwarded to p1
    assert room.fw.layer("p1", "p0") == "full"
    assert room.fw.layer("p2", "p0") == "thumbnail"
    video = room.streams("p1")[room.out_ssrc(1, 0, "video")]
    assert contiguous(video)
    assert tags(video).endswith(b"T" * 10 + b"FF")
    assert room.fw.stats.layer_switches == 1


class Network:
    """Three members p0..p2 at realistic rates, in steps of 0.1 s: each publishes audio, a
    150 kbit/s thumbnail and a full layer at what the SFU's last REMB lets an aiortc encoder send
    (250 kbit/s..1.5 Mbit/s, key frames every second). p1 asks for p0 in full and reports a REMB
    every second: ``estimate(received_bps, previous)`` (None before the first), of all it receives
    (Chromium), or with ``per_stream`` of p0's video alone, naming that stream (aiortc)."""

    def __init__(
        self, estimate: Callable[[int, int | None], int], *, per_stream: bool = False
    ) -> None:
        self.room = Room(3)
        self.estimate = estimate
        self.per_stream = per_stream
        self.step = 0
        self.seen = 0
        self.received: list[int] = []  # bytes p1 received in each step (of p0's video alone)
        self.ups: list[float] = []  # when p1 got p0's full layer
        self.remb: int | None = None
        self.room.record(self.room.fw.subscribe("p1", "p0", "full", self.room.now))

    def full_rate(self) -> int:
        rembs = self.room.rembs(0)
        clamp = rembs[-1].bitrate if rembs else 500_000
        return min(1_500_000, max(250_000, clamp))

    def run(self, seconds: float) -> None:
        room = self.room
        for _ in range(round(seconds * 10)):
            key = self.step % 10 == 0
            for i in range(3):
                room.audio(i)
                rates = (150_000, self.full_rate() if i == 0 else 500_000)
                for layer, rate in zip((1, 2), rates, strict=True):
                    left = rate // 80  # bytes in 0.1 s
                    while left > 0:
                        size = min(left, 1100)
                        ssrc = ssrcs(i)[layer]
                        tag = bytes(size) + b"TF"[layer - 1 : layer]
                        room.send(i, vp8_packet(ssrc, room.next_seq(ssrc), key, tag))
                        key = False if i == 2 and layer == 2 else key
                        left -= size
            stream = room.out_ssrc(1, 0, "video")
            new = room.rtp.get("p1", [])[self.seen :]
            self.seen += len(new)
            if self.per_stream:
                new = [p for p in new if parse_rtp(p).ssrc == stream]
            self.received.append(sum(len(p) for p in new))
            if self.step % 10 == 9:
                self.remb = self.estimate(sum(self.received[-10:]) * 8, self.remb)
                named = (stream,) if self.per_stream else ()
                room.feedback(1, Remb(1, self.remb, named))
            room.now += 0.1
            room.record(room.fw.tick(room.now))
            if LayerChanged("p1", "p0", "full") in room.layers:
                self.ups.append(room.now)
            room.layers.clear()
            self.step += 1


def estimator(received: int, previous: int | None) -> int:
    """Chromium's and aiortc's REMB: up by 8 % a second, never above 1.5x what arrives."""
    bound = int(1.5 * received) + 10_000
    return bound if previous is None else min(max(previous, bound), int(previous * 1.08))


@pytest.mark.parametrize("per_stream", [False, True], ids=["chromium", "aiortc"])
def test_an_estimator_bound_to_what_it_receives_ramps_to_the_full_layer(per_stream: bool) -> None:
    net = Network(estimator, per_stream=per_stream)
    net.run(60)
    assert net.room.fw.layer("p1", "p0") == "full"
    assert len(net.ups) == 1  # once, and it stayed
    assert net.remb is not None
    assert net.remb > 1_500_000  # the estimate climbed with the media
    assert net.room.rembs(0)[-1].bitrate > 1_000_000  # and so did the clamp
    assert net.room.fw.layer("p2", "p0") == "thumbnail"


def test_a_capped_subscriber_goes_down_and_backs_off_instead_of_flapping() -> None:
    # 360 kbit/s carries the two others' audio and thumbnails but not p0's least full layer.
    net = Network(lambda received, previous: 360_000)
    net.run(120)
    assert net.room.fw.layer("p1", "p0") == "thumbnail"
    gaps = [b - a for a, b in itertools.pairwise(net.ups)]
    assert 2 <= len(net.ups) <= 6  # tried again, but not every few seconds
    assert gaps == sorted(gaps)  # each time later
    assert gaps[-1] >= 2 * gaps[0]
    # The publisher's full layer is clamped to what p1 has room for (at least 100 kbit/s).
    assert all(r.bitrate <= 360_000 for r in net.room.rembs(0))


def test_bandwidth_drop_falls_back_to_thumbnail_and_a_rise_returns_to_full() -> None:
    cap = [5_000_000]
    net = Network(lambda received, previous: cap[0])
    net.run(10)
    assert net.room.fw.layer("p1", "p0") == "full"
    assert net.room.rembs(0)[-1].bitrate > 1_500_000
    cap[0] = 200_000  # beside p2's thumbnail and audio, not even 100 kbit/s of full layer fit
    net.run(3)
    assert net.room.fw.layer("p1", "p0") == "thumbnail"
    assert net.room.rembs(0)[-1].bitrate == 100_000  # the clamp's floor
    cap[0] = 5_000_000
    net.run(8)
    assert net.room.fw.layer("p1", "p0") == "full"
    assert len(net.ups) == 2
    assert contiguous(net.room.streams("p1")[net.room.out_ssrc(1, 0, "video")])


def test_publisher_gets_remb_with_lowest_estimate_of_those_wanting_full() -> None:
    room = Room(4)
    room.feedback(3, Remb(1, 100_000, ()))  # p3 does not want p0's full layer: not counted
    assert room.rembs(0) == []
    room.record(room.fw.subscribe("p1", "p0", "full", room.now))
    room.record(room.fw.subscribe("p2", "p0", "full", room.now))
    room.feedback(2, Remb(1, 3_000_000, ()))
    room.now += 1
    room.feedback(1, Remb(1, 2_000_000, ()))
    rembs = room.rembs(0)
    assert rembs[-1].ssrcs == (ssrcs(0)[2],)
    assert 0.99 * 2_000_000 <= rembs[-1].bitrate <= 2_000_000
    count = len(rembs)
    room.now += 0.1
    room.feedback(1, Remb(1, 1_900_000, ()))  # within 10 %: nothing new
    room.feedback(1, Remb(1, 1_000_000, ()))  # paced: at most every 500 ms
    assert len(room.rembs(0)) == count
    room.now += 0.2
    room.record(room.fw.tick(room.now))
    assert len(room.rembs(0)) == count
    room.now += 0.3
    room.record(room.fw.tick(room.now))
    assert len(room.rembs(0)) == count + 1
    assert room.rembs(0)[-1].bitrate == 1_000_000
    room.record(room.fw.tick(room.now + 1))
    assert len(room.rembs(0)) == count + 1


def test_subscriber_pli_and_fir_reach_the_publisher_once_a_second() -> None:
    room = Room(3)
    drive(room, 3, 2)
    room.now += 5
    before = len(room.plis(0))
    video = room.out_ssrc(1, 0, "video")
    assert room.feedback(1, Pli(1, video)) == [
        SendRtcp("p0", build_rtcp([Pli(_rtcp_ssrc(room, 0), ssrcs(0)[1])]))
    ]
    room.feedback(2, Pli(1, room.out_ssrc(2, 0, "video")))  # the same stream: within the second
    room.now += 0.5
    room.feedback(1, Fir(1, (FirEntry(video, 1),)))
    assert len(room.plis(0)) == before + 1
    room.now += 0.6
    room.feedback(1, Fir(1, (FirEntry(video, 2),)))
    assert room.plis(0)[before:] == [ssrcs(0)[1]] * 2
    assert room.feedback(1, Pli(1, room.out_ssrc(1, 0, "audio"))) == []  # audio has no key frames


def _rtcp_ssrc(room: Room, i: int) -> int:
    """The sender SSRC the SFU uses in RTCP to p``i`` (from a PLI it sent)."""
    data = room.rtcp[f"p{i}"][0]
    return next(p.sender_ssrc for p in parse_rtcp(data).packets if isinstance(p, Pli))


def test_padding_only_packets_are_not_forwarded() -> None:
    room = Room(2)
    drive(room, 2, 1)
    header = struct.pack("!BBHII", 0xA0, 96, 500, 3000, ssrcs(0)[1])
    probe = header + bytes(254) + bytes([255])  # P bit: 255 bytes of padding, no payload
    assert room.send(0, probe) == []
    assert room.fw.stats.drops[PADDING] == 1


def test_nack_is_answered_from_the_cache_with_rtx_when_negotiated() -> None:
    room = Room(3, rtx_payload_type=97)
    drive(room, 3, 6)
    audio = room.streams("p1")[room.out_ssrc(1, 0, "audio")]
    lost = parse_rtp(audio[2]).sequence_number
    out = room.feedback(1, Nack(1, room.out_ssrc(1, 0, "audio"), (lost,)))
    assert [o.data for o in out if isinstance(o, SendRtp)] == [audio[2]]
    video_ssrc = room.out_ssrc(1, 0, "video")
    video = room.streams("p1")[video_ssrc]
    lost = parse_rtp(video[3]).sequence_number
    (rtx,) = [bytes(o.data) for o in room.feedback(1, Nack(1, video_ssrc, (lost,)))]
    view = parse_rtp(rtx)
    assert view.payload_type == 97
    assert view.ssrc != video_ssrc
    assert rtx[view.payload_offset : view.payload_offset + 2] == lost.to_bytes(2, "big")
    assert bytes(view.payload)[2:] == bytes(parse_rtp(video[3]).payload)
    assert room.fw.stats.nacks_served == 2


def test_use_rtx_chooses_rtx_or_plain_per_stream_as_each_answer_negotiated() -> None:
    room = Room(3)  # p1 receives p0's and p2's video; nothing negotiated yet: plain
    drive(room, 3, 8)
    v0, v2 = room.out_ssrc(1, 0, "video"), room.out_ssrc(1, 2, "video")
    sent0, sent2 = room.streams("p1")[v0], room.streams("p1")[v2]
    seq0 = [parse_rtp(p).sequence_number for p in sent0[2:5]]
    seq2 = parse_rtp(sent2[3]).sequence_number
    assert [o.data for o in room.feedback(1, Nack(1, v0, (seq0[0],)))] == [sent0[2]]
    # p1's answer kept RTX (payload type 99) on p0's m-line only.
    assert room.fw.use_rtx("p1", v0, 0xABCD, 99)
    assert not room.fw.use_rtx("p1", v2, 0xABCE, None)
    out = [bytes(o.data) for o in room.feedback(1, Nack(1, v0, tuple(seq0)))]
    views = [parse_rtp(p) for p in out]
    assert [(v.ssrc, v.payload_type) for v in views] == [(0xABCD, 99)] * 3
    # RFC 4588: the original sequence number first, then the payload; the RTX stream counts on
    # from its own (random) start, one per packet, across NACKs.
    for data, view, original in zip(out, views, sent0[2:5], strict=True):
        assert data[view.payload_offset : view.payload_offset + 2] == original[2:4]
        assert bytes(view.payload)[2:] == bytes(parse_rtp(original).payload)
        assert view.timestamp == parse_rtp(original).timestamp
    (again,) = [parse_rtp(bytes(o.data)) for o in room.feedback(1, Nack(1, v0, (seq0[0],)))]
    rtx_seqs = [v.sequence_number for v in views] + [again.sequence_number]
    assert [(b - a) % 65536 for a, b in itertools.pairwise(rtx_seqs)] == [1, 1, 1]
    assert {parse_rtp(p).sequence_number for p in room.streams("p1")[v0]}.isdisjoint(rtx_seqs)
    # p2's stream, without RTX in the answer, gets the packet as sent.
    assert [o.data for o in room.feedback(1, Nack(1, v2, (seq2,)))] == [sent2[3]]
    # An RTX SSRC must be free on p1's connection, the stream video; refused means plain.
    assert not room.fw.use_rtx("p1", v2, v0, 99)
    assert not room.fw.use_rtx("p1", v2, 0xABCD, 99)
    assert not room.fw.use_rtx("p1", room.out_ssrc(1, 0, "audio"), 0xABCF, 99)
    assert not room.fw.use_rtx("p1", v2, 0xABCF, 200)
    assert not room.fw.use_rtx("nobody", v2, 0xABCF, 99)
    assert [o.data for o in room.feedback(1, Nack(1, v2, (seq2,)))] == [sent2[3]]
    # Renegotiated without RTX: back to plain.
    assert not room.fw.use_rtx("p1", v0, None, None)
    assert [o.data for o in room.feedback(1, Nack(1, v0, (seq0[1],)))] == [sent0[3]]


def test_upstream_loss_is_nacked_and_the_publishers_rtx_fills_the_gap() -> None:
    rtx_thumb = 0x7777
    room = Room(2, rtx_ssrcs=((rtx_thumb, ssrcs(0)[1]),))
    drive(room, 2, 3)
    thumb = ssrcs(0)[1]
    room.seq[thumb] += 2  # two packets of p0's thumbnail are lost on the way to the SFU
    room.video(0, 1, False)
    nacks = [x for d in room.rtcp["p0"] for x in parse_rtcp(d).packets if isinstance(x, Nack)]
    last = room.seq[thumb]
    assert [(n.media_ssrc, n.lost) for n in nacks] == [(thumb, (last - 2, last - 1))]
    assert room.fw.stats.nacks_sent == 1
    # p0 resends one of them RTX-wrapped (RFC 4588): it reaches p1 as the original packet.
    original = vp8_packet(thumb, last - 2, False, b"T")
    view = parse_rtp(original)
    rtx = bytearray(original[: view.payload_offset])
    rtx[1] = 97
    rtx[2:4] = (500).to_bytes(2, "big")
    rtx[8:12] = rtx_thumb.to_bytes(4, "big")
    rtx += original[2:4] + original[view.payload_offset :]
    (sent,) = [o for o in room.send(0, bytes(rtx)) if isinstance(o, SendRtp)]
    out = parse_rtp(bytes(sent.data))
    assert out.ssrc == room.out_ssrc(1, 0, "video")
    assert out.payload_type == 96
    assert bytes(out.payload)[4:] == bytes(view.payload)[4:]  # after the VP8 descriptor
    video = room.streams("p1")[out.ssrc]
    numbers = [parse_rtp(x).sequence_number for x in video]
    assert numbers[-1] == numbers[-2] - 2  # in the hole left for it
    assert room.fw.stats.nacks_sent == 1  # a late packet is no new loss
    # Bandwidth probes (RTX padding) and truncated RTX are dropped and counted.
    room.send(0, bytes(rtx[: view.payload_offset]))
    room.send(0, bytes(rtx[: view.payload_offset + 1]))
    assert room.fw.stats.drops[PADDING] == 1
    assert room.fw.stats.drops["malformed_rtx"] == 1


def test_left_participant_gets_no_further_packet() -> None:
    room = Room(4)
    drive(room, 4, 2)
    room.record(room.fw.leave("p2", room.now))
    before = len(room.rtp["p2"])
    drive(room, 2, 5)
    assert len(room.rtp["p2"]) == before
    assert room.audio(2) == []
    assert room.fw.stats.drops[UNKNOWN_PARTICIPANT] == 1
    assert all(v[0] != "p2" for v in room.fw.outgoing("p0").values())
    assert room.fw.participants() == ["p0", "p1", "p3"]


def test_header_extensions_reach_each_subscriber_under_its_own_ids() -> None:
    level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    mid = "urn:ietf:params:rtp-hdrext:sdes:mid"
    fw = Forwarder(seed=1)
    fw.join("p0", config(0, extensions=((level, LEVEL_ID), (mid, 2))), 0.0)
    fw.join("p1", config(1, extensions=((mid, LEVEL_ID), (level, 3))), 0.0)  # other ids
    fw.join("p2", config(2, extensions=((level, LEVEL_ID),)), 0.0)  # no MID negotiated
    sent = {
        o.participant: bytes(o.data)
        for o in fw.packet("p0", audio_packet(ssrcs(0)[0], 1, 30), 0.0)
        if isinstance(o, SendRtp)
    }
    assert parse_rtp(sent["p1"]).extensions() == {3: bytes([0x80 | 30])}
    assert parse_rtp(sent["p2"]).extensions() == {LEVEL_ID: bytes([0x80 | 30])}
    assert parse_rtp(sent["p1"]).payload.tobytes() == b"opus-ct"


def test_who_is_speaking_from_audio_levels() -> None:
    room = Room(3)
    for _ in range(10):  # 200 ms at -20 dBov
        room.audio(1, level=20)
        room.audio(0, level=127)
        room.now += 0.02
    assert room.speaking == [SpeakingChanged("p1", True, -20.0)]
    assert room.fw.speaking() == ["p1"]
    room.now += 1
    room.record(room.fw.tick(room.now))
    assert room.speaking[-1] == SpeakingChanged("p1", False, -20.0)


def test_hostile_input_is_dropped_and_counted() -> None:
    room = Room(3)
    drive(room, 3, 2)
    forwarded = room.fw.stats.forwarded_packets
    assert room.send(0, b"\x00" * 20) == []  # not RTP version 2
    assert room.send(0, audio_packet(0xDEAD, 1)) == []  # an SSRC p0 does not publish
    assert room.send(0, vp8_packet(ssrcs(0)[1], 500, True)[:14]) == []  # truncated descriptor
    assert room.send(0, audio_packet(ssrcs(1)[0], 1)) == []  # p1's SSRC, sent by p0
    assert room.fw.rtcp("p1", b"\x80\xc9\x00\x09", room.now) == []  # length past the end
    # A NACK for numbers never sent, and one for another subscriber's stream.
    assert room.feedback(1, Nack(1, room.out_ssrc(1, 0, "audio"), (1, 2, 3))) == []
    assert room.feedback(1, Nack(1, room.out_ssrc(2, 0, "audio"), (1,))) == []
    big = Nack(1, room.out_ssrc(1, 0, "audio"), tuple(range(0, 600, 2)))
    assert room.feedback(1, big) == []
    assert room.fw.subscribe("p1", "nobody", "full", room.now) == []
    assert room.fw.subscribe("p1", "p0", "ultra", room.now) == []
    room.now += 1
    for _ in range(2100):  # a flood within one second
        room.audio(0)
    drops = room.fw.stats.drops
    assert drops[MALFORMED_RTP] == 1
    assert drops[MALFORMED_VP8] == 1
    assert drops[UNKNOWN_SSRC] == 3
    assert drops[MALFORMED_RTCP] == 1
    assert drops[NACK_MISS] == 3 + 64
    assert drops[NACK_FLOOD] == 1
    assert drops[BAD_SUBSCRIPTION] == 2
    assert drops[FLOOD] == 100
    assert room.fw.stats.forwarded_packets == forwarded + 2000 * 2
    assert room.fw.stats.nacks_served == 0


def test_room_is_bounded() -> None:
    fw = Forwarder(max_participants=2)
    fw.join("a", config(0), 0.0)
    fw.join("b", config(1), 0.0)
    try:
        fw.join("c", config(2), 0.0)
    except RoomFullError:
        pass
    else:
        raise AssertionError("a third participant got in")
    assert fw.participants() == ["a", "b"]


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["rtp", "rtcp"]), st.binary(max_size=80)),
        max_size=40,
    )
)
def test_fuzz_garbage_never_raises_and_reaches_only_members(
    inputs: list[tuple[int, str, bytes]],
) -> None:
    room = Room(3)
    for i, kind, data in inputs:
        fn = room.fw.packet if kind == "rtp" else room.fw.rtcp
        for o in fn(f"p{i}", data, room.now):
            if isinstance(o, SendRtp | SendRtcp):
                assert o.participant in {"p0", "p1", "p2"}
        room.now += 0.01


ACTIONS = st.one_of(
    st.tuples(st.just("audio"), st.integers(0, 3)),
    st.tuples(st.just("video"), st.integers(0, 3), st.integers(1, 2), st.booleans()),
    st.tuples(st.just("remb"), st.integers(0, 3), st.integers(50_000, 8_000_000)),
    st.tuples(
        st.just("sub"),
        st.integers(0, 3),
        st.integers(0, 3),
        st.sampled_from(["full", "none", "thumbnail"]),
    ),
    st.tuples(st.just("time"), st.floats(0, 3)),
)


@SETTINGS
@given(st.lists(ACTIONS, max_size=120))
def test_fuzz_outgoing_streams_stay_contiguous(actions: list[tuple[object, ...]]) -> None:
    room = Room(4)
    for action in actions:
        match action:
            case ("audio", int(i)):
                room.audio(i)
            case ("video", int(i), int(layer), bool(key)):
                room.video(i, layer, key)
            case ("remb", int(i), int(rate)):
                room.feedback(i, Remb(1, rate, ()))
            case ("sub", int(s), int(p), str(q)):
                room.record(room.fw.subscribe(f"p{s}", f"p{p}", q, room.now))
            case ("time", float(dt)):
                room.now += dt
                room.record(room.fw.tick(room.now))
    for s in range(4):
        for packets in room.streams(f"p{s}").values():
            assert contiguous(packets)
    for i in range(4):
        # Never more than one PLI per stream per second.
        assert len(room.plis(i)) <= 2 * (1 + int(room.now))


FEEDBACK = st.one_of(
    st.builds(
        Nack,
        st.integers(0, 2**32 - 1),
        st.integers(0, 7),
        st.lists(st.integers(0, 0xFFFF), max_size=40).map(tuple),
    ),
    st.builds(Pli, st.integers(0, 2**32 - 1), st.integers(0, 7)),
    st.builds(Remb, st.integers(0, 2**32 - 1), st.integers(0, 2**40), st.just(())),
    st.builds(
        SenderReport,
        st.integers(0, 7),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
        st.just(0),
        st.just(0),
    ),
)


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 2), st.lists(FEEDBACK, min_size=1, max_size=4)), max_size=20)
)
def test_fuzz_feedback_reaches_only_its_sender_and_never_raises(
    inputs: list[tuple[int, list[Nack | Pli | Remb | SenderReport]]],
) -> None:
    """Well-formed RTCP with SSRCs picked among the real ones (index 0..5) and unknown ones."""
    room = Room(3)
    drive(room, 3, 3)
    for i, packets in inputs:
        known = [*room.fw.outgoing(f"p{i}"), *ssrcs(i)]
        fixed: list[Nack | Pli | Remb | SenderReport] = []
        for p in packets:
            if isinstance(p, Nack | Pli):
                m = p.media_ssrc
                fixed.append(replace(p, media_ssrc=known[m] if m < len(known) else 0xBAD))
            elif isinstance(p, SenderReport):
                fixed.append(replace(p, ssrc=known[p.ssrc] if p.ssrc < len(known) else 0xBAD))
            else:
                fixed.append(p)
        for o in room.fw.rtcp(f"p{i}", build_rtcp(fixed), room.now):
            if isinstance(o, SendRtp):
                assert o.participant == f"p{i}"  # retransmissions go only to who asked
                assert parse_rtp(o.data).ssrc in room.fw.outgoing(f"p{i}")
        room.now += 0.1
