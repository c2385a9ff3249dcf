"""Errors of the signaling layer: a malformed or hostile call event is a typed error."""


class SignalingError(Exception):
    """Base class of every error raised while reading or building call events."""


class InvalidEventError(SignalingError):
    """A call event is malformed; ``field`` names the offending field (dotted for nested ones)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class MissingFieldError(InvalidEventError):
    """A required field is absent."""

    def __init__(self, field: str) -> None:
        super().__init__(field, "required field is missing")


class FieldTypeError(InvalidEventError):
    """A field has the wrong JSON type or an out-of-range value."""


class UnknownEventTypeError(SignalingError):
    """The event type is not a call event this library understands."""

    def __init__(self, event_type: object) -> None:
        super().__init__(f"not a call event type: {event_type!r:.80}")
        self.event_type = event_type
