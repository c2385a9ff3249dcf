"""Our own device's membership of the room call, without I/O.

:class:`OwnMembership` says what member state to send and when: the join (a fresh
``membershipID`` and ``created_ts`` each time), the refreshes before it expires (``created_ts``
kept, ``expires`` grown so the membership lasts ``expires_ms`` from the refresh, as js-sdk
does), and the leave (``{}``). It watches the table's view of our own device: when our
membership vanishes while we are in the call (a delayed leave fired, the homeserver lost it) we
join again as a new session, as js-sdk does; a membership of this device left over from an
earlier run (a crash) is cleared. ``TRANSITIONS`` is the whole machine.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .focus import sfu_member
from .member_event import DEFAULT_EXPIRES_MS, MemberLeave, member_state_key, mesh_member
from .membership import (
    Member,
    MemberDevice,
    MemberJoined,
    MemberLeft,
    MemberRejoined,
    MembershipEvent,
)

logger = logging.getLogger(__name__)

REFRESH_FRACTION = 0.75  # refresh when three quarters of the validity have passed


class OwnState(StrEnum):
    """Where our own membership is."""

    IDLE = "idle"  # not in the call
    JOINING = "joining"  # join sent, not yet seen in the room state
    JOINED = "joined"


@dataclass(frozen=True)
class JoinCall:
    """The user joins the room call; ``intent`` is js-sdk's ``m.call.intent`` (audio/video)."""

    intent: str | None = None


@dataclass(frozen=True)
class LeaveCall:
    """The user leaves the call."""


@dataclass(frozen=True)
class RefreshDue:
    """The refresh time passed (:meth:`OwnMembership.tick` makes this)."""


@dataclass(frozen=True)
class OwnMembershipSeen:
    """The membership table counts a membership of our device."""

    member: Member


@dataclass(frozen=True)
class OwnMembershipGone:
    """The membership table no longer counts our device."""


OwnInput = JoinCall | LeaveCall | RefreshDue | OwnMembershipSeen | OwnMembershipGone


@dataclass(frozen=True)
class SendMemberState:
    """Put this content at this state key (type ``org.matrix.msc3401.call.member``)."""

    state_key: str
    content: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class OwnStateChanged:
    """Notification: our membership moved from ``old`` to ``new``."""

    old: OwnState
    new: OwnState


OwnAction = SendMemberState | OwnStateChanged


class MembershipStateError(Exception):
    """A command the own membership's current state does not allow (our misuse)."""


S = OwnState
TRANSITIONS: dict[tuple[OwnState, type], str] = {
    (S.IDLE, JoinCall): "_join",
    (S.IDLE, OwnMembershipSeen): "_clear_leftover",
    (S.JOINING, OwnMembershipSeen): "_confirm",
    (S.JOINING, RefreshDue): "_refresh",
    (S.JOINING, LeaveCall): "_leave",
    (S.JOINED, OwnMembershipSeen): "_check_ours",
    (S.JOINED, OwnMembershipGone): "_rejoin",
    (S.JOINED, RefreshDue): "_refresh",
    (S.JOINED, LeaveCall): "_leave",
}
_COMMANDS = (JoinCall, LeaveCall)


