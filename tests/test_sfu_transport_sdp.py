"""The SFU's SDP answers and offers (sans-I/O): a browser-style offer, renegotiation, fuzzing."""

from __future__ import annotations

import pytest
from aiortc import sdp
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealcall.sfu.negotiation import (
    AUDIO_LEVEL_URI,
    LocalTransport,
    MediaSection,
    NegotiationError,
    build_answer,
    build_offer,
    check_answer,
    free_payload_type,
    new_send_section,
    rejected_mline,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TRANSPORT = (
    "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n"
)


def _video(mid: str, ssrc: int, rtx: int) -> str:
    return (
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\nc=IN IP4 0.0.0.0\r\n"
        + _TRANSPORT
        + f"a=mid:{mid}\r\na=sendrecv\r\n"
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
        "a=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
        "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
        "a=rtcp-fb:96 goog-remb\r\n"
        "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
        "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1\r\n"
        "a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n"
        f"a=ssrc-group:FID {ssrc} {rtx}\r\n"
        f"a=ssrc:{ssrc} cname:browser\r\na=ssrc:{rtx} cname:browser\r\n"
    )


# A browser-style offer: Opus (and PCMU) audio with audio level, two VP8/H264 video m-lines
# (thumbnail and full resolution, each with RTX), a data channel.
BROWSER_OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2 3\r\n"
    "a=msid-semantic: WMS stream\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\n"
    + _TRANSPORT
    + "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
    "a=mid:0\r\na=sendrecv\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=ssrc:1111 cname:browser\r\n"
    + _video("1", 2222, 2223)
    + _video("2", 3333, 3334)
    + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    + _TRANSPORT
    + "a=mid:3\r\na=sctp-port:5000\r\n"
)


@pytest.fixture(scope="module")
def local() -> LocalTransport:
    cert = RTCCertificate.generateCertificate()
    return LocalTransport(
        ice=RTCIceParameters(usernameFragment="sfu1", password="sfupassword0123456789ab"),
        candidates=(
            RTCIceCandidate(
                component=1,
                foundation="1",
                ip="127.0.0.1",
                port=5000,
                priority=2130706431,
                protocol="udp",
                type="host",
            ),
        ),
        dtls=RTCDtlsParameters(fingerprints=cert.getFingerprints()),
        cname="sfu",
    )


def test_browser_offer_keeps_opus_vp8_rtx_and_both_video_lines(local: LocalTransport) -> None:
    taken: set[int] = set()
    answered = build_answer(BROWSER_OFFER, local, taken)
    text, mlines = answered.text, answered.mlines
    answer = sdp.SessionDescription.parse(text)
    assert [m.rtp.muxId for m in answer.media] == ["0", "1", "2", "3"]
    # The data channel is accepted in the form offered, bundled with the media.
    channel = answer.media[3]
    assert (channel.port, channel.profile, channel.sctp_port) == (9, "UDP/DTLS/SCTP", 5000)
    assert answered.sctp is not None
    assert (answered.sctp.mid, answered.sctp.remote_port) == ("3", 5000)
    assert answer.group[0].semantic == "BUNDLE"
    assert answer.group[0].items == ["0", "1", "2", "3"]
    audio, thumb, full = (m for m in mlines if isinstance(m, MediaSection))
    assert (audio.payload_type, audio.clock_rate, audio.remote_ssrcs) == (111, 48000, (1111,))
    assert audio.audio_level_id == 1
    assert audio.mid_ext_id == 4
    assert (thumb.payload_type, thumb.rtx_payload_type, thumb.remote_ssrcs) == (
        96,
        97,
        (2222, 2223),
    )
    assert full.remote_ssrcs == (3333, 3334)
    for media in answer.media[:3]:
        assert media.rtcp_mux
        assert media.dtls is not None
        assert media.dtls.role == "client"  # setup:active
        assert media.ice_candidates[0].ip == "127.0.0.1"
        assert "PCMU" not in str(media)
        assert "H264" not in str(media)
        uris = {e.uri for e in media.rtp.headerExtensions}
        assert "transport-wide-cc" not in " ".join(uris)
    assert {e.uri for e in answer.media[0].rtp.headerExtensions} >= {AUDIO_LEVEL_URI}
    # The SFU sends on each line (the offer is sendrecv) from SSRCs of its own, RTX paired by FID.
    assert full.local_ssrc is not None
    assert full.local_rtx_ssrc is not None
    assert answer.media[2].ssrc_group[0].items == [full.local_ssrc, full.local_rtx_ssrc]
    assert len(taken) == 5


def test_recvonly_and_sendonly_lines_are_mirrored(local: LocalTransport) -> None:
    offer = BROWSER_OFFER.replace("a=mid:1\r\na=sendrecv", "a=mid:1\r\na=sendonly").replace(
        "a=mid:2\r\na=sendrecv", "a=mid:2\r\na=recvonly"
    )
    mlines = build_answer(offer, local, set()).mlines
    sections = [m for m in mlines if isinstance(m, MediaSection)]
    assert [s.direction for s in sections] == ["sendrecv", "recvonly", "sendonly"]
    assert sections[1].local_ssrc is None


