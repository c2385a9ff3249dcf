"""The group mesh: one 1:1 call per pair of member device sessions, placed by the lower device,
answered at once, ended without a word to a session that is gone, retried when it fails, and
carrying mute and screen-share state; hostile signaling is refused and counted."""

import dataclasses
from collections import Counter
from typing import Any

import pytest

from call_harness import fake_sdp
from mesh_harness import ROOM, MeshNet, Node, member
from sealcall.calls import (
    CallPolicy,
    CallState,
    Direction,
    HangUp,
    IllegalTransitionError,
    LocalDescriptionReady,
    MediaConnected,
    PlaceCall,
    actions,
)
from sealcall.calls.call import Call
from sealcall.group import (
    MAX_MEMBERS,
    MEMBER_LEFT,
    NEW_SESSION,
    LeftReason,
    MemberDevice,
    MemberJoined,
    MemberLeft,
    MemberRejoined,
    Mesh,
    MeshCount,
    MeshSender,
    PairEnded,
    PairMedia,
    SendSignal,
    SignalEnvelope,
    pair_call_id,
    wrap_signal,
)
from sealcall.group.mesh import INVITE_WINDOW, MAX_INVITES_PER_WINDOW
from sealcall.group.mesh_inbox import EARLY_TTL
from sealcall.signaling import E2EE_KEY, CallHangup, StreamPurpose
from sealcall.transport.matrix.to_device import DeviceMessage

ALICE1 = MemberDevice("@alice:hs", "A1")
ALICE2 = MemberDevice("@alice:hs", "A2")
BOB = MemberDevice("@bob:hs", "B1")
CAROL = MemberDevice("@carol:hs", "C1")
DEVICES = (ALICE1, ALICE2, BOB, CAROL)
MALLORY = MemberDevice("@zed:hs", "Z1")  # a member that runs no mesh: the highest device


def session(device: MemberDevice, n: int = 1) -> str:
    return f"s{n}-{device.device_id}"


def connected(devices: tuple[MemberDevice, ...] = DEVICES, **net_args: Any) -> MeshNet:
    net = MeshNet(**net_args)
    for device in devices:
        net.join(device, session(device))
        net.wait(0.3)  # members join one after another
    net.wait(5)
    net.assert_all_connected()
    return net


def sent_after(net: MeshNet, at: float, dest: MemberDevice) -> list[str]:
    return [s.type for s in net.sent if s.dest == dest and s.at >= at]


def forged_invite(
    src: MemberDevice,
    src_session: str,
    dest: MemberDevice,
    dest_session: str,
    attempt: int = 0,
    sender: MeshSender | None = None,
) -> DeviceMessage:
    """A well-formed, encryptable invite from ``src`` to ``dest``, as a real call would send it
    (``sender``: one that numbers ``src``'s messages in a row)."""
    sender = sender or MeshSender(ROOM, src, src_session)
    call = Call(
        call_id=sender.call_id(dest, dest_session, attempt),
        party_id=src.device_id,
        peer=dest.user_id,
        direction=Direction.OUTGOING,
        now=0.0,
    )
    call.handle(PlaceCall(), 0.0)
    sdp = fake_sdp("offer", video=False, screenshare=False, on_hold=False, tag="x")
    [send] = [
        a
        for a in call.handle(LocalDescriptionReady(sdp, {"x": StreamPurpose.USERMEDIA}), 0.0)
        if isinstance(a, actions.SendEvent)
    ]
    signal = sender.wrap(send.event, dest, dest_session)
    return DeviceMessage(src.user_id, src.device_id, signal.type, signal.content)


# -- making pairs ------------------------------------------------------------------------------


def test_every_pair_connects_once_placed_by_the_lower_device() -> None:
    net = connected()
    for a in net.nodes.values():
        for b in net.nodes.values():
            if a is b:
                continue
            call = a.call(b)
            assert call is not None
            assert call.call_id == pair_call_id(
                ROOM, (a.device, a.session), (b.device, b.session), 0
            )
            assert (call.party_id, call.opponent_party_id) == (
                a.device.device_id,
                b.device.device_id,
            )
            assert call.peer == b.device.user_id
            if call.direction is Direction.OUTGOING:
                assert call.invitee == b.device.user_id
        # The group session keys media and keeps history: the pair calls' own never come out.
        inside = (actions.UseMediaKeys, actions.AllowUnencryptedMedia, actions.HistoryItemReady)
        assert not [x for x in a.log if isinstance(x, PairMedia) and isinstance(x.action, inside)]
        assert a.mesh.counters == Counter()  # an honest mesh drops nothing
    for sent in net.sent:
        assert sent.type.startswith("m.call.")
        assert sent.content["dest_session_id"] == session(sent.dest)
        assert sent.content["sender_session_id"] == session(sent.src)
    assert not net.undelivered


