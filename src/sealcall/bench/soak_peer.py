"""The far side of ``sealcall soak``: Bob in his own process, answering and never reading.

Started by :func:`sealcall.bench.soak.run` with the video size as arguments; talks to it over
stdin/stdout (:mod:`sealcall.bench.soak_link`) and ends when asked to or when stdin closes.
"""

import asyncio
import sys
import tracemalloc
from typing import Any

from sealcall.media import LOOPBACK, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import CallSession, LocalMedia, VoIP

from .soak_link import USERS, LinkTransport, measure, memory_message


async def serve(width: int, height: int) -> None:
    """Answer the soak call, report memory when asked, stop on request or end of input."""
    tracemalloc.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    done = asyncio.Event()
    sessions: list[CallSession] = []

    def on_message(message: dict[str, Any]) -> None:
        if "sample" in message:
            link.send(memory_message(measure(sessions[-1] if sessions else None)))
        elif "stop" in message or "eof" in message:
            done.set()

    link = LinkTransport(USERS[1], reader, sys.stdout.buffer, on_message)
    media = LocalMedia(
        microphone=SyntheticAudioTrack, camera=lambda: PatternVideoTrack(width, height)
    )
    voip = VoIP(link, media=media, host_addresses=LOOPBACK)

    async def answer(session: CallSession) -> None:
        sessions.append(session)
        await session.answer()

    voip.on("incoming_call", answer)
    link.send({"ready": True})
    await done.wait()
    await voip.close()
    await link.close()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
