"""A group call's link to its SFU when the media runs in the page (docs/web-protocol.md, "SFU
group calls").

:class:`PageSfuLink` is the :class:`~sealcall.session.sfu_link.SfuLink` of ``sealcall app``:
the group call session here did the admission (our OpenID token for a join token); the link
hands the page the SFU's URL and the join token (``sfu_join``), and the page connects, publishes
and decrypts (static/sfu.js). What the page reports (``sfu_*`` results, parsed by
:mod:`.sfu_results`) comes back through :meth:`PageSfuLink.feed` and goes on to the session as
:class:`~sealcall.session.sfu_link.SfuLinkEvents`. No media and no key passes here: the keys go
to the page's worker as in a mesh call (``group_keys``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from sealcall.group import MemberDevice
from sealcall.media import ReceiverTap
from sealcall.session.sfu_link import (
    ForwardedTrack,
    Quality,
    SfuLink,
    SfuLinkError,
    SfuLinkEvents,
    SfuLinkFactory,
    SfuLinkSetup,
)

from .page_group import ToPage, sender_id
from .sfu_results import (
    SfuFloor,
    SfuJoined,
    SfuLayer,
    SfuLeft,
    SfuMuted,
    SfuResult,
    SfuSpeaking,
    SfuState,
    SfuTracks,
)

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 30.0  # seconds for the page to capture, connect and be joined


def sfu_socket_url(url: str) -> str | None:
    """The signaling WebSocket of the SFU at ``url`` as the page opens it (static/sfu_state.js
    ``sfuSocketUrl``): ``ws://`` for ``http://``, ``wss://`` for ``https://``, ``/ws`` appended;
    None for anything else (another scheme, credentials, a query or fragment)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws"


class PageSfuLink:
    """A group call's SFU link whose connection is in the page (see the module docstring).

    ``allowed``: the SFU socket URLs the page's Content-Security-Policy lets it open; the link
    refuses any other SFU (``sfu_not_allowed``) instead of sending the page where it cannot go.
    """

    def __init__(
        self,
        events: SfuLinkEvents,
        setup: SfuLinkSetup,
        to_page: ToPage,
        *,
        allowed: frozenset[str],
        join_timeout: float = JOIN_TIMEOUT,
    ) -> None:
        self.events = events
        self.setup = setup
        self.member: MemberDevice | None = None
        """Our member device as the SFU named it (after the join)."""
        self.forwarded: frozenset[MemberDevice] = frozenset()
        """The members whose streams the SFU forwards to the page now."""
        self.dropped_results = 0
        self._to_page = to_page
        self._allowed = allowed
        self._join_timeout = join_timeout
        self._joined: asyncio.Future[None] | None = None
        self._opened = False
        self._closed = False  # by close()
        self._ended = False  # by the page: the session heard sfu_closed, nothing follows

    @classmethod
    def factory(cls, to_page: ToPage, *, allowed: frozenset[str]) -> SfuLinkFactory:
        """An :data:`SfuLinkFactory` whose links drive the page that ``to_page`` reaches."""

        def make(events: SfuLinkEvents, setup: SfuLinkSetup) -> SfuLink:
            return cls(events, setup, to_page, allowed=allowed)

        return make

    def _send(self, message: dict[str, Any]) -> None:
        self._to_page({**message, "room_id": self.setup.room_id})

    async def open(self, url: str, join_token: str) -> None:
        """Have the page join the SFU at ``url`` with ``join_token``; returns once the SFU
        took the join. Raises :class:`SfuLinkError` if the page cannot go there, fails, or is
        not joined in time."""
        if self._opened or self._closed:
            raise SfuLinkError("already_opened")
        self._opened = True
        if sfu_socket_url(url) not in self._allowed:
            raise SfuLinkError("sfu_not_allowed")
        joined = self._joined = asyncio.get_running_loop().create_future()
        sending = self.setup.sending
        self._send(
            {
                "type": "sfu_join",
                "url": url,
                "token": join_token,
                "video": bool(sending.video),
                "speaking": self.setup.audio_level,
            }
        )
        try:
            await asyncio.wait_for(asyncio.shield(joined), self._join_timeout)
        except TimeoutError:
            await self.close()
            raise SfuLinkError("join_timeout") from None
        except SfuLinkError:
            await self.close()
            raise

    async def subscribe(self, publisher: MemberDevice, quality: Quality) -> None:
        """Ask for ``publisher``'s video at ``quality`` (the page's own choice, by which tile
        it shows large, applies to the publishers the session asked nothing of)."""
        self._send({"type": "sfu_subscribe", "publisher": sender_id(publisher), "quality": quality})

    async def floor(self, request: bool) -> None:
        """Ask for the focus or give it up (the page sends it on the control channel)."""
        self._send({"type": "sfu_floor", "request": request})

    def mute(self, audio: bool, video: bool) -> None:
        """Tell the others whether we are muted (the page sends it on the control channel)."""
        self._send({"type": "sfu_mute", "audio": audio, "video": video})

    def receiver_taps(self) -> dict[MemberDevice, list[ReceiverTap]]:
        """Nothing: the page decrypts (its worker counts, per sender)."""
        return {}

    async def close(self) -> None:
        """Tell the page to leave the SFU (once)."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            self._send({"type": "sfu_leave"})
        if self._joined is not None and not self._joined.done():
            self._joined.set_exception(SfuLinkError("closed"))
            self._joined.exception()  # retrieved: open() may be gone already

    # -- from the page ---------------------------------------------------------------------------

    def feed(self, result: SfuResult) -> None:
        """One ``sfu_*`` result of the page for this link's room."""
        if self._closed or self._ended or not self._opened:
            self.dropped_results += 1
            return
        joined = self._joined
        if isinstance(result, SfuJoined):
            if joined is not None and not joined.done():
                self.member = result.member
                joined.set_result(None)
            return
        if isinstance(result, SfuState):
            if result.state == "connected":
                return
            reason = result.detail or f"connection_{result.state}"
            if joined is not None and not joined.done():
                joined.set_exception(SfuLinkError(reason))
                return
            self._ended = True
            logger.info("sfu link (page): ended (%s)", result.state)
            self.events.sfu_closed(reason)
            return
        if joined is None or not joined.done():
            self.dropped_results += 1  # before the join: the page relays nothing yet
            return
        if isinstance(result, SfuTracks):
            tracks = [ForwardedTrack(t.mid, t.ssrc, t.kind, t.member) for t in result.tracks]
            self.forwarded = frozenset(t.member for t in tracks)
            self.events.sfu_tracks(tracks)
        elif isinstance(result, SfuLeft):
            self.forwarded = self.forwarded - {result.member}
        elif isinstance(result, SfuSpeaking):
            self.events.sfu_speaking(list(result.members))
        elif isinstance(result, SfuLayer):
            self.events.sfu_layer(result.publisher, result.quality)
        elif isinstance(result, SfuFloor):
            self.events.sfu_floor(result.holder)
        elif isinstance(result, SfuMuted):
            self.events.sfu_muted(result.member, result.audio, result.video)
