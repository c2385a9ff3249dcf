"""Offer/answer between two peer connections in one process (tests, benchmarks, the demo)."""

from aiortc import RTCPeerConnection


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    """Run one complete offer/answer exchange (initial or renegotiation).

    aiortc gathers every candidate before it sets a local description, so the descriptions carry
    their candidates and no trickling is needed.
    """
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
