"""When a pair of the mesh calls again after its 1:1 call ended: a pure policy.

A pair's call that failed (ICE failed or timed out, the invite went unanswered, media or an
unknown error) is placed again after 1 s, 2 s, then 4 s: three retries, then the pair stays
down until its membership changes (a new session starts afresh). A call that ended on purpose
is not retried: a user's hang-up (which is also how a member leaving ends its calls), busy, a
refusal (rejected, encryption required), a call replaced by another (glare) or answered
elsewhere, and the ends the mesh itself makes when a member rejoins (:data:`NEW_SESSION`) or
leaves (:data:`MEMBER_LEFT`). A reason we do not know counts as a failure: the retries are few.
A call that connected resets the count, so a long call that drops gets three retries again.

Only the device that places the pair's call acts on :class:`RetryAt`; the other waits for the
new invite (whose call id carries the attempt number, see ``pair_call_id``).
"""

from dataclasses import dataclass

from sealcall.calls import ANSWERED_ELSEWHERE, ENCRYPTION_REQUIRED, REJECTED
from sealcall.calls.call import REPLACED
from sealcall.signaling import HangupReason

RETRY_DELAYS = (1.0, 2.0, 4.0)
# End reasons the mesh gives a pair's call when it ends it itself.
NEW_SESSION = "new_session"  # the peer (or we) rejoined: the pair starts afresh
MEMBER_LEFT = "member_left"

DELIBERATE_REASONS = frozenset(
    {
        HangupReason.USER_HANGUP.value,
        HangupReason.USER_BUSY.value,
        REJECTED,
        ENCRYPTION_REQUIRED,
        REPLACED,
        ANSWERED_ELSEWHERE,
        NEW_SESSION,
        MEMBER_LEFT,
    }
)


def is_deliberate(reason: str) -> bool:
    """Whether a call that ended with ``reason`` was ended on purpose (never retried)."""
    return reason in DELIBERATE_REASONS


@dataclass(frozen=True)
class RetryAt:
    """Place the pair's call again at ``at`` (same clock as ``now``), as attempt ``attempt``."""

    attempt: int
    at: float


@dataclass(frozen=True)
class GiveUp:
    """Do not call again: the end was ``deliberate``, or the retries are spent."""

    reason: str
    deliberate: bool


class PairRetry:
    """The retry state of one pair of member device sessions (a new session: a new one)."""

    def __init__(self, delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.delays = delays
        self.attempt = 0  # the attempt number of the pair's current call
        self.failures = 0  # failed attempts since the last connection
        self.stopped = False

    def connected(self) -> None:
        """The pair's current call connected: later failures get the full retries again."""
        self.failures = 0

    def ended(self, reason: str, now: float) -> RetryAt | GiveUp:
        """The pair's current call ended with ``reason`` at ``now``: whether and when to retry."""
        if self.stopped:
            return GiveUp(reason, deliberate=is_deliberate(reason))
        if is_deliberate(reason):
            self.stopped = True
            return GiveUp(reason, deliberate=True)
        if self.failures >= len(self.delays):
            self.stopped = True
            return GiveUp(reason, deliberate=False)
        delay = self.delays[self.failures]
        self.failures += 1
        self.attempt += 1
        return RetryAt(self.attempt, now + delay)
