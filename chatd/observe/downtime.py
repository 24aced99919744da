"""Outages of what chatd depends on, logged once when they start and once when they end.

While PostgreSQL is away every query and every reconnect attempt fails, several times a
second; a line (let alone a traceback) for each buries the log. :class:`Downtime` turns
the stream of outcomes into two lines per outage::

    listener = Downtime(log, lost="bus.listener_lost", restored="bus.listener_restored",
                        channel="chat")
    listener.failed(exc)  # first failure: warning bus.listener_lost, error="<first line>"
    listener.failed(exc)  # later ones: only counted
    listener.ok()         # back: info bus.listener_restored, down_s=12.3, attempts=9
    listener.ok()         # still fine: nothing

Not thread-safe: one owner thread (chatd's event loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from chatd.observe.logs import EventLogger

__all__ = ["MAX_REASON_CHARS", "Downtime", "reason"]

MAX_REASON_CHARS: Final = 200  # the reason of a lost line: the gist, never a traceback


def reason(error: BaseException | str) -> str:
    """The first line of an error, cut to :data:`MAX_REASON_CHARS` characters (libpq's
    messages run on for lines of hints)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= MAX_REASON_CHARS else first[:MAX_REASON_CHARS] + "..."


class Downtime:
    """Whether something is down, and the two log lines of each outage.

    Args:
        log: where the lines go.
        lost: the event of the first failure (a warning, with ``error``).
        restored: the event of the first success after failures (info, with ``down_s``
            and ``attempts``: the tries that failed meanwhile, the first one included;
            for a connection, the loss and each reconnect that failed).
        clock: monotonic seconds (tests pass a fake one).
        fields: written on both lines (e.g. ``channel="chat"``).
    """

    def __init__(
        self,
        log: EventLogger,
        *,
        lost: str,
        restored: str,
        clock: Callable[[], float] = time.monotonic,
        **fields: object,
    ) -> None:
        self._log = log
        self._lost = lost
        self._restored = restored
        self._clock = clock
        self._fields = fields
        self._since: float | None = None  # when the outage began; None while up
        self.attempts = 0  # failed tries of the current outage

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException | str) -> None:
        """Count a failure; the first one of an outage is logged."""
        self.attempts += 1
        if self._since is None:
            self._since = self._clock()
            self._log.warning(self._lost, error=reason(error), **self._fields)

    def ok(self) -> None:
        """A success: ends the outage, if there is one, with its line."""
        if self._since is None:
            return
        down_s = round(self._clock() - self._since, 3)
        self._log.info(self._restored, down_s=down_s, attempts=self.attempts, **self._fields)
        self._since = None
        self.attempts = 0
