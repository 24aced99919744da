"""The ``GET /healthz`` answer, and the disk-usage watch behind it.

The host owns the facts (connection count, whether the store answers, how long the last
commit took) and asks :meth:`HealthMonitor.status` for the HTTP status and body::

    code, health = monitor.status(connections=n, db_ok=ok, last_commit_seconds=s)
    respond(code, encode_body(health))

Status, as ``protocol/schemas/health.json`` defines it:

- ``ok``: 200, all well.
- ``degraded``: 200, the server works but needs attention: disk use at or above
  ``alert_pct``, or the last commit took ``slow_commit_s`` or longer.
- store unusable (``db_ok=False``): 503 with status ``degraded`` and ``db: "error"``.

Crossing a threshold logs one line, not one per request: ``disk.usage_high`` (warning)
when disk use reaches ``alert_pct`` and ``disk.usage_ok`` (info) when it drops below
again; likewise ``store.commit_slow`` / ``store.commit_ok``, and ``disk.check_failed``
when the file system cannot be measured (then reported as 100 % used).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from chatd.observe.logs import EventLogger
from libchat import __version__
from libchat.limits import PROTOCOL_VERSION
from libchat.protocol import Health

__all__ = ["HealthMonitor", "disk_used_pct"]

OK: Final = "ok"
DEGRADED: Final = "degraded"
HTTP_OK: Final = 200
HTTP_UNAVAILABLE: Final = 503
# Reported when the file system cannot be measured: assume the worst so alerts fire.
UNKNOWN_DISK_PCT: Final = 100.0


def disk_used_pct(path: Path) -> float:
    """Percentage (0..100) of the file system holding ``path`` that is in use."""
    usage = shutil.disk_usage(path)
    if usage.total <= 0:
        return UNKNOWN_DISK_PCT
    return 100.0 * usage.used / usage.total


class _Edge:
    """Remembers whether a condition held, so only its changes get logged."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False

    def update(self, active: bool) -> bool:
        """Set the condition; True when it changed."""
        changed = active != self.active
        self.active = active
        return changed


class HealthMonitor:
    """Builds health answers and logs threshold crossings once.

    Args:
        data_dir: the directory whose file system is watched.
        alert_pct: disk use (percent) at or above which health is ``degraded``.
        slow_commit_s: a last commit this long or longer makes health ``degraded``.
        logger: where threshold crossings go (default ``chatd.observe.health``).
        disk_usage: measures disk use in percent for a path (tests inject a fake).
        clock: monotonic seconds, for ``uptime_s`` (tests inject a fake).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        alert_pct: float = 80.0,
        slow_commit_s: float = 1.0,
        logger: logging.Logger | None = None,
        disk_usage: Callable[[Path], float] = disk_used_pct,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = data_dir
        self.alert_pct = alert_pct
        self.slow_commit_s = slow_commit_s
        self._log = EventLogger(logger or logging.getLogger(__name__))
        self._disk_usage = disk_usage
        self._clock = clock
        self._started = clock()
        self._disk_high = _Edge()
        self._disk_failed = _Edge()
        self._commit_slow = _Edge()
        self.last_commit_seconds: float | None = None  # the latest commit's duration

    def commit_seen(self, seconds: float) -> None:
        """The store committed a batch of messages in ``seconds`` (see :meth:`status`)."""
        self.last_commit_seconds = seconds

    def disk_pct(self) -> float:
        """Current disk use in percent (0..100); logs when it crosses ``alert_pct``.

        Also suits a periodic task that feeds ``Metrics.disk_used_ratio``.
        """
        try:
            pct = min(100.0, max(0.0, self._disk_usage(self.data_dir)))
            failed = False
        except OSError as exc:
            pct = UNKNOWN_DISK_PCT
            failed = True
            if not self._disk_failed.active:
                self._log.warning("disk.check_failed", path=self.data_dir, error=str(exc))
        self._disk_failed.update(failed)
        if self._disk_high.update(pct >= self.alert_pct):
            if self._disk_high.active:
                self._log.warning(
                    "disk.usage_high", used_pct=round(pct, 1), alert_pct=self.alert_pct
                )
            else:
                self._log.info("disk.usage_ok", used_pct=round(pct, 1), alert_pct=self.alert_pct)
        return pct

    def status(
        self, connections: int, db_ok: bool, last_commit_seconds: float | None
    ) -> tuple[int, Health]:
        """The HTTP status code (200 or 503) and body for ``GET /healthz``."""
        pct = self.disk_pct()
        slow = last_commit_seconds is not None and last_commit_seconds >= self.slow_commit_s
        if self._commit_slow.update(slow):
            if slow:
                self._log.warning(
                    "store.commit_slow",
                    commit_s=last_commit_seconds,
                    slow_commit_s=self.slow_commit_s,
                )
            else:
                self._log.info("store.commit_ok", commit_s=last_commit_seconds)
        healthy = db_ok and not slow and not self._disk_high.active
        health = Health(
            status=OK if healthy else DEGRADED,
            version=__version__,
            protocol=PROTOCOL_VERSION,
            uptime_s=round(max(0.0, self._clock() - self._started), 3),
            connections=connections,
            db=OK if db_ok else "error",
            disk_used_pct=round(pct, 2),
        )
        return (HTTP_OK if db_ok else HTTP_UNAVAILABLE), health
