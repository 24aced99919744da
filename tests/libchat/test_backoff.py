"""Backoff: full jitter under a growing, capped ceiling; reset by a lasting connection."""

from __future__ import annotations

import random

import pytest

from libchat.backoff import Backoff


def make(seed: int = 7, **kwargs: float) -> Backoff:
    return Backoff(rng=random.Random(seed), **kwargs)


def configured(kwargs: dict[str, float]) -> Backoff:
    return Backoff(rng=random.Random(7), **kwargs)


def test_delays_stay_under_a_doubling_ceiling() -> None:
    backoff = make(base=0.5, cap=60.0)
    for attempt in range(12):
        ceiling = min(60.0, 0.5 * 2**attempt)
        assert backoff.ceiling() == ceiling
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
    assert backoff.attempt == 12
    assert backoff.ceiling() == 60.0


def test_full_jitter_draws_from_the_whole_window() -> None:
    backoff = make(seed=1, base=1.0, cap=1.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays) < 0.1
    assert max(delays) > 0.9


def test_same_seed_same_delays() -> None:
    first = make(seed=42)
    second = make(seed=42)
    assert [first.next_delay() for _ in range(20)] == [second.next_delay() for _ in range(20)]
    assert [make(seed=1).next_delay() for _ in range(3)] != [
        make(seed=2).next_delay() for _ in range(3)
    ]


def test_huge_attempt_counts_neither_overflow_nor_exceed_the_cap() -> None:
    backoff = make(base=1e10, cap=1e300)
    backoff._attempt = 10**6  # as if it had failed for a very long time
    assert backoff.ceiling() == 1e300
    assert 0.0 <= backoff.next_delay() <= 1e300
    small = make(base=0.5, cap=60.0)
    small._attempt = 5000
    assert small.ceiling() == 60.0


def test_a_connection_that_lasted_resets_the_count() -> None:
    backoff = make(reset_after=30.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.connected(now=100.0)
    backoff.disconnected(now=130.0)
    assert backoff.attempt == 0
    assert backoff.ceiling() == 0.5


def test_a_short_connection_keeps_the_delays_growing() -> None:
    backoff = make(reset_after=30.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.connected(now=100.0)
    backoff.disconnected(now=129.9)
    assert backoff.attempt == 5


def test_disconnect_without_connect_changes_nothing() -> None:
    backoff = make()
    backoff.next_delay()
    backoff.disconnected(now=1000.0)
    assert backoff.attempt == 1
    # the same up-time is not counted twice
    backoff.connected(now=0.0)
    backoff.disconnected(now=10.0)
    backoff.disconnected(now=1000.0)
    assert backoff.attempt == 1


def test_reset() -> None:
    backoff = make()
    backoff.next_delay()
    backoff.connected(now=0.0)
    backoff.reset()
    assert backoff.attempt == 0
    backoff.disconnected(now=1000.0)
    assert backoff.attempt == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0.0}, {"base": -1.0}, {"base": 2.0, "cap": 1.0}, {"reset_after": -1.0}],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        configured(kwargs)
