"""The jitter buffer under loss, delay and reordering; the receiver's key-frame wait (sans-I/O)."""

import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from sealcall.e2ee.codecs import Codec
from sealcall.media.crypto_taps import KEYFRAME_REQUEST_INTERVAL, ReceiverTap, SenderTap
from sealcall.media.jitter import (
    AUDIO_MAX_WAIT,
    MAX_CONCEALED,
    NACK_REORDER_MAX,
    NACK_RETRY_INTERVAL,
    NACK_TRIES,
    BufferedFrame,
    FrameBuffer,
    NackScheduler,
    concealment_packet,
)
from sealcall.media.keys import MediaKeys

from encoded_media import encode_opus, encode_video

OPUS_TOC = 0xFC  # config 31 (CELT fullband 20 ms), stereo, one frame
PTIME = 0.02
SAMPLES = 960


def _audio_packets(count: int, first_seq: int = 65500) -> list[tuple[int, int, bytes]]:
    """(sequence number, timestamp, data) of ``count`` 20 ms Opus packets, wrapping seq."""
    return [
        (
            (first_seq + i) & 0xFFFF,
            (4_294_960_000 + i * SAMPLES) & 0xFFFFFFFF,
            bytes([OPUS_TOC, i & 0xFF]),
        )
        for i in range(count)
    ]


def _play_audio(
    lost: set[int], count: int = 200, *, reorder: int = 0, seed: int = 1
) -> list[BufferedFrame]:
    """Send ``count`` packets every 20 ms, losing those in ``lost``; ``reorder`` swaps that many
    neighbours (each late by one packet, 20 ms: within the wait)."""
    packets = [p for i, p in enumerate(_audio_packets(count)) if i not in lost]
    rng = random.Random(seed)
    for _ in range(reorder):
        i = rng.randrange(1, len(packets) - 1)  # the first packet starts the stream
        packets[i], packets[i + 1] = packets[i + 1], packets[i]
    buffer = FrameBuffer("audio")
    out: list[BufferedFrame] = []
    for i, (seq, timestamp, data) in enumerate(packets):
        out += buffer.add(seq, timestamp, True, data, i * PTIME)
    return out


def test_aiortcs_audio_jitter_buffer_discards_good_frames_in_front_of_a_lost_packet() -> None:
    """Why audio reached the decryptor at ~28 % of frames at 20 % loss: aiortc 1.16's audio
    buffer (16 slots, prefetch 4) throws away the complete frames queued before a hole."""
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    rng = random.Random(5)
    aiortc_buffer = JitterBuffer(capacity=16, prefetch=4)
    emitted = 0
    kept = 0
    for seq, timestamp, data in _audio_packets(1000, first_seq=0):
        if rng.random() < 0.2:
            continue
        kept += 1
        packet = RtpPacket(sequence_number=seq, timestamp=timestamp, payload=data)
        packet._data = data  # type: ignore[attr-defined]
        emitted += aiortc_buffer.add(packet)[1] is not None
    assert emitted < 0.45 * kept  # most frames that arrived were never played

    ours = _play_audio({i for i in range(1000) if random.Random(i).random() < 0.2}, 1000)
    real = [f for f in ours if not f.concealed]
    assert len(real) >= 0.95 * sum(1 for i in range(1000) if random.Random(i).random() >= 0.2)


def test_audio_loss_is_concealed_so_playback_time_does_not_shrink() -> None:
    lost = {5, 6, 40, 41, 42, 100}
    out = _play_audio(lost)
    real = [f for f in out if not f.concealed]
    concealed = [f for f in out if f.concealed]
    assert len(real) == 200 - len(lost) - 0  # every packet that came is played, once
    assert len(concealed) == len(lost)
    # In order, every 20 ms of timestamps present exactly once: the lost ones are stand-ins.
    assert [f.timestamp for f in out] == [t for _, t, _ in _audio_packets(200)][: len(out)]
    assert all(f.data == concealment_packet(OPUS_TOC) == b"\xfc" for f in concealed)
    assert [f.data[1] for f in real] == [i & 0xFF for i in range(200) if i not in lost][: len(real)]


