"""Errors of the group layer: the signaling errors, plus the shapes of member event we refuse."""

from sealcall.signaling import InvalidEventError


class LegacyMembershipError(InvalidEventError):
    """A member event in the legacy form (a ``memberships`` array per user): not read."""

    def __init__(self) -> None:
        super().__init__("content.memberships", "legacy per-user form is not supported")


class StateKeyError(InvalidEventError):
    """A member event's state key does not name a user (``_@user:server_DEVICE_m.call``)."""

    def __init__(self, message: str) -> None:
        super().__init__("state_key", message)
