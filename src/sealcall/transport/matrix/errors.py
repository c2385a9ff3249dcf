"""The Matrix transport's errors."""


class MatrixTransportError(RuntimeError):
    """Login, sync, room or send failed; or a call event would have left unencrypted."""


class UnencryptedRoomError(MatrixTransportError):
    """The room does not use end-to-end encryption, so no call event is sent to it."""