def test_reordered_audio_within_the_wait_is_played_in_order_with_nothing_concealed() -> None:
    out = _play_audio(set(), reorder=30)
    assert not any(f.concealed for f in out)
    assert [f.data[1] for f in out] == [i & 0xFF for i in range(200)][: len(out)]
    assert len(out) >= 198


def test_a_long_audio_outage_skips_ahead_instead_of_concealing_for_ever() -> None:
    out = _play_audio(set(range(50, 50 + MAX_CONCEALED + 10)), count=200)
    assert not any(f.concealed for f in out)
    assert sum(1 for f in out if f.after_gap) == 1


@settings(max_examples=60, deadline=None)
@given(
    loss=st.lists(st.booleans(), min_size=60, max_size=60),
    delays=st.lists(st.floats(0, 0.06), min_size=60, max_size=60),
)
def test_audio_frames_come_out_once_in_order_whatever_the_loss_and_jitter(
    loss: list[bool], delays: list[float]
) -> None:
    sent = _audio_packets(60)
    arrivals = sorted((i * PTIME + delays[i], i) for i in range(60) if not loss[i])
    buffer = FrameBuffer("audio")
    out: list[BufferedFrame] = []
    for now, i in arrivals:
        seq, timestamp, data = sent[i]
        out += buffer.add(seq, timestamp, True, data, now)
    real = [f.data[1] for f in out if not f.concealed]
    assert real == sorted(real)  # in order, never twice
    timestamps = [(f.timestamp - sent[0][1]) & 0xFFFFFFFF for f in out]
    assert timestamps == sorted(timestamps)
    assert len(set(timestamps)) == len(timestamps)


def _video_packets(
    frames: int, per_frame: int = 3, keyframe_every: int = 0
) -> list[tuple[int, int, bool, bytes]]:
    packets = []
    seq = 65530
    for f in range(frames):
        for p in range(per_frame):
            packets.append((seq & 0xFFFF, 3000 * f, p == per_frame - 1, bytes([f & 0xFF, p])))
            seq += 1
    return packets


def test_video_frames_are_whole_and_a_frame_given_up_on_marks_the_next() -> None:
    packets = _video_packets(60)
    lost = {3 * 10 + 1}  # the middle packet of frame 10: never retransmitted
    buffer = FrameBuffer("video")
    out: list[BufferedFrame] = []
    for i, (seq, timestamp, marker, data) in enumerate(packets):
        if i not in lost:
            out += buffer.add(seq, timestamp, marker, data, i * 0.011)
        if i == 31 + 80:  # 0.88 s after the hole: still waiting for a retransmission
            assert [f.data[0] for f in out][-1] == 9
    frames = [f.data[0] for f in out]
    assert 10 not in frames
    assert frames == [f for f in range(60) if f != 10]  # the rest whole, in order
    assert all(len(f.data) == 6 for f in out)
    assert [f.data[0] for f in out if f.after_gap] == [11]
    assert buffer.counters.frames_lost == 1


def test_video_waits_for_a_retransmission_up_to_its_limit() -> None:
    packets = _video_packets(40)
    buffer = FrameBuffer("video")
    out: list[BufferedFrame] = []
    for i, (seq, timestamp, marker, data) in enumerate(packets):
        if i != 31:
            out += buffer.add(seq, timestamp, marker, data, i * 0.011)
        if i == 40:  # the retransmission comes while frames behind the hole wait
            assert [f.data[0] for f in out][-1] == 9
            out += buffer.add(*packets[31][:3], packets[31][3], i * 0.011)
    assert [f.data[0] for f in out] == list(range(40))
    assert not any(f.after_gap for f in out)
    assert buffer.counters.frames_lost == 0