def test_an_invite_that_arrives_before_its_senders_membership_is_answered_when_it_appears() -> None:
    net = connected((BOB, CAROL))
    aaron = MemberDevice("@aaron:hs", "AA")  # lower than both: it places both calls
    node = net.join(aaron, session(aaron), announce=False)
    net.wait(2)  # its invites reached members that do not know it yet
    assert net.nodes[BOB].call(aaron) is None
    assert net.nodes[BOB].mesh.inbox.buffered == 1
    net.announce(node)
    net.wait(5)
    net.assert_all_connected()


def test_pair_calls_never_take_unencrypted_media_whatever_the_policy() -> None:
    mesh = Mesh(ROOM, BOB, "s", policy=CallPolicy(allow_unencrypted=True, ask_unencrypted=True))
    assert not mesh.policy.allow_unencrypted
    assert not mesh.policy.ask_unencrypted
    mesh.on_membership([MemberJoined(member(ALICE1, "sa"))], 0.0)
    invite = forged_invite(ALICE1, "sa", BOB, "s")
    content = {k: v for k, v in invite.content.items() if k != E2EE_KEY}
    assert content != invite.content  # the invite offered media encryption; now it does not
    out = mesh.receive(DeviceMessage(ALICE1.user_id, "A1", invite.type, content), 0.0)
    [reject] = [a.message for a in out if isinstance(a, SendSignal)]
    assert reject.type == "m.call.reject"
    assert not [
        a for a in out if isinstance(a, PairMedia) and isinstance(a.action, actions.CreateAnswer)
    ]


# -- members leaving and rejoining -----------------------------------------------------------


def test_a_member_that_leaves_has_its_pairs_ended_everywhere_without_a_word_to_it() -> None:
    net = connected()
    gone_at = net.now
    net.vanish(CAROL)
    for node in net.nodes.values():
        [ended] = [e for e in node.ended if e.peer == CAROL]
        assert (ended.reason, ended.retry_at) == (MEMBER_LEFT, None)
        assert node.media(CAROL, actions.ClosePeerConnection)
        assert [e.reason for e in node.media(CAROL, actions.CallEnded)] == [MEMBER_LEFT]
        assert CAROL not in node.mesh.pairs
    net.wait(60)
    assert sent_after(net, gone_at, CAROL) == []
    net.assert_all_connected()


def test_leave_hangs_up_every_pair_and_nobody_calls_again() -> None:
    net = connected()
    carol = net.nodes[CAROL]
    left_at = net.now
    out = carol.mesh.leave(net.now)
    carol.run(out)
    hangups = [a.message for a in out if isinstance(a, SendSignal)]
    assert {m.type for m in hangups} == {"m.call.hangup"}
    assert sorted((m.user_id, m.device_id) for m in hangups) == [
        (d.user_id, d.device_id) for d in (ALICE1, ALICE2, BOB)
    ]
    assert {m.content["reason"] for m in hangups} == {"user_hangup"}
    assert carol.mesh.pairs == {}
    assert carol.mesh.next_deadline() is None
    net.wait(1)
    for node in net.nodes.values():
        if node is not carol:
            [ended] = [e for e in node.ended if e.peer == CAROL]
            assert (ended.reason, ended.retry_at) == ("user_hangup", None)
    net.vanish(CAROL)  # its leave follows: the pairs go, with no second end
    net.wait(60)
    assert all(len([e for e in n.ended if e.peer == CAROL]) == 1 for n in net.nodes.values())
    assert sent_after(net, left_at, CAROL) == []
    net.assert_all_connected()


