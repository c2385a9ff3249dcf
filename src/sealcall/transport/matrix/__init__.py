"""The Matrix transport: call events in end-to-end encrypted rooms, through matrix-nio.

matrix-nio (with vodozemac) does Olm/Megolm; its store folder keeps the device keys, the Olm and
Megolm sessions and the sync token, so a restarted client keeps decrypting and resumes where it
stopped. Call events only ever travel encrypted: sending to an unencrypted room raises, and a
plaintext call event arriving in an encrypted room is dropped.

Modules: :mod:`.login` (credentials and the store), :mod:`.sync` (the sync loop and event intake),
:mod:`.keys` (key upkeep, to-device messages, undecryptable events), :mod:`.rooms` (rooms, sending,
the timeline, TURN servers) and :mod:`.transport` (the class that puts them together).
"""

from .errors import MatrixTransportError, UnencryptedRoomError
from .login import Credentials
from .transport import MatrixTransport

__all__ = ["Credentials", "MatrixTransport", "MatrixTransportError", "UnencryptedRoomError"]
