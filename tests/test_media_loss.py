"""Media under packet loss on loopback (real aiortc, real encryption, user-space impairment).

Counts, not timings: shares of frames decrypted, concealed and decoded, NACKs and key-frame
requests sent and answered, and every frame that reaches a video decoder checked against what
the sender encoded (a delta frame must follow its predecessor, or the picture is garbage).
"""

from collections.abc import Callable
from typing import Any

from sealcall.bench.impair import Impairer, Impairment, impair_connection
from sealcall.media import EncryptedPeerConnection
from sealcall.media.jitter import loss_counters
from sealcall.media.stats import StatsCollector

from media_helpers import Endpoint, av_call, connect, until


def _transceiver(pc: EncryptedPeerConnection, kind: str) -> Any:
    return next(t for t in pc.getTransceivers() if t.kind == kind)


class DecoderWatch:
    """Checks every frame that reaches ``b``'s video decoder against the frames ``a`` sent:
    each is a key frame or the frame right after the previous one decoded. Made before the call
    connects (every frame ``a`` sends is recorded); :meth:`attach` once ``b`` receives."""

    def __init__(self, a: Endpoint) -> None:
        self.sent: dict[bytes, int] = {}
        self.decoded = 0
        self.after_gap = 0  # delta frames whose predecessor never reached the decoder
        self.unknown = 0  # frames the sender never encoded (garbage)
        self._previous: int | None = None
        tap = a.pc.sender_tap(_transceiver(a.pc, "video").sender)
        protect = tap.protect

        def recording_protect(codec: Any, frame: bytes) -> bytes | None:
            self.sent.setdefault(frame, len(self.sent))
            return protect(codec, frame)

        tap.protect = recording_protect  # type: ignore[method-assign]

    def attach(self, b: Endpoint) -> None:
        """Watch ``b``'s decoder from now on (the first frame is the baseline)."""
        decoder_queue = _transceiver(b.pc, "video").receiver._RTCRtpReceiver__decoder_queue
        put = decoder_queue._put

        def watching_put(item: Any) -> None:
            if item is not None:
                self._check(item[1].data)
            put(item)

        decoder_queue._put = watching_put

    def _check(self, frame: bytes) -> None:
        self.decoded += 1
        index = self.sent.get(frame)
        if index is None:
            self.unknown += 1
            return
        keyframe = not frame[0] & 0x01
        if not keyframe and self._previous is not None and index != self._previous + 1:
            self.after_gap += 1
        self._previous = index


def drop_retransmissions(b: Endpoint, rtx_payload_type: int) -> Callable[[], int]:
    """Drop the RTX packets ``b`` receives (a retransmission lost too): loss NACK cannot repair.
    Returns a function counting the drops. SRTP leaves the RTP header readable."""
    dropped = [0]
    seen: set[int] = set()
    for transceiver in b.pc.getTransceivers():
        ice = transceiver.receiver.transport.transport.iceGatherer._connection
        for protocol in ice._protocols:
            if id(protocol) in seen:
                continue
            seen.add(id(protocol))
            receive = protocol.datagram_received

            def filtered(data: bytes, addr: Any, receive: Any = receive) -> None:
                if len(data) > 1 and 128 <= data[0] < 192 and data[1] & 0x7F == rtx_payload_type:
                    dropped[0] += 1
                    return
                receive(data, addr)

            protocol.datagram_received = filtered
    return lambda: dropped[0]


async def test_audio_at_20_percent_loss_is_mostly_decrypted_and_the_rest_concealed() -> None:
    a, b = av_call()
    try:
        await connect(a, b)
        await until(lambda: len(b.counters) == 2)
        sender = a.pc.sender_tap(_transceiver(a.pc, "audio").sender).counters
        receiver = b.pc.receiver_tap(_transceiver(b.pc, "audio").receiver).counters
        impairer = Impairer(Impairment(loss=0.2), seed=11)
        impair_connection(b.pc, inbound=impairer)
        await until(lambda: impairer.dropped + impairer.passed > 0)
        sent0, decrypted0 = sender.frames_encrypted, receiver.frames_decrypted
        concealed0, played0 = receiver.frames_concealed, b.counter("audio").frames
        await until(lambda: sender.frames_encrypted - sent0 >= 150)
        sent = sender.frames_encrypted - sent0
        # What was sent so far is decrypted or concealed, frame for frame (aiortc's own buffer
        # got about 28 % of frames through, and played nothing in place of the rest).
        await until(
            lambda: (
                receiver.frames_decrypted - decrypted0 + receiver.frames_concealed - concealed0
                >= sent - 5
            ),
            timeout=5,
        )
        decrypted = receiver.frames_decrypted - decrypted0
        concealed = receiver.frames_concealed - concealed0
        assert decrypted >= 0.7 * sent
        assert concealed >= 0.1 * sent
        assert receiver.frames_dropped == 0
        # Played audio keeps its length: a decoded frame for every frame sent.
        await until(lambda: b.counter("audio").frames - played0 >= sent - 5, timeout=5)
        assert impairer.dropped >= 0.1 * (impairer.dropped + impairer.passed)
    finally:
        await a.close()
        await b.close()


