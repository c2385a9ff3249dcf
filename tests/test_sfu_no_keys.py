"""Issue 11, must-show 2: the SFU holds no media key.

The real ``sealcall sfu`` process (real admission over a real Synapse, debug logging) forwards
two members' SFrame-encrypted audio and video. Neither their base keys nor the SFrame keys and
salts derived from them are anywhere in the SFU's memory, in what it received and sent (recorded
at the members' own connections, RTP before and after SRTP, and every signaling message), or in
its log; and a VP8 decoder fed every video frame it forwarded decodes none, while the same frames
decode once decrypted with the sender's key.
"""

from pathlib import Path

import aiohttp
import pytest

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.e2ee import GroupKey, vp8_is_key_frame
from sealcall.homeserver import Homeserver
from sealcall.sfu.rtp import RtpView, is_rtcp
from sfu_e2ee import (
    TIMEOUT,
    SfuMember,
    SfuProcess,
    decrypt_frames,
    depacketize_vp8,
    pictures,
    psnr,
    secret_forms,
    sfu_room,
)

from encoded_media import incompressible

pytestmark = pytest.mark.usefixtures("synapse")


def sent_video(m: SfuMember) -> list[bytes]:
    """The VP8 frames ``m`` sent to the SFU, depacketized from its outgoing RTP."""
    ssrc = next(t.sender._ssrc for t in m.pc.getTransceivers() if t.kind == "video")
    return depacketize_vp8(
        [p for p in m.sent if not is_rtcp(p) and int.from_bytes(p[8:12]) == ssrc]
    )


def assert_undecodable(encrypted: list[bytes], decrypted: list[bytes]) -> None:
    """No encrypted frame decodes to its picture; every decrypted one does."""
    truth = pictures(decrypted)
    assert all(p is not None for p in truth)
    guesses = pictures(encrypted)
    assert sum(g is None for g in guesses) > len(guesses) // 2
    assert [
        i
        for i, (g, t) in enumerate(zip(guesses, truth, strict=True))
        if g is not None and t is not None and psnr(g, t) > 20
    ] == []


async def test_the_sfu_holds_no_media_key_in_memory_traffic_or_logs(
    devices: gm.Devices, synapse: Homeserver, tmp_path: Path
) -> None:
    account = await devices.new("sfu")
    sfu = await SfuProcess.start(synapse, account, tmp_path)
    directory: dict[str, GroupKey] = {}
    members: list[SfuMember] = []
    try:
        room_id, (a, b) = await sfu_room(devices, account, ["alice", "bob"], sfu.url)
        alice, bob = SfuMember(a, directory), SfuMember(b, directory)
        members += [alice, bob]
        async with aiohttp.ClientSession() as session:
            for m in members:
                await m.join(session, sfu.url, room_id)
            await wait_for(
                lambda: all(
                    x.decrypted(y.member, kind) >= (30 if kind == "video" else 60)
                    for x, y in ((alice, bob), (bob, alice))
                    for kind in ("audio", "video")
                ),
                TIMEOUT,
                "both members decrypting each other's media",
            )
            needles = [form for m in members for form in secret_forms(m.key)]

            # Memory: the SFU, stopped, holds the ciphertext it forwarded (the last packets a
            # member got are in its retransmission cache: the search does see its data), but
            # no key in any form.
            sfu.pause()
            view = RtpView()
            recent = [bytes(view.load(p).payload[-32:]) for p in alice.rtp_in[-20:]]
            found, scanned = sfu.search_memory(needles + recent)
            sfu.resume()
            assert scanned > 10_000_000
            assert found & set(recent), "the memory search found none of the forwarded packets"
            assert not found & set(needles), "a media key is in the SFU's memory"

        # Traffic: what each member sent the SFU and got from it, media and signaling.
        for m in members:
            traffic = m.traffic()
            assert len(m.rtp_in) > 100
            assert len(m.sent) > 100
            assert not [n for n in needles if n in traffic]

        # Log: at debug level, and no key in it.
        await sfu.stop()
        log = sfu.log.read_bytes()
        assert b"DEBUG " in log
        assert not [n for n in needles if n in log]

        # A decoder fed every video frame the SFU forwarded (and every one it received) never
        # gets the picture: it fails, or makes noise of a key frame's clear size; decrypted with
        # the sender's key, every frame decodes (the test can tell).
        for receiver, sender in ((alice, bob), (bob, alice)):
            forwarded = receiver.video_frames(sender.member)
            assert len(forwarded) >= 30
            assert vp8_is_key_frame(forwarded[0])
            body = b"".join(f[10:] if vp8_is_key_frame(f) else f[3:] for f in forwarded)
            assert incompressible(body)
            assert_undecodable(forwarded, decrypt_frames(sender.key, forwarded))
            audio = receiver.audio_payloads(sender.member)
            assert len(audio) >= 60
            assert incompressible(b"".join(p[1:] for p in audio))

            received = sent_video(sender)
            assert len(received) >= len(forwarded)
            # (the sender's first frames went out before the SFU's key-frame request)
            plain = decrypt_frames(sender.key, received)
            start = next(i for i, f in enumerate(plain) if vp8_is_key_frame(f))
            assert_undecodable(received[start:], plain[start:])
    finally:
        for m in members:
            await m.close()
        await sfu.stop()
