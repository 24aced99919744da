"""chatd.timers: many deadlines on one loop timer, run in order, never early, at most
SLACK late; cancelled ones skipped and, past a bound, swept out of the heap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from chatd import timers as timers_mod
from chatd.timers import SLACK, Timers


class FakeLoop:
    """The two things Timers uses of a loop, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    @property
    def armed(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing each loop timer due on the way."""
        while True:
            due = sorted((h for h in self.armed if h.when <= to), key=lambda h: h.when)
            if not due:
                break
            handle = due[0]
            self.now = max(self.now, handle.when)
            handle.cancelled = True
            handle.callback()
        self.now = to


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def make() -> tuple[FakeLoop, Timers]:
    loop = FakeLoop()
    return loop, Timers(cast(asyncio.AbstractEventLoop, loop))


def test_deadlines_run_in_order_never_early_and_at_most_slack_late() -> None:
    loop, timers = make()
    ran: list[tuple[str, float]] = []
    for name, when in (("c", 103.0), ("a", 101.0), ("b", 101.0 + SLACK / 2)):
        timers.call_at(when, lambda n=name: ran.append((n, loop.now)))
    assert len(loop.armed) == 1  # one loop timer for all of them
    loop.advance(101.0 + SLACK / 4)
    assert ran == []
    loop.advance(102.0)
    # a and b share one wake-up, SLACK after a
    assert ran == [("a", 101.0 + SLACK), ("b", 101.0 + SLACK)]
    loop.advance(104.0)
    assert ran[2] == ("c", 103.0 + SLACK)
    assert loop.armed == [] and len(timers) == 0


def test_an_earlier_deadline_rearms_the_loop_timer() -> None:
    loop, timers = make()
    ran: list[str] = []
    timers.call_at(110.0, ran.append, "late")
    timers.call_later(1.0, ran.append, "soon")
    assert [h.when for h in loop.armed] == [101.0 + SLACK]
    loop.advance(102.0)
    assert ran == ["soon"]
    assert [h.when for h in loop.armed] == [110.0 + SLACK]


def test_cancelled_timers_are_skipped_and_do_not_wake_the_loop() -> None:
    loop, timers = make()
    ran: list[str] = []
    first = timers.call_at(101.0, ran.append, "first")
    timers.call_at(105.0, ran.append, "second")
    first.cancel()
    first.cancel()  # twice is once
    assert first.cancelled()
    loop.advance(101.5)  # the wake-up armed for the first finds nothing to run
    assert ran == []
    assert [h.when for h in loop.armed] == [105.0 + SLACK]
    loop.advance(106.0)
    assert ran == ["second"]


def test_a_callback_may_add_and_cancel_timers() -> None:
    loop, timers = make()
    ran: list[str] = []
    later = timers.call_at(101.0 + SLACK / 2, ran.append, "cancelled by the first")

    def first() -> None:
        ran.append("first")
        later.cancel()
        timers.call_at(loop.now, ran.append, "added now")  # due at once: a next wake-up
        timers.call_at(102.0, ran.append, "added later")

    timers.call_at(101.0, first)
    loop.advance(101.0 + SLACK)
    assert ran == ["first"]  # what a callback adds, even for now, waits for a wake-up
    loop.advance(101.0 + 2 * SLACK)
    assert ran == ["first", "added now"]
    loop.advance(103.0)
    assert ran == ["first", "added now", "added later"]


def test_a_callback_that_keeps_re_adding_itself_does_not_hold_the_loop() -> None:
    loop, timers = make()
    runs: list[float] = []

    def again() -> None:
        runs.append(loop.now)
        timers.call_at(loop.now, again)  # always due at once

    timers.call_at(101.0, again)
    loop.advance(101.0 + 3.5 * SLACK)
    assert len(runs) == 3  # once per wake-up, each SLACK apart


def test_a_failing_callback_costs_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    loop, timers = make()
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("a bug")

    timers.call_at(101.0, boom)
    timers.call_at(101.0, ran.append, "next")
    loop.advance(102.0)
    assert ran == ["next"]
    assert "timer.failed" in caplog.text


def test_cancelled_timers_are_swept_once_they_are_half_the_heap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timers_mod, "COMPACT_AT", 4)
    loop, timers = make()
    ran: list[int] = []
    made = [timers.call_at(200.0 + i, ran.append, i) for i in range(10)]
    for timer in made[:5]:
        timer.cancel()
    assert len(timers) == 10  # 5 cancelled of 10: not more than half yet
    made[5].cancel()
    assert len(timers) == 4  # swept: only the live ones stay
    loop.advance(300.0)
    assert ran == [6, 7, 8, 9]
    made[9].cancel()  # after it ran: nothing to count
    assert timers._cancelled == 0


def test_close_forgets_everything() -> None:
    loop, timers = make()
    ran: list[Any] = []
    timers.call_at(101.0, ran.append, 1)
    timers.close()
    timers.close()
    assert loop.armed == [] and len(timers) == 0
    loop.advance(200.0)
    assert ran == []