async def test_video_loss_is_repaired_by_nack_and_retransmissions_decrypt() -> None:
    a, b = av_call()
    try:
        watch = DecoderWatch(a)
        await connect(a, b)
        await until(lambda: len(b.counters) == 2)
        watch.attach(b)
        sender = a.pc.sender_tap(_transceiver(a.pc, "video").sender).counters
        video = _transceiver(b.pc, "video").receiver
        tap = b.pc.receiver_tap(video).counters
        loss = loss_counters(video)
        impair_connection(b.pc, inbound=Impairer(Impairment(loss=0.2), seed=5))
        played = b.counter("video").frames
        await until(
            lambda: loss.retransmissions_received >= 10 and b.counter("video").frames > played + 60
        )
        assert loss.nacks_sent >= 1
        assert loss.packets_nacked >= loss.nacks_sent
        assert sender.retransmissions_sent >= loss.retransmissions_received
        assert tap.frames_dropped == 0  # retransmitted packets carry the frames intact
        assert watch.unknown == 0
        assert watch.after_gap == 0
        stats = await StatsCollector(b.pc).collect()
        inbound = next(s for s in stats.inbound if s.kind == "video")
        assert inbound.nacks_sent == loss.nacks_sent
        assert inbound.retransmissions_received == loss.retransmissions_received
    finally:
        await a.close()
        await b.close()


async def test_unrepairable_video_loss_never_reaches_the_decoder_and_key_frames_are_requested() -> (
    None
):
    a, b = av_call()
    try:
        watch = DecoderWatch(a)
        await connect(a, b)
        await until(lambda: len(b.counters) == 2)
        watch.attach(b)
        rtx = a.pc.getSenders()[1]._RTCRtpSender__rtx_payload_type
        assert rtx is not None
        retransmissions_dropped = drop_retransmissions(b, rtx)
        sender = a.pc.sender_tap(_transceiver(a.pc, "video").sender).counters
        video = _transceiver(b.pc, "video").receiver
        tap = b.pc.receiver_tap(video).counters
        loss = loss_counters(video)
        impairer = Impairer(Impairment(loss=0.2), seed=9)
        impair_connection(b.pc, inbound=impairer)
        # Frames are lost for good: each such loss is a key-frame request, answered.
        await until(
            lambda: tap.frames_skipped + loss.frames_lost >= 3 and tap.keyframe_requests >= 3
        )
        await until(lambda: sender.keyframe_requests_received >= 3 and loss.plis_sent >= 3)
        assert retransmissions_dropped() >= 1

        # A 1 s outage: afterwards the picture comes back, from a key frame.
        dropped = impairer.dropped
        impairer.outage = True
        await until(lambda: impairer.dropped > dropped + 60)
        impairer.outage = False
        keyframes, played = tap.keyframes_decrypted, b.counter("video").frames
        plis, answered = loss.plis_sent, sender.keyframe_requests_received
        await until(
            lambda: tap.keyframes_decrypted > keyframes and b.counter("video").frames > played + 10
        )

        assert loss.plis_sent > plis
        assert sender.keyframe_requests_received > answered
        assert watch.decoded >= 10
        assert watch.unknown == 0
        assert watch.after_gap == 0  # no frame decoded from a missing reference
        assert tap.frames_dropped == 0  # never a partial frame
    finally:
        await a.close()
        await b.close()


async def test_reordering_without_loss_costs_no_frame_no_nack_and_no_key_frame() -> None:
    """100 +- 30 ms delay, 0 % loss: packets kept in order, then overtaking each other. aiortc
    NACKed every overtaken packet (and our impairer reordered packets due at the same moment)."""
    a, b = av_call()
    try:
        watch = DecoderWatch(a)
        await connect(a, b)
        await until(lambda: len(b.counters) == 2)
        watch.attach(b)
        video = _transceiver(b.pc, "video").receiver
        tap = b.pc.receiver_tap(video).counters
        loss = loss_counters(video)
        in_order = Impairment(delay_ms=100, jitter_ms=30, keep_order=True)
        inbound, outbound = Impairer(in_order, seed=21), Impairer(in_order, seed=22)
        impair_connection(b.pc, inbound=inbound, outbound=outbound)
        played = b.counter("video").frames
        await until(lambda: b.counter("video").frames > played + 30)
        assert loss.nacks_sent == 0

        # Reordering: the first overtaken packets may be NACKed while the receiver learns how
        # late packets come; after that, none.
        reordered = Impairment(delay_ms=100, jitter_ms=30)
        inbound.impairment = outbound.impairment = reordered
        played = b.counter("video").frames
        await until(lambda: b.counter("video").frames > played + 45)
        nacks, played = loss.nacks_sent, b.counter("video").frames
        await until(lambda: b.counter("video").frames > played + 60)
        assert loss.nacks_sent == nacks
        assert loss.frames_lost == 0
        assert loss.packets_given_up == 0
        assert tap.frames_skipped == 0
        assert tap.keyframe_requests == 0
        assert loss.plis_sent == 0
        assert watch.unknown == 0
        assert watch.after_gap == 0
    finally:
        await a.close()
        await b.close()
