"""The asyncio session layer: calls (and group-call membership) bound to a transport, aiortc
media and real timers."""

from .call_session import CallSession
from .group_keys import GroupKeys
from .group_membership import GroupMembership
from .group_ringing import GroupRinger
from .local_media import LocalMedia
from .voip import VoIP

__all__ = ["CallSession", "GroupKeys", "GroupMembership", "GroupRinger", "LocalMedia", "VoIP"]
