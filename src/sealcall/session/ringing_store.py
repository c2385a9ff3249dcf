"""Calls that ring on this device, kept on disk so a restarted client still rings and answers.

The sync token moves past an invite as soon as it arrives, so after a restart the invite is not
delivered again; this small file is how a call ringing at shutdown survives it. Each entry holds
the invite event (whose SDP, like everything else in the store folder, stays on this device) and
when it arrived; entries leave when the call stops ringing.
"""

import json
from pathlib import Path
from typing import Any

from sealcall.calls import RemoteEvent
from sealcall.signaling import CallInvite, SignalingError, parse


class RingingStore:
    """A JSON file of the invites that are ringing now."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def add(self, remote: RemoteEvent, now: float) -> None:
        """Remember a ringing invite (``now``: wall-clock seconds when it arrived)."""
        data = self._load()
        data[remote.event.call_id] = {
            "room_id": remote.room_id,
            "sender": remote.sender,
            "event": remote.event.to_dict(),
            "arrived_at": now - remote.age_ms / 1000,
        }
        self._save(data)

    def remove(self, call_id: str) -> None:
        """Forget a call that no longer rings."""
        data = self._load()
        if data.pop(call_id, None) is not None:
            self._save(data)

    def restore(self, now: float) -> list[RemoteEvent]:
        """The remembered invites, aged by the time that passed; unreadable entries are dropped."""
        out = []
        for entry in self._load().values():
            try:
                event = parse(entry["event"])
                age_ms = int((now - float(entry["arrived_at"])) * 1000)
            except (SignalingError, KeyError, TypeError, ValueError):
                continue
            if isinstance(event, CallInvite):
                out.append(
                    RemoteEvent(str(entry["room_id"]), str(entry["sender"]), event, max(0, age_ms))
                )
        return out