def test_renegotiation_offer_keeps_the_old_lines_and_adds_sendonly_ones(
    local: LocalTransport,
) -> None:
    taken: set[int] = set()
    mlines = build_answer(BROWSER_OFFER, local, taken).mlines
    template = next(m for m in mlines if isinstance(m, MediaSection) and m.kind == "video")
    rtx = free_payload_type(mlines)
    assert rtx is not None
    added = new_send_section("video", "f4", template, taken, rtx)
    text = build_offer([*mlines, added], local, "client", 2)
    offer = sdp.SessionDescription.parse(text)
    assert [m.rtp.muxId for m in offer.media] == ["0", "1", "2", "3", "f4"]
    assert offer.media[4].direction == "sendonly"
    assert offer.media[4].dtls is not None
    assert offer.media[4].dtls.role == "client"
    assert offer.group[0].items == ["0", "1", "2", "3", "f4"]
    assert [c.payloadType for c in offer.media[4].rtp.codecs] == [96, rtx]
    assert offer.media[4].rtp.codecs[1].parameters == {"apt": 96}
    assert offer.media[4].ssrc_group[0].items == [added.local_ssrc, added.local_rtx_ssrc]
    check_answer(text, [*mlines, added])  # same m-lines in the same order
    with pytest.raises(NegotiationError):
        check_answer(text, mlines)


def test_forwarded_video_is_offered_without_rtx_when_no_payload_type_is_free(
    local: LocalTransport,
) -> None:
    taken: set[int] = set()
    mlines = build_answer(BROWSER_OFFER, local, taken).mlines
    template = next(m for m in mlines if isinstance(m, MediaSection) and m.kind == "video")
    assert free_payload_type(mlines) not in {96, 97, 102, 103, 111}
    full = [new_send_section("video", f"f{pt}", template, taken, pt) for pt in range(96, 128)]
    assert free_payload_type([*mlines, *full]) is None
    added = new_send_section("video", "fx", template, taken, None)
    assert [c.mimeType for c in added.codecs] == ["video/VP8"]
    assert (added.rtx_payload_type, added.local_rtx_ssrc) == (None, None)
    media = sdp.SessionDescription.parse(build_offer([*mlines, added], local, "client", 2)).media
    assert (media[-1].ssrc_group, len(media[-1].ssrc)) == ([], 1)


def test_legacy_data_channel_offer_is_answered_in_its_form(local: LocalTransport) -> None:
    offer = BROWSER_OFFER.replace(
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=application 9 DTLS/SCTP 5001"
    ).replace("a=sctp-port:5000", "a=sctpmap:5001 webrtc-datachannel 1024")
    answered = build_answer(offer, local, set())
    channel = sdp.SessionDescription.parse(answered.text).media[3]
    assert (channel.port, channel.profile, channel.fmt) == (9, "DTLS/SCTP", ["5000"])
    assert channel.sctpmap == {5000: "webrtc-datachannel 65535"}
    assert answered.sctp is not None
    assert answered.sctp.remote_port == 5001
    # A second data-channel m-line, or one of another protocol, is rejected.
    twice = BROWSER_OFFER.replace("a=group:BUNDLE 0 1 2 3", "a=group:BUNDLE 0 1 2 3 4") + (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        + _TRANSPORT
        + "a=mid:4\r\na=sctp-port:5000\r\n"
    )
    ports = [
        m.port for m in sdp.SessionDescription.parse(build_answer(twice, local, set()).text).media
    ]
    assert ports[3:] == [9, 0]


def test_removed_stream_is_offered_with_port_0_outside_the_bundle(local: LocalTransport) -> None:
    taken: set[int] = set()
    mlines = build_answer(BROWSER_OFFER, local, taken).mlines
    template = next(m for m in mlines if isinstance(m, MediaSection) and m.kind == "video")
    added = new_send_section("video", "f4", template, taken, free_payload_type(mlines))
    removed = rejected_mline("video", "f4", "UDP/TLS/RTP/SAVPF", [96, 97], added.codecs)
    offer = sdp.SessionDescription.parse(build_offer([*mlines, removed], local, "client", 3))
    media = offer.media[4]
    assert (media.port, media.direction, media.rtp.muxId) == (0, "inactive", "f4")
    assert [c.mimeType for c in media.rtp.codecs] == ["video/VP8", "video/rtx"]  # aiortc needs them
    assert "f4" not in offer.group[0].items
    assert media.ssrc == []


@pytest.mark.parametrize(
    "offer",
    [
        "",
        "v=0\r\n",
        BROWSER_OFFER.replace("a=group:BUNDLE 0 1 2 3\r\n", ""),  # no BUNDLE
        BROWSER_OFFER.replace("opus", "speex").replace("VP8", "VP9"),  # no usable codec
        BROWSER_OFFER.replace("a=ice-ufrag:abcd\r\n", ""),
    ],
)
def test_unusable_offers_raise_negotiation_error(local: LocalTransport, offer: str) -> None:
    with pytest.raises(NegotiationError):
        build_answer(offer, local, set())


@SETTINGS
@given(st.data())
def test_fuzzed_offers_answer_or_raise_negotiation_error(
    local: LocalTransport, data: st.DataObject
) -> None:
    lines = BROWSER_OFFER.split("\r\n")
    # Drop, duplicate or mangle lines of a valid offer; only NegotiationError may come out.
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "mangle", "cut"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "mangle":
            lines[i] = data.draw(st.text(max_size=40))
        else:
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        if not lines:
            break
    try:
        answered = build_answer("\r\n".join(lines), local, set())
        text, mlines = answered.text, answered.mlines
    except NegotiationError:
        return
    sdp.SessionDescription.parse(text)
    assert any(isinstance(m, MediaSection) for m in mlines)
