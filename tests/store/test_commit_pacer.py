"""The SQLite writer's group-commit pacing: a pause only when it gathers writes.

The clock is passed in; nothing sleeps.
"""

from __future__ import annotations

import pytest

from chatd.store.sqlite.writer import CommitPacer

INTERVAL = 0.005


def test_a_first_write_commits_at_once() -> None:
    assert CommitPacer(INTERVAL).wait(now=100.0) == 0.0


def test_at_low_load_no_write_waits_behind_the_previous_commit() -> None:
    # 20 exchanges a second, each three writes a millisecond apart (message, delivered,
    # read): the next write always starts at once, even 1 ms after a commit started.
    pacer = CommitPacer(INTERVAL)
    now = 100.0
    for _ in range(200):
        for offset in (0.0, 0.001, 0.002):
            assert pacer.wait(now + offset) == 0.0
            pacer.started(now + offset, 1)
        now += 0.05


def test_under_load_a_transaction_waits_out_the_interval_to_gather() -> None:
    # 2,000 writes a second: every transaction starts 5 ms after the previous one.
    pacer = CommitPacer(INTERVAL)
    now = 100.0
    for _ in range(100):
        now += pacer.wait(now)
        pacer.started(now, 10)
        now += 0.001  # the commit took 1 ms; the next write is already queued
    assert pacer.rate == pytest.approx(2000, rel=0.05)
    assert pacer.wait(now) == pytest.approx(INTERVAL - 0.001)


def test_after_a_quiet_spell_the_first_write_commits_at_once_again() -> None:
    pacer = CommitPacer(INTERVAL)
    now = 100.0
    for _ in range(100):
        pacer.started(now, 10)
        now += INTERVAL
    assert pacer.wait(now - 0.004) > 0
    pacer.started(now, 10)
    assert pacer.wait(now + 1.0) == 0.0  # a second later the rate has decayed away


def test_an_interval_of_zero_never_waits() -> None:
    pacer = CommitPacer(0.0)
    for n in range(100):
        pacer.started(100.0 + n * 0.0001, 50)
    assert pacer.wait(100.01) == 0.0
