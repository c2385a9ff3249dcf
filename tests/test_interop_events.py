"""Call events as matrix-js-sdk 37 writes them parse (no browser needed)."""

from sealcall.signaling import parse
from sealcall.signaling.events import CallSdpStreamMetadataChanged

# What js-sdk's setMicrophoneMuted(true) sends: the unstable event type and metadata key.
JSSDK_MUTE = {
    "type": "org.matrix.call.sdp_stream_metadata_changed",
    "content": {
        "call_id": "1795389531740sTn6n7wb4BZpVtqA",
        "party_id": "VBSUNSCOYI",
        "version": "1",
        "org.matrix.msc3077.sdp_stream_metadata": {
            "6842a5b402f7451da93a19400f62dbe1": {
                "purpose": "m.usermedia",
                "audio_muted": True,
                "video_muted": False,
            }
        },
    },
}


def test_jssdk_mute_change_parses_under_its_unstable_type() -> None:
    event = parse(JSSDK_MUTE)
    assert isinstance(event, CallSdpStreamMetadataChanged)
    (stream,) = event.sdp_stream_metadata.values()
    assert (stream.purpose, stream.audio_muted, stream.video_muted) == (
        "m.usermedia",
        True,
        False,
    )
    assert event.to_dict()["type"] == JSSDK_MUTE["type"]
