"""A call through TURN across the lab under loss (5 % and 20 %) and 100 ± 30 ms delay on host
A's link: media keeps decrypting both ways, only decrypted frames are decoded, and the picture
comes back after a short outage. (The shares and times are figures of ``sealcall net-bench``.)"""

import pytest

from net_helpers import decoded, lab_call, lab_fixture, sample_until
from sealcall.bench.impair import PERFECT, Impairment
from sealcall.bench.net_bench import measure, picture_back
from sealcall.bench.net_call import LabServers

pytestmark = pytest.mark.asyncio(loop_scope="module")

servers = lab_fixture()


async def test_media_keeps_decrypting_under_loss_and_delay(servers: LabServers) -> None:
    lab = servers.lab
    async with lab_call(servers) as (a, b):
        for peer in (a, b):
            await sample_until(peer, lambda s: decoded(s, "video") >= 5, 30, "video")
        try:
            for loss in (0.05, 0.20):
                lab.impair("a", Impairment(loss=loss, delay_ms=100, jitter_ms=30))
                measured = await measure(a, b, 3.0)
                for way in ("a_to_b", "b_to_a"):
                    for kind in ("audio", "video"):
                        assert measured[way][kind]["decrypted"] > 0, (loss, way, kind)
                        assert measured[way][kind]["decoded"] > 0, (loss, way, kind)
                # Every frame a decoder got had been decrypted, or stands in for a lost audio
                # frame (concealment): a frame that fails is dropped before the decoder.
                for totals in measured["totals"].values():
                    for kind in ("audio", "video"):
                        counts = totals["kinds"][kind]
                        concealed = counts["loss"]["frames_concealed"]
                        assert counts["decoded"] <= counts["decrypted"] + concealed
                        # Audited at the decoder's queue: each input was decrypted or
                        # concealed, and no video delta frame followed a gap before a key frame.
                        assert counts["decoder_inputs"] > 0
                        assert counts["unvetted_decoder_inputs"] == 0
                        assert counts["deltas_after_gap"] == 0
                # Lost video packets were asked for again.
                nacks = [measured[way]["video"]["nacks_sent"] for way in ("a_to_b", "b_to_a")]
                assert all(n > 0 for n in nacks), nacks
            assert lab.links["a"].up.dropped > 0
            assert lab.links["a"].down.dropped > 0
            lab.impair("a", PERFECT)
            back = await picture_back(lab, a, b, outage_s=1.0, settle_s=0.0)
            assert back["to_a"] is not None
            assert back["to_b"] is not None
            # NACK repairs 20 % loss here (no PLI); a gap it could not repair (the outage)
            # withholds delta frames and asks the far side for a key frame, which it sends.
            samples = {peer.host: await peer.sample() for peer in (a, b)}
            for host, other in (("a", "b"), ("b", "a")):
                video = samples[host]["kinds"]["video"]
                assert video["unvetted_decoder_inputs"] == video["deltas_after_gap"] == 0
                if video["loss"]["frames_lost"] or video["skipped"]:
                    assert video["loss"]["plis_sent"] > 0, video
                    assert samples[other]["keyframe_requests_received"]["video"] > 0
        finally:
            lab.impair("a", PERFECT)
            lab.set_outage("a", False)
        assert a.ended() is None
        assert b.ended() is None
