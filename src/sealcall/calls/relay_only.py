"""Relay-only calls: none of our host or server-reflexive ICE candidates ever leaves.

With ``CallPolicy(relay_only=True)`` the media layer gathers relay candidates only (ICE transport
policy ``relay``); the call machine still passes every local description and candidate batch
through :func:`relay_only_input`, so whatever a media layer (aiortc, a browser page) put there,
what is sent names no address of ours but the TURN server's relay: other candidates are dropped,
a relay candidate's related address is hidden (RFC 8839 ``0.0.0.0 9``), and a ``c=``, ``o=`` or
``a=rtcp:`` line that names another address gets ``0.0.0.0`` (its m-line port 9).
"""

import dataclasses
from collections.abc import Iterable, Sequence

from sealcall.signaling import Candidate

from .inputs import LocalCandidatesReady, LocalDescriptionReady

RELAY_UNAVAILABLE = (
    "relay-only: no TURN server is offered (the homeserver hands out none), and a direct call "
    "would show your address to the other side"
)
HIDDEN = "0.0.0.0"  # noqa: S104 - an address written into SDP, never bound
HIDDEN_PORT = "9"


class RelayUnavailableError(RuntimeError):
    """A relay-only call was asked for but no TURN server is offered: it is not placed or
    answered (it would otherwise go direct and show our address)."""


def offers_turn(urls: Iterable[str]) -> bool:
    """True if one of the ICE server ``urls`` is a TURN server (``turn:`` or ``turns:``)."""
    return any(url.startswith(("turn:", "turns:")) for url in urls)


def relay_candidate(line: str) -> str | None:
    """``line`` (``candidate:...``, with or without ``a=``) if it is a relay candidate, with its
    related address hidden; None for any other (or unreadable) candidate."""
    words = line.split()
    try:
        kind = words[words.index("typ") + 1]
    except (ValueError, IndexError):
        return None
    if kind != "relay":
        return None
    for key, hidden in (("raddr", HIDDEN), ("rport", HIDDEN_PORT)):
        if key in words[:-1]:
            words[words.index(key) + 1] = hidden
    return " ".join(words)


def relay_only_sdp(sdp: str) -> str:
    """``sdp`` with only relay candidates, and no other address of ours in it."""
    lines = sdp.split("\r\n")
    kept: list[str] = []
    relays: set[str] = set()
    for line in lines:
        if line.startswith("a=candidate:"):
            relay = relay_candidate(line)
            if relay is None:
                continue
            relays.add(relay.split()[4])
            line = relay
        kept.append(line)
    out: list[str] = []
    m_line = -1
    for line in kept:
        if line.startswith("m="):
            m_line = len(out)
        elif line.startswith(("c=IN IP", "o=")) and line.split()[-1] not in relays:
            line = " ".join([*line.split()[:-1], HIDDEN])
            if line.startswith("c=") and m_line >= 0:
                out[m_line] = _hide_port(out[m_line])
        elif line.startswith("a=rtcp:") and line.split()[-1] not in relays:
            line = f"a=rtcp:{HIDDEN_PORT} IN IP4 {HIDDEN}"
        out.append(line)
    return "\r\n".join(out)


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
