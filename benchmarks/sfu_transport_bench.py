"""The SFU transport's cost per packet over loopback, with a plain aiortc peer: receive and send.

Figures, in µs of this process's CPU per packet, side by side:

- ``srtp_unprotect``: libsrtp alone as the transport calls it, on the SFU's receive session (the
  floor of receiving);
- ``receive``: a datagram on 127.0.0.1 to the ``on_rtp`` callback: event loop wake-up, kernel
  receive, SRTP unprotect, callback (the cost of the socket that sends the datagrams, measured
  alone, is subtracted); ``receive_stun_first`` the same with aioice's own
  ``datagram_received``, which first tries to parse every datagram as STUN (the path before);
- ``srtp_protect``: libsrtp alone as the transport calls it (the session's buffer, no allocation),
  next to ``pylibsrtp_protect``, pylibsrtp's ``Session.protect`` (the path before);
- ``send``: ``send_rtp`` (SRTP protect + UDP send on the socket), next to ``send_before``
  (``Session.protect`` + asyncio's ``DatagramTransport.sendto``: the path before) and, for
  reference, aiortc's own ``RTCDtlsTransport._send_rtp`` coroutine doing the same.

The aiortc peer is recvonly, so it sends no media of its own; the SFU sends with an SSRC and payload
type it has not negotiated, which aiortc drops before any decoder. Both ends share the process and
the loop, so receive figures include only what the SFU side does between batches.

Run: ``python benchmarks/sfu_transport_bench.py [--json] [--packets N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport

from sealcall.sfu.transport import ParticipantTransport

BATCH = 128
COLUMNS = (
    "srtp_unprotect",
    "receive",
    "receive_stun_first",
    "srtp_protect",
    "pylibsrtp_protect",
    "send",
    "send_before",
    "aiortc_send_rtp",
)
SIZES = {"audio": 100, "video": 1100}


def rtp_packets(n: int, payload: int, ssrc: int, first_seq: int, pt: int = 96) -> list[bytes]:
    """``n`` RTP packets with consecutive sequence numbers and a payload of ``payload`` bytes."""
    return [
        struct.pack("!BBHII", 0x80, pt, (first_seq + i) & 0xFFFF, 90 * i, ssrc) + bytes(payload)
        for i in range(n)
    ]


class Counter:
    """Counts RTP the SFU end receives; ``reached`` is set once ``target`` packets arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    def on_rtp(self, _: bytes) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def until(self, target: int) -> None:
        """Wait (blocked in the selector, not spinning) until ``target`` packets arrived."""
        self.target = target
        self.reached.clear()
        if self.count < target:
            await asyncio.wait_for(self.reached.wait(), 10)


