"""The SFU focus of a MatrixRTC membership, without I/O.

A member that calls through our SFU names it in its member event::

    "foci_preferred": [{"type": "org.sealcall.sfu", "url": "https://sfu.example:8443"}],
    "focus_active": {"type": "org.sealcall.sfu", "focus_selection": "oldest_membership"}

Everyone then uses the SFU preferred by the oldest current membership that uses one (the same
rule as Element Call's LiveKit focus), so a room lives in one SFU. Foci of other types (``mesh``,
``livekit``) are not ours and are skipped; a malformed focus of our type is skipped too: nothing
here raises on what a member wrote.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .member_event import CALL_APPLICATION, ROOM_CALL_ID, ROOM_SCOPE, CallMember, short_text
from .membership import Member

SFU_FOCUS_TYPE = "org.sealcall.sfu"
OLDEST_MEMBERSHIP = "oldest_membership"
MAX_URL_LENGTH = 2048
_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class SfuFocus:
    """One SFU, by the URL where members join it."""

    url: str

    def to_json(self) -> dict[str, str]:
        """The ``foci_preferred`` entry naming this SFU."""
        return {"type": SFU_FOCUS_TYPE, "url": self.url}


ACTIVE_SFU_FOCUS = {"type": SFU_FOCUS_TYPE, "focus_selection": OLDEST_MEMBERSHIP}


def valid_sfu_url(url: object) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host, of at most 2048 characters."""
    if not short_text(url, MAX_URL_LENGTH) or not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in _SCHEMES and bool(parts.hostname)
    except ValueError:  # e.g. a malformed IPv6 literal or port
        return False


def parse_sfu_focus(focus: object) -> SfuFocus | None:
    """Our SFU named by a ``foci_preferred`` entry; None for another type or a bad URL."""
    if not isinstance(focus, dict) or focus.get("type") != SFU_FOCUS_TYPE:
        return None
    url = focus.get("url")
    return SfuFocus(url) if valid_sfu_url(url) and isinstance(url, str) else None


def uses_sfu(member: CallMember) -> bool:
    """Whether the membership's active focus is our SFU, chosen by the oldest membership."""
    active = member.focus_active
    return active.get("type") == SFU_FOCUS_TYPE and active.get("focus_selection") == (
        OLDEST_MEMBERSHIP
    )


def preferred_sfu(member: CallMember) -> SfuFocus | None:
    """The first valid SFU focus in the membership's ``foci_preferred``, if any."""
    for focus in member.foci_preferred or ():
        found = parse_sfu_focus(focus)
        if found is not None:
            return found
    return None


def select_sfu(members: Iterable[Member]) -> SfuFocus | None:
    """The room's SFU: the preferred SFU of the oldest membership that uses one.

    Oldest by ``created`` (``created_ts`` or the first event's timestamp); ties go to the lower
    ``(user_id, device_id)``, so every member picks the same one.
    """
    best: tuple[int, str, str, SfuFocus] | None = None
    for member in members:
        if not uses_sfu(member.content):
            continue
        focus = preferred_sfu(member.content)
        if focus is None:
            continue
        rank = (member.created, member.device.user_id, member.device.device_id, focus)
        if best is None or rank[:3] < best[:3]:
            best = rank
    return None if best is None else best[3]


def sfu_member(
    *,
    device_id: str,
    membership_id: str,
    created_ts: int,
    expires: int,
    sfu_url: str,
) -> CallMember:
    """A membership of the room call through the SFU at ``sfu_url``, in js-sdk's key order."""
    if not valid_sfu_url(sfu_url):
        raise ValueError("the SFU URL must be an absolute http(s) URL")
    return CallMember(
        application=CALL_APPLICATION,
        call_id=ROOM_CALL_ID,
        scope=ROOM_SCOPE,
        device_id=device_id,
        membership_id=membership_id,
        expires=expires,
        focus_active=dict(ACTIVE_SFU_FOCUS),
        foci_preferred=(SfuFocus(sfu_url).to_json(),),
        created_ts=created_ts,
    )
