"""SDP for the SFU's end of a participant's connection: answer its offer, offer forwarded streams.

Sans-I/O: plain functions over SDP text (parsed and written with aiortc's ``sdp`` module). The SFU
accepts only what its forwarding path handles: Opus audio with the RFC 6464 audio-level extension,
VP8 video with its RTX companion where offered, the MID extension for BUNDLE demultiplexing, one
BUNDLE group, rtcp-mux, and one data-channel m-line (SCTP over the same DTLS, RFC 8841; the
``control`` channel) answered in the form offered (``UDP/DTLS/SCTP`` with ``a=sctp-port``, or the
legacy ``DTLS/SCTP`` with ``a=sctpmap``). Every other m-line is rejected with port 0. The offer's
m-lines are accepted as sent, so a sender's two video tracks (thumbnail and full resolution) arrive
as two m-lines with their own SSRCs.

A forwarded stream that ends (its publisher left) goes back into the next offer as a rejected
m-line (port 0, ``inactive``, out of the BUNDLE group, RFC 8843 section 7.3.3); such a line may be
recycled for a later forwarded stream of the same kind under a new mid (JSEP, RFC 8829 5.2.2).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiortc import sdp
from aiortc.rtcdtlstransport import RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtcsctptransport import RTCSctpCapabilities

from .rtp import MID_URI

__all__ = [
    "AUDIO_LEVEL_URI",
    "MAX_SCTP_MESSAGE",
    "MID_URI",
    "SCTP_PORT",
    "Answered",
    "LocalTransport",
    "MLine",
    "MediaSection",
    "NegotiationError",
    "SctpSection",
    "answered_rtx",
    "build_answer",
    "build_offer",
    "check_answer",
    "free_payload_type",
    "new_send_section",
    "rejected_mline",
    "rtx_codec",
]

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_ACCEPTED_EXTENSIONS = {
    "audio": (MID_URI, AUDIO_LEVEL_URI),
    "video": (MID_URI, ABS_SEND_TIME_URI),
}
_CODEC = {"audio": "audio/opus", "video": "video/VP8"}
_PROFILE = "UDP/TLS/RTP/SAVPF"
_DISCARD_HOST = "0.0.0.0"  # noqa: S104 - the SDP c= placeholder of ICE (RFC 8839), no bind
_DISCARD_PORT = 9
SCTP_PORT = 5000  # the SFU's SCTP port (RFC 8841 default)
MAX_SCTP_MESSAGE = 65536  # what the SFU announces in a=max-message-size


class NegotiationError(ValueError):
    """A remote SDP the SFU cannot use (remote input): unparsable, no usable m-line, no BUNDLE."""


@dataclass(frozen=True)
class LocalTransport:
    """What the SFU puts in every accepted m-line about its one ICE/DTLS transport."""

    ice: RTCIceParameters
    candidates: tuple[RTCIceCandidate, ...]
    dtls: RTCDtlsParameters
    cname: str


@dataclass
class MediaSection:
    """One accepted m-line: what the forwarding path needs to read and write its RTP."""

    mid: str
    kind: str
    direction: str
    """The SFU's direction: ``recvonly`` (participant publishes), ``sendonly``, ``sendrecv``."""
    payload_type: int
    clock_rate: int
    rtx_payload_type: int | None = None
    audio_level_id: int | None = None
    mid_ext_id: int | None = None
    remote_ssrcs: tuple[int, ...] = ()
    """The participant's SSRCs (media first, then RTX) announced for this m-line."""
    local_ssrc: int | None = None
    local_rtx_ssrc: int | None = None
    codecs: list[RTCRtpCodecParameters] = field(default_factory=list, repr=False)
    extensions: list[RTCRtpHeaderExtensionParameters] = field(default_factory=list, repr=False)

    @property
    def sends(self) -> bool:
        """Whether the SFU sends on this m-line."""
        return self.direction in ("sendonly", "sendrecv")


@dataclass(frozen=True)
class SctpSection:
    """The participant's data-channel m-line as accepted: where its SCTP association listens."""

    mid: str
    remote_port: int
    remote_max_message_size: int | None


