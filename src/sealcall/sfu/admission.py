"""Who may join the SFU, without I/O: OpenID token, then the device's current call membership.

A join goes step by step (:data:`TRANSITIONS`)::

    JoinRequested  -> CheckToken        the homeserver resolves the OpenID token (userinfo)
    TokenChecked   -> LoadRoom          unless the room's member state is already followed
    RoomLoaded     -> Admitted | Refused

The token must name exactly the claimed user on a homeserver this SFU trusts (else
``bad_token``); the claimed device must hold a current, unexpired membership of the room's call
(else ``not_member``), with our SFU as its active focus and this SFU the room's selected one
(else ``wrong_focus``). An admitted member gets a join token (:mod:`.join_token`). The room's
member state keeps coming in (:class:`MemberStateChanged`, :class:`RoomUserChanged`,
:class:`Tick`); when a membership under which someone was admitted ends (leave, expiry, the user
left the room, or a rejoin under a new membership), :class:`Disconnect` says to drop them.
Times are Unix milliseconds, the clock of ``origin_server_ts``.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sealcall.group.focus import select_sfu, uses_sfu
from sealcall.group.member_event import short_text
from sealcall.group.membership import (
    MAX_MEMBERS,
    Member,
    MemberDevice,
    MemberLeft,
    MemberRejoined,
    MembershipEvent,
    MembershipTable,
    MemberStateEvent,
    RoomMembershipChanged,
)
from sealcall.transport.matrix.openid import OpenIdToken, OpenIdTokenError

from .join_token import JoinClaims, JoinTokens

logger = logging.getLogger(__name__)

MAX_PENDING = 1024  # joins being checked at once; more are refused as ``busy``
MAX_ROOMS = 1024  # rooms whose member state one process follows
MAX_ROOM_LOADS = 4096  # member events + joined users taken from one room snapshot


class Refusal(StrEnum):
    """Why a join was refused."""

    BAD_REQUEST = "bad_request"
    BAD_TOKEN = "bad_token"  # noqa: S105 - a reason; the OpenID token is unknown, expired or names someone else
    NOT_MEMBER = "not_member"
    WRONG_FOCUS = "wrong_focus"
    UNKNOWN_ROOM = "unknown_room"  # this SFU's account cannot read the room
    UNAVAILABLE = "unavailable"  # the homeserver could not be asked
    BUSY = "busy"


class JoinRequestError(ValueError):
    """A join request that is not one (refused as ``bad_request``)."""


class UserinfoError(ValueError):
    """The homeserver's userinfo answer is not ``{"sub": "@user:server"}``."""


def parse_userinfo(obj: object) -> str:
    """The user id of a ``/_matrix/federation/v1/openid/userinfo`` answer."""
    sub = obj.get("sub") if isinstance(obj, dict) else None
    if not short_text(sub) or not isinstance(sub, str):
        raise UserinfoError("userinfo: sub must be a string of at most 255 characters")
    if not sub.startswith("@") or ":" not in sub[2:]:
        raise UserinfoError("userinfo: sub is not a Matrix user id")
    return sub


def _user_server(user_id: str) -> str:
    return user_id.partition(":")[2]


def _id(
    obj: dict[str, Any], key: str, prefix: str = "", optional: bool = False, server: bool = True
) -> str | None:
    value = obj.get(key)
    if optional and value is None:
        return None
    if not short_text(value) or not isinstance(value, str) or not value.startswith(prefix):
        raise JoinRequestError(f"{key} must be a string of at most 255 characters")
    if not value:
        raise JoinRequestError(f"{key} is empty")
    if prefix and server and ":" not in value[1:]:
        raise JoinRequestError(f"{key} is not a Matrix id")
    return value


