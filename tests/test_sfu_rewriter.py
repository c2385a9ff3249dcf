"""Layer-switch rewriting and the NACK/RTX packet cache of the SFU."""

import struct

from aiortc.rtp import RtpPacket, wrap_rtx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sealcall.sfu.packet_cache import PacketCache
from sealcall.sfu.rewriter import (
    DROPPED_NOT_SELECTED,
    DROPPED_TOO_OLD,
    DROPPED_WAITING_KEYFRAME,
    FORWARDED,
    StreamRewriter,
)
from sealcall.sfu.rtp import RtpView, parse_rtp
from sealcall.sfu.vp8 import Vp8Descriptor

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VIDEO_RATE = 90_000
THUMB, FULL = 0x1111, 0x2222


def vp8_packet(ssrc: int, seq: int, ts: int, picture_id: int, keyframe: bool) -> bytes:
    """An RTP packet with a VP8 descriptor (15-bit picture id, TL0PICIDX) starting a frame."""
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    desc = bytes(
        [0x90, 0xC0, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF, picture_id & 0xFF]
    )
    # The clear VP8 prefix: key frame (P=0, start code, 640x480) or delta frame (P=1).
    key = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
    clear = key if keyframe else bytes([0x11, 0x02, 0x00])
    return header + desc + clear + b"sframe-ciphertext"


class Subscriber:
    """Feeds packets through one rewriter the way the forwarding path does; records the output."""

    def __init__(self, rewriter: StreamRewriter) -> None:
        self.rw = rewriter
        self.view = RtpView()
        self.vp8 = Vp8Descriptor()
        self.out: list[tuple[int, int, int, int]] = []  # (source ssrc, seq, ts, picture id)

    def feed(self, packet: bytes, now: float) -> int:
        view = self.view.load(packet)
        vp8 = self.vp8.load(packet, view.payload_offset, view.payload_end)
        buf = bytearray(packet)
        result = self.rw.rewrite(view, buf, now, vp8.is_keyframe, vp8)
        if result == FORWARDED:
            sent = parse_rtp(buf)
            assert sent.ssrc == self.rw.out_ssrc
            assert sent.sequence_number == self.rw.out_sequence
            d = Vp8Descriptor().load(buf, sent.payload_offset)
            self.out.append((view.ssrc, sent.sequence_number, sent.timestamp, d.picture_id))
        return result


def test_switch_waits_for_key_frame_and_stays_contiguous() -> None:
    rw = StreamRewriter(0xABCD, 100, VIDEO_RATE, video=True, first_sequence=65534)
    sub = Subscriber(rw)
    rw.select(THUMB)
    assert rw.needs_keyframe
    assert sub.feed(vp8_packet(THUMB, 10, 1000, 5, False), 0.0) == DROPPED_WAITING_KEYFRAME
    assert sub.feed(vp8_packet(THUMB, 11, 4000, 6, True), 0.0) == FORWARDED
    assert not rw.needs_keyframe
    assert sub.feed(vp8_packet(THUMB, 12, 7000, 7, False), 1 / 30) == FORWARDED
    assert sub.feed(vp8_packet(FULL, 500, 9_000_000, 300, True), 1 / 30) == DROPPED_NOT_SELECTED
    rw.select(FULL)
    assert rw.needs_keyframe
    # Until FULL's key frame, THUMB keeps flowing; FULL's delta frames are dropped.
    assert sub.feed(vp8_packet(FULL, 501, 9_003_000, 301, False), 0.05) == DROPPED_WAITING_KEYFRAME
    assert sub.feed(vp8_packet(THUMB, 13, 10000, 8, False), 0.06) == FORWARDED
    assert sub.feed(vp8_packet(FULL, 502, 9_006_000, 302, True), 0.56) == FORWARDED
    assert sub.feed(vp8_packet(THUMB, 14, 13000, 9, False), 0.57) == DROPPED_NOT_SELECTED
    assert sub.feed(vp8_packet(FULL, 503, 9_009_000, 303, False), 0.6) == FORWARDED
    assert not rw.needs_keyframe
    assert rw.switches == 1
    seqs = [s for _, s, _, _ in sub.out]
    assert seqs == [65534, 65535, 0, 1, 2]  # contiguous through the 16-bit wrap
    ts = [t for _, _, t, _ in sub.out]
    assert ts[:3] == [0, 3000, 6000]
    assert ts[3] == 6000 + int(0.5 * VIDEO_RATE)  # the wall-clock gap, at 90 kHz
    assert ts[4] == ts[3] + 3000
    assert [p for _, _, _, p in sub.out] == [0, 1, 2, 3, 4]  # picture ids continue too


