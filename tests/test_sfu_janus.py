"""Janus (Debian package) from our generated config: one publisher, two VideoRoom subscribers."""

import asyncio
import shutil

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


def test_a_missing_janus_names_the_package_to_install() -> None:
    with pytest.raises(JanusNotInstalledError, match="apt-get install janus"):
        asyncio.run(JanusServer(binary="janus-not-installed-here").start())


def test_janus_videoroom_forwards_audio_and_video_to_two_subscribers() -> None:
    assert shutil.which("janus"), "Janus is missing: apt-get install janus (CI installs it)"

    async def scenario() -> tuple[list[RtpCounts], int | None]:
        server = JanusServer()
        await server.start()
        connections = []
        counts = [RtpCounts(), RtpCounts()]
        try:
            async with JanusSession(server.url) as session:
                await session.create_room(await session.attach(), ROOM, publishers=1)
                publisher = publisher_connection(
                    EncodedClip.make(seconds=1.0), (server.ice_address,)
                )
                connections.append(publisher)
                feed = await publish_clip(session, ROOM, publisher, "publisher")
                await wait_connected(publisher)
                for c in counts:
                    subscriber = subscriber_connection(c, (server.ice_address,))
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
        return counts, code

    counts, code = asyncio.run(scenario())
    for c in counts:
        assert c.packets["audio"] >= 20
        assert c.packets["video"] >= 20
        assert c.bytes["video"] > c.bytes["audio"] > 0
        assert len(c.ssrcs) == 2  # one audio, one video stream from the one publisher
    assert code == 0  # Janus shut down cleanly on SIGINT
