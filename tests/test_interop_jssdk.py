"""Calls between sealcall and matrix-js-sdk (Element's SDK) in headless Chromium, over Synapse.

js-sdk runs with Rust crypto and Chromium's fake camera and microphone; sealcall runs its VoIP
stack over MatrixTransport. Both meet in encrypted DMs on the session's Synapse. js-sdk cannot
encrypt frames (SFrame), so only a sealcall user who opted in (``allow_unencrypted``) talks to it;
a sealcall user with the default policy refuses, and js-sdk must stop ringing.
"""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from interop_jssdk import CHROMIUM, CHROMIUM_ARGS, JsSdk, StaticServer, build, missing
from matrix_helpers import MatrixDevice, device
from sealcall.calls import CallPolicy, Outcome, UnencryptedCallError
from sealcall.calls.history import HistoryItem
from sealcall.demo import wait_for
from sealcall.homeserver import Homeserver
from sealcall.session import CallSession

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 20.0  # seconds for any one step; generous for a loaded 2-core machine


class Peers:
    """The js-sdk user and three sealcall users, each in an encrypted DM with the js-sdk user."""

    def __init__(
        self, js: JsSdk, open_: MatrixDevice, strict: MatrixDevice, asks: MatrixDevice
    ) -> None:
        self.js = js
        self.open = open_  # opted in: CallPolicy(allow_unencrypted=True)
        self.strict = strict  # the default policy
        self.asks = asks  # decides per call: CallPolicy(ask_unencrypted=True)
        self.rooms: dict[str, str] = {}
        self.setup_ms: list[float] = []


async def dm_with_browser(sealcall: MatrixDevice, js: JsSdk) -> str:
    """An encrypted DM created by ``sealcall``, joined by js-sdk, each side knowing the other's
    devices."""
    room_id = await sealcall.transport.create_dm(js.user_id)
    await js.until("joined the DM", lambda: js.call("joined", room_id), 30)
    await wait_for(
        lambda: js.user_id in sealcall.transport.client.rooms[room_id].users, 30, "js-sdk joined"
    )
    assert await sealcall.transport.wait_for_member_devices(room_id, 30)
    return room_id


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def peers(
    synapse: Homeserver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Peers]:
    reason = missing()
    if reason is not None:
        pytest.fail(f"the interop harness needs {reason}")
    from playwright.async_api import async_playwright

    tmp = tmp_path_factory.mktemp("interop")
    (tmp / "web").mkdir()
    web = StaticServer(build(tmp / "web"))
    name = f"element{uuid.uuid4().hex[:8]}"
    account = await synapse.register(name, "secret-" + name)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        js = JsSdk(await browser.new_page())
        try:
            await js.page.goto(web.url + "index.html")
            await js.start(synapse.url, account.user_id, account.password)
            open_ = await device(synapse, tmp, "open", CallPolicy(allow_unencrypted=True))
            strict = await device(synapse, tmp, "strict")
            asks = await device(synapse, tmp, "asks", CallPolicy(ask_unencrypted=True))
            peers = Peers(js, open_, strict, asks)
            try:
                for d in (open_, strict, asks):
                    peers.rooms[d.user_id] = await dm_with_browser(d, js)
                yield peers
            finally:
                for d in (open_, strict, asks):
                    await d.stop()
            if peers.setup_ms:
                ms = sorted(peers.setup_ms)
                print(f"\njs-sdk placeVideoCall -> connected: {ms[len(ms) // 2]:.0f} ms {ms}")
        finally:
            print("\n".join(list(js.console)[-60:]))  # shown only when something failed
            await browser.close()
            web.close()


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def no_live_calls(peers: Peers) -> AsyncIterator[None]:
    """Each test starts with no call on either side, whatever the previous one left."""
    yield
    await peers.js.call("endAll")
    for d in (peers.open, peers.strict, peers.asks):
        for session in list(d.voip.sessions.values()):
            if session.state.value == "ringing":
                await session.reject()
            elif session.state.value != "ended":
                await session.hangup()
        await wait_for(lambda d=d: not d.voip.sessions, WAIT, "sealcall calls ended")


