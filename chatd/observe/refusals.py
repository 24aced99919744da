"""Refusals at a bounded log rate: every one counted in ``/metrics``, a few logged.

A client that is refused (a login past the rate limit, a bad token, a connection over a
cap) can ask again at once, thousands of times a second, and each refusal would be a
log line. :class:`Refusals` counts every refusal in ``chatd_refusals_total{reason}`` and
logs at most :data:`LINES_PER_WINDOW` lines per event and key (the client's address)
per :data:`WINDOW_S` seconds; when a window in which lines were held back ends, one
``log.suppressed`` line says how many::

    refusals = metrics.refusals  # one per server, on the event loop's thread only
    refusals.record(log, "login.rate_limited", key=ip, ip=ip, user=username)
    # -> chatd_refusals_total{reason="login.rate_limited"} += 1, and while this ip's
    #    window has room: log.warning("login.rate_limited", ip=ip, user=username)

The event name is the metric's ``reason`` label, so it must be a constant of the code,
never built from input. The key may come from the wire: it is cut to
:data:`MAX_KEY_CHARS`, and memory stays bounded because at most :data:`MAX_KEYS` windows
are tracked; past that, new keys share one window per event (key ``"*"``).

The summary of an ended window is written at the next :meth:`Refusals.record` or
:meth:`Refusals.flush` (the server calls it periodically), whichever comes first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from prometheus_client import Counter

from chatd.observe.logs import EventLogger

__all__ = [
    "LINES_PER_WINDOW",
    "MAX_KEYS",
    "REFUSAL_EVENTS",
    "WINDOW_S",
    "LogThrottle",
    "Refusals",
]

LINES_PER_WINDOW: Final = 5  # lines per event and key per window: who and why, not each one
WINDOW_S: Final = 60.0  # seconds
MAX_KEYS: Final = 10_000  # (event, key) windows tracked: about 2 MB at most
MAX_KEY_CHARS: Final = 64  # an IPv6 address with a port fits
OVERFLOW_KEY: Final = "*"  # the shared window of the keys past MAX_KEYS
SUMMARY_EVENT: Final = "log.suppressed"
# Refusals chatd records today; /metrics shows them at 0 before the first one.
REFUSAL_EVENTS: Final = (
    "login.failed",
    "login.rate_limited",
    "register.rate_limited",
    "token.refused",
    "connection.refused",
    "connection.too_many",
    "origin.refused",
    "connection.not_tls",
)


class _Window:
    __slots__ = ("log", "logged", "started", "suppressed")

    def __init__(self, log: EventLogger, started: float) -> None:
        self.log = log
        self.started = started
        self.logged = 0
        self.suppressed = 0


class LogThrottle:
    """Decides which lines of a repeated event get written: at most ``lines`` per
    (event, key) per ``window`` seconds.

    Not thread-safe: one owner thread (chatd's event loop).

    Args:
        lines: lines allowed per event and key per window.
        window: seconds; a window starts with the first line of its key.
        max_keys: windows tracked at once, to bound memory.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        lines: int = LINES_PER_WINDOW,
        window: float = WINDOW_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lines < 1 or window <= 0 or max_keys < 1:
            raise ValueError("need lines >= 1, window > 0 and max_keys >= 1")
        self.lines = lines
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        # Insertion order is start order (a new window is always inserted at the end,
        # and every window lasts as long), so ended windows are always at the front.
        self._windows: dict[tuple[str, str], _Window] = {}

    def allow(self, log: EventLogger, event: str, key: str) -> bool:
        """True when this occurrence of ``event`` for ``key`` may be logged; else it is
        counted for the window's ``log.suppressed`` summary line."""
        now = self._clock()
        self._end_windows(now)
        slot = (event, key[:MAX_KEY_CHARS])
        window = self._windows.get(slot)
        if window is None:
            if len(self._windows) >= self.max_keys:
                slot = (event, OVERFLOW_KEY)
                window = self._windows.get(slot)
            if window is None:
                window = self._windows[slot] = _Window(log, now)
        if window.logged < self.lines:
            window.logged += 1
            return True
        window.suppressed += 1
        return False

    def flush(self) -> None:
        """Write the summary lines of the windows that have ended, and forget them."""
        self._end_windows(self._clock())

    def _end_windows(self, now: float) -> None:
        windows = self._windows
        while windows:
            slot, window = next(iter(windows.items()))
            if now - window.started < self.window:
                return
            del windows[slot]
            if window.suppressed:
                event, key = slot
                window.log.warning(SUMMARY_EVENT, of=event, key=key,
                                   suppressed=window.suppressed, logged=window.logged,
                                   window_s=self.window)


class Refusals:
    """Counts every refusal by reason and logs them at a bounded rate.

    Args:
        counter: a Counter with one label, ``reason`` (``Metrics.refusals_total``).
        throttle: the line budget; the default allows :data:`LINES_PER_WINDOW` per
            :data:`WINDOW_S` seconds per event and key.
    """

    def __init__(self, counter: Counter, throttle: LogThrottle | None = None) -> None:
        self._counter = counter
        self._throttle = throttle if throttle is not None else LogThrottle()
        for event in REFUSAL_EVENTS:
            counter.labels(event)  # export zeros before the first refusal

    def record(
        self,
        log: EventLogger,
        event: str,
        /,
        *,
        key: str,
        level: int = logging.WARNING,
        **fields: object,
    ) -> None:
        """Count a refusal as ``reason=event``; log ``event`` with ``fields`` at
        ``level`` unless ``key`` (the client's address) used up its window's lines.

        Args:
            log: the caller's logger: the line names the caller's module.
            event: a constant dotted event name (it is the metric's label value).
            key: who is refused, usually the client IP.
            level: a ``logging`` level.
            fields: the line's fields, as for :class:`EventLogger`.
        """
        self._counter.labels(event).inc()
        if self._throttle.allow(log, event, key):
            log.log(level, event, **fields)

    def flush(self) -> None:
        """Write the summaries of ended windows (call it every few seconds)."""
        self._throttle.flush()
