"""An eavesdropping relay in the middle forwards the encrypted frames but cannot read them."""

import asyncio

from sealcall.e2ee import vp8_is_key_frame
from sealcall.media import PatternVideoTrack, SyntheticAudioTrack
from sealcall.media.forwarding import ForwardedTrack, forward_encoded

from encoded_media import decodable_frames, incompressible
from media_helpers import call_keys, connect, encrypted, plain


async def test_relay_forwards_ciphertext_it_cannot_decode() -> None:
    keys_a, keys_b = call_keys()
    alice, bob = encrypted(keys_a), encrypted(keys_b)
    relay_in, relay_out = plain(), plain()  # the relay has no keys at all
    forwarded: dict[str, ForwardedTrack] = {}

    @relay_in.pc.on("track")
    def on_track(track: object) -> None:
        for transceiver in relay_in.pc.getTransceivers():
            if transceiver.receiver.track is track:
                forwarded[transceiver.kind] = forward_encoded(
                    transceiver.receiver, transceiver.kind
                )
                relay_out.pc.addTrack(forwarded[transceiver.kind])

    alice.pc.addTrack(SyntheticAudioTrack())
    alice.pc.addTrack(PatternVideoTrack(320, 240))
    try:
        await connect(alice, relay_in)
        await connect(relay_out, bob)
        await asyncio.sleep(3)

        video = forwarded["video"].frames
        audio = forwarded["audio"].frames
        assert len(video) > 40
        assert len(audio) > 80

        # The relay cannot decode one video frame of what it forwards.
        assert decodable_frames("vp8", video) == 0

        # Past the clear prefix (10 or 3 bytes) everything looks random, key frames included.
        assert vp8_is_key_frame(video[0])
        body = b"".join(f[10:] if vp8_is_key_frame(f) else f[3:] for f in video)
        assert incompressible(body)
        assert incompressible(b"".join(f[1:] for f in audio))

        # Bob, who holds the key, decodes the stream the relay forwarded.
        assert bob.counter("video").frames >= 0.9 * len(video) - 5
        assert bob.counter("video").last_size == (320, 240)
        assert bob.counter("audio").frames > 80
    finally:
        for endpoint in (alice, relay_in, relay_out, bob):
            await endpoint.close()