@dataclass(frozen=True)
class JoinRequest:
    """A member asks to join: who, which device, which room (and membership), and its proof."""

    user_id: str
    device_id: str
    room_id: str
    openid_token: OpenIdToken
    membership_id: str | None = None

    @classmethod
    def parse(cls, obj: object) -> "JoinRequest":
        """Read a join request; :class:`JoinRequestError` if it is not one."""
        if not isinstance(obj, dict):
            raise JoinRequestError("a join request must be a JSON object")
        try:
            token = OpenIdToken.parse(obj.get("openid_token"))
        except OpenIdTokenError as error:
            raise JoinRequestError(str(error)) from None
        return cls(
            user_id=_id(obj, "user_id", "@") or "",
            device_id=_id(obj, "device_id") or "",
            # Room ids of room version 12 name no server ("!" and an opaque hash).
            room_id=_id(obj, "room_id", "!", server=False) or "",
            membership_id=_id(obj, "membership_id", optional=True),
            openid_token=token,
        )

    def to_json(self) -> dict[str, Any]:
        """The request as a client sends it."""
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "room_id": self.room_id,
            "openid_token": self.openid_token.to_json(),
        }
        if self.membership_id is not None:
            out["membership_id"] = self.membership_id
        return out


@dataclass(frozen=True)
class Participant:
    """Someone admitted: a member device of a room, under one membership."""

    room_id: str
    user_id: str
    device_id: str
    membership_id: str


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinRequested:
    """A join request arrived; ``attempt`` names it in what follows."""

    attempt: int
    request: JoinRequest


@dataclass(frozen=True)
class TokenChecked:
    """The homeserver resolved the OpenID token to ``user_id`` (None: unknown or expired;
    ``failed``: the homeserver could not be asked)."""

    attempt: int
    user_id: str | None
    failed: bool = False


@dataclass(frozen=True)
class RoomLoaded:
    """The room's current member events and joined users, read by this SFU's account
    (``readable`` False: it could not read the room)."""

    room_id: str
    member_events: tuple[MemberStateEvent, ...] = ()
    joined_users: tuple[str, ...] = ()
    readable: bool = True


@dataclass(frozen=True)
class MemberStateChanged:
    """A call member state event of a followed room (from sync)."""

    room_id: str
    event: MemberStateEvent


@dataclass(frozen=True)
class RoomUserChanged:
    """A user joined a followed room, or left it (left, kicked, banned)."""

    room_id: str
    user_id: str
    joined: bool


@dataclass(frozen=True)
class Tick:
    """Time passed: memberships due expire."""


AdmissionInput = (
    JoinRequested | TokenChecked | RoomLoaded | MemberStateChanged | RoomUserChanged | Tick
)

# -- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckToken:
    """Ask ``server_name``'s homeserver whom ``access_token`` belongs to; answer TokenChecked."""

    attempt: int
    server_name: str
    access_token: str = field(repr=False)


@dataclass(frozen=True)
class LoadRoom:
    """Read the room's member state with this SFU's account; answer RoomLoaded."""

    room_id: str


@dataclass(frozen=True)
class Admitted:
    """The join is allowed: hand ``join_token`` to the member."""

    attempt: int
    participant: Participant
    join_token: str = field(repr=False)
    expires_at: int


@dataclass(frozen=True)
class Refused:
    """The join is refused, for ``reason``."""

    attempt: int
    reason: Refusal


@dataclass(frozen=True)
class Disconnect:
    """The membership under which ``participant`` was admitted ended: drop its connection."""

    participant: Participant


AdmissionAction = CheckToken | LoadRoom | Admitted | Refused | Disconnect


class Step(StrEnum):
    """Where one join attempt is."""

    NONE = "none"  # no such attempt (not begun, or decided already)
    CHECKING_TOKEN = "checking_token"  # noqa: S105 - a step name
    LOADING_ROOM = "loading_room"


class AdmissionStateError(RuntimeError):
    """An input that does not fit the attempt's step (our misuse, not the member's)."""


@dataclass
class _Attempt:
    request: JoinRequest
    step: Step


_Handler = Callable[["Admission", Any, "_Attempt | None", int], list[AdmissionAction]]