def test_video_gives_up_at_once_on_a_packet_older_than_the_senders_history() -> None:
    packets = _video_packets(100)
    buffer = FrameBuffer("video")
    out: list[BufferedFrame] = []
    for i, (seq, timestamp, marker, data) in enumerate(packets):
        if i != 30:
            out += buffer.add(seq, timestamp, marker, data, i * 0.001)  # fast: 0.3 s in all
    frames = [f.data[0] for f in out]
    assert frames == [f for f in range(100) if f != 10]
    assert buffer.counters.frames_lost == 1


def test_a_lost_first_packet_of_a_video_frame_never_yields_a_partial_frame() -> None:
    packets = _video_packets(20)
    lost = {3 * 5, 3 * 6 + 2}  # the start of frame 5, the end (marker) of frame 6
    buffer = FrameBuffer("video", max_wait=0.0)
    out: list[BufferedFrame] = []
    for i, (seq, timestamp, marker, data) in enumerate(packets):
        if i not in lost:
            out += buffer.add(seq, timestamp, marker, data, float(i))
    assert all(len(f.data) == 6 for f in out)
    frames = [f.data[0] for f in out]
    assert 5 not in frames
    assert 6 not in frames
    assert frames == sorted(frames)
    assert frames[-1] == 19
    assert any(f.after_gap for f in out)


def test_an_audio_hole_is_given_up_only_after_the_wait() -> None:
    buffer = FrameBuffer("audio")
    packets = _audio_packets(10)
    assert len(buffer.add(*packets[0][:2], True, packets[0][2], 0.0)) == 1
    assert buffer.add(*packets[2][:2], True, packets[2][2], 0.04) == []
    assert buffer.add(*packets[3][:2], True, packets[3][2], 0.03 + AUDIO_MAX_WAIT) == []
    out = buffer.add(*packets[4][:2], True, packets[4][2], 0.05 + AUDIO_MAX_WAIT)
    assert [f.concealed for f in out] == [True, False, False, False]
    assert [f.timestamp for f in out] == [t for _, t, _ in packets[1:5]]


def _sealed_video(count: int) -> tuple[list[bytes], list[bytes], MediaKeys, SenderTap]:
    key = bytes(range(32))
    sender = SenderTap(MediaKeys(0, key), "video")
    receive = MediaKeys(1, bytes(32))
    receive.add_receive_key(0, key)
    plain = encode_video("libvpx", count)
    sealed = [sender.protect(Codec.VP8, frame) for frame in plain]
    assert all(s is not None for s in sealed)
    return plain, [s for s in sealed if s is not None], receive, sender


def test_after_a_lost_frame_no_delta_frame_reaches_the_decoder_until_a_key_frame() -> None:
    plain, sealed, keys, sender = _sealed_video(8)
    now = [0.0]
    requests: list[float] = []
    tap = ReceiverTap(keys, "video", lambda: requests.append(now[0]), clock=lambda: now[0])
    assert tap.unprotect("video/VP8", sealed[0]) == plain[0]  # the key frame
    assert tap.unprotect("video/VP8", sealed[1]) == plain[1]
    # Frame 2 was lost: frame 3 comes after the gap and must not be decoded, nor what follows.
    withheld = []
    for i in range(3, 8):
        withheld.append(tap.unprotect("video/VP8", sealed[i], after_gap=i == 3))
        now[0] += KEYFRAME_REQUEST_INTERVAL / 2
    assert withheld == [None] * 5
    assert tap.counters.frames_skipped == 5
    assert tap.awaiting_keyframe
    # Asked at once, then once per interval while waiting (2.5 s of waiting: 3 requests).
    assert requests == [0.0, 0.5, 1.0]
    assert tap.counters.keyframe_requests == 3
    # The key frame comes: it and the frames after it are decoded again.
    again = [sender.protect(Codec.VP8, frame) or b"" for frame in plain[:2]]
    assert tap.unprotect("video/VP8", again[0]) == plain[0]
    assert not tap.awaiting_keyframe
    assert tap.unprotect("video/VP8", again[1]) == plain[1]
    assert tap.counters.frames_dropped == 0


