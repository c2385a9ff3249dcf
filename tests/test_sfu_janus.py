"""Janus (Debian package) from our generated config: one publisher, two VideoRoom subscribers."""

import asyncio
import ipaddress
import shutil
import subprocess

import pytest

from sealcall.bench.janus import (
    JanusNotInstalledError,
    JanusServer,
    JanusSession,
    publish_clip,
    subscribe_all,
    wait_connected,
)
from sealcall.bench.sfu_load import (
    EncodedClip,
    RtpCounts,
    publisher_connection,
    subscriber_connection,
)

from media_helpers import until

ROOM = 77


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def test_a_missing_janus_names_the_package_to_install() -> None:
    with pytest.raises(JanusNotInstalledError, match="apt-get install janus"):
        asyncio.run(JanusServer(binary="janus-not-installed-here").start())


def test_janus_videoroom_forwards_audio_and_video_to_two_subscribers() -> None:
    assert shutil.which("janus"), "Janus is missing: apt-get install janus (CI installs it)"

    async def scenario() -> tuple[list[RtpCounts], int | None]:
        server = JanusServer()
        await server.start()
        assert server.namespace is not None
        name = server.namespace.name
        assert name in namespaces()
        # Only the veth pair between Janus's namespace and ours: never the machine's addresses.
        assert ipaddress.ip_address(server.load_address) in ipaddress.ip_network("10.77.0.0/16")
        connections = []
        counts = [RtpCounts(), RtpCounts()]
        try:
            async with JanusSession(server.url) as session:
                await session.create_room(await session.attach(), ROOM, publishers=1)
                publisher = publisher_connection(
                    EncodedClip.make(seconds=1.0), (server.load_address,)
                )
                connections.append(publisher)
                feed = await publish_clip(session, ROOM, publisher, "publisher")
                await wait_connected(publisher)
                assert candidate_addresses(publisher.remoteDescription.sdp) == {
                    server.janus_address
                }
                assert candidate_addresses(publisher.localDescription.sdp) == {server.load_address}
                for c in counts:
                    subscriber = subscriber_connection(c, (server.load_address,))
                    connections.append(subscriber)
                    await subscribe_all(session, ROOM, subscriber, [feed])
                await until(
                    lambda: all(
                        c.packets["audio"] >= 20 and c.packets["video"] >= 20 for c in counts
                    ),
                    timeout=20,
                )
        finally:
            await asyncio.gather(*(pc.close() for pc in connections), return_exceptions=True)
            code = await server.stop()
        assert name not in namespaces()  # deleted with its veth pair
        return counts, code

    counts, code = asyncio.run(scenario())
    for c in counts:
        assert c.packets["audio"] >= 20
        assert c.packets["video"] >= 20
        assert c.bytes["video"] > c.bytes["audio"] > 0
        assert len(c.ssrcs) == 2  # one audio, one video stream from the one publisher
    assert code == 0  # Janus shut down cleanly on SIGINT
