"""StallWatch, on a clock the test moves: the waits behind a SQLite writer that finishes
nothing fail after the bound; a writer that finishes transactions is left to its queue.
(tests/faults/test_sqlite_stall.py holds a real lock against a real chatd.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatd.store.base import StoreUnavailable
from chatd.store.sqlite.stall import CHECK_INTERVAL, StallWatch

BOUND = 2.0


class FakeLoop:
    """Just what StallWatch asks of a loop: its time and timers the test fires."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], None], asyncio.TimerHandle]] = []
        self._real = asyncio.new_event_loop()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), self._real)
        self.timers.append((when, callback, handle))
        return handle

    def future(self) -> asyncio.Future[Any]:
        return self._real.create_future()

    def advance(self, seconds: float, step: float = CHECK_INTERVAL / 2) -> None:
        """Move the clock on in small steps, firing each timer when it is due."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            due = [timer for timer in self.timers if timer[0] <= self.now]
            self.timers = [timer for timer in self.timers if timer[0] > self.now]
            for _, callback, handle in due:
                if not handle.cancelled():
                    callback()

    def close(self) -> None:
        self._real.close()


@pytest.fixture
def loop() -> Iterator[FakeLoop]:
    fake = FakeLoop()
    yield fake
    fake.close()


def watch_on(loop: FakeLoop) -> StallWatch:
    return StallWatch(loop, BOUND)  # type: ignore[arg-type]  # the fake has what it uses


def outage_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.getMessage().startswith("store.")]


def test_writes_waiting_on_a_writer_that_finishes_nothing_fail_after_the_bound(
    loop: FakeLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatd.store.sqlite")
    watch = watch_on(loop)
    first, second = loop.future(), loop.future()
    watch.waits(first)
    loop.advance(1.0)
    watch.waits(second)
    loop.advance(BOUND - 1.0 - CHECK_INTERVAL)
    assert not first.done()  # not yet: the bound counts from the first write's queueing
    loop.advance(2 * CHECK_INTERVAL)
    for future in (first, second):  # every wait behind the stalled writer, at once
        assert isinstance(future.exception(), StoreUnavailable)
    assert outage_events(caplog) == ["store.unavailable"]
    assert watch.stalled  # what /healthz reports

    third = loop.future()  # the writer is still stuck: a new write gets its own bound
    watch.waits(third)
    loop.advance(BOUND - CHECK_INTERVAL)
    assert not third.done()
    loop.advance(2 * CHECK_INTERVAL)
    assert isinstance(third.exception(), StoreUnavailable)
    assert outage_events(caplog) == ["store.unavailable"]  # one line per outage

    watch.finished(ok=True)  # a commit at last
    assert outage_events(caplog) == ["store.unavailable", "store.restored"]
    assert not watch.stalled


def test_a_writer_that_finishes_transactions_is_busy_not_stalled(loop: FakeLoop) -> None:
    """A queue longer than the bound is waited out while commits keep coming."""
    watch = watch_on(loop)
    queued = loop.future()
    watch.waits(queued)
    for _ in range(5):  # 5 s of commits ahead of it, one every second
        loop.advance(1.0)
        watch.finished(ok=True)
    assert not queued.done()
    queued.set_result("committed")
    loop.advance(BOUND * 2)
    assert queued.result() == "committed"
    assert loop.timers == []  # nothing waits: no timer either


def test_transactions_that_fail_at_once_are_answers_but_no_end_of_the_outage(
    loop: FakeLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk: each transaction fails quickly. Its writes have their answers (no
    stall), and an outage already logged is not declared over by a failure."""
    caplog.set_level(logging.INFO, logger="chatd.store.sqlite")
    watch = watch_on(loop)
    stalled = loop.future()
    watch.waits(stalled)
    loop.advance(BOUND + CHECK_INTERVAL)
    assert stalled.done()
    waiting = loop.future()
    watch.waits(waiting)
    for _ in range(4):
        loop.advance(1.0)
        watch.finished(ok=False)
    assert not waiting.done()
    assert outage_events(caplog) == ["store.unavailable"]
    assert watch.stalled
    waiting.cancel()


def test_a_closed_watch_leaves_no_timer(loop: FakeLoop) -> None:
    watch = watch_on(loop)
    watch.waits(loop.future())
    [(_, _, handle)] = loop.timers
    watch.close()
    assert handle.cancelled()
