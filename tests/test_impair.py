"""The user-space impairment model and its hook on one aiortc connection's ICE sockets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealcall.bench.impair import Impairer, Impairment, impair_connection

from media_helpers import av_call, connect, until


def test_impairment_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError, match="loss"):
        Impairment(loss=1.5)
    with pytest.raises(ValueError, match="jitter"):
        Impairment(delay_ms=10, jitter_ms=20)
    with pytest.raises(ValueError, match=">= 0"):
        Impairment(delay_ms=-1)


def test_loss_share_follows_the_setting_and_is_repeatable() -> None:
    runs = []
    for _ in range(2):
        impairer = Impairer(Impairment(loss=0.2), seed=7)
        runs.append([impairer.decide(i * 0.02) for i in range(5000)])
        assert 0.17 < impairer.dropped / 5000 < 0.23
        assert impairer.passed + impairer.dropped == 5000
    assert runs[0] == runs[1]


def test_outage_drops_everything_until_lifted() -> None:
    impairer = Impairer()
    impairer.outage = True
    assert [impairer.decide(t) for t in range(10)] == [None] * 10
    impairer.outage = False
    assert impairer.decide(10.0) == 10.0


@given(
    delay=st.floats(0, 500),
    jitter_share=st.floats(0, 1),
    keep_order=st.booleans(),
    gaps=st.lists(st.floats(0, 0.1), min_size=1, max_size=50),
)
def test_delay_stays_within_its_jitter_and_order_is_kept_when_asked(
    delay: float, jitter_share: float, keep_order: bool, gaps: list[float]
) -> None:
    spec = Impairment(delay_ms=delay, jitter_ms=delay * jitter_share, keep_order=keep_order)
    impairer = Impairer(spec, seed=1)
    now, last = 0.0, float("-inf")
    for gap in gaps:
        now += gap
        at = impairer.decide(now)
        assert at is not None
        if keep_order:
            # Strictly later: timers due at the same moment run in no set order (a heap).
            assert at > last
            last = at
        else:
            assert now + (spec.delay_ms - spec.jitter_ms) / 1000 - 1e-9 <= at
            assert at <= now + (spec.delay_ms + spec.jitter_ms) / 1000 + 1e-9


async def test_an_outage_on_one_connection_stops_its_media_and_lifting_it_brings_it_back() -> None:
    a, b = av_call()
    try:
        await connect(a, b)
        inbound = Impairer(seed=3)
        assert impair_connection(b.pc, inbound=inbound) >= 1
        await until(lambda: b.counters and b.counter("video").frames > 5)
        inbound.outage = True
        await until(lambda: inbound.dropped > 20)
        stalled = b.counter("video").frames
        dropped = inbound.dropped
        await until(lambda: inbound.dropped > dropped + 20)
        assert b.counter("video").frames <= stalled + 1  # one frame may have been in flight
        inbound.outage = False
        await until(lambda: b.counter("video").frames > stalled + 5)
        assert inbound.passed > 0
    finally:
        await a.pc.close()
        await b.close()