def test_gaps_kept_reordering_forwarded_and_old_packets_dropped() -> None:
    rw = StreamRewriter(1, 96, VIDEO_RATE, video=True, max_reorder=100)
    sub = Subscriber(rw)
    rw.select(THUMB)
    assert sub.feed(vp8_packet(THUMB, 1000, 0, 0, True), 0) == FORWARDED
    assert sub.feed(vp8_packet(THUMB, 1003, 3000, 1, False), 0) == FORWARDED  # 2 lost
    assert sub.feed(vp8_packet(THUMB, 1002, 3000, 1, False), 0) == FORWARDED  # late
    assert [s for _, s, _, _ in sub.out] == [0, 3, 2]
    assert sub.feed(vp8_packet(THUMB, 999, 0, 0, False), 0) == DROPPED_TOO_OLD  # before start
    assert sub.feed(vp8_packet(THUMB, 1300, 9000, 2, False), 0) == FORWARDED
    assert sub.feed(vp8_packet(THUMB, 1150, 6000, 2, False), 0) == DROPPED_TOO_OLD  # > 100 back
    assert rw.dropped_too_old == 2
    # After a switch, the new layer's packets from before its key frame would collide: dropped.
    rw.select(FULL)
    assert sub.feed(vp8_packet(FULL, 7, 50, 9, True), 1) == FORWARDED
    assert sub.feed(vp8_packet(FULL, 6, 20, 8, False), 1) == DROPPED_TOO_OLD
    assert sub.out[-1][1] == 301


def test_audio_switches_without_key_frame_and_pause_resumes() -> None:
    rw = StreamRewriter(5, 111, 48_000, video=False, first_timestamp=2**32 - 960)
    view = RtpView()
    buf = bytearray(struct.pack("!BBHII", 0x80, 111, 65535, 123, 77) + b"\xfc")
    rw.select(77)
    assert not rw.needs_keyframe
    assert rw.rewrite(view.load(bytes(buf)), buf, 10.0) == FORWARDED
    assert (rw.out_sequence, rw.out_timestamp) == (0, 2**32 - 960)
    rw.select(None)
    packet = struct.pack("!BBHII", 0x80, 111, 0, 1083, 77) + b"\xfc"
    assert rw.rewrite(view.load(packet), bytearray(packet), 10.02) == DROPPED_NOT_SELECTED
    rw.select(77)
    packet = struct.pack("!BBHII", 0x80, 111, 50, 48_123, 77) + b"\xfc"
    assert rw.rewrite(view.load(packet), bytearray(packet), 11.0) == FORWARDED
    # Resumed one second later: next number, timestamp one second on (wrapping 32 bits).
    assert (rw.out_sequence, rw.out_timestamp) == (1, 48_000 - 960)


layer_event = st.one_of(
    st.tuples(st.just("packet"), st.sampled_from([THUMB, FULL]), st.booleans()),
    st.tuples(st.just("select"), st.sampled_from([THUMB, FULL, None]), st.just(False)),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 1e-6, 1 / 60, 0.5, 3.0]), st.just(False)),
)


@SETTINGS
@example(  # a switch in the same instant as the last packet sent: still one tick later
    events=[
        ("select", THUMB, False),
        ("packet", THUMB, True),
        ("select", FULL, False),
        ("packet", FULL, True),
    ],
    starts=(0, 0, 0, 0),
    first=(0, 0),
)
@given(
    events=st.lists(layer_event, max_size=120),
    starts=st.tuples(
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
    first=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)),
)
def test_any_series_of_switches_is_seamless(
    events: list[tuple[str, object, bool]],
    starts: tuple[int, int, int, int],
    first: tuple[int, int],
) -> None:
    """Without loss, the subscriber sees consecutive numbers and non-decreasing timestamps."""
    rw = StreamRewriter(
        9, 96, VIDEO_RATE, video=True, first_sequence=first[0], first_timestamp=first[1]
    )
    sub = Subscriber(rw)
    seq = {THUMB: starts[0], FULL: starts[1]}
    ts = {THUMB: starts[2], FULL: starts[3]}
    pic = {THUMB: 0, FULL: 0x7FF0}
    now = 0.0
    for kind, arg, keyframe in events:
        if kind == "select":
            rw.select(arg if isinstance(arg, int) else None)
        elif kind == "wait":
            assert isinstance(arg, float)
            now += arg
        else:
            assert isinstance(arg, int)
            before = len(sub.out)
            waiting = rw.needs_keyframe and rw.target == arg
            result = sub.feed(vp8_packet(arg, seq[arg], ts[arg], pic[arg], keyframe), now)
            if waiting and result == FORWARDED:
                assert keyframe  # a video switch happens only on the target's key frame
            assert (result == FORWARDED) == (len(sub.out) == before + 1)
            seq[arg] += 1
            ts[arg] += 3000
            pic[arg] = (pic[arg] + 1) % 0x8000
    for (src0, s0, t0, p0), (src1, s1, t1, p1) in zip(sub.out, sub.out[1:], strict=False):
        assert s1 == (s0 + 1) % 0x10000
        # Never backwards (across the 32-bit wrap); a new layer's frame is strictly later.
        assert (0 if src0 == src1 else 1) <= (t1 - t0) % 2**32 < 2**31
        assert p1 == (p0 + 1) % 0x8000
    if sub.out:
        assert sub.out[0][1] == first[0]
        assert sub.out[0][2] == first[1]