# -- reading both sides ----------------------------------------------------------------------


async def sealcall_rings(d: MatrixDevice, call_id: str) -> CallSession:
    """The sealcall session of the incoming call ``call_id``, once it rings."""

    def find() -> CallSession | None:
        return next((s for (s,) in d.events["incoming_call"] if s.call_id == call_id), None)

    await wait_for(lambda: find() is not None, WAIT, f"sealcall ringing for {call_id}")
    session = find()
    assert session is not None
    return session


def history(d: MatrixDevice, call_id: str) -> HistoryItem | None:
    return next((i for (i,) in d.events["history_item"] if i.call_id == call_id), None)


async def sealcall_history(d: MatrixDevice, call_id: str) -> HistoryItem:
    await wait_for(lambda: history(d, call_id) is not None, WAIT, "sealcall's history item")
    item = history(d, call_id)
    assert item is not None
    return item


def remote_mute(d: MatrixDevice, call_id: str) -> tuple[bool, bool] | None:
    """The last (audio_muted, video_muted) sealcall was told for ``call_id``."""
    seen = [(a, v) for s, a, v in d.events["remote_mute_changed"] if s.call_id == call_id]
    return seen[-1] if seen else None


async def js_state(js: JsSdk, call_id: str, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        rec = await js.record(call_id)
        return rec if rec["state"] == state else None

    return await js.until(f"state {state}", reached, WAIT)  # type: ignore[no-any-return]


async def media_both_ways(js: JsSdk, d: MatrixDevice, call_id: str, video: bool) -> None:
    """Frames reach sealcall (its frame counters) and js-sdk (Chromium's inbound-rtp stats)."""
    kinds = ("audio", "video") if video else ("audio",)
    for kind in kinds:
        await wait_for(lambda k=kind: (call_id, k) in d.counters, WAIT, f"sealcall {kind} track")
        counter = d.counters[(call_id, kind)]
        await wait_for(lambda c=counter: c.frames > 5, WAIT, f"sealcall {kind} frames")
    if not video:
        assert (call_id, "video") not in d.counters

    async def flowing() -> bool:
        got = await js.call("inbound", call_id)
        audio_ok = got["audio"]["bytes"] > 0 and got["audio"]["packets"] > 5
        video_ok = got["video"]["frames"] > 5 if video else got["video"]["bytes"] == 0
        return audio_ok and video_ok

    await js.until("inbound media", flowing, WAIT)


async def connected_call(peers: Peers, caller: str, video: bool) -> tuple[str, CallSession]:
    """A call placed by ``caller`` ("js" or "sealcall"), answered, connected on both sides."""
    js, sc = peers.js, peers.open
    room = peers.rooms[sc.user_id]
    if caller == "js":
        call_id = str(await js.call("place", room, sc.user_id, video))
        session = await sealcall_rings(sc, call_id)
        assert session.call.video is video
        await session.answer()
    else:
        session = await sc.voip.place_call(room, js.user_id, video=video)
        call_id = session.call_id
        await js.incoming(call_id, WAIT)
        assert (await js.record(call_id))["type"] == ("video" if video else "voice")
        await js.call("answer", call_id)
    rec = await js_state(js, call_id, "connected")
    await wait_for(lambda: session.state.value == "connected", WAIT, "sealcall connected")
    assert session.call.encrypted is False  # the user's explicit opt-in, nothing pretends
    if caller == "js" and video:
        peers.setup_ms.append(rec["connectedAt"] - rec["placedAt"])
    return call_id, session


async def js_video_frames(js: JsSdk, call_id: str) -> int:
    return int((await js.call("inbound", call_id))["video"]["frames"])


async def js_video_stopped(js: JsSdk, call_id: str, quiet: float = 0.5) -> None:
    """Wait until js-sdk has decoded no new video frame for ``quiet`` seconds."""
    last = (await js_video_frames(js, call_id), time.monotonic())

    async def still() -> bool:
        nonlocal last
        frames = await js_video_frames(js, call_id)
        if frames != last[0]:
            last = (frames, time.monotonic())
        return time.monotonic() - last[1] >= quiet

    await js.until("video frames to stop", still, WAIT)


async def mute_both_ways(peers: Peers, call_id: str, session: CallSession) -> None:
    """In a video call each side mutes and turns its camera off, then on again; the other side
    is told each time (MSC3077 stream metadata), and sealcall's camera off stops its frames."""
    js, sc = peers.js, peers.open
    await js.call("setMicMuted", call_id, True)
    await wait_for(lambda: remote_mute(sc, call_id) == (True, False), WAIT, "js-sdk's mute")
    await js.call("setCameraMuted", call_id, True)
    await wait_for(lambda: remote_mute(sc, call_id) == (True, True), WAIT, "camera off")
    await js.call("setMicMuted", call_id, False)
    await js.call("setCameraMuted", call_id, False)
    await wait_for(lambda: remote_mute(sc, call_id) == (False, False), WAIT, "js-sdk's unmute")

    async def js_told(audio: bool, video: bool) -> None:
        async def told() -> bool:
            got = await js.call("remoteMute", call_id)
            return got == {"audio": audio, "video": video}  # type: ignore[no-any-return]

        await js.until(f"sealcall's mute state {audio, video}", told, WAIT)

    await session.set_microphone_muted(True)
    await js_told(True, False)
    await session.set_camera_muted(True)
    await js_told(True, True)
    await js_video_stopped(js, call_id)
    before = await js_video_frames(js, call_id)
    await session.set_camera_muted(False)
    await session.set_microphone_muted(False)
    await js_told(False, False)

    async def resumed() -> bool:
        return await js_video_frames(js, call_id) > before + 5

    await js.until("video frames again", resumed, WAIT)


# -- the calls -------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["js", "sealcall"])
async def test_mute_and_camera_off_seen_on_both_sides(peers: Peers, caller: str) -> None:
    call_id, session = await connected_call(peers, caller, video=True)
    await mute_both_ways(peers, call_id, session)


@pytest.mark.parametrize(
    ("caller", "video", "hangs_up"),
    [
        ("js", True, "sealcall"),
        ("sealcall", True, "js"),
        ("js", False, "js"),
        ("sealcall", False, "sealcall"),
    ],
)
async def test_call_connects_carries_media_and_hangs_up(
    peers: Peers, caller: str, video: bool, hangs_up: str
) -> None:
    js, sc = peers.js, peers.open
    call_id, session = await connected_call(peers, caller, video)
    await media_both_ways(js, sc, call_id, video)
    if hangs_up == "js":
        await js.call("hangup", call_id)
    else:
        await session.hangup()
    rec = await js_state(js, call_id, "ended")
    item = await sealcall_history(sc, call_id)
    assert rec["hangupParty"] == ("local" if hangs_up == "js" else "remote")
    assert rec["hangupReason"] == "user_hangup"
    assert item.outcome is Outcome.ANSWERED
    assert item.encrypted is False
    assert item.video is video
    assert item.direction.value == ("incoming" if caller == "js" else "outgoing")
    ended = [(r, by) for s, r, by in sc.events["call_ended"] if s.call_id == call_id]
    assert ended == [("user_hangup", hangs_up == "js")]


async def test_jssdk_rejects_sealcalls_call(peers: Peers) -> None:
    js, sc = peers.js, peers.open
    session = await sc.voip.place_call(peers.rooms[sc.user_id], js.user_id, video=True)
    await js.incoming(session.call_id, WAIT)
    await js.call("reject", session.call_id)
    item = await sealcall_history(sc, session.call_id)
    assert item.outcome is Outcome.REJECTED
    ended = [(r, by) for s, r, by in sc.events["call_ended"] if s.call_id == session.call_id]
    assert ended == [("rejected", True)]
    rec = await js.record(session.call_id)
    assert (rec["state"], rec["hangupParty"]) == ("ended", "local")


async def test_sealcall_rejects_jssdks_call_and_jssdk_stops_ringing(peers: Peers) -> None:
    js, sc = peers.js, peers.open
    call_id = str(await js.call("place", peers.rooms[sc.user_id], sc.user_id, False))
    session = await sealcall_rings(sc, call_id)
    await js_state(js, call_id, "invite_sent")
    await session.reject()
    rec = await js_state(js, call_id, "ended")
    assert rec["hangupParty"] == "remote"
    assert (await sealcall_history(sc, call_id)).outcome is Outcome.REJECTED


async def test_default_policy_refuses_jssdks_call_and_jssdk_stops_ringing(peers: Peers) -> None:
    """js-sdk offers no frame encryption: sealcall never rings and refuses with m.call.reject,
    which js-sdk (still without an opponent) honours, instead of ringing out its lifetime."""
    js, sc = peers.js, peers.strict
    call_id = str(await js.call("place", peers.rooms[sc.user_id], sc.user_id, True))
    item = await sealcall_history(sc, call_id)
    assert item.outcome is Outcome.FAILED
    assert item.end_reason == "encryption_required"
    rec = await js_state(js, call_id, "ended")
    assert rec["hangupParty"] == "remote"
    assert "connected" not in rec["states"]
    assert not sc.events["incoming_call"]


async def test_default_policy_ends_the_call_jssdk_answered_without_encryption(
    peers: Peers,
) -> None:
    js, sc = peers.js, peers.strict
    session = await sc.voip.place_call(peers.rooms[sc.user_id], js.user_id, video=False)
    await js.incoming(session.call_id, WAIT)
    await js.call("answer", session.call_id)
    item = await sealcall_history(sc, session.call_id)
    assert item.outcome is Outcome.FAILED
    assert item.end_reason == "encryption_required"
    rec = await js_state(js, session.call_id, "ended")
    assert rec["hangupParty"] == "remote"
    assert session.call.connected_at is None
    assert (session.call_id, "audio") not in sc.counters


async def test_asking_user_answers_jssdks_call_only_when_allowing_it(peers: Peers) -> None:
    """With ``ask_unencrypted`` js-sdk's call rings as unencrypted; answering needs the explicit
    ``allow_unencrypted=True``, and then the call connects and carries media."""
    js, sc = peers.js, peers.asks
    call_id = str(await js.call("place", peers.rooms[sc.user_id], sc.user_id, False))
    session = await sealcall_rings(sc, call_id)
    assert session.call.encrypted is False
    with pytest.raises(UnencryptedCallError):
        await session.answer()
    assert session.state.value == "ringing"
    await session.answer(allow_unencrypted=True)
    await js_state(js, call_id, "connected")
    await media_both_ways(js, sc, call_id, video=False)
    await js.call("hangup", call_id)
    item = await sealcall_history(sc, call_id)
    assert (item.outcome, item.encrypted) == (Outcome.ANSWERED, False)


async def test_asking_user_declines_jssdks_call_and_jssdk_stops_ringing(peers: Peers) -> None:
    js, sc = peers.js, peers.asks
    call_id = str(await js.call("place", peers.rooms[sc.user_id], sc.user_id, True))
    session = await sealcall_rings(sc, call_id)
    await session.reject(encryption_required=True)
    rec = await js_state(js, call_id, "ended")
    assert rec["hangupParty"] == "remote"
    assert "connected" not in rec["states"]
    assert (await sealcall_history(sc, call_id)).end_reason == "encryption_required"
