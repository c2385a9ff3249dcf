"""Media under random loss on loopback: our jitter buffer and aiortc 1.16's, side by side.

One encrypted loopback call (speech-like audio, 320x240 video) per loss level and buffer; the
callee's inbound path loses packets (user-space impairment). Prints, per kind, the share of the
frames sent that were decrypted, concealed (audio) and decoded, and the loss counters.

Run: ``python benchmarks/media_loss_bench.py [--json] [--seconds S] [--loss 0 0.05 0.2]
[--delay-ms 100 --jitter-ms 30]``.
"""

import argparse
import asyncio
import json
from typing import Any

from aiortc.jitterbuffer import JitterBuffer

from sealcall.bench.impair import Impairer, Impairment, impair_connection
from sealcall.media import (
    LOOPBACK,
    EncryptedPeerConnection,
    FrameCounter,
    PatternVideoTrack,
    SyntheticAudioTrack,
    local_call_keys,
    negotiate,
)
from sealcall.media.jitter import loss_counters
from sealcall.media.remote_tracks import frames_dropped


def _aiortc_buffers(pc: EncryptedPeerConnection) -> None:
    for transceiver in pc.getTransceivers():
        buffer = (
            JitterBuffer(capacity=16, prefetch=4)
            if transceiver.kind == "audio"
            else JitterBuffer(capacity=512, is_video=True)
        )
        setattr(transceiver.receiver, "_RTCRtpReceiver__jitter_buffer", buffer)  # noqa: B010


async def _wait(condition: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the call did not connect")


async def run(
    loss: float, seconds: float, buffer: str, delay_ms: float = 0.0, jitter_ms: float = 0.0
) -> dict[str, Any]:
    """One call at ``loss`` (and delay ± jitter); ``buffer`` is ``sealcall`` or ``aiortc``."""
    keys_a, keys_b = local_call_keys("loss-bench")
    a = EncryptedPeerConnection(keys_a, host_addresses=LOOPBACK)
    b = EncryptedPeerConnection(keys_b, host_addresses=LOOPBACK)
    a.addTrack(SyntheticAudioTrack())
    a.addTrack(PatternVideoTrack(320, 240))
    counters: dict[str, FrameCounter] = {}
    b.on("track", lambda track: counters.__setitem__(track.kind, FrameCounter(track).start()))
    try:
        await negotiate(a, b)
        await _wait(lambda: b.connectionState == "connected" and len(counters) == 2)
        if buffer == "aiortc":
            _aiortc_buffers(b)
        spec = Impairment(loss=loss, delay_ms=delay_ms, jitter_ms=jitter_ms)
        impair_connection(b, inbound=Impairer(spec, seed=1))

        def snapshot() -> dict[str, dict[str, int]]:
            out = {}
            for ta, tb in zip(a.getTransceivers(), b.getTransceivers(), strict=True):
                sent = a.sender_tap(ta.sender).counters
                got = b.receiver_tap(tb.receiver).counters
                lost = loss_counters(tb.receiver)
                out[ta.kind] = {
                    "sent": sent.frames_encrypted,
                    "decrypted": got.frames_decrypted,
                    "concealed": got.frames_concealed,
                    "decoded": counters[ta.kind].frames,
                    "decoded_unread": frames_dropped(counters[ta.kind].track),
                    "skipped": got.frames_skipped,
                    "dropped": got.frames_dropped,
                    "keyframe_requests": got.keyframe_requests,
                    "nacks_sent": lost.nacks_sent,
                    "retransmissions_received": lost.retransmissions_received,
                    "frames_lost": lost.frames_lost,
                    "packets_late": lost.packets_late,
                    "plis_sent": lost.plis_sent,
                }
            return out

        before = snapshot()
        await asyncio.sleep(seconds)
        after = snapshot()
        result: dict[str, Any] = {"loss": loss, "delay_ms": delay_ms, "jitter_ms": jitter_ms}
        result["buffer"] = buffer
        for kind, values in after.items():
            delta = {k: v - before[kind][k] for k, v in values.items()}
            sent = max(delta["sent"], 1)
            delta["decrypted_share"] = round(delta["decrypted"] / sent, 3)
            delta["decoded_share"] = round(delta["decoded"] / sent, 3)
            result[kind] = delta
        return result
    finally:
        for counter in counters.values():
            await counter.stop()
        await a.close()
        await b.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--loss", type=float, nargs="*", default=[0.0, 0.05, 0.2])
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (inbound)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="± around the delay")
    args = parser.parse_args()
    runs = [
        await run(loss, args.seconds, buffer, args.delay_ms, args.jitter_ms)
        for loss in args.loss
        for buffer in ("aiortc", "sealcall")
    ]
    if args.json:
        print(json.dumps({"runs": runs}, indent=2))
        return
    print(f"{'loss':>5} {'buffer':>8}  audio decrypted/concealed/decoded  video decrypted/decoded")
    for r in runs:
        au, vi = r["audio"], r["video"]
        print(
            f"{r['loss']:>5.0%} {r['buffer']:>8}  "
            f"{au['decrypted_share']:>8.0%} {au['concealed'] / max(au['sent'], 1):>9.0%}"
            f" {au['decoded_share']:>8.0%}        {vi['decrypted_share']:>8.0%} "
            f"{vi['decoded_share']:>7.0%}"
        )


if __name__ == "__main__":
    asyncio.run(main())
