"""What the page lists: our rooms (DMs and group rooms) and each room's call history."""

from __future__ import annotations

from typing import Any

from sealcall.calls import HistoryItem
from sealcall.calls.room_history import RoomCallEntry, calls_from_timeline
from sealcall.transport.matrix import MatrixTransport


def room_list(transport: MatrixTransport) -> list[dict[str, Any]]:
    """Our joined rooms as the page lists them: ``{room_id, name, kind, peer, members}``.

    A room of two people with no name of its own is a DM (the kind ``sealcall call`` and other
    apps make); any other room is a group room, whose call is a group call.
    """
    own = transport.user_id
    rooms: list[dict[str, Any]] = []
    for room_id, room in sorted(transport.client.rooms.items()):
        members = sorted(str(user) for user in room.users)
        others = [user for user in members if user != own]
        dm = len(members) == 2 and not room.name
        rooms.append(
            {
                "room_id": str(room_id),
                "name": (others[0] if dm and others else room.display_name) or str(room_id),
                "kind": "dm" if dm else "group",
                "peer": others[0] if dm and others else None,
                "members": members,
                "encrypted": bool(room.encrypted),
            }
        )
    return rooms


def entry_json(entry: RoomCallEntry) -> dict[str, Any]:
    """A history entry from the room's timeline, as the page shows it."""
    return {
        "call_id": entry.call_id,
        "caller": entry.caller,
        "callee": entry.callee,
        "direction": entry.direction.value,
        "video": entry.video,
        "outcome": entry.outcome.value,
        "started_at": entry.started_at,
        "duration": entry.duration,
        "end_reason": entry.end_reason,
        "group": False,
    }


def item_json(item: HistoryItem, own_user: str) -> dict[str, Any]:
    """The engine's history item of a call that just ended, in the same shape as
    :func:`entry_json` (so the page can merge them by ``call_id``)."""
    outgoing = item.direction.value == "outgoing"
    return {
        "call_id": item.call_id,
        "caller": own_user if outgoing else item.peer,
        "callee": item.peer if outgoing else own_user,
        "direction": item.direction.value,
        "video": item.video,
        "outcome": item.outcome.value,
        "started_at": item.started_at,
        "duration": item.duration,
        "end_reason": item.end_reason,
        "group": False,
    }


async def room_history(transport: MatrixTransport, room_id: str) -> list[dict[str, Any]]:
    """The calls of ``room_id`` from its timeline, oldest first."""
    events = await transport.timeline(room_id)
    entries = calls_from_timeline(events, transport.user_id, transport.room_members(room_id))
    return [entry_json(entry) for entry in entries]