def test_a_rejoin_replaces_the_old_pairs_and_leaves_no_ghost() -> None:
    net = connected()
    old = {d: n.call(CAROL) for d, n in net.nodes.items() if d != CAROL}
    rejoined_at = net.now
    net.join(CAROL, session(CAROL, 2))  # a restart: a new mesh under a new session
    net.wait(5)
    net.assert_all_connected()
    for device, node in net.nodes.items():
        if device == CAROL:
            continue
        call = node.call(CAROL)
        old_call = old[device]
        assert call is not None
        assert old_call is not None
        [ended] = [e for e in node.ended if e.peer == CAROL]
        assert (ended.call_id, ended.reason, ended.retry_at) == (
            old_call.call_id,
            NEW_SESSION,
            None,
        )
        assert old_call.state is CallState.ENDED
        assert call.call_id == pair_call_id(
            ROOM, (device, session(device)), (CAROL, session(CAROL, 2)), 0
        )
        assert node.mesh.pairs[CAROL].session == session(CAROL, 2)
        live = [
            p for p in node.mesh.pairs.values() if p.call and p.call.state is not CallState.ENDED
        ]
        assert len(live) == 3
    stale = [
        s
        for s in net.sent
        if s.at >= rejoined_at and s.content.get("dest_session_id") == session(CAROL)
    ]
    assert stale == []


def test_a_rejoin_under_the_same_membership_id_starts_afresh() -> None:
    # js-sdk keeps its membershipID across joins (its created_ts tells them apart): the pair's
    # call ids repeat, and our messages to the new session are numbered from 0 again.
    net = connected((ALICE1, BOB, CAROL))
    net.join(BOB, session(BOB))
    net.wait(5)
    net.assert_all_connected()
    bob = net.nodes[BOB]
    assert bob.mesh.inbox.gaps_skipped == 0
    assert bob.mesh.counters == Counter()
    for device in (ALICE1, CAROL):
        [ended] = [e for e in net.nodes[device].ended if e.peer == BOB]
        assert ended.reason == NEW_SESSION


@pytest.mark.parametrize("placer", [True, False])
def test_a_member_that_flickers_out_of_our_view_and_back_reconnects(placer: bool) -> None:
    # A sync can bring a member's room membership out of order: our table sees it leave and
    # come back under the same session while it stays in the call and keeps its pair. Our new
    # call must not repeat the old call's id or message numbers, which it still holds.
    net = connected((ALICE1, BOB, CAROL))
    viewer = net.nodes[ALICE1 if placer else CAROL]
    bob = member(BOB, session(BOB))
    net.tell([viewer], [MemberLeft(bob, LeftReason.LEFT)])
    net.tell([viewer], [MemberJoined(bob)])
    net.wait(45)
    net.assert_all_connected()
    if placer:
        assert viewer.call(BOB) is not None
        assert viewer.call(BOB).call_id == pair_call_id(  # type: ignore[union-attr]
            ROOM, (ALICE1, session(ALICE1)), (BOB, session(BOB)), 1
        )
    assert net.nodes[BOB].mesh.counters[MeshCount.DUPLICATE_INVITE] == 0


# -- failures and retries --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "reason"), [("media", "ice_failed"), ("lost", "invite_timeout")]
)
def test_a_failed_pair_is_retried_three_times_with_backoff_then_given_up(
    failure: str, reason: str
) -> None:
    net = MeshNet()
    if failure == "media":
        net.failing.add(frozenset({ALICE1, BOB}))
    else:
        net.blocked.add((ALICE1, BOB))  # nothing alice sends bob arrives
    for device in (ALICE1, BOB, CAROL):
        net.join(device, session(device))
    net.wait(400)
    alice = net.nodes[ALICE1]
    ends = [(e, t) for e, t in zip(alice.ended, alice.ended_at, strict=True) if e.peer == BOB]
    assert [e.reason for e, _ in ends] == [reason] * 4
    assert [None if e.retry_at is None else e.retry_at - t for e, t in ends] == [1, 2, 4, None]
    pair = ((ALICE1, session(ALICE1)), (BOB, session(BOB)))
    assert [e.call_id for e, _ in ends] == [pair_call_id(ROOM, *pair, n) for n in range(4)]
    invited = [s.at for s in net.sent if s.type == "m.call.invite" and s.dest == BOB]
    assert invited[1:] == [e.retry_at for e, _ in ends[:3]]  # each retry placed when announced
    assert alice.call(BOB) is None
    assert alice.mesh.pairs[BOB].retry_at is None
    assert alice.mesh.counters[MeshCount.PAIR_GIVEN_UP] == 1
    assert alice.mesh.counters[MeshCount.PAIR_RETRIED] == 3
    assert all(e.retry_at is None for e in net.nodes[BOB].ended)  # the callee never calls
    for a, b in ((ALICE1, CAROL), (BOB, CAROL)):
        assert net.nodes[a].state(b) is CallState.CONNECTED


