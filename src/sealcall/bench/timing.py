"""Side-by-side timing: alternate a subject and its baseline so both see the same machine state."""

import time
from collections.abc import Callable


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Microseconds per call of ``fn`` over one batch of ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def side_by_side(
    subject: Callable[[], object],
    baseline: Callable[[], object],
    number: int,
    rounds: int,
    prepare: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Best-of-``rounds`` microseconds per call for ``subject`` and ``baseline``, alternated.

    ``prepare`` runs untimed before each round (to make fresh inputs for consuming benchmarks).
    """
    best_subject = best_baseline = float("inf")
    for _ in range(rounds):
        if prepare is not None:
            prepare()
        best_baseline = min(best_baseline, per_call_us(baseline, number))
        best_subject = min(best_subject, per_call_us(subject, number))
    return best_subject, best_baseline