def test_a_frame_failing_authentication_is_dropped_and_so_are_its_dependants() -> None:
    plain, sealed, keys, _ = _sealed_video(4)
    requests: list[int] = []
    tap = ReceiverTap(keys, "video", lambda: requests.append(1), clock=lambda: 0.0)
    assert tap.unprotect("video/VP8", sealed[0]) == plain[0]
    forged = sealed[1][:-1] + bytes([sealed[1][-1] ^ 1])
    assert tap.unprotect("video/VP8", forged) is None
    assert tap.unprotect("video/VP8", sealed[2]) is None  # decrypts, but its reference is gone
    assert tap.counters.drop_reasons == {"AuthenticationError": 1}
    assert tap.counters.frames_skipped == 1
    assert requests == [1]


def test_audio_after_a_gap_plays_on_and_concealment_is_counted() -> None:
    key = bytes(range(32))
    sender = SenderTap(MediaKeys(0, key), "audio")
    keys = MediaKeys(1, bytes(32))
    keys.add_receive_key(0, key)
    frames = encode_opus(3)
    requests: list[int] = []
    tap = ReceiverTap(keys, "audio", lambda: requests.append(1))
    sealed = [sender.protect(Codec.OPUS, f) for f in frames]
    assert tap.unprotect("audio/opus", sealed[0] or b"") == frames[0]
    tap.conceal()
    assert tap.unprotect("audio/opus", sealed[2] or b"", after_gap=True) == frames[2]
    assert tap.counters.frames_concealed == 1
    assert tap.counters.frames_skipped == 0
    assert requests == []


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=5, max_size=30),
    fates=st.lists(st.sampled_from(["ok", "ok", "ok", "lost", "late", "twice"]), min_size=150),
    max_wait=st.sampled_from([0.0, 0.05, 0.5]),
)
def test_video_frames_out_are_whole_sent_frames_in_order_whatever_the_loss(
    sizes: list[int], fates: list[str], max_wait: float
) -> None:
    packets = []
    seq = 65000
    for f, size in enumerate(sizes):
        for p in range(size):
            packets.append((seq & 0xFFFF, 90 * f, p == size - 1, bytes([f, p, size])))
            seq += 1
    order: list[tuple[float, int]] = []
    for i in range(len(packets)):
        # The first packet received is taken as a frame's start (as aiortc does; a partial first
        # frame would fail SFrame authentication): the stream here starts with it.
        fate = "ok" if i == 0 else fates[i % len(fates)]
        if fate == "lost":
            continue
        order.append((i * 0.01 + (0.035 if fate == "late" else 0.0), i))
        if fate == "twice":
            order.append((i * 0.01 + 0.2, i))
    order.sort()
    buffer = FrameBuffer("video", max_wait=max_wait)
    out: list[BufferedFrame] = []
    for now, i in order:
        out += buffer.add(*packets[i], now)
        assert len(buffer._packets) <= buffer.capacity
    emitted = [f.data[0::3] for f in out]
    for frame in out:
        f, size = frame.data[0], frame.data[2]
        assert frame.data == b"".join(bytes([f, p, size]) for p in range(size))  # whole
    assert emitted == sorted(emitted)  # in order, each at most once
    assert len({e for e in emitted}) == len(emitted)
    if not any(fates[i % len(fates)] == "lost" for i in range(1, len(packets))):
        assert max_wait == 0.0 or not any(f.after_gap for f in out)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["audio", "video"]),
    packets=st.lists(
        st.tuples(
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.booleans(),
            st.binary(max_size=4),
            st.floats(0, 0.2),
        ),
        max_size=80,
    ),
)
def test_hostile_packet_streams_never_raise_and_stay_bounded(
    kind: str, packets: list[tuple[int, int, bool, bytes, float]]
) -> None:
    buffer = FrameBuffer(kind, capacity=32)
    nacks = NackScheduler()
    now = 0.0
    for seq, timestamp, marker, data, step in packets:
        now += step
        for frame in buffer.add(seq, timestamp, marker, data, now, retransmission=marker):
            assert isinstance(frame.data, bytes)
        assert len(buffer._packets) <= 32
        assert all(0 <= lost <= 0xFFFF for lost in nacks.add(seq, now, retransmission=marker))
        assert len(nacks._missing) < 2 * 128


