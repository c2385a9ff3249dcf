"""One participant of ``sealcall group-demo``, in its own process.

Started by :mod:`sealcall.bench.group_demo` with the homeserver, the account, the room, a store
folder, the video size and the sample interval as arguments (the password in the environment,
``SEALCALL_PASSWORD``). It joins the room's group call (accepting the room's invite) with a
:class:`~sealcall.session.GroupCallSession` and reports on stdout, one JSON object per line,
each with the wall-clock time ``t``:

- ``ready`` (our member device), ``joined``;
- ``connected`` (a pair call connected: the peer, the seconds since both of us were in the
  call) and ``ended`` (a pair call ended: the peer, the reason, whether it is retried);
- ``key`` (we now encrypt with this key index) and ``rx_key`` (the first frame from a peer
  decrypted with a new key index of its: when its rotation took effect here);
- ``member`` (a member joined or rejoined our view, with its session) and ``left`` (a member
  left our view);
- ``sample`` every ``interval`` seconds (RSS, Python heap, CPU time, the frames decrypted from
  each peer, counting its ended pair calls too, so a peer that left keeps its final count);
- after ``{"leave": true}`` on stdin (or the end of stdin), ``final``, and then we leave.

Its log (sealcall's at INFO, the rest at WARNING) goes to stderr.
"""

import asyncio
import gc
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sealcall.calls import CallState
from sealcall.e2ee import Codec
from sealcall.e2ee.codecs import OPUS_PREFIX
from sealcall.group import Member, MemberDevice
from sealcall.media import (
    LOOPBACK,
    CallbackOpener,
    PatternVideoTrack,
    ReceiverCounters,
    SyntheticAudioTrack,
)
from sealcall.session import GroupCallSession, LocalMedia
from sealcall.sframe.errors import SFrameError
from sealcall.sframe.header import decode_header
from sealcall.transport.matrix import MatrixTransport

from .soak_link import MB, rss_bytes


def device_name(device: MemberDevice) -> str:
    """How the report names a member device."""
    return f"{device.user_id} {device.device_id}"


def say(message: dict[str, Any]) -> None:
    """One report line (stamped now unless it has its own ``t``)."""
    sys.stdout.write(json.dumps({"t": time.time(), **message}) + "\n")
    sys.stdout.flush()


class MeasuredGroupCall(GroupCallSession):
    """A group call session that also notes, per peer, each new key index its audio frames
    decrypted with (on aiortc's decoder thread; reported from the event loop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx_kid: dict[MemberDevice, int] = {}
        self._rx_lock = threading.Lock()

    def opener(self, peer: MemberDevice) -> CallbackOpener:
        inner = super().opener(peer)
        loop = asyncio.get_running_loop()

        def unprotect(codec: Codec, data: bytes) -> bytes:
            frame = inner.unprotect(codec, data)
            if codec is Codec.OPUS:
                try:
                    kid = decode_header(data[OPUS_PREFIX:])[0]
                except SFrameError:
                    return frame
                with self._rx_lock:
                    new = self._rx_kid.get(peer) != kid
                    self._rx_kid[peer] = kid
                if new:
                    line = {"rx_key": {"peer": device_name(peer), "index": kid}, "t": time.time()}
                    loop.call_soon_threadsafe(say, line)
            return frame

        return CallbackOpener(unprotect)


class FrameTally:
    """Frames decrypted from each peer over all its pair calls: the receivers' counters are
    kept (they are small) after their pair closes, so a peer that left keeps its final count."""

    def __init__(self) -> None:
        self._counters: dict[int, tuple[str, str, ReceiverCounters]] = {}

    def update(self, session: GroupCallSession) -> None:
        """Note the receivers of every live pair, or of the SFU link's forwarded streams (new
        ones appear as tracks arrive)."""
        taps = {device: pair.receiver_taps() for device, pair in session.peer_sessions().items()}
        if session.link is not None:
            taps.update(session.link.receiver_taps())
        for device, device_taps in taps.items():
            for tap in device_taps:
                self._counters.setdefault(
                    id(tap.counters), (device_name(device), tap.kind, tap.counters)
                )

    def decoded(self) -> dict[str, int]:
        """Frames decrypted (and so decodable) from each member device, all kinds."""
        totals: dict[str, int] = {}
        for name, _, counters in self._counters.values():
            totals[name] = totals.get(name, 0) + counters.frames_decrypted
        return totals

    def by_kind(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per member device and kind (audio, video): frames received, decrypted, and dropped
        by reason."""
        kinds: dict[str, dict[str, dict[str, Any]]] = {}
        for name, kind, counters in self._counters.values():
            totals = kinds.setdefault(name, {}).setdefault(
                kind, {"received": 0, "decrypted": 0, "dropped": {}}
            )
            totals["received"] += counters.frames_received
            totals["decrypted"] += counters.frames_decrypted
            for reason, n in counters.drop_reasons.items():
                totals["dropped"][reason] = totals["dropped"].get(reason, 0) + n
        return kinds


