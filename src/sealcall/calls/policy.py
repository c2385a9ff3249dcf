"""The user's and application's choices that shape every call."""

from dataclasses import dataclass
from enum import StrEnum

from sealcall.sframe import CipherSuite


class BusyPolicy(StrEnum):
    """What happens to a second incoming call while another is in progress."""

    WAIT = "wait"  # show it as call waiting: the user decides
    REJECT = "reject"  # answer it with ``user_busy`` at once


@dataclass(frozen=True)
class CallPolicy:
    """Settings of the call engine.

    ``allow_unencrypted`` is the explicit user decision to accept a peer that cannot encrypt
    media (its media is then protected only hop by hop, by DTLS-SRTP); by default such calls are
    refused with the reason ``encryption_required``. ``ask_unencrypted`` lets an incoming call
    that cannot be encrypted ring instead, showing ``encrypted = False``, so the user decides
    per call: answering it takes ``AnswerCall(allow_unencrypted=True)``.

    ``ice_restart_timeout`` is the ICE deadline: how long one ICE restart of a call that has not
    connected yet may take, and how long a call whose peer connection closed under it waits for a
    hang-up before it ends as ``ice_timeout``. ``reconnect_timeout`` is how long a connected call
    whose media path stopped answering stays ``reconnecting`` before it ends as ``ice_timeout``
    (counted from when the interruption was reported). Keep it within the ICE consent window (30 s
    after the last answered check, a few seconds before the interruption is noticed): aiortc cannot
    restart ICE, so an outage longer than that window is over for the connection anyway.
    ``max_invite_lifetime_ms`` caps the lifetime an incoming invite asks for;
    ``max_remote_candidates`` caps the remote ICE candidates one call takes (buffered before the
    answer or handed to the media layer); the rest are dropped and counted.

    ``relay_only``: ICE uses TURN relay candidates only and no host or server-reflexive
    candidate of ours is ever sent (:mod:`sealcall.calls.relay_only`), so the other side never
    learns our address; without a TURN server such a call is not placed or answered.
    """

    allow_unencrypted: bool = False
    ask_unencrypted: bool = False
    invite_lifetime_ms: int = 60_000
    max_invite_lifetime_ms: int = 120_000
    min_ring_seconds: float = 1.0
    ice_restart_attempts: int = 3
    ice_restart_timeout: float = 10.0
    reconnect_timeout: float = 20.0
    suites: tuple[int, ...] = (CipherSuite.AES_128_GCM_SHA256_128,)
    busy: BusyPolicy = BusyPolicy.WAIT
    max_remote_candidates: int = 200
    relay_only: bool = False

    def __post_init__(self) -> None:
        deadlines = (self.ice_restart_timeout, self.reconnect_timeout)
        if min(self.invite_lifetime_ms, self.max_invite_lifetime_ms, *deadlines) <= 0:
            raise ValueError(
                "invite lifetimes, ICE restart and reconnect timeouts must be positive"
            )
        if self.max_remote_candidates < 0:
            raise ValueError("the remote candidate cap must be >= 0")
        if self.ice_restart_attempts < 0 or self.min_ring_seconds < 0:
            raise ValueError("ICE restart attempts and minimum ring time must be >= 0")
        if not self.suites:
            raise ValueError("at least one SFrame suite is needed")