def test_a_pair_that_fails_once_connects_on_its_retry_and_old_attempts_change_nothing() -> None:
    net = MeshNet()
    net.failing.add(frozenset({ALICE1, BOB}))
    for device in (ALICE1, BOB):
        net.join(device, session(device))
    while not net.nodes[ALICE1].ended:
        net.wait(1)
    net.failing.clear()
    net.wait(5)
    net.assert_all_connected()
    bob = net.nodes[BOB]
    call = bob.call(ALICE1)
    assert call is not None
    assert call.call_id.endswith(".1")
    # Alice's first invite and hang-up again, under fresh seqs: events of an older attempt.
    old = [
        s
        for s in net.sent
        if s.dest == BOB
        and s.type in ("m.call.invite", "m.call.hangup")
        and s.content["call_id"].endswith(".0")
    ]
    assert [s.type for s in old] == ["m.call.invite", "m.call.hangup"]
    seq = max(s.content["seq"] for s in net.sent if s.dest == BOB) + 1
    for n, sent in enumerate(old):
        replayed = {**sent.content, "seq": seq + n}
        net.inject(BOB, DeviceMessage(ALICE1.user_id, "A1", sent.type, replayed))
    net.wait(1)
    assert bob.mesh.counters[MeshCount.STALE_ATTEMPT] == 2
    assert bob.call(ALICE1) is call
    assert call.state is CallState.CONNECTED


def test_a_user_hangup_is_not_retried() -> None:
    net = connected((ALICE1, BOB, CAROL))
    hung_up_at = net.now
    bob = net.nodes[BOB]
    call = bob.call(ALICE1)
    assert call is not None
    bob.do(ALICE1, call.call_id, HangUp())  # the callee hangs up its pair
    alice = net.nodes[ALICE1]
    own = alice.call(CAROL)
    assert own is not None
    alice.do(CAROL, own.call_id, HangUp())  # the placer hangs up one of its own
    net.wait(60)
    assert [(e.peer, e.reason, e.retry_at) for e in alice.ended] == [
        (CAROL, "user_hangup", None),
        (BOB, "user_hangup", None),
    ]
    invites = [s for s in net.sent if s.type == "m.call.invite" and s.at >= hung_up_at]
    assert invites == []
    assert alice.call(BOB) is None
    assert alice.call(CAROL) is None
    assert net.nodes[BOB].state(CAROL) is CallState.CONNECTED


def test_commands_for_a_call_that_is_not_the_pairs_current_one_are_stale() -> None:
    net = connected((ALICE1, BOB))
    alice = net.nodes[ALICE1]
    alice.do(BOB, "mesh1.other.0", MediaConnected())
    alice.do(CAROL, "mesh1.other.0", MediaConnected())
    assert alice.mesh.counters[MeshCount.STALE_COMMAND] == 2
    call = alice.call(BOB)
    assert call is not None
    with pytest.raises(IllegalTransitionError):  # the caller's own misuse
        alice.mesh.command(BOB, call.call_id, PlaceCall(), net.now)


# -- mute and screen sharing -----------------------------------------------------------------


def _last_streams(node: Node, peer: MemberDevice) -> dict[str, Any]:
    return node.streams[peer][-1]


