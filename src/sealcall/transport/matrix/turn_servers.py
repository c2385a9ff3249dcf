"""TURN servers from the homeserver (``/voip/turnServer``), checked and kept for their ``ttl``.

Clients ask before every call, so the answer is kept until shortly before its ``ttl`` runs out
(one request per lifetime, not per call). A failed fetch (timeout, error status, unreadable or
oversized body) keeps the last good servers until they expire, so an ordinary call does not
silently lose TURN and a relay-only call is not refused for the wrong reason. Only string
``turn:``/``turns:``/``stun:`` URIs that aiortc can parse are taken (at most
:data:`MAX_URIS`); anything else in the answer is a counted drop, logged in one line without
the answer's content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0  # seconds for the whole request: place/answer never hang on the homeserver
MAX_BODY = 64 * 1024
MAX_URIS = 16
MAX_URI_LENGTH = 512
DEFAULT_TTL = 60.0  # seconds, when the answer gives no usable ttl
MAX_TTL = 86_400.0
REFRESH_SHARE = 0.2  # refetch once less than this share of the ttl is left
SCHEMES = ("turn:", "turns:", "stun:")


@dataclass(frozen=True)
class TurnAnswer:
    """What a ``/voip/turnServer`` answer offers: servers, for ``ttl`` seconds, and how many
    malformed fields or items were dropped."""

    servers: tuple[RTCIceServer, ...]
    ttl: float
    dropped: int


def _uri_ok(uri: object) -> bool:
    if not isinstance(uri, str) or len(uri) > MAX_URI_LENGTH or not uri.startswith(SCHEMES):
        return False
    try:
        parse_stun_turn_uri(uri)
    except ValueError:
        return False
    return True


def parse_turn_answer(body: object) -> TurnAnswer | None:
    """The servers a decoded answer offers; None if it is not an answer at all (not an object,
    or ``uris`` neither missing nor a list). Never raises."""
    if not isinstance(body, dict):
        return None
    raw_uris = body.get("uris", [])
    if not isinstance(raw_uris, list):
        return None
    dropped = 0
    raw_ttl = body.get("ttl")
    ttl = DEFAULT_TTL
    if isinstance(raw_ttl, int | float) and not isinstance(raw_ttl, bool):
        if math.isfinite(raw_ttl) and raw_ttl > 0:
            ttl = min(float(raw_ttl), MAX_TTL)
        else:
            dropped += 1
    elif raw_ttl is not None:
        dropped += 1
    credentials: list[str | None] = []
    for field in ("username", "password"):
        value = body.get(field)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_URI_LENGTH):
            dropped += 1
            value = None
        credentials.append(value or None)
    username, password = credentials
    uris: list[str] = []
    for uri in raw_uris:
        if not _uri_ok(uri) or len(uris) >= MAX_URIS:
            dropped += 1
        elif uri.startswith("turn") and (username is None or password is None):
            dropped += 1  # TURN without credentials cannot allocate
        else:
            uris.append(uri)
    servers = (RTCIceServer(urls=uris, username=username, credential=password),) if uris else ()
    return TurnAnswer(servers, ttl, dropped)


class TurnServers:
    """The homeserver's TURN servers, fetched when none are known or they are about to expire.

    ``fetch_failures`` and ``dropped`` count failed fetches and malformed parts of answers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.timeout = FETCH_TIMEOUT
        self.fetch_failures = 0
        self.dropped = 0
        self._servers: tuple[RTCIceServer, ...] = ()
        self._fetched_at = 0.0
        self._expires_at = 0.0  # nothing fetched yet
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        if self._expires_at <= self._fetched_at:
            return False
        left = self._expires_at - self.clock()
        return left > (self._expires_at - self._fetched_at) * REFRESH_SHARE

    async def get(self, homeserver: str, access_token: str) -> list[RTCIceServer]:
        """The servers to use now: kept ones while fresh, else a new answer; after a failed
        fetch, the last good ones until they expire, then none."""
        async with self._lock:
            if not self._fresh():
                answer = await self._fetch(homeserver, access_token)
                if answer is not None:
                    now = self.clock()
                    self._servers = answer.servers
                    self._fetched_at, self._expires_at = now, now + answer.ttl
            if self.clock() >= self._expires_at:
                self._servers = ()
            return list(self._servers)

    async def _fetch(self, homeserver: str, access_token: str) -> TurnAnswer | None:
        url = f"{homeserver}/_matrix/client/v3/voip/turnServer"
        headers = {"Authorization": f"Bearer {access_token}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        reason = ""
        answer: TurnAnswer | None = None
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(url, headers=headers) as response,
            ):
                if response.status != 200:
                    reason = f"status {response.status}"
                else:
                    body = bytearray()
                    async for chunk in response.content.iter_any():
                        body += chunk
                        if len(body) > MAX_BODY:
                            reason = "body too large"
                            break
                    if not reason:
                        answer = parse_turn_answer(json.loads(body))
                        reason = "" if answer is not None else "not a TURN answer"
        except TimeoutError:
            reason = "timed out"
        except (aiohttp.ClientError, OSError) as error:
            reason = type(error).__name__
        except (ValueError, RecursionError):
            reason = "unreadable body"
        if answer is None:
            self.fetch_failures += 1
            logger.warning(
                "TURN server fetch failed (%s, %d so far); keeping %d known server(s)",
                reason,
                self.fetch_failures,
                len(self._servers),
            )
            return None
        if answer.dropped:
            self.dropped += answer.dropped
            logger.warning(
                "TURN answer: dropped %d malformed field(s) or URI(s) (%d so far)",
                answer.dropped,
                self.dropped,
            )
        return answer
