"""Relay-only calls: none of our host or server-reflexive ICE candidates ever leaves.

With ``CallPolicy(relay_only=True)`` the media layer gathers relay candidates only (ICE transport
policy ``relay``); the call machine still passes every local description and candidate batch
through :func:`relay_only_input`, so whatever a media layer (aiortc, a browser page) put there,
what is sent names no address of ours but the TURN server's relay: other candidates are dropped,
a relay candidate's related address is hidden (RFC 8839 ``0.0.0.0 9``), and a ``c=``, ``o=`` or
``a=rtcp:`` line that names another address gets ``0.0.0.0`` (``::`` for IPv6; its m-line port 9).
A candidate line that does not parse is dropped, and any line end is read.
"""

import dataclasses
import ipaddress
from collections.abc import Iterable, Sequence

from aioice import Candidate as IceCandidate

from sealcall.signaling import Candidate

from .inputs import LocalCandidatesReady, LocalDescriptionReady

RELAY_UNAVAILABLE = (
    "relay-only: no TURN server is offered (the homeserver hands out none), and a direct call "
    "would show your address to the other side"
)
RELAY_FOREIGN_SFU = (
    "relay-only: the room's call goes through an SFU you did not configure (another member named "
    "it), and the link to an SFU is not relayed: it would learn your address"
)
HIDDEN = "0.0.0.0"  # noqa: S104 - an address written into SDP, never bound
HIDDEN6 = "::"
HIDDEN_PORT = "9"


class RelayUnavailableError(RuntimeError):
    """A relay-only call cannot keep our address hidden: no TURN server is offered
    (:data:`RELAY_UNAVAILABLE`) or the room's SFU is not the one the user configured
    (:data:`RELAY_FOREIGN_SFU`). The call is not placed, answered or joined."""


def offers_turn(urls: Iterable[str]) -> bool:
    """True if one of the ICE server ``urls`` is a TURN server (``turn:`` or ``turns:``)."""
    return any(url.startswith(("turn:", "turns:")) for url in urls)


def relay_candidate(line: str) -> str | None:
    """``line`` (``candidate:...``, with or without ``a=``) if it is a readable relay candidate,
    rewritten from its parsed fields with its related address hidden; None for any other or
    unreadable candidate (it is never passed on)."""
    text = line.removeprefix("a=")
    if not text.startswith("candidate:"):
        return None
    words = text.removeprefix("candidate:").split()
    try:
        candidate = IceCandidate.from_sdp(" ".join(words))
        ipaddress.ip_address(candidate.host)
    except ValueError:  # also int() of a bad port, priority or component
        return None
    if words[6] != "typ" or candidate.type != "relay" or not 0 < candidate.port < 65536:
        return None
    candidate.related_address = None if candidate.related_address is None else HIDDEN
    candidate.related_port = None if candidate.related_port is None else int(HIDDEN_PORT)
    return "candidate:" + candidate.to_sdp()


def relay_only_sdp(sdp: str) -> str:
    """``sdp`` with only relay candidates, and no other address of ours in it; lines are read
    with any line end and written back with CRLF. Never raises."""
    kept: list[str] = []
    relays: set[str] = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate"):
            relay = relay_candidate(line)
            if relay is None:
                continue
            relays.add(relay.split()[4])
            line = "a=" + relay
        kept.append(line)
    out: list[str] = []
    m_line = -1
    for line in kept:
        if line.startswith("m="):
            m_line = len(out)
        elif line.startswith(("c=", "o=")):
            words = line.split()
            if len(words) < 2:
                continue  # names nothing readable: dropped, not passed on
            if words[-1] not in relays:
                line = " ".join([*words[:-1], _hidden(words)])
                if line.startswith("c=") and m_line >= 0:
                    out[m_line] = _hide_port(out[m_line])
        elif line.startswith("a=rtcp:") and line.split()[-1] not in relays:
            words = line.split()
            line = f"a=rtcp:{HIDDEN_PORT} IN IP4 {HIDDEN}"
            if _hidden(words) == HIDDEN6:
                line = f"a=rtcp:{HIDDEN_PORT} IN IP6 {HIDDEN6}"
        out.append(line)
    return "\r\n".join(out)


def _hidden(words: list[str]) -> str:
    """The unspecified address of the family a ``c=``/``o=``/``a=rtcp:`` line names."""
    return HIDDEN6 if len(words) >= 2 and words[-2] == "IP6" else HIDDEN


def _hide_port(m_line: str) -> str:
    words = m_line.split(" ")
    if len(words) > 1 and words[1] != "0":  # port 0: a rejected section stays rejected
        words[1] = HIDDEN_PORT
    return " ".join(words)


def relay_only_candidates(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    """The relay candidates among ``candidates`` (related address hidden) and the end marker."""
    out: list[Candidate] = []
    for candidate in candidates:
        if not candidate.candidate:
            out.append(candidate)  # end of candidates: names no address
            continue
        relay = relay_candidate(candidate.candidate)
        if relay is not None:
            out.append(dataclasses.replace(candidate, candidate=relay))
    return tuple(out)


def relay_only_input(event: object) -> object:
    """``event`` as it may leave in a relay-only call (local descriptions and candidates
    filtered; any other input unchanged)."""
    if isinstance(event, LocalDescriptionReady):
        return dataclasses.replace(event, sdp=relay_only_sdp(event.sdp))
    if isinstance(event, LocalCandidatesReady):
        return dataclasses.replace(event, candidates=relay_only_candidates(event.candidates))
    return event