def _frames_of(sizes: list[int], first_seq: int = 65000) -> list[tuple[int, int, bool, bytes]]:
    """Video packets (seq, timestamp, marker, data) of frames of ``sizes`` packets each."""
    packets = []
    seq = first_seq
    for f, size in enumerate(sizes):
        for p in range(size):
            packets.append((seq & 0xFFFF, 3000 * f, p == size - 1, bytes([f & 0xFF, p, size])))
            seq += 1
    return packets


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=20, max_size=60),
    delays=st.lists(st.floats(0, 0.06), min_size=1, max_size=200),
    copies=st.lists(st.tuples(st.integers(0, 10_000), st.floats(0.0, 3.0)), max_size=20),
)
def test_reordered_video_with_late_duplicates_loses_nothing(
    sizes: list[int], delays: list[float], copies: list[tuple[int, float]]
) -> None:
    """Packets overtaking each other (100 +- 30 ms delay: up to 60 ms) and copies of packets
    already received arriving up to 3 s later (retransmissions of packets that were only late):
    every frame comes out whole, once, in order, and no frame is marked after a gap (which
    would withhold delta frames until a key frame). A copy far behind restarted the buffer."""
    packets = _frames_of(sizes)
    frame_of = [i for i, size in enumerate(sizes) for _ in range(size)]
    sent = [frame_of[i] / 30 + packets[i][3][1] * 0.001 for i in range(len(packets))]
    arrivals = [
        (sent[i] + (delays[i % len(delays)] if i else 0.0), i, False) for i in range(len(packets))
    ]
    arrivals += [
        (sent[i % len(packets)] + 0.06 + late, i % len(packets), True) for i, late in copies
    ]
    arrivals.sort()
    buffer = FrameBuffer("video")
    out: list[BufferedFrame] = []
    for now, i, copy in arrivals:
        out += buffer.add(*packets[i], now, retransmission=copy)
    assert [f.data for f in out] == [
        b"".join(bytes([f & 0xFF, p, size]) for p in range(size)) for f, size in enumerate(sizes)
    ]
    assert not any(f.after_gap for f in out)
    assert buffer.counters.frames_lost == buffer.counters.packets_given_up == 0


def test_old_retransmissions_never_restart_the_buffer_but_a_new_stream_does() -> None:
    packets = _frames_of([3] * 100)
    buffer = FrameBuffer("video")
    out: list[BufferedFrame] = []
    for i, packet in enumerate(packets[:200]):
        out += buffer.add(*packet, i * 0.01)
    # Retransmissions of packets 150 back, several in sequence (one NACK named them all).
    for packet in packets[40:50]:
        assert buffer.add(*packet, 2.0, retransmission=True) == []
    assert buffer.counters.packets_late == 10
    for i, packet in enumerate(packets[200:], start=200):
        out += buffer.add(*packet, i * 0.01)
    assert [f.data[0] for f in out] == list(range(100))
    assert not any(f.after_gap for f in out)
    # A sender that starts again far back: its second packet in sequence confirms the restart.
    restarted = _frames_of([3] * 3, first_seq=(packets[0][0] + 100) & 0xFFFF)
    for packet in restarted:
        out += buffer.add(*packet, 4.0)
    assert [f.data[0] for f in out][100:] == [1, 2]  # the first frame lost its first packet
    assert out[100].after_gap


def _nack_run(
    arrivals: list[tuple[float, int]], *, scheduler: NackScheduler | None = None
) -> dict[int, list[float]]:
    """Feed (arrival time, seq) to a scheduler; the times each seq was NACKed."""
    scheduler = scheduler or NackScheduler()
    nacked: dict[int, list[float]] = {}
    for now, seq in sorted(arrivals):
        for lost in scheduler.add(seq & 0xFFFF, now):
            nacked.setdefault(lost, []).append(now)
    return nacked


