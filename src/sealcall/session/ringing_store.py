"""Calls that ring on this device, kept on disk so a restarted client still rings and answers.

The sync token moves past an invite as soon as it arrives, so after a restart the invite is not
delivered again; this small store is how a call ringing at shutdown survives it. Each ringing call
is one file in a folder (named by a digest of the call id, which the caller chooses), holding the
invite event (whose SDP, like everything else in the store folder, stays on this device) and when
it arrived; the file goes when the call stops ringing. A ring thus writes only its own entry,
whatever the number of calls ringing at once (a single file rewritten whole grew with each ring;
an append log would need compaction and a rule for torn writes).
"""

import contextlib
import hashlib
import json
import logging
from pathlib import Path

from sealcall.calls import RemoteEvent
from sealcall.signaling import CallInvite, SignalingError, parse

logger = logging.getLogger(__name__)


class RingingStore:
    """A folder of the invites that are ringing now, one JSON file each."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _file(self, call_id: str) -> Path:
        name = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self.path / f"{name}.json"

    def add(self, remote: RemoteEvent, now: float) -> None:
        """Remember a ringing invite (``now``: wall-clock seconds when it arrived)."""
        entry = {
            "room_id": remote.room_id,
            "sender": remote.sender,
            "event": remote.event.to_dict(),
            "arrived_at": now - remote.age_ms / 1000,
        }
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._file(remote.event.call_id)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        tmp.chmod(0o600)
        tmp.replace(target)

    def remove(self, call_id: str) -> None:
        """Forget a call that no longer rings."""
        with contextlib.suppress(FileNotFoundError):
            self._file(call_id).unlink()

    def restore(self, now: float) -> list[RemoteEvent]:
        """The remembered invites, aged by the time that passed; unreadable entries are deleted."""
        out = []
        for path in sorted(self.path.glob("*.json")):
            try:
                entry = json.loads(path.read_text())
                event = parse(entry["event"])
                age_ms = int((now - float(entry["arrived_at"])) * 1000)
                room_id, sender = str(entry["room_id"]), str(entry["sender"])
            except (OSError, SignalingError, KeyError, TypeError, ValueError):
                logger.info("dropped an unreadable ringing-call entry")
                path.unlink(missing_ok=True)
                continue
            if isinstance(event, CallInvite):
                out.append(RemoteEvent(room_id, sender, event, max(0, age_ms)))
        return out
