"""A bounded cache of recently forwarded packets, by (rewritten) sequence number, for NACKs.

One cache per outgoing stream. It holds the packets exactly as sent (after rewriting), so a NACK
from the subscriber, which names outgoing sequence numbers, is answered either by resending the
packet as is or, when the subscriber negotiated RTX, wrapped per RFC 4588 (RTX SSRC and payload
type, the RTX stream's own sequence number, the original sequence number "OSN" before the payload).
Memory is bounded by packet count and by bytes; the oldest packets go first.
"""

from __future__ import annotations

import struct

from .rtp import RtpView

__all__ = ["PacketCache"]

_RTX_HEADER = struct.Struct("!BHII")


class PacketCache:
    """Recently sent packets of one outgoing stream, bounded by packet count and bytes."""

    __slots__ = (
        "_packets",
        "max_bytes",
        "max_packets",
        "missed",
        "rtx_payload_type",
        "rtx_sequence",
        "rtx_ssrc",
        "served",
        "size_bytes",
    )

    def __init__(
        self,
        max_packets: int = 1024,
        max_bytes: int = 1 << 20,
        *,
        rtx_ssrc: int | None = None,
        rtx_payload_type: int | None = None,
        rtx_first_sequence: int = 0,
    ) -> None:
        """RTX is used when both ``rtx_ssrc`` and ``rtx_payload_type`` are given."""
        if max_packets < 1 or max_bytes < 1:
            raise ValueError("cache bounds must be positive")
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.rtx_sequence = rtx_first_sequence & 0xFFFF
        self.size_bytes = 0
        self.served = 0
        self.missed = 0
        # dict keeps insertion order: its first key is the oldest packet.
        self._packets: dict[int, bytes | bytearray] = {}

    def __len__(self) -> int:
        return len(self._packets)

    def insert(self, sequence_number: int, packet: bytes | bytearray) -> None:
        """Keep ``packet`` (as sent; the cache takes ownership, do not mutate it afterwards)."""
        packets = self._packets
        old = packets.pop(sequence_number, None)
        if old is not None:
            self.size_bytes -= len(old)
        packets[sequence_number] = packet
        self.size_bytes += len(packet)
        while len(packets) > self.max_packets or self.size_bytes > self.max_bytes:
            oldest = next(iter(packets))
            self.size_bytes -= len(packets.pop(oldest))

    def get(self, sequence_number: int) -> bytes | bytearray | None:
        """The packet sent with ``sequence_number``, or None if it has left the cache."""
        return self._packets.get(sequence_number & 0xFFFF)

    def retransmissions(self, lost: tuple[int, ...] | list[int]) -> list[bytes]:
        """Answer a NACK: one packet per lost sequence number still cached (RTX-wrapped if set)."""
        out: list[bytes] = []
        rtx = self.rtx_ssrc is not None and self.rtx_payload_type is not None
        for seq in lost:
            packet = self.get(seq)
            if packet is None:
                self.missed += 1
                continue
            self.served += 1
            out.append(self.rtx_packet(packet) if rtx else bytes(packet))
        return out

    def rtx_packet(self, packet: bytes | bytearray) -> bytes:
        """Wrap a cached packet per RFC 4588: RTX SSRC/PT/seq, then the 2-byte OSN, then payload.

        Header extensions and CSRCs are kept; padding is dropped (the P bit cleared).
        """
        if self.rtx_ssrc is None or self.rtx_payload_type is None:
            raise ValueError("RTX is not configured for this stream")
        view = RtpView().load(packet)
        header = bytearray(packet[: view.payload_offset])
        header[0] &= 0xDF  # no padding in the RTX packet
        _RTX_HEADER.pack_into(
            header,
            1,
            (header[1] & 0x80) | self.rtx_payload_type,
            self.rtx_sequence,
            view.timestamp,
            self.rtx_ssrc,
        )
        self.rtx_sequence = (self.rtx_sequence + 1) & 0xFFFF
        osn = view.sequence_number.to_bytes(2, "big")
        return bytes(header) + osn + bytes(packet[view.payload_offset : view.payload_end])
