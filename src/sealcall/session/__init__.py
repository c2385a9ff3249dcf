"""The asyncio session layer: calls bound to a transport, aiortc media and real timers."""

from .call_session import CallSession
from .local_media import LocalMedia
from .voip import VoIP

__all__ = ["CallSession", "LocalMedia", "VoIP"]