def rejected_mline(
    kind: str,
    mid: str | None,
    profile: str,
    fmt: list[object],
    codecs: list[RTCRtpCodecParameters] | None = None,
) -> sdp.MediaDescription:
    """A rejected (or removed) m-line: port 0, ``inactive``, keeping its mid and formats.

    A removed forwarded stream keeps its ``codecs`` (rtpmap lines): aiortc refuses an offered
    audio/video m-line without a codec it knows, even with port 0.
    """
    rejected = sdp.MediaDescription(kind=kind, port=0, profile=profile, fmt=list(fmt))
    rejected.rtp = RTCRtpParameters(codecs=list(codecs or []), muxId=mid or "")
    rejected.direction = "inactive"
    return rejected


def _accept_sctp(media: sdp.MediaDescription) -> tuple[sdp.MediaDescription, SctpSection] | None:
    """The answer's data-channel m-line and what SCTP needs, or None if it cannot be used."""
    mid = media.rtp.muxId
    if media.port == 0 or not mid:
        return None
    legacy = media.profile == "DTLS/SCTP"
    if legacy:
        remote_port = next(
            (k for k, v in media.sctpmap.items() if v.startswith("webrtc-datachannel")), None
        )
    elif media.profile == "UDP/DTLS/SCTP" and media.fmt == ["webrtc-datachannel"]:
        remote_port = media.sctp_port if media.sctp_port is not None else SCTP_PORT
    else:
        return None
    if remote_port is None or not 0 < remote_port < 65536:
        return None
    caps = media.sctpCapabilities
    if legacy:
        answer = sdp.MediaDescription(
            kind="application", port=_DISCARD_PORT, profile="DTLS/SCTP", fmt=[SCTP_PORT]
        )
        answer.sctpmap[SCTP_PORT] = "webrtc-datachannel 65535"
    else:
        answer = sdp.MediaDescription(
            kind="application",
            port=_DISCARD_PORT,
            profile="UDP/DTLS/SCTP",
            fmt=["webrtc-datachannel"],
        )
        answer.sctp_port = SCTP_PORT
    answer.rtp.muxId = mid
    answer.sctpCapabilities = RTCSctpCapabilities(maxMessageSize=MAX_SCTP_MESSAGE)
    max_size = caps.maxMessageSize if caps is not None else None
    return answer, SctpSection(mid, remote_port, max_size)


def _random_ssrc(taken: set[int]) -> int:
    while True:
        ssrc = secrets.randbits(32)
        if ssrc and ssrc not in taken:
            taken.add(ssrc)
            return ssrc


def _parse(text: str, kind: str) -> sdp.SessionDescription:
    try:
        return sdp.SessionDescription.parse(text)
    # aiortc's parser signals bad input with assert, StopIteration, KeyError, ValueError...: any of
    # them on remote text is a refused SDP, never a crash.
    except Exception as exc:
        raise NegotiationError(f"unparsable SDP {kind}") from exc


def _pick_codecs(
    media: sdp.MediaDescription,
) -> tuple[RTCRtpCodecParameters, RTCRtpCodecParameters | None] | None:
    wanted = _CODEC.get(media.kind)
    main = next((c for c in media.rtp.codecs if c.mimeType.lower() == (wanted or "").lower()), None)
    if main is None:
        return None
    rtx = next(
        (
            c
            for c in media.rtp.codecs
            if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == main.payloadType
        ),
        None,
    )
    return main, rtx


def _transport_lines(media: sdp.MediaDescription, local: LocalTransport) -> None:
    media.host = _DISCARD_HOST
    media.rtcp_host = _DISCARD_HOST
    media.rtcp_port = _DISCARD_PORT
    media.rtcp_mux = True
    media.ice = local.ice
    media.ice_candidates = list(local.candidates)
    media.ice_candidates_complete = True
    media.dtls = local.dtls


def _section_media(section: MediaSection, local: LocalTransport) -> sdp.MediaDescription:
    media = sdp.MediaDescription(
        kind=section.kind,
        port=_DISCARD_PORT,
        profile=_PROFILE,
        fmt=[c.payloadType for c in section.codecs],
    )
    media.direction = section.direction
    media.rtp = RTCRtpParameters(
        codecs=section.codecs, headerExtensions=section.extensions, muxId=section.mid
    )
    if section.local_ssrc is not None:
        media.msid = f"sfu-{local.cname} sfu-{section.mid}"
        media.ssrc = [sdp.SsrcDescription(ssrc=section.local_ssrc, cname=local.cname)]
        if section.local_rtx_ssrc is not None:
            media.ssrc.append(sdp.SsrcDescription(ssrc=section.local_rtx_ssrc, cname=local.cname))
            media.ssrc_group = [
                sdp.GroupDescription(
                    semantic="FID", items=[section.local_ssrc, section.local_rtx_ssrc]
                )
            ]
    _transport_lines(media, local)
    return media


