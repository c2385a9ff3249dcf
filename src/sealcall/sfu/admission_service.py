"""Admission to the SFU, bound to asyncio: the homeserver's userinfo, the rooms' member state.

:class:`AdmissionService` runs the sans-I/O :class:`~.admission.Admission`: it resolves OpenID
tokens with the homeserver (``/_matrix/federation/v1/openid/userinfo``, aiohttp), reads a room's
member state through the SFU's own Matrix account (which must be in the room) and keeps it up to
date from that account's sync, and calls ``on_disconnect`` for each admitted member whose
membership ends, so that the SFU drops its connection.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from sealcall.group.membership import MemberStateEvent
from sealcall.transport.matrix import CALL_MEMBER, MatrixTransport, MatrixTransportError
from sealcall.transport.matrix.state import StateEvent

from .admission import (
    Admission,
    AdmissionAction,
    AdmissionInput,
    Admitted,
    CheckToken,
    Disconnect,
    JoinRequest,
    JoinRequested,
    LoadRoom,
    MemberStateChanged,
    Participant,
    Refused,
    RoomLoaded,
    RoomUserChanged,
    Tick,
    TokenChecked,
    UserinfoError,
    parse_userinfo,
)
from .join_token import JoinTokens

logger = logging.getLogger(__name__)

USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"
ROOM_MEMBER = "m.room.member"
REQUEST_TIMEOUT = 10.0  # seconds for one userinfo or room-state request


def now_ms() -> int:
    """Unix time in milliseconds (the clock of ``origin_server_ts``)."""
    return int(time.time() * 1000)


def _member_event(event: StateEvent) -> MemberStateEvent:
    return MemberStateEvent(
        event.sender, event.state_key, event.content, event.origin_server_ts, event.event_id
    )


class AdmissionService:
    """Admits current call members to the SFU at ``sfu_url`` (see :mod:`.admission`).

    ``transport`` is the SFU's own account, started (syncing), in the rooms it serves;
    ``homeserver_url`` answers userinfo for the users of its server name.
    """

    def __init__(
        self,
        transport: MatrixTransport,
        *,
        homeserver_url: str,
        sfu_url: str,
        on_disconnect: Callable[[Participant], None],
        tokens: JoinTokens | None = None,
    ) -> None:
        self.transport = transport
        self.homeserver_url = homeserver_url.rstrip("/")
        server_name = transport.user_id.partition(":")[2]
        self.core = Admission(sfu_url=sfu_url, server_names=frozenset({server_name}), tokens=tokens)
        self.on_disconnect = on_disconnect
        self._http: aiohttp.ClientSession | None = None
        self._waiting: dict[int, asyncio.Future[Admitted | Refused]] = {}
        self._next_attempt = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        transport.add_state_listener(self._on_state, [CALL_MEMBER, ROOM_MEMBER])

    async def admit(self, request: JoinRequest) -> Admitted | Refused:
        """Check a join request; the verdict (with the join token when admitted)."""
        if self._closed:
            raise RuntimeError("the admission service is closed")
        self._next_attempt += 1
        attempt = self._next_attempt
        done: asyncio.Future[Admitted | Refused] = asyncio.get_running_loop().create_future()
        self._waiting[attempt] = done
        self._feed(JoinRequested(attempt, request))
        try:
            return await done
        finally:
            self._waiting.pop(attempt, None)

    def verify(self, join_token: object) -> Participant | None:
        """Whom a join token admits now (see :meth:`.admission.Admission.verify`)."""
        return self.core.verify(join_token, now_ms())

    async def close(self) -> None:
        """Stop listening and cancel what is under way (the transport stays the caller's)."""
        self._closed = True
        self.transport.remove_state_listener(self._on_state)
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for done in self._waiting.values():
            done.cancel()  # a join still being checked gets no verdict
        if self._http is not None:
            await self._http.close()

    # -- the core -----------------------------------------------------------------------

    def _feed(self, item: AdmissionInput) -> None:
        if self._closed:
            return
        for action in self.core.handle(item, now_ms()):
            self._act(action)
        self._arm()

    def _act(self, action: AdmissionAction) -> None:
        if isinstance(action, CheckToken):
            self._spawn(self._check_token(action))
        elif isinstance(action, LoadRoom):
            self._spawn(self._load_room(action.room_id))
        elif isinstance(action, Admitted | Refused):
            done = self._waiting.get(action.attempt)
            if done is not None and not done.done():
                done.set_result(action)
        elif isinstance(action, Disconnect):
            try:
                self.on_disconnect(action.participant)
            except Exception as error:  # the SFU's callback must not stop the others
                logger.warning("on_disconnect failed: %s", type(error).__name__)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.next_deadline()
        if deadline is not None:
            delay = max(0.0, (deadline - now_ms()) / 1000) + 0.01
            self._timer = asyncio.get_running_loop().call_later(delay, self._feed, Tick())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- I/O ------------------------------------------------------------------------------

    async def _check_token(self, action: CheckToken) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        url = self.homeserver_url + USERINFO_PATH
        user: str | None = None
        failed = False
        try:
            async with self._http.get(url, params={"access_token": action.access_token}) as answer:
                if answer.status == 200:
                    user = parse_userinfo(await answer.json(content_type=None))
                elif answer.status not in (401, 403):
                    failed = True
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, UserinfoError) as error:
            # One line, no token: the URL holds it.
            logger.warning("userinfo request failed: %s", type(error).__name__)
            failed = True
        self._feed(TokenChecked(action.attempt, user, failed))

    async def _load_room(self, room_id: str) -> None:
        try:
            events = await self.transport.room_state(room_id, CALL_MEMBER)
            joined = await self.transport.client.joined_members(room_id)
            members = getattr(joined, "members", None)
            if not isinstance(members, list):
                raise MatrixTransportError(f"reading the members of {room_id} failed")
        except (MatrixTransportError, aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.info("cannot read room %s: %s", room_id, type(error).__name__)
            self._feed(RoomLoaded(room_id, readable=False))
            return
        self._feed(
            RoomLoaded(
                room_id,
                tuple(_member_event(e) for e in events),
                tuple(str(m.user_id) for m in members),
            )
        )

    def _on_state(self, event: StateEvent) -> None:
        if event.type == CALL_MEMBER:
            self._feed(MemberStateChanged(event.room_id, _member_event(event)))
        else:
            joined = event.content.get("membership") == "join"
            self._feed(RoomUserChanged(event.room_id, event.state_key, joined))


class AdmissionGate:
    """The ``make_gate`` an :class:`~.server.SfuServer` takes: an :class:`AdmissionService`
    with these arguments, made when the server starts; :meth:`close` it after the server."""

    def __init__(
        self,
        transport: MatrixTransport,
        *,
        homeserver_url: str,
        sfu_url: str,
        tokens: JoinTokens | None = None,
    ) -> None:
        self.transport = transport
        self.homeserver_url = homeserver_url
        self.sfu_url = sfu_url
        self.tokens = tokens
        self.service: AdmissionService | None = None

    def __call__(self, on_disconnect: Callable[[Participant], None]) -> AdmissionService:
        if self.service is None:
            self.service = AdmissionService(
                self.transport,
                homeserver_url=self.homeserver_url,
                sfu_url=self.sfu_url,
                on_disconnect=on_disconnect,
                tokens=self.tokens,
            )
        return self.service

    async def close(self) -> None:
        """Close the service (if the server made one)."""
        if self.service is not None:
            await self.service.close()
