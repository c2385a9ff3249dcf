"""Group calls in tests: members' GroupCallSessions with quick timers and small media."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import test_group_membership_session as gm
from sealcall.homeserver import Homeserver
from sealcall.media import LOOPBACK, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import GroupCallSession, LocalMedia

TIMEOUT = 60
SMALL_MEDIA = LocalMedia(
    microphone=SyntheticAudioTrack, camera=lambda: PatternVideoTrack(160, 120, fps=10)
)


class CallDevices(gm.Devices):
    sessions: list[GroupCallSession]


async def call_devices(synapse: Homeserver, tmp_path: Path) -> AsyncIterator[CallDevices]:
    """Devices whose group call sessions and transports are closed after the test (a fixture
    in conftest.py)."""
    made = CallDevices(synapse, tmp_path)
    made.sessions = []
    yield made
    for session in made.sessions:
        await session.close(leave=False)
    for d in made.started:
        await d.transport.stop()


def group_call(
    devices: CallDevices, d: gm.Device, room_id: str, **options: Any
) -> GroupCallSession:
    """A member's session with quick timers: a crashed member goes within seconds, a new key is
    used half a second after it is sent, and a key stays young for a minute (joins never rotate
    on a slow machine; leaves do)."""
    options = {
        "video": True,
        "media": SMALL_MEDIA,
        "host_addresses": LOOPBACK,
        "leave_delay_ms": gm.DELAY_MS,
        "restart_ms": gm.RESTART_MS,
        "key_options": {"use_delay": 0.5, "early_ttl": 1.0, "young_key_age": 60.0},
        **options,
    }
    session = GroupCallSession(d.transport, room_id, **options)
    devices.sessions.append(session)
    return session