def _session(medias: list[sdp.MediaDescription], version: int, type_: str) -> str:
    session = sdp.SessionDescription()
    session.origin = f"- {_SESSION_ID} {version} IN IP4 0.0.0.0"
    session.type = type_
    session.media = medias
    mids = [m.rtp.muxId for m in medias if m.port != 0 and m.rtp.muxId]
    session.group = [sdp.GroupDescription(semantic="BUNDLE", items=list(mids))]
    session.msid_semantic = [sdp.GroupDescription(semantic="WMS", items=["*"])]
    return str(session)


_SESSION_ID = secrets.randbits(62)


def _reverse(direction: str | None) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction or "", direction or "")


MLine = sdp.MediaDescription | MediaSection
"""An m-line as the SFU keeps it: an RTP one it accepted (a ``MediaSection``), or its SDP (the
accepted data-channel line, or a rejected line with port 0)."""


@dataclass
class Answered:
    """The SFU's answer to a participant's offer and what it accepted."""

    text: str
    mlines: list[MLine]
    offer: sdp.SessionDescription
    sctp: SctpSection | None


def build_answer(offer: str, local: LocalTransport, taken_ssrcs: set[int]) -> Answered:
    """Answer a participant's offer.

    The SFU sends on every m-line the participant wants to receive on, with fresh SSRCs (added to
    ``taken_ssrcs``), and accepts its first data-channel m-line. Raise ``NegotiationError`` when
    nothing usable is offered or there is no transport description.
    """
    parsed = _parse(offer, "offer")
    first = parsed.media[0] if parsed.media else None
    if (
        first is None
        or first.ice is None
        or not first.ice.usernameFragment
        or not first.ice.password
        or first.dtls is None
        or not first.dtls.fingerprints
    ):
        raise NegotiationError("offer without ICE or DTLS parameters")
    answer_medias: list[sdp.MediaDescription] = []
    mlines: list[MLine] = []
    sections: list[MediaSection] = []
    sctp: SctpSection | None = None
    for media in parsed.media:
        if media.kind == "application" and sctp is None:
            accepted = _accept_sctp(media)
            if accepted is not None:
                answer_media, sctp = accepted
                _transport_lines(answer_media, local)
                answer_medias.append(answer_media)
                mlines.append(answer_media)
                continue
        picked = _pick_codecs(media) if media.kind in _CODEC and media.port != 0 else None
        mid = media.rtp.muxId
        if picked is None or not mid or media.direction == "inactive":
            rejected = rejected_mline(media.kind, mid, media.profile, media.fmt)
            _transport_lines(rejected, local)
            answer_medias.append(rejected)
            mlines.append(rejected)
            continue
        main, rtx = picked
        wanted_ext = _ACCEPTED_EXTENSIONS[media.kind]
        extensions = [e for e in media.rtp.headerExtensions if e.uri in wanted_ext]
        direction = _reverse(media.direction)
        sends = direction in ("sendonly", "sendrecv")
        section = MediaSection(
            mid=mid,
            kind=media.kind,
            direction=direction,
            payload_type=int(main.payloadType or 0),
            clock_rate=main.clockRate,
            rtx_payload_type=None if rtx is None else rtx.payloadType,
            audio_level_id=next((e.id for e in extensions if e.uri == AUDIO_LEVEL_URI), None),
            mid_ext_id=next((e.id for e in extensions if e.uri == MID_URI), None),
            remote_ssrcs=tuple(s.ssrc for s in media.ssrc),
            local_ssrc=_random_ssrc(taken_ssrcs) if sends else None,
            local_rtx_ssrc=_random_ssrc(taken_ssrcs) if sends and rtx is not None else None,
            codecs=[main] if rtx is None else [main, rtx],
            extensions=extensions,
        )
        sections.append(section)
        mlines.append(section)
        answer_medias.append(_section_media(section, local))
    if not sections:
        raise NegotiationError("offer has no Opus or VP8 m-line")
    if not any(g.semantic == "BUNDLE" for g in parsed.group):
        raise NegotiationError("offer without BUNDLE")
    local_dtls = RTCDtlsParameters(fingerprints=local.dtls.fingerprints)
    # The participant's "actpass" makes the SFU the DTLS client, as aiortc and browsers answer.
    local_dtls.role = "server" if first.dtls.role == "client" else "client"
    for media in answer_medias:
        media.dtls = local_dtls
    return Answered(_session(answer_medias, 1, "answer"), mlines, parsed, sctp)