async def connect() -> tuple[RTCPeerConnection, ParticipantTransport, Counter]:
    """A recvonly aiortc peer connected to a ``ParticipantTransport``, and its RTP counter."""
    received = Counter()
    sfu = ParticipantTransport(received.on_rtp, lambda _: None)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await sfu.answer(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(sfu.wait_connected(), 10)
    return pc, sfu, received


def _sender_cost_us(datagrams: list[bytes]) -> float:
    """CPU µs per ``sendto`` of these datagrams to a socket nobody reads (taken off ``receive``)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = sink.getsockname()
    t0 = time.process_time()
    for data in datagrams:
        src.sendto(data, addr)
    cost = time.process_time() - t0
    sink.close()
    src.close()
    return cost / len(datagrams) * 1e6


async def measure(size: int, n: int, rounds: int, seq: list[int]) -> dict[str, float]:
    """All figures for one packet size over a fresh connection."""
    pc, sfu, received = await connect()
    try:
        peer_dtls: Any = pc.getTransceivers()[0].sender.transport
        sfu_dtls: Any = sfu._dtls
        assert sfu._rx is not None
        host = sfu.local_candidates()[0]
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        src.setblocking(False)
        best = dict.fromkeys(COLUMNS, 1e9)
        protocols = list(sfu._connection._protocols)
        for _ in range(rounds):
            # SRTP alone, both directions (fresh sequence numbers: the replay window is real).
            plain = rtp_packets(n, size, 0xBEEF, seq[0])
            seq[0] += n
            protected = [peer_dtls._tx_srtp.protect(p) for p in plain]
            t0 = time.process_time()
            for data in protected:
                sfu._rx.unprotect(data)
            best["srtp_unprotect"] = min(best["srtp_unprotect"], time.process_time() - t0)
            assert sfu._tx is not None
            t0 = time.process_time()
            for data in plain:
                sfu._tx.protect(data)
            best["srtp_protect"] = min(best["srtp_protect"], time.process_time() - t0)
            plain = rtp_packets(n, size, 0xBEEF, seq[0])  # fresh numbers: no replay refusal
            seq[0] += n
            t0 = time.process_time()
            for data in plain:
                sfu_dtls._tx_srtp.protect(data)
            best["pylibsrtp_protect"] = min(best["pylibsrtp_protect"], time.process_time() - t0)

            # Receive over loopback, in batches the socket buffer holds: the SFU's path, then
            # aioice's own datagram_received (STUN parse first) in front of it.
            for column in ("receive", "receive_stun_first"):
                if column == "receive_stun_first":
                    for protocol in protocols:
                        del protocol.datagram_received  # the class's (aioice's) method again
                plain = rtp_packets(n, size, 0xBEEF, seq[0])
                seq[0] += n
                protected = [peer_dtls._tx_srtp.protect(p) for p in plain]
                start = received.count
                t0 = time.process_time()
                for i in range(0, n, BATCH):
                    for data in protected[i : i + BATCH]:
                        src.sendto(data, (host.host, host.port))
                    await received.until(start + min(i + BATCH, n))
                elapsed = time.process_time() - t0
                cost = elapsed - _sender_cost_us(protected) * n / 1e6
                best[column] = min(best[column], cost)
            for protocol in protocols:
                sfu._connection._skip_stun_parse(protocol)

            # Send: the SFU's synchronous send_rtp, the path before, aiortc's coroutine.
            plain = rtp_packets(n, size, 0xFEED, seq[0], pt=127)
            seq[0] += n
            t0 = time.process_time()
            for data in plain:
                sfu.send_rtp(data)
            best["send"] = min(best["send"], time.process_time() - t0)
            await asyncio.sleep(0.05)  # let the peer drain what it was sent
            pair = sfu._connection._nominated[1]
            plain = rtp_packets(n, size, 0xFEED, seq[0], pt=127)
            seq[0] += n
            t0 = time.process_time()
            for data in plain:
                pair.protocol.transport.sendto(sfu_dtls._tx_srtp.protect(data), pair.remote_addr)
            best["send_before"] = min(best["send_before"], time.process_time() - t0)
            await asyncio.sleep(0.05)
            plain = rtp_packets(n, size, 0xFEED, seq[0], pt=127)
            seq[0] += n
            t0 = time.process_time()
            for data in plain:
                await RTCDtlsTransport._send_rtp(sfu_dtls, data)
            best["aiortc_send_rtp"] = min(best["aiortc_send_rtp"], time.process_time() - t0)
            await asyncio.sleep(0.05)
        src.close()
        if sfu.dropped:
            raise SystemExit(f"the SFU dropped {sfu.dropped} datagrams during the benchmark")
        return {k: round(v / n * 1e6, 2) for k, v in best.items()}
    finally:
        await pc.close()
        await sfu.close()


async def run(n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Figures per packet size."""
    seq = [1]
    # Warm-up at full size: the first run pays one-time costs (heap growth, page faults).
    await measure(SIZES["video"], n, 1, seq)
    return {kind: await measure(size, n, rounds, seq) for kind, size in SIZES.items()}


def main(argv: list[str] | None = None) -> int:
    """Measure and print (or ``--json``) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--packets", type=int, default=5_000, help="packets per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best one counts")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.packets, args.rounds))
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"µs/packet  {'':5} " + " ".join(f"{c:>18}" for c in COLUMNS))
    for kind, r in results.items():
        print(f"{kind:5} {SIZES[kind]:>5}B " + " ".join(f"{r[c]:>18.2f}" for c in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
