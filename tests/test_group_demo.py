"""``sealcall group-demo`` over the real Synapse: four participant processes connect as a full
mesh and decrypt each other; after the leave and after the SIGKILL, each stayer sees the member
go, rotates its key, and the other stayer decrypts with the new key; every participant's memory
is sampled."""

import json

from sealcall.bench.group_demo import report_json, report_text, run_group_demo
from sealcall.homeserver import Homeserver


async def test_group_demo_of_four(synapse: Homeserver) -> None:
    report = await run_group_demo(
        synapse, participants=4, seconds=10, video_size="160x120", interval=2
    )
    names = ["member1", "member2", "member3", "member4"]
    leave, kill = report.departures
    assert (leave["member"], leave["how"]) == ("member4", "left")
    assert (kill["member"], kill["how"]) == ("member3", "killed")
    stayers = ["member1", "member2"]
    for name in names:
        others = [n for n in names if n != name]
        assert sorted(report.pair_setup_seconds[name]) == others  # every pair connected
        assert len(report.memory[name]["rss_mb"]) >= 2
        assert len(report.memory[name]["heap_mb"]) >= 2
        if name in stayers:
            # From everyone, the departed ones too (their final counts).
            assert all(report.frames_decoded[name][peer] > 0 for peer in others)
    for departure in (leave, kill):
        # (The killed one may die before it sees the leaver go: only the stayers are sure to.)
        assert None not in [departure["vanished_after"][n] for n in stayers], report_text(report)
        for sender, receiver in (stayers, stayers[::-1]):
            # A new key after the departure, and the other stayer decrypted frames with it.
            rotation = departure["key_rotations"][sender]
            assert rotation is not None, report_text(report)
            assert rotation["decrypted_by_others_after"][receiver] is not None
    assert json.loads(report_json(report))["departures"] == report.departures
    assert "member3 killed" in report_text(report)


async def test_group_demo_through_the_sfu(synapse: Homeserver) -> None:
    """``group-demo --sfu``: the call goes through a sealcall SFU the demo starts (real admission),
    every member decrypts every other, and the leaver's departure rotates the stayers' keys."""
    report = await run_group_demo(
        synapse, participants=3, seconds=8, video_size="160x120", interval=2, sfu=True
    )
    assert report.sfu is not None
    assert report.sfu.startswith("http://127.0.0.1:")
    names = ["member1", "member2", "member3"]
    for name in names:
        others = [n for n in names if n != name]
        assert sorted(report.pair_setup_seconds[name]) == others  # everyone's media arrived
        assert all(report.frames_decoded[name][peer] > 0 for peer in others)
        # What the frame counts are made of: per kind received (the video is the thumbnail
        # layer, the default subscription), and per layer encoded by each sender.
        kinds = report.frames_by_kind[name][others[0]]
        assert kinds["audio"]["decrypted"] > 0
        assert kinds["video"]["decrypted"] > 0
        assert all(report.frames_sent[name][role] > 0 for role in ("camera", "camera_full"))
    assert report.sfu_metrics["sfu_forwarded_packets"] > 0
    assert report.sfu_metrics["cpu_percent"] > 0
    (leave,) = report.departures
    assert (leave["member"], leave["how"]) == ("member3", "left")
    for sender, receiver in (("member1", "member2"), ("member2", "member1")):
        rotation = leave["key_rotations"][sender]
        assert rotation is not None, report_text(report)
        assert rotation["decrypted_by_others_after"][receiver] is not None
    assert json.loads(report_json(report))["sfu"] == report.sfu