def test_mute_set_before_and_after_the_pairs_exist_reaches_every_peer() -> None:
    net = MeshNet(video=True)
    alice = net.join(ALICE1, session(ALICE1))  # places every call: its invites carry the mute
    alice.run(alice.mesh.set_muted(True, None, net.now))
    carol = net.join(CAROL, session(CAROL))  # answers every call: its answers carry it
    carol.run(carol.mesh.set_muted(None, True, net.now))
    net.join(BOB, session(BOB))
    net.wait(5)
    net.assert_all_connected()
    bob = net.nodes[BOB]
    assert _last_streams(bob, ALICE1) == {"A1-um": ("m.usermedia", True, False)}
    assert _last_streams(bob, CAROL) == {"C1-um": ("m.usermedia", False, True)}
    assert _last_streams(carol, ALICE1) == {"A1-um": ("m.usermedia", True, False)}
    bob.run(bob.mesh.set_muted(True, True, net.now))
    net.wait(1)
    for node in (alice, carol):
        assert _last_streams(node, BOB) == {"B1-um": ("m.usermedia", True, True)}
    assert bob.media(ALICE1, actions.SetLocalMute)[-1] == actions.SetLocalMute(True, True)


def test_screen_sharing_reaches_connected_pairs_and_pairs_once_they_connect() -> None:
    net = MeshNet(video=True)
    bob = net.join(BOB, session(BOB))
    bob.run(bob.mesh.set_screenshare(True, net.now))  # no pair yet: remembered
    net.join(ALICE1, session(ALICE1))
    net.join(CAROL, session(CAROL))
    net.wait(5)
    net.assert_all_connected()
    for peer in (ALICE1, CAROL):
        purposes = sorted(p for p, _, _ in _last_streams(net.nodes[peer], BOB).values())
        assert purposes == ["m.screenshare", "m.usermedia"]
    bob.run(bob.mesh.set_screenshare(False, net.now))
    net.wait(2)
    for peer in (ALICE1, CAROL):
        assert [p for p, _, _ in _last_streams(net.nodes[peer], BOB).values()] == ["m.usermedia"]
    net.assert_all_connected()


# -- hostile signaling -----------------------------------------------------------------------


def _with_mallory(devices: tuple[MemberDevice, ...] = (ALICE1, BOB, CAROL)) -> MeshNet:
    """A mesh whose members include Mallory, a device that runs no mesh of ours."""
    net = MeshNet()
    for device in devices:
        net.join(device, session(device))
    net.tell(list(net.nodes.values()), [MemberJoined(member(MALLORY, session(MALLORY)))])
    return net


def test_an_invite_from_a_peer_that_we_should_call_is_refused() -> None:
    net = _with_mallory()
    alice = net.nodes[ALICE1]
    ours = alice.call(MALLORY)
    assert ours is not None
    assert ours.state is CallState.INVITE_SENT
    net.inject(ALICE1, forged_invite(MALLORY, session(MALLORY), ALICE1, session(ALICE1)))
    net.wait(5)
    assert alice.mesh.counters[MeshCount.WRONG_DIRECTION] == 1
    assert alice.call(MALLORY) is ours
    assert ours.state is CallState.INVITE_SENT
    assert not alice.media(MALLORY, actions.CreateAnswer)
    net.assert_all_connected(frozenset({MALLORY}))


def test_an_invite_from_a_device_that_is_no_member_is_never_answered() -> None:
    net = MeshNet()
    for device in (ALICE1, BOB):
        net.join(device, session(device))
    eve = MemberDevice("@adam:hs", "E1")  # lower than all: it would place their calls
    net.inject(ALICE1, forged_invite(eve, "s-eve", ALICE1, session(ALICE1)))
    net.wait(EARLY_TTL + 1)
    alice = net.nodes[ALICE1]
    assert alice.mesh.counters["never_member"] == 1
    assert eve not in alice.mesh.pairs
    assert not alice.media(eve, actions.CreateAnswer)
    assert sent_after(net, 0, eve) == []
    net.assert_all_connected()


def test_an_event_with_another_pairs_call_id_is_refused() -> None:
    net = _with_mallory()
    net.wait(2)
    bob = net.nodes[BOB]
    target = bob.call(ALICE1)
    assert target is not None
    assert target.state is CallState.CONNECTED
    # Mallory knows the alice-bob call id (it is derived from the membership) and aims at it.
    hangup = CallHangup(call_id=target.call_id, party_id=ALICE1.device_id, reason="user_hangup")
    envelope = SignalEnvelope(ROOM, ROOM, MALLORY.device_id, 0, session(MALLORY), session(BOB))
    kind, content = wrap_signal(hangup, envelope)
    net.inject(BOB, DeviceMessage(MALLORY.user_id, MALLORY.device_id, kind, content))
    net.wait(1)
    assert bob.mesh.counters["foreign_call_id"] == 1
    assert bob.call(ALICE1) is target
    assert target.state is CallState.CONNECTED


