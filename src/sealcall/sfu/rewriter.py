"""Per-subscriber rewriting that makes a switch between a sender's layers seamless.

A subscriber sees one outgoing stream (one SSRC) per forwarded sender stream, whatever layer the
SFU picks: each layer is a different source SSRC with its own sequence numbers, timestamps and VP8
picture ids. ``StreamRewriter`` maps each source packet onto the outgoing stream:

- sequence numbers stay contiguous across switches (the first packet of a new layer follows the
  highest one sent); gaps and reordering within a layer are kept as they are;
- timestamps never go back: the new layer's first timestamp is the last one sent plus the
  wall-clock time elapsed since, at the stream's clock rate;
- a video switch happens only on a key frame of the target layer; until then ``needs_keyframe``
  is true so the caller can send a PLI (rate-limited by the caller);
- a packet older than the current layer's first packet, or further back than ``max_reorder``, is
  dropped and counted (its rewritten number would collide with one already sent).

Sans-I/O: ``now`` (seconds, monotonic) is passed in. The hot path (``rewrite``) allocates nothing.
"""

from __future__ import annotations

from .rtp import RtpView, rewrite_header
from .vp8 import Vp8Descriptor, rewrite_picture_id, rewrite_tl0picidx

__all__ = [
    "DROPPED_NOT_SELECTED",
    "DROPPED_TOO_OLD",
    "DROPPED_WAITING_KEYFRAME",
    "FORWARDED",
    "StreamRewriter",
]

FORWARDED = 0
DROPPED_NOT_SELECTED = 1  # a layer this subscriber does not receive (now)
DROPPED_WAITING_KEYFRAME = 2  # the target layer, before its first key frame
DROPPED_TOO_OLD = 3  # from before the current layer began, or beyond the reorder window

_SEQ_MOD = 1 << 16
_SEQ_HALF = 1 << 15
_TS_MOD = 1 << 32
_PID_MOD = 1 << 15