class Admission:
    """Admission to one SFU, whose join URL is ``sfu_url``, for users of ``server_names``;
    ``own_user`` is the SFU's account that reads the rooms (when it leaves a room, nobody's
    membership there can be checked any more, so everyone admitted to it is disconnected)."""

    def __init__(
        self,
        *,
        sfu_url: str,
        server_names: frozenset[str],
        own_user: str | None = None,
        tokens: JoinTokens | None = None,
        max_members: int = MAX_MEMBERS,
    ) -> None:
        self.sfu_url = sfu_url
        self.own_user = own_user
        self.server_names = server_names
        self.tokens = tokens or JoinTokens()
        self.max_members = max_members
        self._attempts: dict[int, _Attempt] = {}
        self._rooms: dict[str, MembershipTable] = {}
        self._loading: set[str] = set()
        self._early: dict[str, list[MemberStateChanged | RoomUserChanged]] = {}
        self._admitted: dict[tuple[str, MemberDevice], Participant] = {}

    # -- queries ------------------------------------------------------------------------

    def follows(self, room_id: str) -> bool:
        """Whether the room's member state is loaded and kept up to date."""
        return room_id in self._rooms

    def participants(self) -> list[Participant]:
        """Everyone admitted whose membership still holds."""
        return list(self._admitted.values())

    def next_deadline(self) -> int | None:
        """The earliest time (Unix ms) a membership expires: feed :class:`Tick` then."""
        times = [t for r in self._rooms.values() if (t := r.next_deadline()) is not None]
        return min(times) if times else None

    def verify(self, join_token: object, now_ms: int) -> Participant | None:
        """The participant a join token admits, if it is genuine, unexpired and its membership
        still holds; raises :class:`~.join_token.JoinTokenError` for a bad token, None for a
        membership that ended since."""
        claims: JoinClaims = self.tokens.verify(join_token, now_ms)
        key = (claims.room_id, MemberDevice(claims.user_id, claims.device_id))
        found = self._admitted.get(key)
        if found is None or found.membership_id != claims.membership_id:
            return None
        return found

    # -- inputs -------------------------------------------------------------------------

    def handle(self, item: AdmissionInput, now_ms: int) -> list[AdmissionAction]:
        """Apply one input at ``now_ms``; what to do."""
        if isinstance(item, JoinRequested | TokenChecked):
            attempt = self._attempts.get(item.attempt)
            step = Step.NONE if attempt is None else attempt.step
            handler = TRANSITIONS.get((step, type(item)))
            if handler is None:
                if step is Step.NONE:
                    return []  # a late answer for a join decided already (e.g. refused)
                raise AdmissionStateError(f"{type(item).__name__} in step {step}")
            return handler(self, item, attempt, now_ms)
        if isinstance(item, RoomLoaded):
            return self._room_loaded(item, now_ms)
        if isinstance(item, Tick):
            out: list[AdmissionAction] = []
            for room_id, room in self._rooms.items():
                out += self._ended(room_id, room.tick(now_ms))
            return out
        return self._room_change(item, now_ms)

    def _room_change(
        self, item: "MemberStateChanged | RoomUserChanged", now_ms: int
    ) -> list[AdmissionAction]:
        table = self._rooms.get(item.room_id)
        if table is None:
            early = self._early.get(item.room_id)
            # While the room's snapshot is being read, changes may be newer than it: kept, and
            # applied after it, in order. Other rooms' changes: their snapshot will hold them.
            if early is not None and len(early) < MAX_ROOM_LOADS:
                early.append(item)
            return []
        if isinstance(item, MemberStateChanged):
            return self._ended(item.room_id, table.handle(item.event, now_ms))
        if item.user_id == self.own_user and not item.joined:
            return self._forget(item.room_id)
        change = RoomMembershipChanged(item.user_id, item.joined)
        return self._ended(item.room_id, table.handle(change, now_ms))

    # -- steps --------------------------------------------------------------------------

    def _join_requested(
        self, item: JoinRequested, _attempt: "_Attempt | None", _now_ms: int
    ) -> list[AdmissionAction]:
        if len(self._attempts) >= MAX_PENDING:
            return [Refused(item.attempt, Refusal.BUSY)]
        request = item.request
        server = request.openid_token.matrix_server_name
        if server != _user_server(request.user_id) or server not in self.server_names:
            return [Refused(item.attempt, Refusal.BAD_TOKEN)]
        self._attempts[item.attempt] = _Attempt(request, Step.CHECKING_TOKEN)
        return [CheckToken(item.attempt, server, request.openid_token.access_token)]

    def _token_checked(
        self, item: TokenChecked, attempt: "_Attempt | None", now_ms: int
    ) -> list[AdmissionAction]:
        key = item.attempt
        assert attempt is not None  # the table routes only a known attempt's input here
        if item.failed:
            return self._refuse(key, Refusal.UNAVAILABLE)
        if item.user_id is None or item.user_id != attempt.request.user_id:
            return self._refuse(key, Refusal.BAD_TOKEN)
        room_id = attempt.request.room_id
        if room_id in self._rooms:
            return self._decide(key, attempt, now_ms)
        attempt.step = Step.LOADING_ROOM
        if room_id in self._loading:
            return []
        if len(self._rooms) + len(self._loading) >= MAX_ROOMS:
            return self._refuse(key, Refusal.BUSY)
        self._loading.add(room_id)
        self._early[room_id] = []
        return [LoadRoom(room_id)]

    def _room_loaded(self, item: RoomLoaded, now_ms: int) -> list[AdmissionAction]:
        self._loading.discard(item.room_id)
        early = self._early.pop(item.room_id, [])
        waiting = [
            k
            for k, a in self._attempts.items()
            if a.step is Step.LOADING_ROOM and a.request.room_id == item.room_id
        ]
        if not item.readable:
            return [a for k in waiting for a in self._refuse(k, Refusal.UNKNOWN_ROOM)]
        out: list[AdmissionAction] = []
        if item.room_id not in self._rooms:
            table = MembershipTable(max_members=self.max_members)
            table.set_joined_users(list(item.joined_users[:MAX_ROOM_LOADS]), now_ms)
            for event in item.member_events[:MAX_ROOM_LOADS]:
                table.handle(event, now_ms)
            self._rooms[item.room_id] = table
            for change in early:
                self._room_change(change, now_ms)  # nobody is admitted here yet
        for key in waiting:
            out += self._decide(key, self._attempts[key], now_ms)
        return out

    def _decide(self, key: int, attempt: _Attempt, now_ms: int) -> list[AdmissionAction]:
        request = attempt.request
        table = self._rooms[request.room_id]
        out = self._ended(request.room_id, table.tick(now_ms))
        member = table.member(MemberDevice(request.user_id, request.device_id))
        if member is None or request.membership_id not in (None, member.member_id):
            return out + self._refuse(key, Refusal.NOT_MEMBER)
        chosen = select_sfu(table.members())
        if not uses_sfu(member.content) or chosen is None or chosen.url != self.sfu_url:
            return out + self._refuse(key, Refusal.WRONG_FOCUS)
        del self._attempts[key]
        participant = Participant(
            request.room_id, request.user_id, request.device_id, member.member_id
        )
        self._admitted[(request.room_id, member.device)] = participant
        token, claims = self.tokens.issue(
            user_id=participant.user_id,
            device_id=participant.device_id,
            room_id=participant.room_id,
            membership_id=participant.membership_id,
            now_ms=now_ms,
        )
        return [*out, Admitted(key, participant, token, claims.expires_at)]

    def _forget(self, room_id: str) -> list[AdmissionAction]:
        """Stop following a room the SFU's account left: drop everyone admitted to it."""
        del self._rooms[room_id]
        gone = [key for key in self._admitted if key[0] == room_id]
        return [Disconnect(self._admitted.pop(key)) for key in gone]

    def _refuse(self, key: int, reason: Refusal) -> list[AdmissionAction]:
        self._attempts.pop(key, None)
        return [Refused(key, reason)]

    def _ended(self, room_id: str, changes: list[MembershipEvent]) -> list[AdmissionAction]:
        """Disconnect everyone admitted under a membership that ``changes`` end."""
        out: list[AdmissionAction] = []
        for change in changes:
            if isinstance(change, MemberLeft):
                old: Member = change.member
            elif isinstance(change, MemberRejoined):
                old = change.old
            else:
                continue
            key = (room_id, old.device)
            found = self._admitted.get(key)
            if found is not None and found.membership_id == old.member_id:
                del self._admitted[key]
                out.append(Disconnect(found))
        return out


# One join attempt's moves; RoomLoaded, a room's input, decides every attempt in LOADING_ROOM.
TRANSITIONS: dict[tuple[Step, type], _Handler] = {
    (Step.NONE, JoinRequested): Admission._join_requested,
    (Step.CHECKING_TOKEN, TokenChecked): Admission._token_checked,
}
