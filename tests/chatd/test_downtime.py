"""Downtime: two log lines per outage, however many failures it counts."""

from __future__ import annotations

import logging

import pytest

from chatd.observe.downtime import MAX_REASON_CHARS, Downtime, reason
from chatd.observe.logs import EventLogger


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, dict[str, object]]]:
    return [(r.levelname.lower(), r.getMessage(), getattr(r, "fields", {}))
            for r in caplog.records if r.name == "chatd.test_downtime"]


def test_an_outage_is_two_lines_with_its_length_and_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    link = Downtime(EventLogger(logging.getLogger("chatd.test_downtime")), lost="x.lost",
                    restored="x.restored", clock=clock, channel="chat")
    link.ok()  # up and fine: nothing to say
    for _ in range(50):
        link.failed(OSError("connection refused\n\tIs the server running?"))
        clock.now += 0.2
    assert link.down and link.attempts == 50
    link.ok()
    link.ok()
    assert not link.down and link.attempts == 0
    assert lines(caplog) == [
        ("warning", "x.lost", {"error": "OSError: connection refused", "channel": "chat"}),
        ("info", "x.restored", {"down_s": 10.0, "attempts": 50, "channel": "chat"}),
    ]
    link.failed("again")  # the next outage has its own lines
    assert lines(caplog)[-1] == ("warning", "x.lost", {"error": "again", "channel": "chat"})


def test_a_reason_is_its_first_line_cut_short() -> None:
    assert reason(ValueError("bad\nmore")) == "ValueError: bad"
    assert reason("") == ""
    long = reason("x" * 1000)
    assert len(long) == MAX_REASON_CHARS + 3 and long.endswith("...")