@SETTINGS
@given(
    start=st.integers(0, 0xFFFF),
    order=st.lists(st.integers(-30, 200), min_size=1, max_size=150),
)
def test_loss_and_reordering_within_a_layer(start: int, order: list[int]) -> None:
    """Within a layer the offset is fixed (gaps stay gaps), and no number is ever sent twice."""
    rw = StreamRewriter(9, 96, VIDEO_RATE, video=True, max_reorder=50)
    sub = Subscriber(rw)
    rw.select(THUMB)
    sub.feed(vp8_packet(THUMB, start, 0, 0, True), 0.0)
    offsets = set()
    sent: set[int] = {sub.out[0][1]}
    seen = {0}
    for i, rel in enumerate(order):
        if rel in seen:
            continue  # duplicates are the caller's (SRTP replay) business
        seen.add(rel)
        result = sub.feed(vp8_packet(THUMB, start + rel, 3000 * rel, rel % 0x8000, False), i)
        if rel < 0:
            assert result == DROPPED_TOO_OLD  # from before the layer began
        if result == FORWARDED:
            _, out_seq, _, _ = sub.out[-1]
            assert out_seq not in sent
            sent.add(out_seq)
            offsets.add((out_seq - (start + rel)) % 0x10000)
    assert len(offsets) <= 1
    assert rw.dropped_too_old >= sum(1 for r in seen if r < 0)


# --- packet cache ---------------------------------------------------------------------------


def test_cache_is_bounded_by_count_and_bytes() -> None:
    cache = PacketCache(max_packets=4, max_bytes=250)
    for seq in range(65533, 65533 + 6):
        cache.insert(seq % 65536, bytes(50))
    assert len(cache) == 4
    assert cache.get(65533) is None
    assert cache.get(65534) is None
    assert cache.get(0) is not None
    assert cache.get(2) is not None
    cache.insert(3, bytes(200))  # bytes bound: the oldest go until it fits
    assert cache.size_bytes <= 250
    assert cache.get(3) is not None
    assert cache.get(65535) is None
    assert cache.get(0) is None
    assert cache.size_bytes == sum(len(cache.get(s) or b"") for s in (1, 2, 3))


def test_nack_answered_with_the_packet_as_sent() -> None:
    cache = PacketCache()
    packets = [vp8_packet(0xABCD, s, 90 * s, s, False) for s in (65534, 65535, 0)]
    for p in packets:
        cache.insert(parse_rtp(p).sequence_number, p)
    assert cache.retransmissions([65535, 0, 7]) == packets[1:]
    assert (cache.served, cache.missed) == (2, 1)


def test_rtx_matches_aiortc_wrap_rtx() -> None:
    original = RtpPacket(96, 1, 4321, 0xDEADBEEF, 0xABCD, b"\x90\x80\x05payload")
    original.csrc = [7, 8]
    cache = PacketCache(rtx_ssrc=0x5555, rtx_payload_type=97, rtx_first_sequence=65535)
    cache.insert(4321, original.serialize())
    (first,) = cache.retransmissions([4321])
    (second,) = cache.retransmissions([4321])
    assert first == wrap_rtx(original, 97, 65535, 0x5555).serialize()
    assert second == wrap_rtx(original, 97, 0, 0x5555).serialize()  # RTX numbers wrap too
    assert RtpPacket.parse(first).payload[:2] == (4321).to_bytes(2, "big")  # the OSN


def test_rtx_drops_padding_and_keeps_extensions() -> None:
    packet = bytearray(struct.pack("!BBHII", 0xB0, 96, 9, 10, 11))
    packet += b"\xbe\xde\x00\x01\x10\x2a\x00\x00" + b"data" + b"\x00\x00\x03"
    cache = PacketCache(rtx_ssrc=12, rtx_payload_type=97)
    cache.insert(9, packet)
    (rtx,) = cache.retransmissions([9])
    v = parse_rtp(rtx)
    assert (v.ssrc, v.payload_type, v.timestamp, v.padding) == (12, 97, 10, False)
    assert v.extension(1) == b"\x2a"
    assert bytes(v.payload) == b"\x00\x09data"
