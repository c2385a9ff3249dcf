"""A 1:1 call whose media runs in the page: the engine decides, the page's peer connection acts."""

from __future__ import annotations

from typing import Any, Protocol

from sealcall.calls import Call
from sealcall.calls import actions as act
from sealcall.session import CallSession, VoIP

from .media_commands import media_command


class MediaRoute(Protocol):
    """Where a call's media commands go: the page socket that drives its media."""

    def send_media(self, call_id: str, fields: dict[str, Any]) -> None:
        """Deliver one ``media`` command (``op`` and its fields) for ``call_id``."""


class PageCallSession(CallSession):
    """A :class:`CallSession` whose media is the page's: each media action of the engine goes to
    the page as a ``media`` command (:func:`media_command`), and the page's results come back
    through :meth:`VoIP.feed`. No aiortc connection is made; the keys go to the page (its SFrame
    worker) and are not kept here."""

    def __init__(
        self,
        voip: VoIP,
        call: Call,
        room_id: str,
        route: MediaRoute,
    ) -> None:
        super().__init__(voip, call, room_id)
        self._route = route
        self._closed = False

    async def perform(self, action: act.Action) -> None:
        """Hand one media action to the page."""
        if isinstance(action, act.ClosePeerConnection):
            await self.close()
            return
        # The call's own policy: the app's setting, as it was when the call began (a change
        # applies to later calls, never to this one's ICE restarts).
        relay_only = self.call.policy.relay_only
        # The engine's servers, asked again when the call was placed or answered.
        fields = media_command(action, self.voip.ice_servers, relay_only=relay_only)
        if fields is not None and not self._closed:
            self._route.send_media(self.call_id, fields)

    async def close(self) -> None:
        """Tell the page to release the call's media (once)."""
        if not self._closed:
            self._closed = True
            self._route.send_media(self.call_id, {"op": "close"})
        await super().close()
