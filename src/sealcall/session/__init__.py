"""The asyncio session layer: 1:1 and group calls bound to a transport, aiortc
media and real timers."""

from .call_media import CallMedia
from .call_session import CallSession
from .group_call import GroupCallSession
from .group_keys import GroupKeys
from .group_membership import GroupMembership
from .group_ringing import GroupRinger
from .group_sending import GroupSending
from .local_media import LocalMedia
from .mesh_pair import MeshPairSession
from .voip import VoIP

__all__ = [
    "CallMedia",
    "CallSession",
    "GroupCallSession",
    "GroupKeys",
    "GroupMembership",
    "GroupRinger",
    "GroupSending",
    "LocalMedia",
    "MeshPairSession",
    "VoIP",
]