class OwnMembership:
    """Our device's membership of one room's call."""

    def __init__(
        self,
        *,
        user_id: str,
        device_id: str,
        new_membership_id: Callable[[], str],
        expires_ms: int = DEFAULT_EXPIRES_MS,
        sfu_url: str | None = None,
    ) -> None:
        if expires_ms <= 0:
            raise ValueError("expires_ms must be positive")
        self.device = MemberDevice(user_id, device_id)
        self.state_key = member_state_key(user_id, device_id)
        self.expires_ms = expires_ms
        self.sfu_url = sfu_url
        """The SFU our membership prefers (``focus.sfu_member``); None: a mesh membership."""
        self.state = S.IDLE
        self.membership_id: str | None = None
        self.created_ts: int | None = None
        self.intent: str | None = None
        self.refresh_at: int | None = None
        self.foreign_writes = 0  # another membership of this device while we are joined
        self._new_membership_id = new_membership_id
        self._last_session: tuple[str, int] | None = None

    # -- queries --------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """When (Unix ms) our membership must be refreshed; call :meth:`tick` then."""
        return self.refresh_at if self.state is not S.IDLE else None

    def is_ours(self, member: Member) -> bool:
        """Whether ``member`` is the session this object sent."""
        return member.session == (self.membership_id, self.created_ts)

    # -- inputs ---------------------------------------------------------------------------

    def handle(self, item: OwnInput, now_ms: int) -> list[OwnAction]:
        """Apply a command or an observation; see ``TRANSITIONS``."""
        name = TRANSITIONS.get((self.state, type(item)))
        if name is None:
            if isinstance(item, _COMMANDS):
                raise MembershipStateError(
                    f"{type(item).__name__} is not allowed in state {self.state.value}"
                )
            return []  # an observation this state has no use for
        old = self.state
        actions: list[OwnAction] = getattr(self, name)(item, now_ms)
        if self.state is not old:
            actions.append(OwnStateChanged(old, self.state))
        return actions

    def tick(self, now_ms: int) -> list[OwnAction]:
        """Refresh if due."""
        if self.refresh_at is not None and self.state is not S.IDLE and now_ms >= self.refresh_at:
            return self.handle(RefreshDue(), now_ms)
        return []

    def observe(self, events: list[MembershipEvent], now_ms: int) -> list[OwnAction]:
        """Feed the membership table's events; those about our device are applied."""
        out: list[OwnAction] = []
        for event in events:
            if isinstance(event, MemberJoined) and event.member.device == self.device:
                out += self.handle(OwnMembershipSeen(event.member), now_ms)
            elif isinstance(event, MemberRejoined) and event.new.device == self.device:
                out += self.handle(OwnMembershipSeen(event.new), now_ms)
            elif isinstance(event, MemberLeft) and event.member.device == self.device:
                out += self.handle(OwnMembershipGone(), now_ms)
        return out

    # -- transitions ----------------------------------------------------------------------

    def _join(self, item: JoinCall, now_ms: int) -> list[OwnAction]:
        self.intent = item.intent
        return self._send_join(now_ms)

    def _send_join(self, now_ms: int) -> list[OwnAction]:
        self.membership_id = self._new_membership_id()
        self.created_ts = now_ms
        self.state = S.JOINING
        return [self._send(now_ms)]

    def _send(self, now_ms: int) -> SendMemberState:
        assert self.membership_id is not None
        assert self.created_ts is not None
        # Valid until now + expires_ms; created_ts stays, so others see the same session.
        expires = now_ms - self.created_ts + self.expires_ms
        self.refresh_at = now_ms + int(self.expires_ms * REFRESH_FRACTION)
        if self.sfu_url is not None:
            content = sfu_member(
                device_id=self.device.device_id,
                membership_id=self.membership_id,
                created_ts=self.created_ts,
                expires=expires,
                sfu_url=self.sfu_url,
            )
        else:
            content = mesh_member(
                device_id=self.device.device_id,
                membership_id=self.membership_id,
                created_ts=self.created_ts,
                expires=expires,
                intent=self.intent,
            )
        return SendMemberState(self.state_key, content.to_json())

    def _refresh(self, _: RefreshDue, now_ms: int) -> list[OwnAction]:
        return [self._send(now_ms)]

    def _confirm(self, item: OwnMembershipSeen, now_ms: int) -> list[OwnAction]:
        if self.is_ours(item.member):
            self.state = S.JOINED
        return []  # else a leftover of an earlier run, which our join replaces

    def _check_ours(self, item: OwnMembershipSeen, now_ms: int) -> list[OwnAction]:
        if not self.is_ours(item.member):
            # Another process writes memberships for this device: fighting it would never end.
            self.foreign_writes += 1
            logger.warning("another membership for our own device %s", self.device.device_id)
        return []

    def _rejoin(self, _: OwnMembershipGone, now_ms: int) -> list[OwnAction]:
        # The others saw us leave and closed our connections: come back as a new session.
        logger.info("own call membership vanished; joining again")
        return self._send_join(now_ms)

    def _leave(self, _: LeaveCall, now_ms: int) -> list[OwnAction]:
        assert self.membership_id is not None
        assert self.created_ts is not None
        self._last_session = (self.membership_id, self.created_ts)
        self.state = S.IDLE
        self.refresh_at = None
        return [SendMemberState(self.state_key, MemberLeave().to_json())]

    def _clear_leftover(self, item: OwnMembershipSeen, now_ms: int) -> list[OwnAction]:
        if item.member.session == self._last_session:
            return []  # the late echo of the membership we just left
        # A membership of this device from an earlier run (a crash before its delayed leave):
        # the others would connect to a device that is not there.
        return [SendMemberState(item.member.state_key, MemberLeave().to_json())]