def test_a_loss_on_a_path_that_keeps_order_is_nacked_at_once_and_retried() -> None:
    arrivals = [(i * 0.01, 65530 + i) for i in range(200) if i != 10]
    nacked = _nack_run(arrivals)
    assert list(nacked) == [(65530 + 10) & 0xFFFF]  # across the wrap of sequence numbers
    times = nacked[(65530 + 10) & 0xFFFF]
    assert times[0] == 11 * 0.01  # at the first packet after it: no reordering seen
    assert len(times) == NACK_TRIES
    assert all(b - a >= NACK_RETRY_INTERVAL for a, b in pairwise(times))


def test_reordering_is_learned_and_then_never_nacked() -> None:
    rng = random.Random(4)
    sent = [i / 45 for i in range(450)]  # 10 s of 45 packets/s
    arrivals = [(t + rng.uniform(0, 0.06), i) for i, t in enumerate(sent)]
    nacked = _nack_run(arrivals)
    assert all(seq < 90 for seq in nacked)  # only in the first 2 s, while it learned
    assert len(nacked) <= 5
    # The first packets after a loss are NACKed once the learned wait has passed, not before.
    scheduler = NackScheduler()
    _nack_run(arrivals, scheduler=scheduler)
    assert 0.03 < scheduler.reorder_wait <= NACK_REORDER_MAX


@settings(max_examples=80, deadline=None)
@given(
    lost=st.lists(st.booleans(), min_size=100, max_size=100),
    delays=st.lists(st.floats(0, 0.06), min_size=100, max_size=100),
)
def test_every_lost_packet_is_nacked_and_none_that_came_after_it_came(
    lost: list[bool], delays: list[float]
) -> None:
    lost[0] = lost[-1] = False
    delays[0] = 0.0  # the stream starts with the first packet (nothing before it is missed)
    arrivals = [(i / 45 + delays[i], 65500 + i) for i in range(100) if not lost[i]]
    arrivals += [(100 / 45 + 0.5 * k, 65600 + k) for k in range(NACK_TRIES * 2)]  # time passes
    nacked = _nack_run(arrivals)
    arrived = {seq & 0xFFFF: now for now, seq in arrivals}
    for i in range(100):
        seq = (65500 + i) & 0xFFFF
        if lost[i]:
            assert 1 <= len(nacked.get(seq, [])) <= NACK_TRIES
        else:
            assert all(t < arrived[seq] for t in nacked.get(seq, []))


class _CountingPackets(dict[int, object]):
    """The buffer's packet store, counting the look-ups a skip makes."""

    lookups = 0

    def pop(self, *args: object) -> object:  # type: ignore[override]
        _CountingPackets.lookups += 1
        return super().pop(*args)

    def __contains__(self, key: object) -> bool:
        _CountingPackets.lookups += 1
        return super().__contains__(key)


def test_a_sender_jumping_half_the_sequence_space_costs_work_per_packet_held() -> None:
    for kind in ("audio", "video"):
        buffer = FrameBuffer(kind)
        buffer._packets = _CountingPackets()  # type: ignore[assignment]
        seq, lost_before = 1000, 0
        for i in range(50):
            buffer.add(seq, 960 * i, True, b"\xf8\x01", i * 0.02)
            seq = (seq + 0x7FFE) & 0xFFFF
        _CountingPackets.lookups = 0
        for i in range(50, 100):
            buffer.add(seq, 960 * i, True, b"\xf8\x01", i * 0.02)
            seq = (seq + 0x7FFE) & 0xFFFF
        lookups = _CountingPackets.lookups
        # Each jump gives up ~32k sequence numbers: stepping through them cost 5k+ look-ups a
        # packet for audio (262k here). Bounded by the packets the buffer can hold instead.
        assert lookups < 50 * 2 * buffer.capacity, (kind, lookups)
        assert buffer.counters.frames_lost > lost_before
