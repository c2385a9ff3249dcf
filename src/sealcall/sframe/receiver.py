"""The receiving side of SFrame: keys by KID, a replay window per KID, expiry, the ratchet."""

from dataclasses import dataclass, field

from .errors import UnknownKeyError
from .header import BytesLike, decode_header
from .keys import KeyContext, ratchet_base_key
from .replay import DEFAULT_REPLAY_WINDOW, ReplayWindow
from .sender import check_ratchet_bits
from .suites import CipherSuite, suite_params


@dataclass
class _Entry:
    context: KeyContext
    window: ReplayWindow
    ratchet_bits: int = 0
    expires_at: float | None = None


@dataclass
class _RatchetChain:
    """The newest known step of one sender's ratcheting key generation."""

    bits: int
    base_key: bytes = field(repr=False)
    kid: int = 0
    # KIDs of the steps still held, oldest first, so that old steps can be forgotten.
    held: list[int] = field(default_factory=list)


class SFrameReceiver:
    """Decrypts frames from any number of senders, each key known by its KID.

    ``replay_window`` bounds how far out of order a frame may arrive. For keys added with
    ``ratchet_bits = R``, a frame whose KID is up to ``max_ratchet_steps`` steps ahead of the newest
    known step derives the next keys on the fly; they are kept only if the frame authenticates,
    and at most ``keep_ratchet_steps`` older steps per generation stay usable for late frames.
    """

    def __init__(
        self,
        suite: int = CipherSuite.AES_128_GCM_SHA256_128,
        *,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        max_ratchet_steps: int = 8,
        keep_ratchet_steps: int = 2,
    ) -> None:
        self._suite = suite_params(suite).suite
        ReplayWindow(replay_window)  # validates the size early
        if max_ratchet_steps < 1 or keep_ratchet_steps < 0:
            raise ValueError("max_ratchet_steps must be >= 1 and keep_ratchet_steps >= 0")
        self._window_size = replay_window
        self._max_steps = max_ratchet_steps
        self._keep_steps = keep_ratchet_steps
        self._keys: dict[int, _Entry] = {}
        self._chains: dict[tuple[int, int], _RatchetChain] = {}

    @property
    def suite(self) -> CipherSuite:
        """The cipher suite in use."""
        return self._suite

    def kids(self) -> list[int]:
        """The KIDs this receiver can decrypt right now."""
        return sorted(self._keys)

    def add_key(self, kid: int, base_key: bytes, *, ratchet_bits: int = 0) -> None:
        """Install ``base_key`` for ``kid``. Re-adding the same key keeps its replay window."""
        check_ratchet_bits(ratchet_bits)
        old = self._keys.get(kid)
        if old is not None and old.context.base_key == bytes(base_key):
            old.expires_at = None
            return
        if old is not None:
            self.remove_key(kid)
        self._keys[kid] = _Entry(
            KeyContext(self._suite, base_key, kid), ReplayWindow(self._window_size), ratchet_bits
        )
        if ratchet_bits:
            self._chains[(ratchet_bits, kid >> ratchet_bits)] = _RatchetChain(
                ratchet_bits, bytes(base_key), kid, [kid]
            )

    def retire_key(self, kid: int, expires_at: float) -> None:
        """Keep ``kid`` usable only until ``expires_at`` (see :meth:`expire`): a grace window."""
        entry = self._keys.get(kid)
        if entry is None:
            raise UnknownKeyError(kid)
        entry.expires_at = expires_at

    def expire(self, now: float) -> list[int]:
        """Remove every retired key whose grace window ended at or before ``now``."""
        gone = [
            k for k, e in self._keys.items() if e.expires_at is not None and e.expires_at <= now
        ]
        for kid in gone:
            self.remove_key(kid)
        return gone

    def next_expiry(self) -> float | None:
        """The earliest time :meth:`expire` has work to do, or None."""
        times = [e.expires_at for e in self._keys.values() if e.expires_at is not None]
        return min(times) if times else None

    def remove_key(self, kid: int) -> None:
        """Forget ``kid`` (for a ratcheting key, its whole generation); unknown KIDs are ignored."""
        entry = self._keys.pop(kid, None)
        if entry is None or not entry.ratchet_bits:
            return
        chain = self._chains.pop((entry.ratchet_bits, kid >> entry.ratchet_bits), None)
        if chain is not None:
            for held in chain.held:
                self._keys.pop(held, None)

    def _ratchet_candidate(self, kid: int) -> tuple[_Entry, _RatchetChain] | None:
        for (bits, generation), chain in self._chains.items():
            if kid >> bits != generation:
                continue
            mask = (1 << bits) - 1
            steps = ((kid & mask) - (chain.kid & mask)) & mask
            if not 0 < steps <= self._max_steps:
                return None
            base_key = chain.base_key
            for _ in range(steps):
                base_key = ratchet_base_key(self._suite, base_key)
            entry = _Entry(
                KeyContext(self._suite, base_key, kid), ReplayWindow(self._window_size), bits
            )
            return entry, chain
        return None

    def _adopt(self, kid: int, entry: _Entry, chain: _RatchetChain) -> None:
        chain.base_key = entry.context.base_key
        chain.kid = kid
        chain.held.append(kid)
        self._keys[kid] = entry
        # At most 2**R - 1 steps may be held, or a new step's KID would collide with an old one.
        limit = min(self._keep_steps + 1, (1 << chain.bits) - 1)
        while len(chain.held) > limit:
            self._keys.pop(chain.held.pop(0), None)

    def decrypt(
        self, metadata: bytes, data: BytesLike, prefix: bytes = b""
    ) -> tuple[int, int, bytes]:
        """Decrypt one SFrame ciphertext: return ``(kid, ctr, prefix || plaintext)``.

        Raises :class:`~sealcall.sframe.errors.HeaderError`, :class:`UnknownKeyError`,
        :class:`~sealcall.sframe.errors.ReplayError` or
        :class:`~sealcall.sframe.errors.AuthenticationError`; no state changes on failure.
        """
        kid, ctr, header_len = decode_header(data)
        entry = self._keys.get(kid)
        chain = None
        if entry is None:
            found = self._ratchet_candidate(kid) if self._chains else None
            if found is None:
                raise UnknownKeyError(kid)
            entry, chain = found
        entry.window.check(kid, ctr)
        plaintext = entry.context.open(
            ctr, bytes(data[:header_len]), metadata, data[header_len:], prefix
        )
        entry.window.accept(ctr)
        if chain is not None:
            self._adopt(kid, entry, chain)
        return kid, ctr, plaintext
