"""The SFU half of a group call: one link to the room's SFU instead of a mesh.

:class:`SfuParts` is mixed into :class:`~sealcall.session.group_call.GroupCallSession`. When the
room's focus (``group.focus.select_sfu``: the SFU of the oldest membership that names one) is an
SFU, the session is admitted there (:func:`~sealcall.session.sfu_link.admit`) and opens ONE
:class:`~sealcall.session.sfu_link.SfuLink`; it implements the link's
:class:`~sealcall.session.sfu_link.SfuLinkEvents`. The keys, their rotation and the shared
encoders are the mesh's: only the transport of the protected frames differs. Who is speaking
comes from the SFU (RFC 6464 levels that we send only when ``audio_level`` allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceServer
from aiortc.mediastreams import MediaStreamTrack

from sealcall.group import MemberDevice, MemberLeft, MemberRejoined
from sealcall.group.focus import SfuFocus
from sealcall.group.mesh_retry import RETRY_DELAYS, GiveUp, PairRetry, RetryAt
from sealcall.media import CallbackOpener, FrameOpener
from sealcall.signaling import StreamPurpose
from sealcall.transport.matrix import MatrixTransport

from .group_membership import GroupMembership
from .group_sending import GroupSending
from .sfu_link import (
    ForwardedTrack,
    Quality,
    SfuAdmissionError,
    SfuLink,
    SfuLinkError,
    SfuLinkFactory,
    SfuLinkSetup,
    admit,
)

logger = logging.getLogger(__name__)

# The SFU reads our membership from its own sync of the room, which lags ours on a loaded
# machine: about 30 s of retries in all.
ADMIT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# A link that ended while we are in the call is reopened (re-admitted, a new link) on the
# mesh's schedule, then every 30 s: about 5 minutes of failures in a row before we give up.
LINK_RETRY_DELAYS = (*RETRY_DELAYS, 8.0, 16.0, *(30.0,) * 9)
# A link that ended for these is not reopened: we are no longer a member.
FINAL_LINK_ENDS = frozenset({"admission_ended"})
MAX_SFU_MUTES = 256  # members whose mute state we keep (a room holds at most 32 in our SFU)
RETRIED_REFUSALS = frozenset({"not_member", "unavailable", "busy", "unreachable"})


def default_sfu_link(events: Any, setup: SfuLinkSetup) -> SfuLink:
    """The aiortc link (imported on first use: the mesh never needs it)."""
    from .sfu_session import AiortcSfuLink

    return AiortcSfuLink(events, setup)


class SfuParts:
    """The SFU state and behaviour of a :class:`GroupCallSession` (a mixin: the attributes
    below are the session's). Events it adds: ``sfu_tracks(tracks)``, ``layer_changed(
    publisher, quality)``, ``floor_changed(holder or None)``, ``sfu_closed(reason)``; and
    ``remote_mute_changed(device, audio_muted, video_muted)`` from the SFU's ``muted``."""

    transport: MatrixTransport
    room_id: str
    own: MemberDevice
    membership: GroupMembership
    sending: GroupSending
    ice_servers: tuple[RTCIceServer, ...]
    host_addresses: tuple[str, ...] | None
    _closed: bool
    focus: SfuFocus | None
    link: SfuLink | None
    layers: dict[MemberDevice, Quality]
    floor_holder: MemberDevice | None
    forwarded: list[ForwardedTrack]
    _sfu_link_factory: SfuLinkFactory
    _sfu_audio_level: bool
    _sfu_options: dict[str, object]
    _sfu_speakers: list[MemberDevice]
    sfu_mutes: dict[MemberDevice, tuple[bool, bool]]
    """Each member's last mute state (microphone, camera) as the SFU said it."""
    video: bool
    _active_speaker: MemberDevice | None
    _clock: Callable[[], float]
    sfu_reopens: int
    """How many times a link that ended was reopened (attempts, successful or not)."""
    _link_retry: PairRetry
    _reopening: asyncio.Task[None] | None

    if TYPE_CHECKING:

        def _emit(self, name: str, *args: Any) -> None: ...

        def opener(self, peer: MemberDevice) -> CallbackOpener: ...

    # -- commands --------------------------------------------------------------------------

    async def _open_link(self, focus: SfuFocus) -> None:
        """Be admitted by ``focus`` and open our link to it."""
        token = await self._admit(focus)
        opener: Callable[[MemberDevice], FrameOpener] = self.opener
        setup = SfuLinkSetup(
            own=self.own,
            room_id=self.room_id,
            sending=self.sending,
            opener=opener,
            audio_level=self._sfu_audio_level,
            ice_servers=self.ice_servers,
            host_addresses=self.host_addresses,
            options=dict(self._sfu_options),
        )
        link = self.link = self._sfu_link_factory(self, setup)
        await link.open(focus.url, token)
        link.mute(*self._sfu_mute_state())  # sent once the control channel opens

    async def _admit(self, focus: SfuFocus) -> str:
        """A join token; ``not_member`` and the transient refusals are retried a few times: the
        SFU reads our membership from its own sync of the room, which may lag ours."""
        for delay in (*ADMIT_RETRY_DELAYS, None):
            try:
                return await admit(
                    self.transport,
                    focus.url,
                    self.room_id,
                    membership_id=self.membership.own.membership_id,
                )
            except SfuAdmissionError as error:
                if delay is None or error.reason not in RETRIED_REFUSALS or self._closed:
                    raise
                logger.info("sfu admission: %s, retrying in %.1f s", error.reason, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def subscribe(self, publisher: MemberDevice, quality: Quality) -> None:
        """Through an SFU: ask for ``publisher``'s video at ``quality`` (``thumbnail`` by
        default, ``full``, ``none``); ``layer_changed`` says when it arrives."""
        if self.link is None:
            raise RuntimeError("subscriptions exist only in a call through an SFU")
        await self.link.subscribe(publisher, quality)

    async def request_floor(self, request: bool = True) -> None:
        """Through an SFU: ask for the focus (or give it up); ``floor_changed`` answers."""
        if self.link is None:
            raise RuntimeError("the floor exists only in a call through an SFU")
        await self.link.floor(request)

    def _sfu_take(self, kind: str, subject: Any) -> None:
        """One input of the worker in SFU mode: no mesh, no pairs."""
        if kind == "mute":
            before = self._sfu_mute_state()
            self.sending.set_muted(*subject)
            if self.link is not None and self._sfu_mute_state() != before:
                self.link.mute(*self._sfu_mute_state())
        elif kind == "screenshare":
            raise ValueError("screen sharing through an SFU is not supported yet")
        elif kind == "membership" and isinstance(subject, (MemberLeft, MemberRejoined)):
            gone = subject.member if isinstance(subject, MemberLeft) else subject.old
            self.layers.pop(gone.device, None)
            self.sfu_mutes.pop(gone.device, None)
        # Mesh signaling (a member that still calls us 1:1) and timers have nothing to do here.

    def _sfu_mute_state(self) -> tuple[bool, bool]:
        """What the others see of us: microphone muted, camera muted (or none)."""
        return self.sending.audio_muted, self.sending.video_muted or not self.video

    # -- SfuLinkEvents ---------------------------------------------------------------------

    def sfu_tracks(self, tracks: list[ForwardedTrack]) -> None:
        """The streams the SFU forwards to us now."""
        if not self._closed:
            self.forwarded = list(tracks)
            self._emit("sfu_tracks", list(tracks))

    def sfu_speaking(self, members: list[MemberDevice]) -> None:
        """Who is speaking, from the SFU: ``speaking_changed`` per change, then the loudest."""
        if self._closed:
            return
        now = [m for m in members if m != self.own]
        before = self._sfu_speakers
        self._sfu_speakers = now
        for device in before:
            if device not in now:
                self._emit("speaking_changed", device, False)
        for device in now:
            if device not in before:
                self._emit("speaking_changed", device, True)
        active = now[0] if now else None
        if active != self._active_speaker:
            self._active_speaker = active
            self._emit("active_speaker_changed", active)

    def sfu_layer(self, publisher: MemberDevice, quality: Quality) -> None:
        """The layer of ``publisher``'s video we now receive."""
        if not self._closed:
            self.layers[publisher] = quality
            self._emit("layer_changed", publisher, quality)

    def sfu_floor(self, holder: MemberDevice | None) -> None:
        """Who has the focus."""
        if not self._closed:
            self.floor_holder = holder
            self._emit("floor_changed", holder)

    def sfu_muted(self, member: MemberDevice, audio: bool, video: bool) -> None:
        """A member's mute state, from the SFU: ``remote_mute_changed`` as in the mesh (an
        indicator only; a lying SFU could claim anyone muted, as it could drop their media)."""
        if not self._closed and member != self.own:
            if len(self.sfu_mutes) < MAX_SFU_MUTES or member in self.sfu_mutes:
                self.sfu_mutes[member] = (audio, video)
            self._emit("remote_mute_changed", member, audio, video)

    def sfu_media_added(
        self, member: MemberDevice, track: MediaStreamTrack, purpose: StreamPurpose
    ) -> None:
        """A member's forwarded stream, decrypted: as the mesh's ``remote_media_added``."""
        if not self._closed:
            self._emit("remote_media_added", member, track, purpose)

    def sfu_media_removed(
        self, member: MemberDevice, track: MediaStreamTrack, purpose: StreamPurpose
    ) -> None:
        """A member's forwarded stream ended."""
        if not self._closed:
            self._emit("remote_media_removed", member, track, purpose)

    def sfu_closed(self, reason: str) -> None:
        """Our link ended (the SFU closed it, or its connection failed): unless the SFU ended
        our admission, a new link is opened after a while (see :meth:`_link_ended`)."""
        if not self._closed:
            logger.warning("the SFU ended our link: %s", reason[:80])
            self._emit("sfu_closed", reason)
            self._link_ended(reason)

    # -- reopening -------------------------------------------------------------------------

    def _link_ended(self, reason: str) -> None:
        """Decide whether and when to reopen (``PairRetry``'s policy, the link's delays)."""
        if reason in FINAL_LINK_ENDS:
            self._link_retry.stopped = True
        decision = self._link_retry.ended(reason, self._clock())
        if isinstance(decision, GiveUp):
            logger.warning("sfu: not reopening the link (%s)", reason[:80])
        elif isinstance(decision, RetryAt) and self._reopening is None:
            delay = max(0.0, decision.at - self._clock())
            self._reopening = asyncio.ensure_future(self._reopen(delay))

    async def _reopen(self, delay: float) -> None:
        """Re-admit (a fresh OpenID and join token) and open a new link; the keys stay."""
        await asyncio.sleep(delay)
        if self._closed or self.focus is None:
            return
        self.sfu_reopens += 1
        old, self.link = self.link, None
        if old is not None:
            await old.close()
        self.forwarded = []
        self.layers.clear()
        try:
            await self._open_link(self.focus)
        except SfuLinkError as error:  # a refused admission too
            reason = error.reason
        else:
            self._link_retry.connected()
            self._reopening = None
            return
        self._reopening = None
        if not self._closed:
            logger.warning("sfu: reopening the link failed (%s)", reason[:80])
            self._link_ended(reason)

    async def _stop_reopening(self) -> None:
        """Leaving: no link is reopened after this."""
        task, self._reopening = self._reopening, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
