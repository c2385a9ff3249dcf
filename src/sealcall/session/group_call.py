"""The asyncio layer of a group call: one device's part in a room's call, full mesh or SFU.

:class:`GroupCallSession` joins what the other modules keep apart, as :class:`VoIP` binds the call
manager: the room's membership (:class:`GroupMembership`), our media key and everyone else's
(:class:`GroupKeys`), the encoders (:class:`~sealcall.media.SharedEncoder`: each frame is encoded
and encrypted once, whoever receives it) and who is speaking. How the protected frames travel
depends on the room's focus: a mesh of 1:1 calls (:mod:`.group_mesh`: the sans-I/O
:class:`~sealcall.group.Mesh`, one :class:`MeshPairSession` per pair, speaking from each peer's
decoded audio) or one link to the room's SFU (:mod:`.group_sfu`, :mod:`.sfu_link`).

One worker task takes one input at a time (a membership change, a pair signaling message, a
media result, a timer, a command) and carries out what the mesh answers; signaling messages go
out in order on a send chain, so a slow Olm session set-up never holds up media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiortc import RTCIceServer

from sealcall.calls import Direction, RelayUnavailableError
from sealcall.calls.history import HistoryItem, Outcome
from sealcall.calls.relay_only import RELAY_FOREIGN_SFU, RELAY_UNAVAILABLE, offers_turn
from sealcall.group import (
    Member,
    MemberDevice,
    MemberJoined,
    MemberLeft,
    MemberRejoined,
    MembershipEvent,
    Mesh,
    MeshAction,
    SpeakingChanged,
    SpeakingDetector,
)
from sealcall.group.focus import SfuFocus, select_sfu
from sealcall.group.member_event import MEMBER_EVENT_TYPE
from sealcall.group.mesh_retry import PairRetry
from sealcall.media import CallbackOpener, SharedEncoder, ice_urls
from sealcall.transport.matrix import DeviceMessage, MatrixTransport

from .deadline_timer import DeadlineTimer
from .group_keys import GroupKeys
from .group_membership import DEFAULT_LEAVE_DELAY_MS, DEFAULT_RESTART_MS, GroupMembership
from .group_mesh import MAX_HELD, MeshParts, PairFactory, _Work
from .group_ringing import GroupRinger
from .group_sending import GroupSending
from .group_sfu import LINK_RETRY_DELAYS, SfuParts, default_sfu_link
from .local_media import LocalMedia
from .mesh_pair import MeshPairSession
from .safe_emitter import SafeEventEmitter
from .send_chain import SendChain
from .sfu_link import ForwardedTrack, Quality, SfuLink, SfuLinkFactory

logger = logging.getLogger(__name__)

CALL_SIGNAL_PREFIXES = ("m.call.", "org.matrix.call.")

__all__ = ["MAX_HELD", "GroupCallSession", "PairFactory"]


class GroupCallSession(MeshParts, SfuParts, SafeEventEmitter):
    """One device's part in a room's group call (full mesh or through an SFU), after the Famedly
    SDK's ``GroupCallSession``.

    Events (``session.on(name, handler)``):

    - ``member_joined(member)``, ``member_left(member, reason)``, ``member_rejoined(old, new)``:
      the call's other member devices (:class:`~sealcall.group.Member`);
    - ``peer_state_changed(device, old, new)``: the 1:1 call with a member device
      (:class:`~sealcall.calls.CallState`), and ``peer_ended(device, reason, retry_at)``;
    - ``remote_media_added(device, track, purpose)``, ``remote_media_removed(device, track,
      purpose)``, ``remote_mute_changed(device, audio_muted, video_muted)`` (MSC3291, per pair);
    - ``speaking_changed(device, speaking)``, ``active_speaker_changed(device or None)``;
    - ``send_key_changed(index)``, ``key_received(user_id, device_id, index)``;
    - ``history_item(item)``: one :class:`~sealcall.calls.history.HistoryItem` when we leave;
    - through an SFU: ``sfu_tracks(tracks)``, ``layer_changed(publisher, quality)``,
      ``floor_changed(holder)``, ``sfu_closed(reason)`` (the peer and mute events are the
      mesh's only; speaking comes from the SFU).

    Through an SFU: when the room's focus names one (``group.focus.select_sfu``, at join) the
    session opens ONE link (``sfu_link_factory``, default aiortc) instead of the mesh.
    ``sfu_url`` makes our own membership prefer that SFU (``focus.sfu_member``); the oldest
    membership naming one decides. ``audio_level`` (default True) sends the RFC 6464 audio level
    the SFU needs to say who is speaking: it learns when we speak; False keeps that from it.
    ``sfu_options`` go to the link (the aiortc link's ``remb_cap``).

    The first member to join rings the room (MSC4075) unless ``ring`` is False; pass the
    device's :class:`GroupRinger` as ``ringer`` so that its rings of this room stop while we are
    in the call.

    The media is pluggable as :class:`VoIP`'s is: ``pair_factory`` makes each pair's media
    (default :class:`MeshPairSession`) and ``sending`` is our outgoing media (default a
    :class:`GroupSending` of ``media``); the web client passes versions whose media runs in a
    browser page.
    """

    def __init__(
        self,
        transport: MatrixTransport,
        room_id: str,
        *,
        video: bool = False,
        media: LocalMedia | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        host_addresses: Sequence[str] | None = None,
        leave_delay_ms: int = DEFAULT_LEAVE_DELAY_MS,
        restart_ms: int = DEFAULT_RESTART_MS,
        key_options: dict[str, Any] | None = None,
        retry_delays: tuple[float, ...] | None = None,
        ring: bool = True,
        ringer: GroupRinger | None = None,
        clock: Callable[[], float] = time.time,
        pair_factory: PairFactory = MeshPairSession,
        sending: GroupSending | None = None,
        sfu_url: str | None = None,
        sfu_link_factory: SfuLinkFactory = default_sfu_link,
        audio_level: bool = True,
        sfu_options: dict[str, object] | None = None,
        relay_only: bool = False,
        ice_source: Callable[[], Awaitable[Sequence[RTCIceServer]]] | None = None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.room_id = room_id
        self.video = video
        self.media = media or LocalMedia()
        self.ice_servers = tuple(ice_servers)
        # Asked again for each new mesh pair: TURN credentials expire (``turn_user_lifetime``).
        self.ice_source = ice_source
        self.host_addresses = tuple(host_addresses) if host_addresses is not None else None
        self.own = MemberDevice(transport.user_id, transport.device_id)
        self.membership = GroupMembership(
            transport,
            room_id,
            leave_delay_ms=leave_delay_ms,
            restart_ms=restart_ms,
            sfu_url=sfu_url,
        )
        self.keys: GroupKeys | None = None
        self.ring = ring
        self.ringer = ringer
        self.ring_event_id: str | None = None
        """Our ring notification's event id, if we started the call and rang the room."""
        self._key_options = dict(key_options or {})
        self._retry_delays = retry_delays
        # Mesh pairs are relay-only; the SFU link is not, so a relay-only join refuses any SFU
        # but the one the user configured (``sfu_url``): any member can name the room's SFU.
        self.relay_only = relay_only
        self.mesh: Mesh | None = None
        self.sending = sending if sending is not None else GroupSending(self.media, video=video)
        self._pair_factory = pair_factory
        self.pairs: dict[str, MeshPairSession] = {}  # call id -> the pair's live media
        self.speaking = SpeakingDetector()
        self.joined_at: float | None = None
        self.started_call = False  # nobody else was in the call when we joined
        self._clock = clock
        self._held: list[MembershipEvent] = []
        self._held_signals: list[DeviceMessage] = []
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(lambda: self._queue.put_nowait(("timer", None, None)))
        self._sends = SendChain()
        self._active_speaker: MemberDevice | None = None
        self._closed = False
        self.focus: SfuFocus | None = None
        """The room's SFU when the call goes through one (chosen at join), else None: a mesh."""
        self.link: SfuLink | None = None
        self.layers: dict[MemberDevice, Quality] = {}
        self.floor_holder: MemberDevice | None = None
        self.forwarded: list[ForwardedTrack] = []
        self._sfu_url = sfu_url
        self._sfu_link_factory = sfu_link_factory
        self._sfu_audio_level = audio_level
        self._sfu_options = dict(sfu_options or {})
        self._sfu_speakers: list[MemberDevice] = []
        self.sfu_mutes: dict[MemberDevice, tuple[bool, bool]] = {}
        self.sfu_reopens = 0
        self._link_retry = PairRetry(LINK_RETRY_DELAYS)
        self._reopening: asyncio.Task[None] | None = None
        for name in ("member_joined", "member_left", "member_rejoined"):
            self.membership.on(name, self._membership_listener(name))
        # Our own membership changes (a rejoin under a new membershipID) come only as this.
        self.membership.on("state_changed", self._on_own_state)

    # -- queries ---------------------------------------------------------------------------

    @property
    def encoders(self) -> dict[str, SharedEncoder]:
        """Our shared encoders by role: microphone, camera, screenshare."""
        return self.sending.encoders

    @property
    def audio_muted(self) -> bool:
        """Whether our microphone is muted."""
        return self.sending.audio_muted

    @property
    def video_muted(self) -> bool:
        """Whether our camera is off."""
        return self.sending.video_muted

    @property
    def screensharing(self) -> bool:
        """Whether we share our screen."""
        return self.sending.screensharing

    def screen_encoder(self, on: bool) -> SharedEncoder | None:
        """The shared screen-share encoder (see :meth:`GroupSending.screen_encoder`)."""
        return self.sending.screen_encoder(on)

    def members(self) -> list[Member]:
        """The call's other member devices."""
        return self.membership.members()

    def active_speaker(self) -> MemberDevice | None:
        """Who is speaking now (the loudest, held briefly so it does not flicker), or None."""
        return self._active_speaker

    def stats(self) -> dict[str, Any]:
        """What we sent (each frame encoded and encrypted once, by role) and what we received
        from each member device (``"@user:server DEVICE"``), by kind: frames received,
        decrypted and dropped; through an SFU, ``sfu_reopens``: links reopened after one
        ended)."""
        received: dict[str, dict[str, dict[str, int]]] = {}
        taps = {device: pair.receiver_taps() for device, pair in self.peer_sessions().items()}
        if self.link is not None:
            taps.update(self.link.receiver_taps())
        for device, device_taps in taps.items():
            kinds = received.setdefault(f"{device.user_id} {device.device_id}", {})
            for tap in device_taps:
                totals = kinds.setdefault(
                    tap.kind, {"frames_received": 0, "frames_decrypted": 0, "frames_dropped": 0}
                )
                totals["frames_received"] += tap.counters.frames_received
                totals["frames_decrypted"] += tap.counters.frames_decrypted
                totals["frames_dropped"] += tap.counters.frames_dropped
        out: dict[str, Any] = {"sent": self.sending.stats(), "received": received}
        if self.focus is not None:
            out["sfu_reopens"] = self.sfu_reopens
        return out

    # -- commands --------------------------------------------------------------------------

    async def join(self) -> None:
        """Join the room's call: announce our membership, start our key, connect to every
        member device. Raises like :meth:`GroupMembership.join` (an unencrypted room is
        refused before anything is sent); relay-only, :class:`RelayUnavailableError` without a
        TURN server, or when the room's SFU is not our ``sfu_url`` (nothing reaches that SFU)."""
        if self._worker is not None or self._closed:
            raise RuntimeError("join() once per GroupCallSession")
        if self.relay_only and not offers_turn(ice_urls(self.ice_servers)):
            raise RelayUnavailableError(RELAY_UNAVAILABLE)
        self._worker = asyncio.ensure_future(self._work())
        self.transport.add_to_device_listener(self._on_message)
        try:
            await self.membership.join()
            if self._closed:  # closed meanwhile: start no key and no encoder
                raise RuntimeError("this GroupCallSession was closed while joining")
            keys = GroupKeys(
                self.transport,
                self.room_id,
                self.membership,
                on_use_key=self.sending.use_key,
                **self._key_options,
            )
            self.keys = keys
            keys.on("send_key_changed", lambda key: self.emit("send_key_changed", key.index))
            keys.on("key_received", lambda *args: self.emit("key_received", *args))
            self.focus = self._select_focus()
            if self.relay_only and self.focus is not None and self.focus.url != self._sfu_url:
                raise RelayUnavailableError(RELAY_FOREIGN_SFU)  # before any request reaches it
            self.sending.layers = self.focus is not None
            self.sending.start()
            await keys.start()
            self.joined_at = self._clock()
            self.started_call = not self.membership.members()
            if self.focus is not None:
                await self._open_link(self.focus)
            else:
                await self._submit("joined", None)
            await self._ring()
        except Exception:
            await self.close(leave=True)
            raise

    def _select_focus(self) -> SfuFocus | None:
        """The room's SFU: the oldest other membership naming one decides (ours is the newest),
        else the one we prefer (``sfu_url``), else none: a mesh."""
        focus = select_sfu(self.membership.members())
        if focus is None and self._sfu_url is not None:
            focus = SfuFocus(self._sfu_url)
        return focus

    async def _ring(self) -> None:
        if self._closed:
            return  # left before the join finished: ring for nothing
        ringer = self.ringer
        if ringer is None and self.ring:
            ringer = GroupRinger(self.transport, clock=self._clock)  # only to send the ring
        if ringer is None:
            return
        try:
            self.ring_event_id = await ringer.ring_if_first(self.membership)
        except Exception as error:  # the call goes on; the others can still join it
            logger.warning("ringing the room failed: %s", type(error).__name__)

    async def leave(self) -> None:
        """Hang up every pair, leave the call and release the media."""
        await self.close(leave=True)

    async def close(self, *, leave: bool = True) -> None:
        """Stop. Without ``leave`` nothing is sent (as a crashed device stops): the others see
        us go when our delayed leave fires."""
        if self._closed:
            return
        if leave and self._worker is not None and not self._worker.done():
            with contextlib.suppress(Exception):
                await self._submit("leave", None)
        self._closed = True
        self.transport.remove_to_device_listener(self._on_message)
        if self._worker is not None and not self._worker.done():
            await self._queue.put(("stop", None, None))
            await self._worker
        self._timer.cancel()
        await self._sends.drain()
        if self.keys is not None:
            await self.keys.close()
        await self.membership.close(leave=leave)
        for pair in list(self.pairs.values()):
            await pair.close()
        self.pairs.clear()
        await self._stop_reopening()
        if self.link is not None:
            await self.link.close()
        await self.sending.stop()
        if self.ringer is not None:
            self.ringer.left(self.room_id)
        if leave and self.joined_at is not None:
            self._history()

    async def set_microphone_muted(self, muted: bool) -> None:
        """Mute or unmute: no audio frame is encoded while muted; every member is told.
        Before :meth:`join` it sets how we join."""
        await self._submit("mute", (muted, None))

    async def set_camera_muted(self, muted: bool) -> None:
        """Turn the camera off or on (it restarts with a key frame); every member is told."""
        await self._submit("mute", (None, muted))

    async def set_screen_share(self, on: bool) -> None:
        """Start or stop sharing the screen with every member (renegotiates each pair)."""
        await self._submit("screenshare", on)

    async def _submit(self, kind: str, subject: Any) -> None:
        if self._closed:
            raise RuntimeError("this GroupCallSession is closed")
        if self._worker is None:  # before join(): a mute or screen share to start with
            self._take(kind, subject)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((kind, subject, done))
        await done

    # -- media -----------------------------------------------------------------------------

    def opener(self, peer: MemberDevice) -> CallbackOpener:
        """What decrypts ``peer``'s frames: its group keys (safe on aiortc's decoder thread)."""
        keys = self.keys
        assert keys is not None
        user_id, device_id = peer.user_id, peer.device_id
        return CallbackOpener(lambda codec, data: keys.unprotect(user_id, device_id, codec, data))

    def _speaking(self, changes: list[SpeakingChanged]) -> None:
        for change in changes:
            if isinstance(change.source, MemberDevice):
                self._emit("speaking_changed", change.source, change.speaking)
        loudest = self.speaking.loudest()
        active = loudest if isinstance(loudest, MemberDevice) else None
        if active != self._active_speaker:
            self._active_speaker = active
            self._emit("active_speaker_changed", active)

    # -- inputs ----------------------------------------------------------------------------

    def _membership_listener(self, name: str) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            if self._closed:
                return
            event: MembershipEvent
            if name == "member_joined":
                event = MemberJoined(args[0])
            elif name == "member_left":
                event = MemberLeft(args[0], args[1])
            else:
                event = MemberRejoined(args[0], args[1])
            self._queue.put_nowait(("membership", event, None))
            self._emit(name, *args)

        return listener

    def _on_own_state(self, *_: Any) -> None:
        if not self._closed:
            self._queue.put_nowait(("own", None, None))

    def _on_message(self, message: DeviceMessage) -> None:
        if not self._closed and message.type.startswith(CALL_SIGNAL_PREFIXES):
            self._queue.put_nowait(("signal", message, None))

    async def _work(self) -> None:
        while True:
            kind, subject, done = await self._queue.get()
            if kind == "stop":
                return
            try:
                await self._run(self._take(kind, subject))
                await self.sending.release_screen()
            except Exception as error:
                if done is not None and not done.done():
                    done.set_exception(error)
                else:
                    logger.exception("group call input %s failed", kind)
            else:
                if done is not None and not done.done():
                    done.set_result(None)
            self._schedule_timer()

    def _take(self, kind: str, subject: Any) -> list[MeshAction]:
        if self.focus is not None:
            self._sfu_take(kind, subject)
            return []
        return self._mesh_take(kind, subject)

    # -- outputs ---------------------------------------------------------------------------

    def _schedule_timer(self) -> None:
        if self._closed:
            self._timer.cancel()
            return
        deadlines = [self.speaking.next_deadline()]
        if self.mesh is not None:
            deadlines.append(self.mesh.next_deadline())
        self._timer.arm(deadlines, self._clock(), slack=0.001)

    def _history(self) -> None:
        assert self.joined_at is not None
        item = HistoryItem(
            call_id=f"{MEMBER_EVENT_TYPE}|{self.room_id}|{self.membership.own.membership_id}",
            peer=self.room_id,
            direction=Direction.OUTGOING if self.started_call else Direction.INCOMING,
            video=self.video,
            outcome=Outcome.ANSWERED,
            started_at=self.joined_at,
            duration=max(0.0, self._clock() - self.joined_at),
            end_reason="user_hangup",
            encrypted=True,
        )
        self._emit("history_item", item)