def sample(session: GroupCallSession, tally: FrameTally) -> dict[str, Any]:
    """This process now (after a collection, so that the figures are what is kept)."""
    gc.collect()
    tally.update(session)
    return {
        "rss_mb": round(rss_bytes() / MB, 2),
        "heap_mb": round(tracemalloc.get_traced_memory()[0] / MB, 3),
        "cpu_s": round(time.process_time(), 3),
        "decoded": tally.decoded(),
        "by_kind": tally.by_kind(),
        "connected": len(session.connected_peers()) + len({t.member for t in session.forwarded}),
        "pairs": pair_states(session),
    }


def pair_states(session: GroupCallSession) -> dict[str, str]:
    """Each peer's pair call state ("waiting": no call now, for an invite or a retry)."""
    mesh = session.mesh
    pairs = {} if mesh is None else mesh.pairs
    return {
        device_name(d): "waiting" if p.call is None else p.call.state.value
        for d, p in pairs.items()
    }


def _report_events(session: GroupCallSession, tally: FrameTally) -> dict[MemberDevice, float]:
    since: dict[MemberDevice, float] = {}  # when each peer and we were both in the call

    def joined(member: Member) -> None:
        since[member.device] = time.monotonic()
        say({"member": {"peer": device_name(member.device), "session": member.member_id}})

    def state(device: MemberDevice, old: CallState, new: CallState) -> None:
        tally.update(session)
        if new is CallState.CONNECTED and old is CallState.CONNECTING:  # not a reconnect
            setup = time.monotonic() - since.get(device, time.monotonic())
            say({"connected": {"peer": device_name(device), "setup_s": round(setup, 3)}})

    def ended(device: MemberDevice, reason: str, retry_at: float | None) -> None:
        info = {"peer": device_name(device), "reason": reason, "retried": retry_at is not None}
        say({"ended": info})

    def left(member: Member, reason: Any) -> None:
        tally.update(session)
        say({"left": {"peer": device_name(member.device), "reason": reason.value}})

    session.on("member_joined", joined)
    session.on("member_rejoined", lambda old, new: joined(new))
    session.on("peer_state_changed", state)
    forwarded: set[MemberDevice] = set()

    def media(device: MemberDevice, *_: Any) -> None:
        tally.update(session)
        if session.focus is not None and device not in forwarded:
            # Through an SFU the "pair" of a peer is connected at its first forwarded track.
            forwarded.add(device)
            state(device, CallState.CONNECTING, CallState.CONNECTED)

    def member_gone(member: Member, reason: Any) -> None:
        forwarded.discard(member.device)
        if session.focus is not None:
            ended(member.device, "member_left", None)

    session.on("remote_media_added", media)
    session.on("member_left", member_gone)
    session.on("peer_ended", ended)
    session.on("send_key_changed", lambda index: say({"key": index}))
    session.on("member_left", left)
    session.membership.on("state_changed", lambda old, new: say({"own": new.value}))
    _watch_restarts(session.transport)
    return since


def _watch_restarts(transport: MatrixTransport) -> None:
    """Report each delayed-leave restart that came later than the delay after the one before:
    the homeserver had sent our leave by then (a stalled process or homeserver)."""
    restart = transport.restart_delayed_event
    last: list[float] = []

    async def timed(delay_id: str) -> None:
        await restart(delay_id)
        now = time.monotonic()
        if last and now - last[0] > 8.0:
            say({"late_restart": round(now - last[0], 3)})
        last[:] = [now]

    transport.restart_delayed_event = timed  # type: ignore[method-assign]


async def run(
    homeserver: str,
    user_id: str,
    room_id: str,
    store: Path,
    width: int,
    height: int,
    interval: float,
    sfu_url: str | None = None,
) -> None:
    """Join (through the SFU at ``sfu_url`` if given), report, leave when told."""
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("sealcall").setLevel(logging.INFO)  # drops, ICE consent, pair failures
    tracemalloc.start()
    password = os.environ["SEALCALL_PASSWORD"]
    transport = await MatrixTransport.login(homeserver, user_id, password, store)
    await transport.start()
    await transport.enter_room(room_id)
    media = LocalMedia(
        microphone=SyntheticAudioTrack, camera=lambda: PatternVideoTrack(width, height, fps=15)
    )
    session = MeasuredGroupCall(
        transport,
        room_id,
        video=True,
        media=media,
        ice_servers=await transport.ice_servers(),
        host_addresses=LOOPBACK,
        sfu_url=sfu_url,
    )
    tally = FrameTally()
    since = _report_events(session, tally)
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
        say({"sample": sample(session, tally)})
        if done:
            line = line_task.result()
            if not line or json.loads(line).get("leave"):
                break
            line_task = asyncio.ensure_future(reader.readline())
    final = {"stats": session.stats(), **sample(session, tally)}
    await session.leave()
    say({"final": final})
    await transport.stop()


if __name__ == "__main__":
    url, user, room, folder, size, every = sys.argv[1:7]
    sfu = sys.argv[7] if len(sys.argv) > 7 else None
    w, h = (int(x) for x in size.split("x"))
    asyncio.run(run(url, user, room, Path(folder), w, h, float(every), sfu))