def new_send_section(
    kind: str,
    mid: str,
    template: MediaSection,
    taken_ssrcs: set[int],
    rtx_payload_type: int | None = None,
) -> MediaSection:
    """A ``sendonly`` m-line for a forwarded stream, with the codecs negotiated in ``template``.

    Video gets RTX (RFC 4588: its own SSRC, paired by FID) on ``rtx_payload_type`` when the
    template negotiated RTX and one is given; without one the m-line offers no RTX. A payload
    type of its own per m-line lets a receiver that routes an unannounced SSRC by payload type
    (aiortc 1.16 registers only media SSRCs) find the m-line an RTX packet belongs to.
    """
    codecs = [c for c in template.codecs if c.payloadType == template.payload_type]
    if template.rtx_payload_type is None or rtx_payload_type is None:
        rtx_payload_type = None
    else:
        codecs.append(rtx_codec(template.payload_type, rtx_payload_type))
    return MediaSection(
        mid=mid,
        kind=kind,
        direction="sendonly",
        payload_type=template.payload_type,
        clock_rate=template.clock_rate,
        rtx_payload_type=rtx_payload_type,
        audio_level_id=template.audio_level_id,
        mid_ext_id=template.mid_ext_id,
        local_ssrc=_random_ssrc(taken_ssrcs),
        local_rtx_ssrc=None if rtx_payload_type is None else _random_ssrc(taken_ssrcs),
        codecs=codecs,
        extensions=list(template.extensions),
    )


def rtx_codec(apt: int, payload_type: int) -> RTCRtpCodecParameters:
    """The ``video/rtx`` codec on ``payload_type`` retransmitting payload type ``apt``."""
    return RTCRtpCodecParameters(
        mimeType="video/rtx", clockRate=90000, payloadType=payload_type, parameters={"apt": apt}
    )


def free_payload_type(mlines: Iterable[MLine]) -> int | None:
    """A dynamic payload type (96-127) no live m-line of ``mlines`` uses, or None if all are."""
    used: set[int] = set()
    for mline in mlines:
        if isinstance(mline, MediaSection):
            if mline.direction != "inactive":
                used.update(c.payloadType or 0 for c in mline.codecs)
        elif mline.port != 0:
            used.update(c.payloadType or 0 for c in mline.rtp.codecs)
    return next((pt for pt in range(96, 128) if pt not in used), None)


def answered_rtx(media: sdp.MediaDescription, payload_type: int) -> int | None:
    """The RTX payload type an answer's m-line kept for ``payload_type`` (None: no RTX)."""
    return next(
        (
            c.payloadType
            for c in media.rtp.codecs
            if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == payload_type
        ),
        None,
    )


def build_offer(
    all_medias: Iterable[MLine],
    local: LocalTransport,
    dtls_role: str,
    version: int,
) -> str:
    """A renegotiation offer: the m-lines so far (kept in order), then the new sections."""
    medias: list[sdp.MediaDescription] = []
    for item in all_medias:
        if isinstance(item, MediaSection):
            medias.append(_section_media(item, local))
        else:
            _transport_lines(item, local)
            medias.append(item)
    local_dtls = RTCDtlsParameters(fingerprints=local.dtls.fingerprints)
    local_dtls.role = dtls_role
    for media in medias:
        media.dtls = local_dtls
    return _session(medias, version, "offer")


def check_answer(answer: str, offered: list[MLine]) -> sdp.SessionDescription:
    """Parse the participant's answer to an SFU offer; its m-lines must follow the offer's."""
    parsed = _parse(answer, "answer")
    if len(parsed.media) != len(offered):
        raise NegotiationError("answer m-lines do not match the offer")
    for media, mline in zip(parsed.media, offered, strict=True):
        if isinstance(mline, MediaSection) and media.rtp.muxId != mline.mid:
            raise NegotiationError("answer m-lines do not match the offer")
    return parsed
