"""Two ``sealcall sfu`` processes serving two rooms at once, each room's SFU chosen by the focus of
its oldest call membership (one Matrix account, one device per process).

Each room's second member prefers the other room's SFU, yet joins its own room's: the oldest
membership decides. Members get media only from their own room's members, and a join token of
one process admits nobody at the other.
"""

from pathlib import Path

import aiohttp
import pytest

import test_group_membership_session as gm
from sealcall.demo import wait_for
from sealcall.e2ee import GroupKey
from sealcall.homeserver import Homeserver
from sfu_e2ee import TIMEOUT, SfuMember, SfuProcess, SfuRefusedError, room_sfu
from test_sfu_admission_e2e import refused
from test_sfu_admission_session import join_call

pytestmark = pytest.mark.usefixtures("synapse")


async def test_two_sfu_processes_serve_two_rooms_each_its_own_members(
    devices: gm.Devices, synapse: Homeserver, tmp_path: Path
) -> None:
    account = await devices.new("sfu")
    sfus = [await SfuProcess.start(synapse, account, tmp_path) for _ in range(2)]
    directory: dict[str, GroupKey] = {}
    rooms: list[tuple[str, list[SfuMember]]] = []
    try:
        for i, sfu in enumerate(sfus):
            first, second = await devices.new(f"a{i}"), await devices.new(f"b{i}")
            room_id = await gm.group_room(account, first, second)
            await join_call(first, room_id, url=sfu.url)
            await join_call(second, room_id, url=sfus[1 - i].url)  # outvoted by the oldest
            rooms.append((room_id, [SfuMember(first, directory), SfuMember(second, directory)]))
        assert sfus[0].proc.pid != sfus[1].proc.pid
        async with aiohttp.ClientSession() as session:
            for (room_id, members), sfu in zip(rooms, sfus, strict=True):
                for m in members:
                    assert await room_sfu(m.device, room_id) == sfu.url
                    await m.join(session, sfu.url, room_id)
            await wait_for(
                lambda: all(
                    x.decrypted(y.member, kind) >= 10
                    for _, (a, b) in rooms
                    for x, y in ((a, b), (b, a))
                    for kind in ("audio", "video")
                ),
                TIMEOUT,
                "each room's members decrypting each other",
            )
            for _, members in rooms:
                own = {m.member for m in members}
                for m in members:
                    assert {member for member, _ in m.tracks.values()} == own - {m.member}
                    # Every packet that reached it is on a stream announced as its room's.
                    assert all(int.from_bytes(p[8:12]) in m.tracks for p in m.rtp_in)
                    assert m.packets_from(m.member) == 0

            # The other room's SFU refuses: no token for a room it does not serve, and the
            # join token of one process means nothing to the other.
            (room_0, (a0, _)), (_, (a1, _)) = rooms
            with pytest.raises(SfuRefusedError) as wrong:
                await SfuMember(a0.device, {}).admit(session, sfus[1].url, room_0)
            assert wrong.value.reason == "wrong_focus"
            other = await refused(SfuMember(a1.device, {}), session, sfus[1].url, a0.join_token)
            assert other == "join token refused: forged"
    finally:
        for _, members in rooms:
            for m in members:
                await m.close()
        for sfu in sfus:
            await sfu.stop()
