"""chatd observability: JSON-lines logging, Prometheus metrics, the health answer."""

from chatd.observe.health import HealthMonitor, disk_used_pct
from chatd.observe.logs import (
    DailyLogFileHandler,
    EventLogger,
    JsonFormatter,
    LogHandle,
    configure_logging,
)
from chatd.observe.metrics import CONTENT_TYPE, Metrics

__all__ = [
    "CONTENT_TYPE",
    "DailyLogFileHandler",
    "EventLogger",
    "HealthMonitor",
    "JsonFormatter",
    "LogHandle",
    "Metrics",
    "configure_logging",
    "disk_used_pct",
]
