"""MSC4140 delayed events: state the homeserver sends later unless it is restarted or cancelled.

A group-call member schedules its own leave this way: the server sends the empty member event
when the delay runs out, so a device that crashed vanishes from everyone's view soon, instead
of at the membership's expiry. The device restarts the delay every few seconds while it lives,
has the server send it at once on a clean leave, or cancels it.

A homeserver says it has delayed events in ``/versions`` (unstable feature
``org.matrix.msc4140``) and the longest delay it accepts in ``/capabilities``. One without them
would ignore the delay parameter and send the event at once, so nothing is scheduled before
:meth:`DelayedEventsMixin.delayed_event_support` has said yes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nio import AsyncClient

from .errors import MatrixTransportError
from .http import MSC4140, V3, MatrixRequestError, path, request

FEATURE = "org.matrix.msc4140"
CAPABILITY = "org.matrix.msc4140.delayed_events"
DELAY_PARAMETER = "org.matrix.msc4140.delay"
ACTIONS = ("restart", "send", "cancel")


class DelayedEventsUnsupportedError(MatrixTransportError):
    """The homeserver has no delayed events (or not this long a delay): nothing was scheduled.
    Fall back to the membership's expiry."""


class DelayedEventGoneError(MatrixTransportError):
    """The delayed event is no longer scheduled: it was sent (its delay ran out) or cancelled."""


@dataclass(frozen=True)
class DelayedEventSupport:
    """Whether the homeserver schedules delayed events, and its longest delay (None: unsaid)."""

    supported: bool
    max_delay_ms: int | None = None

    def allows(self, delay_ms: int) -> bool:
        """True if a delay of ``delay_ms`` can be scheduled."""
        return self.supported and (self.max_delay_ms is None or delay_ms <= self.max_delay_ms)


def parse_support(versions: Any, capabilities: Any) -> DelayedEventSupport:
    """What ``/versions`` and ``/capabilities`` answers say about delayed events."""
    features = versions.get("unstable_features") if isinstance(versions, dict) else None
    if not isinstance(features, dict) or features.get(FEATURE) is not True:
        return DelayedEventSupport(False)
    caps = capabilities.get("capabilities") if isinstance(capabilities, dict) else None
    limits = caps.get(CAPABILITY) if isinstance(caps, dict) else None
    longest = limits.get("max_delay_ms") if isinstance(limits, dict) else None
    if isinstance(longest, bool) or not isinstance(longest, int):
        return DelayedEventSupport(True)
    if longest <= 0:
        return DelayedEventSupport(False)
    return DelayedEventSupport(True, longest)


@dataclass(frozen=True)
class ScheduledEvent:
    """A delayed event of ours that the homeserver still holds."""

    delay_id: str
    room_id: str
    type: str
    state_key: str | None


def parse_scheduled(answer: Any) -> list[ScheduledEvent]:
    """The delayed events a ``GET delayed_events`` answer lists; malformed entries are skipped."""
    listed = answer.get("delayed_events") if isinstance(answer, dict) else None
    found = []
    for item in listed if isinstance(listed, list) else ():
        if not isinstance(item, dict):
            continue
        delay_id, room_id, kind = item.get("delay_id"), item.get("room_id"), item.get("type")
        key = item.get("state_key")
        if not all(isinstance(v, str) for v in (delay_id, room_id, kind)):
            continue
        found.append(
            ScheduledEvent(
                str(delay_id), str(room_id), str(kind), key if isinstance(key, str) else None
            )
        )
    return found


class DelayedEventsMixin:
    """Delayed events for :class:`~sealcall.transport.matrix.MatrixTransport`."""

    client: AsyncClient
    _delayed_support: DelayedEventSupport | None = None

    async def delayed_event_support(self) -> DelayedEventSupport:
        """Ask the homeserver (once) whether it schedules delayed events."""
        if self._delayed_support is None:
            versions = await request(
                self.client, "GET", "/_matrix/client/versions", None, "reading /versions"
            )
            try:
                capabilities = await request(
                    self.client, "GET", path(V3, "capabilities"), None, "reading capabilities"
                )
            except MatrixRequestError:
                capabilities = {}
            self._delayed_support = parse_support(versions, capabilities)
        return self._delayed_support

    async def _schedule_state(
        self, room_id: str, event_type: str, state_key: str, content: dict[str, Any], delay_ms: int
    ) -> str:
        """PUT the state event with a delay; its delay id."""
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or delay_ms <= 0:
            raise ValueError("a delay is a positive number of milliseconds")
        support = await self.delayed_event_support()
        if not support.allows(delay_ms):
            raise DelayedEventsUnsupportedError(
                "the homeserver has no delayed events"
                if not support.supported
                else f"the homeserver delays events by {support.max_delay_ms} ms at most"
            )
        url = path(
            V3, "rooms", room_id, "state", event_type, state_key,
            query={DELAY_PARAMETER: str(delay_ms)},
        )  # fmt: skip
        answer = await request(self.client, "PUT", url, content, f"scheduling {event_type}")
        delay_id = answer.get("delay_id")
        if not isinstance(delay_id, str) or not delay_id:
            # The server sent the event right away: it did not understand the delay after all.
            self._delayed_support = DelayedEventSupport(False)
            raise DelayedEventsUnsupportedError("the homeserver sent the event without delay")
        return delay_id

    async def scheduled_delayed_events(self) -> list[ScheduledEvent]:
        """Our user's delayed events still scheduled, from any device and any earlier run (a
        restarted device finds the leave its crashed run scheduled)."""
        answer = await request(
            self.client, "GET", path(MSC4140, "delayed_events"), None, "listing delayed events"
        )
        return parse_scheduled(answer)

    async def restart_delayed_event(self, delay_id: str) -> None:
        """Start the delay again from now (the device is alive)."""
        await self._update_delayed(delay_id, "restart")

    async def send_delayed_event(self, delay_id: str) -> None:
        """Have the server send the delayed event now (a clean leave)."""
        await self._update_delayed(delay_id, "send")

    async def cancel_delayed_event(self, delay_id: str) -> None:
        """Drop the delayed event: it is never sent."""
        await self._update_delayed(delay_id, "cancel")

    async def _update_delayed(self, delay_id: str, action: str) -> None:
        assert action in ACTIONS
        what = f"{action} delayed event"
        # The MSC's first form names the action in the body; its later revision (which Synapse
        # also serves on workers) in the path. Either will do.
        forms = [
            (path(MSC4140, "delayed_events", delay_id), {"action": action}),
            (path(MSC4140, "delayed_events", delay_id, action), {}),
        ]
        for url, body in forms:
            try:
                await request(self.client, "POST", url, body, what)
                return
            except MatrixRequestError as error:
                if error.errcode == "M_NOT_FOUND":
                    raise DelayedEventGoneError(
                        f"delayed event {delay_id[:64]} is no longer scheduled"
                    ) from None
                if error.errcode != "M_UNRECOGNIZED":
                    raise
        raise DelayedEventsUnsupportedError("no delayed events on this server")
