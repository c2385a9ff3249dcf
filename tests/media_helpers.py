"""Helpers for tests that run real aiortc peer connections over loopback."""

import asyncio
import time
from collections.abc import Callable

from aiortc import RTCPeerConnection

from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
    FrameCounter,
    MediaKeys,
    PatternVideoTrack,
    PeerConnection,
    SyntheticAudioTrack,
    local_call_keys,
    negotiate,
)


def call_keys(call_id: str = "call", grace_period: float = 2.0) -> tuple[MediaKeys, MediaKeys]:
    """Media keys for both ends of a 1:1 call, from a real key agreement."""
    return local_call_keys(call_id, grace_period=grace_period)


class Endpoint:
    """A peer connection plus a frame counter on every remote track it receives."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        self.counters: list[FrameCounter] = []
        pc.on("track", lambda track: self.counters.append(FrameCounter(track).start()))

    def counter(self, kind: str, index: int = 0) -> FrameCounter:
        return [c for c in self.counters if c.track.kind == kind][index]

    async def close(self) -> None:
        for counter in self.counters:
            await counter.stop()
        await self.pc.close()


def encrypted(keys: MediaKeys) -> Endpoint:
    return Endpoint(EncryptedPeerConnection(keys, host_addresses=LOOPBACK))


def av_call() -> tuple[Endpoint, Endpoint]:
    """An encrypted caller sending synthetic audio and 320x240 video, and its callee."""
    keys_a, keys_b = call_keys()
    a, b = encrypted(keys_a), encrypted(keys_b)
    a.pc.addTrack(SyntheticAudioTrack())
    a.pc.addTrack(PatternVideoTrack(320, 240))
    return a, b


def plain() -> Endpoint:
    return Endpoint(PeerConnection(host_addresses=LOOPBACK))


async def connect(a: Endpoint, b: Endpoint, timeout: float = 10.0) -> None:
    await negotiate(a.pc, b.pc)
    await until(
        lambda: a.pc.connectionState == "connected" and b.pc.connectionState == "connected",
        timeout,
    )


async def until(condition: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> float:
    """Wait for ``condition``; return the seconds it took. Fails the test on timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start