def test_duplicated_and_replayed_signals_change_nothing() -> None:
    net = connected((ALICE1, BOB, CAROL), duplicate=True)  # the network delivers all twice
    for node in net.nodes.values():
        assert set(node.mesh.counters) == {"duplicate"}
    bob = net.nodes[BOB]
    call = bob.call(ALICE1)
    invite = next(s for s in net.sent if s.type == "m.call.invite" and s.dest == BOB)
    seq = max(s.content["seq"] for s in net.sent if s.dest == BOB and s.src == ALICE1) + 1
    net.duplicate = False
    net.inject(BOB, DeviceMessage(ALICE1.user_id, "A1", invite.type, invite.content))  # replayed
    net.inject(
        BOB, DeviceMessage(ALICE1.user_id, "A1", invite.type, {**invite.content, "seq": seq})
    )
    net.wait(5)
    assert bob.mesh.counters[MeshCount.DUPLICATE_INVITE] == 1
    assert bob.call(ALICE1) is call
    net.assert_all_connected()


def test_pairs_stay_within_the_member_cap() -> None:
    mesh = Mesh(ROOM, MemberDevice("@a:hs", "A"), "s")
    events = [
        MemberJoined(member(MemberDevice(f"@u{n:03d}:hs", "D"), f"s{n}"))
        for n in range(MAX_MEMBERS + 5)
    ]
    mesh.on_membership(events, 0.0)
    assert len(mesh.pairs) == MAX_MEMBERS
    assert mesh.counters[MeshCount.OVER_CAPACITY] == 5


def test_a_peer_that_keeps_inviting_gets_few_new_connections() -> None:
    # Each accepted invite is a new peer connection: a member that sends invite after invite
    # with ever higher attempts gets a few in each window, the rest are refused and counted.
    mesh = Mesh(ROOM, BOB, session(BOB))
    mesh.on_membership([MemberJoined(member(ALICE1, session(ALICE1)))], 0.0)  # Alice places
    sender = MeshSender(ROOM, ALICE1, session(ALICE1))

    def answers(attempt: int, now: float) -> int:
        invite = forged_invite(ALICE1, session(ALICE1), BOB, session(BOB), attempt, sender)
        out = mesh.receive(invite, now)
        return sum(
            isinstance(a, PairMedia) and isinstance(a.action, actions.CreateAnswer) for a in out
        )

    made = sum(answers(attempt, attempt * 0.1) for attempt in range(40))
    assert made == MAX_INVITES_PER_WINDOW
    assert mesh.counters[MeshCount.INVITE_RATE_LIMITED] == 40 - MAX_INVITES_PER_WINDOW
    # The placer's honest retries, spaced out, are answered again once the window has passed.
    assert answers(40, 4.0 + INVITE_WINDOW) == 1


def test_a_rejoin_told_again_for_the_session_the_pair_already_has_changes_nothing() -> None:
    # Our own rejoin makes a new mesh from the current members; a member's rejoin queued
    # before it is then told again: the pair already is for that session.
    mesh = Mesh(ROOM, ALICE1, session(ALICE1))  # Alice places her call with Bob
    old = dataclasses.replace(member(BOB, session(BOB, 1)), created=1)
    new = dataclasses.replace(member(BOB, session(BOB, 2)), created=2)
    mesh.on_membership([MemberJoined(new)], 0.0)
    call = mesh.pairs[BOB].call
    assert call is not None
    assert mesh.on_membership([MemberRejoined(old, new)], 0.1) == []
    assert mesh.pairs[BOB].call is call
    # A js-sdk rejoin keeps its membershipID and changes created_ts: a new pair call.
    again = dataclasses.replace(new, created=3)
    out = mesh.on_membership([MemberRejoined(new, again)], 0.2)
    assert any(isinstance(a, PairEnded) and a.reason == NEW_SESSION for a in out)
    assert mesh.pairs[BOB].call is not call
