"""A group call's one link to its SFU: the interface, and admission (docs/sfu-protocol.md).

In SFU mode a :class:`~sealcall.session.group_call.GroupCallSession` builds no mesh: it is
admitted by the room's SFU (:func:`admit`: our OpenID token for a short-lived join token) and
opens ONE :class:`SfuLink` with it. What the link learns comes back through
:class:`SfuLinkEvents`, which the session implements. Two implementations exist:

- :class:`~sealcall.session.sfu_session.AiortcSfuLink` (the default): an aiortc connection
  whose senders carry the shared encoders' SFrame-protected frames (see
  :mod:`sealcall.media.sfu_connection`) and whose receivers decrypt each forwarded stream with
  the key of the member the SFU's ``tracks`` names;
- the web client's, whose media runs in a browser page.

A link is made by an :data:`SfuLinkFactory` from the session's events and an
:class:`SfuLinkSetup` (what the link sends and decrypts with); :meth:`SfuLink.open` is called
once, then any number of :meth:`~SfuLink.subscribe` and :meth:`~SfuLink.floor`, then
:meth:`~SfuLink.close` (idempotent). Events are called on the event loop, never after
:meth:`~SfuLink.close` returned; ``closed`` is called once when the link ends by itself (the SFU
closed it, ``admission_ended``, ICE failed), not when the session closed it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp
from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamTrack

from sealcall.group import MemberDevice
from sealcall.media import FrameOpener, ReceiverTap
from sealcall.signaling import StreamPurpose
from sealcall.transport.matrix import MatrixTransport

from .group_sending import GroupSending

logger = logging.getLogger(__name__)

Quality = Literal["thumbnail", "full", "none"]
"""A subscription to a publisher's video: its thumbnail (the default), its full resolution, or
none of its video."""
QUALITIES: tuple[Quality, ...] = ("thumbnail", "full", "none")
MAX_JOIN_TOKEN = 4096
ADMIT_TIMEOUT = 20.0  # seconds: the SFU asks our homeserver, which may be slow


@dataclass(frozen=True)
class ForwardedTrack:
    """One stream the SFU forwards to us: its m-line, its SSRC, its kind and whose it is."""

    mid: str
    ssrc: int
    kind: str  # "audio" or "video"
    member: MemberDevice


class SfuLinkEvents(Protocol):
    """What a link tells its group call (implemented by ``GroupCallSession``)."""

    def sfu_tracks(self, tracks: list[ForwardedTrack]) -> None:
        """The complete list of streams forwarded to us now (after each renegotiation)."""
        ...

    def sfu_speaking(self, members: list[MemberDevice]) -> None:
        """Who is speaking now, loudest first (from the senders' RFC 6464 audio levels)."""
        ...

    def sfu_layer(self, publisher: MemberDevice, quality: Quality) -> None:
        """The layer of ``publisher``'s video we now receive (after its key frame)."""
        ...

    def sfu_floor(self, holder: MemberDevice | None) -> None:
        """Who has the focus (one holder per room), or nobody."""
        ...

    def sfu_muted(self, member: MemberDevice, audio: bool, video: bool) -> None:
        """``member`` says its microphone / camera are muted (an indicator, as MSC3291's)."""
        ...

    def sfu_media_added(
        self, member: MemberDevice, track: MediaStreamTrack, purpose: StreamPurpose
    ) -> None:
        """A forwarded stream of ``member`` is decrypted into ``track`` (Python links only;
        a page's media stays in the page)."""
        ...

    def sfu_media_removed(
        self, member: MemberDevice, track: MediaStreamTrack, purpose: StreamPurpose
    ) -> None:
        """A forwarded stream ended (its member left or stopped sending it)."""
        ...

    def sfu_closed(self, reason: str) -> None:
        """The link ended by itself (``admission_ended``, ``connection_failed``, ...)."""
        ...


@dataclass(frozen=True)
class SfuLinkSetup:
    """What a link sends and decrypts with, and how it connects."""

    own: MemberDevice
    room_id: str
    sending: GroupSending
    """Our shared encoders (encode and protect once): microphone, camera (thumbnail),
    camera_full (full resolution)."""
    opener: Callable[[MemberDevice], FrameOpener]
    """What decrypts a member's frames: its group keys."""
    audio_level: bool = True
    """Send RFC 6464 audio levels so that the SFU can say who is speaking: a conscious
    metadata leak (the SFU learns when we speak); False keeps it to ourselves."""
    ice_servers: Sequence[RTCIceServer] = ()
    host_addresses: Sequence[str] | None = None
    options: dict[str, object] = field(default_factory=dict)
    """Implementation options (e.g. ``remb_cap``: the aiortc link's simulated bandwidth cap)."""


class SfuLink(Protocol):
    """One member's link to the SFU (see the module docstring for the life cycle)."""

    async def open(self, url: str, join_token: str) -> None:
        """Join the SFU at ``url`` (``http(s)://host:port``) with a join token from
        :func:`admit`: connect, publish, start the control channel. Raises
        :class:`SfuLinkError` if the SFU refuses or the connection fails."""
        ...

    async def subscribe(self, publisher: MemberDevice, quality: Quality) -> None:
        """Ask for ``publisher``'s video at ``quality``; the SFU answers with ``layer``."""
        ...

    async def floor(self, request: bool) -> None:
        """Ask for the focus (True) or give it up (False); the SFU answers with ``floor``."""
        ...

    def mute(self, audio: bool, video: bool) -> None:
        """Tell the others whether our microphone / camera are muted (queued until the control
        channel opens; the SFU tells them ``muted``)."""
        ...

    def receiver_taps(self) -> dict[MemberDevice, list[ReceiverTap]]:
        """What each member's forwarded streams decrypted and dropped so far (empty when the
        media runs elsewhere)."""
        ...

    async def close(self) -> None:
        """Leave the SFU and release the connection (idempotent)."""
        ...


SfuLinkFactory = Callable[[SfuLinkEvents, SfuLinkSetup], SfuLink]
"""Makes a group call's link (default: the aiortc link)."""


class SfuLinkError(Exception):
    """The link to the SFU failed or the SFU ended it; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SfuAdmissionError(SfuLinkError):
    """The SFU refused to admit us: ``reason`` is its answer (``not_member``, ``bad_token``,
    ``wrong_focus``, ``unknown_room``, ``unavailable``, ``busy``, ``bad_request``) or
    ``unreachable`` / ``bad_answer`` when it gave none."""


async def admit(
    transport: MatrixTransport,
    url: str,
    room_id: str,
    *,
    membership_id: str | None = None,
    session: aiohttp.ClientSession | None = None,
    timeout: float = ADMIT_TIMEOUT,
) -> str:
    """A join token for the SFU at ``url``: our OpenID token posted to ``{url}/admit``.

    Raises :class:`SfuAdmissionError` with the SFU's reason when refused; the OpenID token is
    never logged.
    """
    token = await transport.request_openid_token()
    body: dict[str, object] = {
        "user_id": transport.user_id,
        "device_id": transport.device_id,
        "room_id": room_id,
        "openid_token": token.to_json(),
    }
    if membership_id is not None:
        body["membership_id"] = membership_id
    own = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with http.post(
            f"{url.rstrip('/')}/admit", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            try:
                answer = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                answer = None
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        logger.warning("sfu admission: %s unreachable (%s)", url, type(error).__name__)
        raise SfuAdmissionError("unreachable") from None
    finally:
        if own:
            await http.close()
    return _join_token(status, answer)


def _join_token(status: int, answer: object) -> str:
    """The join token of an ``/admit`` answer, or the refusal as :class:`SfuAdmissionError`."""
    if not isinstance(answer, dict):
        raise SfuAdmissionError("bad_answer")
    if status == 200:
        token = answer.get("join_token")
        if isinstance(token, str) and 0 < len(token) <= MAX_JOIN_TOKEN and token.isprintable():
            return token
        raise SfuAdmissionError("bad_answer")
    reason = answer.get("error")
    if isinstance(reason, str) and 0 < len(reason) <= 64 and reason.isidentifier():
        raise SfuAdmissionError(reason)
    raise SfuAdmissionError("bad_answer")
