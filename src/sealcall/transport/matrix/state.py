"""Room state for group calls: sending state events, reading them, hearing of their changes.

MatrixRTC membership (``org.matrix.msc3401.call.member``) lives in room state, one event per
device. State events are not end-to-end encrypted in Matrix (the server must read them to
authorise), so the membership says only who is in the call; the media keys travel Olm-encrypted
to devices. A group call still belongs only in an encrypted room (its ringing and its history
are room events): :meth:`StateMixin.check_group_room` refuses any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient, RoomCreateError, RoomPreset, SyncResponse

from .delayed import DelayedEventsMixin
from .errors import MatrixTransportError, UnencryptedRoomError
from .http import V3, path, request
from .rooms import ENCRYPTION_STATE

logger = logging.getLogger(__name__)

CALL_MEMBER = "org.matrix.msc3401.call.member"
POWER_LEVELS = "m.room.power_levels"


class CallMembershipForbiddenError(MatrixTransportError):
    """Our power level in the room is too low to send the call member event."""


@dataclass(frozen=True)
class StateEvent:
    """One state event of a room as the server holds it."""

    room_id: str
    sender: str
    type: str
    state_key: str
    content: dict[str, Any]
    origin_server_ts: int
    event_id: str = ""


StateListener = Callable[[StateEvent], None]


def parse_state_event(room_id: str, source: Any) -> StateEvent | None:
    """A :class:`StateEvent` from a client-format event dict, or None if it is not one."""
    if not isinstance(source, dict):
        return None
    sender, kind, key = source.get("sender"), source.get("type"), source.get("state_key")
    content, stamp = source.get("content"), source.get("origin_server_ts", 0)
    event_id = source.get("event_id", "")
    if not (isinstance(sender, str) and isinstance(kind, str) and isinstance(key, str)):
        return None
    if not isinstance(content, dict) or not isinstance(event_id, str):
        return None
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        return None
    return StateEvent(room_id, sender, kind, key, content, stamp, event_id)


class StateMixin(DelayedEventsMixin):
    """Room state and group rooms for :class:`~sealcall.transport.matrix.MatrixTransport`."""

    client: AsyncClient
    _state_listeners: list[tuple[frozenset[str], StateListener]]
    malformed_state = 0

    async def send_state_event(
        self,
        room_id: str,
        event_type: str,
        state_key: str,
        content: dict[str, Any],
        delay_ms: int | None = None,
    ) -> str:
        """Set a state event; its event id. With ``delay_ms``, schedule it instead (MSC4140)
        and return its delay id; :class:`~.delayed.DelayedEventsUnsupportedError` if the
        homeserver cannot (nothing is sent then)."""
        if not isinstance(content, dict):
            raise TypeError("state content must be a JSON object")
        if delay_ms is not None:
            return await self._schedule_state(room_id, event_type, state_key, content, delay_ms)
        url = path(V3, "rooms", room_id, "state", event_type, state_key)
        answer = await request(self.client, "PUT", url, content, f"sending {event_type}")
        return str(answer.get("event_id", ""))

    async def room_state(self, room_id: str, event_type: str) -> list[StateEvent]:
        """The room's current state events of ``event_type`` (from the server, ``/state``)."""
        response = await self.client.room_get_state(room_id)  # /state answers a JSON list
        events = getattr(response, "events", None)
        if not isinstance(events, list):
            raise MatrixTransportError(f"reading the state of {room_id} failed")
        found = []
        for source in events:
            if isinstance(source, dict) and source.get("type") == event_type:
                event = parse_state_event(room_id, source)
                if event is None:
                    self._malformed_state()
                else:
                    found.append(event)
        return found

    def add_state_listener(self, listener: StateListener, event_types: Iterable[str]) -> None:
        """Call ``listener`` for each state event of ``event_types`` that a sync brings (the
        room's whole current state on the first sync, then each change, in order)."""
        self._state_listeners.append((frozenset(event_types), listener))

    def remove_state_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener`` (a listener added more than once is removed everywhere)."""
        self._state_listeners[:] = [(t, f) for t, f in self._state_listeners if f != listener]

    def _take_state(self, response: SyncResponse) -> None:
        """Hand a sync's state events to the state listeners: the state section first (it is
        the state before the timeline), then the timeline's state events, in order."""
        if not self._state_listeners:
            return
        watched = frozenset().union(*(types for types, _ in self._state_listeners))
        for room_id, info in response.rooms.join.items():
            for event in [*info.state, *info.timeline.events]:
                source = getattr(event, "source", None)
                if not isinstance(source, dict) or source.get("type") not in watched:
                    continue
                if "state_key" not in source:
                    continue  # a room event of that type, not state
                state = parse_state_event(room_id, source)
                if state is None:
                    self._malformed_state()
                    continue
                for types, listener in list(self._state_listeners):
                    if state.type in types:
                        try:
                            listener(state)
                        except Exception as error:  # one listener must not cost the others
                            logger.warning("a state listener failed: %s", type(error).__name__)

    def _malformed_state(self) -> None:
        self.malformed_state += 1
        logger.warning("dropped a malformed state event")

    async def create_group_room(self, name: str, invite: Iterable[str] = ()) -> str:
        """Create an end-to-end encrypted room for group calls; its room id.

        Members join at power level 0, and may send the call member event, as in the rooms
        Element Call makes; everything else keeps Synapse's defaults for a private chat.
        """
        response = await self.client.room_create(
            name=name,
            preset=RoomPreset.private_chat,
            invite=list(invite),
            initial_state=[ENCRYPTION_STATE],
        )
        if isinstance(response, RoomCreateError):
            raise MatrixTransportError(f"creating room {name!r} failed: {response.message}")
        room_id = str(response.room_id)
        # Set after creation, not as an override at creation: an override replaces the whole
        # "events" map, and its defaults differ between room versions.
        url = path(V3, "rooms", room_id, "state", POWER_LEVELS, "")
        levels = await request(self.client, "GET", url, None, "reading power levels")
        events = levels.get("events")
        levels["events"] = {**(events if isinstance(events, dict) else {}), CALL_MEMBER: 0}
        await request(self.client, "PUT", url, levels, "opening the room to calls")
        return room_id

    def check_group_room(self, room_id: str) -> None:
        """Refuse a group call in a room we are not in, that is not end-to-end encrypted
        (:class:`UnencryptedRoomError`), or where we may not send the member event
        (:class:`CallMembershipForbiddenError`)."""
        room = self.client.rooms.get(room_id)
        if room is None:
            raise MatrixTransportError(f"not in room {room_id}")
        if not room.encrypted:
            raise UnencryptedRoomError(f"{room_id} is not end-to-end encrypted: no group call")
        if not room.power_levels.can_user_send_state(str(self.client.user_id), CALL_MEMBER):
            raise CallMembershipForbiddenError(
                f"our power level in {room_id} does not allow {CALL_MEMBER}"
            )