class StreamRewriter:
    """Rewrite one sender stream's layers onto one subscriber's outgoing SSRC."""

    __slots__ = (
        "_first_in",
        "_high_in",
        "_high_out_pid",
        "_high_out_seq",
        "_high_out_time",
        "_high_out_tl0",
        "_high_out_ts",
        "_pid_offset",
        "_seq_offset",
        "_started",
        "_tl0_offset",
        "_ts_offset",
        "clock_rate",
        "current",
        "dropped_not_selected",
        "dropped_too_old",
        "dropped_waiting",
        "max_reorder",
        "out_payload_type",
        "out_sequence",
        "out_ssrc",
        "out_timestamp",
        "switches",
        "target",
        "video",
    )

    def __init__(
        self,
        out_ssrc: int,
        out_payload_type: int,
        clock_rate: int,
        *,
        video: bool,
        first_sequence: int = 0,
        first_timestamp: int = 0,
        max_reorder: int = 1000,
    ) -> None:
        """``first_sequence``/``first_timestamp``: where the outgoing stream starts (random)."""
        if not 0 < max_reorder < _SEQ_HALF:
            raise ValueError("max_reorder must be in 1..32767")
        self.out_ssrc = out_ssrc
        self.out_payload_type = out_payload_type
        self.clock_rate = clock_rate
        self.video = video
        self.max_reorder = max_reorder
        self.target: int | None = None
        self.current: int | None = None
        self.switches = 0
        self.dropped_too_old = 0
        self.dropped_not_selected = 0
        self.dropped_waiting = 0
        self.out_sequence = 0
        self.out_timestamp = 0
        self._seq_offset = 0
        self._ts_offset = 0
        self._pid_offset = 0
        self._tl0_offset = 0
        self._first_in = 0
        self._high_in = 0
        # As if a packet just before the first had been sent: the first switch is no special case.
        self._high_out_seq = (first_sequence - 1) % _SEQ_MOD
        self._high_out_ts = first_timestamp % _TS_MOD
        self._high_out_time = -1.0
        self._high_out_pid = -1
        self._high_out_tl0 = -1
        self._started = False

    def select(self, source_ssrc: int | None) -> None:
        """Choose the layer (source SSRC) to forward, or None to pause (video: from a key frame)."""
        self.target = source_ssrc
        if source_ssrc is None:
            self.current = None

    @property
    def needs_keyframe(self) -> bool:
        """True while waiting for the target layer's key frame (ask its sender with a PLI)."""
        return self.video and self.target is not None and self.target != self.current

    def rewrite(
        self,
        view: RtpView,
        buf: bytearray,
        now: float,
        keyframe: bool = False,
        vp8: Vp8Descriptor | None = None,
    ) -> int:
        """Decide on one source packet (parsed in ``view``) and, if forwarded, rewrite ``buf``.

        ``buf`` is the caller's copy of the packet; ``keyframe`` says the packet starts a key frame
        (``Vp8Descriptor.is_keyframe``); ``vp8`` (the same packet's descriptor, offsets valid in
        ``buf``) enables picture-id / TL0PICIDX rewriting. Returns ``FORWARDED`` or a ``DROPPED_*``
        code; on ``FORWARDED`` ``out_sequence``/``out_timestamp`` hold what was written.
        """
        ssrc = view.ssrc
        seq = view.sequence_number
        if ssrc != self.current:
            if ssrc != self.target:
                self.dropped_not_selected += 1
                return DROPPED_NOT_SELECTED
            if self.video and not keyframe:
                self.dropped_waiting += 1
                return DROPPED_WAITING_KEYFRAME
            self._switch(view, now, vp8)
        else:
            d = (seq - self._high_in) & 0xFFFF
            if d >= _SEQ_HALF:  # older than the highest seen
                if _SEQ_MOD - d > self.max_reorder or (seq - self._first_in) & 0xFFFF >= _SEQ_HALF:
                    self.dropped_too_old += 1
                    return DROPPED_TOO_OLD
            elif d:
                self._high_in = seq
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (view.timestamp + self._ts_offset) & 0xFFFFFFFF
        rewrite_header(buf, self.out_payload_type, out_seq, out_ts, self.out_ssrc)
        if seq == self._high_in:
            self._high_out_seq = out_seq
            self._high_out_ts = out_ts
            self._high_out_time = now
        if vp8 is not None:
            if vp8.picture_id >= 0:
                pid = (vp8.picture_id + self._pid_offset) % _PID_MOD
                rewrite_picture_id(buf, vp8.picture_id_offset, vp8.picture_id_wide, pid)
                if seq == self._high_in:
                    self._high_out_pid = pid
            if vp8.tl0picidx >= 0:
                tl0 = (vp8.tl0picidx + self._tl0_offset) & 0xFF
                rewrite_tl0picidx(buf, vp8.tl0picidx_offset, tl0)
                if seq == self._high_in:
                    self._high_out_tl0 = tl0
        self.out_sequence = out_seq
        self.out_timestamp = out_ts
        return FORWARDED

    def _switch(self, view: RtpView, now: float, vp8: Vp8Descriptor | None) -> None:
        seq = view.sequence_number
        self._seq_offset = (self._high_out_seq + 1 - seq) % _SEQ_MOD
        if self._started:
            # At least one tick later than the last timestamp sent, more if time has passed.
            elapsed = max(0.0, now - self._high_out_time)
            step = max(1, int(elapsed * self.clock_rate))
            out_ts = (self._high_out_ts + step) % _TS_MOD
        else:
            out_ts = self._high_out_ts
        self._ts_offset = (out_ts - view.timestamp) % _TS_MOD
        if vp8 is not None and vp8.picture_id >= 0:
            self._pid_offset = (self._high_out_pid + 1 - vp8.picture_id) % _PID_MOD
        if vp8 is not None and vp8.tl0picidx >= 0:
            self._tl0_offset = (self._high_out_tl0 + 1 - vp8.tl0picidx) & 0xFF
        self._first_in = seq
        self._high_in = seq
        if self._started:
            self.switches += 1
        self._started = True
        self.current = view.ssrc
