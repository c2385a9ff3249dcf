"""One participant of ``sealcall group-demo``, in its own process.

Started by :mod:`sealcall.bench.group_demo` with the homeserver, the account, the room, a store
folder, the video size and the sample interval as arguments (the password in the environment,
``SEALCALL_PASSWORD``). It joins the room's group call (accepting the room's invite) with a
:class:`~sealcall.session.GroupCallSession` and reports on stdout, one JSON object per line,
each with the wall-clock time ``t``: ``ready``, ``joined``, ``connected`` (per peer, with the
seconds from the moment both were in the call), ``key`` (our media key changed), ``left`` (a
member left our view), ``sample`` (memory, CPU time, frames decoded from each peer) and, after
``{"leave": true}`` on stdin (or the end of stdin), ``final``.
"""

import asyncio
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sealcall.calls import CallState
from sealcall.group import Member, MemberDevice
from sealcall.media import LOOPBACK, PatternVideoTrack, SyntheticAudioTrack
from sealcall.session import GroupCallSession, LocalMedia
from sealcall.transport.matrix import MatrixTransport

from .soak_link import MB, rss_bytes


def device_name(device: MemberDevice) -> str:
    """How the report names a member device."""
    return f"{device.user_id} {device.device_id}"


def say(message: dict[str, Any]) -> None:
    """One report line."""
    sys.stdout.write(json.dumps({**message, "t": time.time()}) + "\n")
    sys.stdout.flush()


def decoded(session: GroupCallSession) -> dict[str, int]:
    """Frames decrypted (and so decodable) from each member device, all kinds."""
    return {
        device_name(device): sum(t.counters.frames_decrypted for t in pair.receiver_taps())
        for device, pair in session.peer_sessions().items()
    }


def sample(session: GroupCallSession) -> dict[str, Any]:
    """This process now."""
    return {
        "rss_mb": round(rss_bytes() / MB, 2),
        "heap_mb": round(tracemalloc.get_traced_memory()[0] / MB, 3),
        "cpu_s": round(time.process_time(), 3),
        "decoded": decoded(session),
        "connected": len(session.connected_peers()),
    }


async def run(
    homeserver: str,
    user_id: str,
    room_id: str,
    store: Path,
    width: int,
    height: int,
    interval: float,
) -> None:
    """Join, report, leave when told."""
    tracemalloc.start()
    password = os.environ["SEALCALL_PASSWORD"]
    transport = await MatrixTransport.login(homeserver, user_id, password, store)
    await transport.start()
    await transport.enter_room(room_id)
    media = LocalMedia(
        microphone=SyntheticAudioTrack, camera=lambda: PatternVideoTrack(width, height, fps=15)
    )
    session = GroupCallSession(
        transport,
        room_id,
        video=True,
        media=media,
        ice_servers=await transport.ice_servers(),
        host_addresses=LOOPBACK,
    )
    since: dict[MemberDevice, float] = {}  # when each peer and we were both in the call

    def joined(member: Member) -> None:
        since[member.device] = time.monotonic()

    def state(device: MemberDevice, old: CallState, new: CallState) -> None:
        if new is CallState.CONNECTED and old is CallState.CONNECTING:
            setup = time.monotonic() - since.get(device, time.monotonic())
            say({"connected": {"peer": device_name(device), "setup_s": round(setup, 3)}})

    session.on("member_joined", joined)
    session.on("member_rejoined", lambda old, new: joined(new))
    session.on("peer_state_changed", state)
    session.on("send_key_changed", lambda index: say({"key": index}))
    session.on(
        "member_left",
        lambda member, reason: say(
            {"left": {"peer": device_name(member.device), "reason": reason.value}}
        ),
    )
    say({"ready": device_name(session.own)})
    await session.join()
    now = time.monotonic()
    for device in list(since):
        since[device] = now  # members already there: counted from our join
    say({"joined": True})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line_task = asyncio.ensure_future(reader.readline())
    while True:
        done, _ = await asyncio.wait({line_task}, timeout=interval)
        say({"sample": sample(session)})
        if done:
            line = line_task.result()
            if not line or json.loads(line).get("leave"):
                break
            line_task = asyncio.ensure_future(reader.readline())
    final = {"stats": session.stats(), **sample(session)}
    await session.leave()
    say({"final": final})
    await transport.stop()


if __name__ == "__main__":
    url, user, room, folder, size, every = sys.argv[1:7]
    w, h = (int(x) for x in size.split("x"))
    asyncio.run(run(url, user, room, Path(folder), w, h, float(every)))
