"""JSON-lines logging for chatd: one event per line, daily files, reopen on SIGHUP.

Every line is one JSON object::

    {"ts": "2026-11-26T10:53:00.123Z", "level": "info", "event": "connection.open",
     "logger": "chatd.net", "conn_id": 17, "peer": "127.0.0.1:50412"}

The log message *is* the event name (dotted, lower case, ``noun.verb``); details go in
keyword fields, written flat at the top level. Log through :class:`EventLogger`::

    log = EventLogger(logging.getLogger(__name__))
    log.info("connection.open", conn_id=17, peer="127.0.0.1:50412")

Records from other libraries (plain ``logger.info("text %s", x)``) come out the same
way, with the formatted text as ``event``.

Never pass message bodies, passwords or tokens. As a safety net the formatter writes
``"[redacted]"`` instead of the value of any field named ``password``, ``token``, ``body``
or ``authorization`` (case-insensitive, also as a ``_suffix`` such as ``refresh_token``,
and inside nested dicts).

Only entry points call :func:`configure_logging`. Formatting happens on the caller's
thread; file writes happen on a listener thread, so logging never blocks the event loop
on disk I/O.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import orjson

__all__ = [
    "REDACTED",
    "REDACTED_FIELDS",
    "DailyLogFileHandler",
    "EventLogger",
    "JsonFormatter",
    "LogHandle",
    "configure_logging",
]

LOG_FILE_NAME: Final = "chatd.log"
REDACTED_FIELDS: Final = frozenset({"password", "token", "body", "authorization"})
REDACTED: Final = "[redacted]"
_CORE_KEYS: Final = frozenset({"ts", "level", "event", "logger", "traceback", "stack"})
_DUMPS_OPTIONS: Final = orjson.OPT_NON_STR_KEYS


@functools.lru_cache(maxsize=512)
def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in REDACTED_FIELDS or any(
        lowered.endswith("_" + secret) for secret in REDACTED_FIELDS
    )


def _redact(value: object) -> object:
    """Replace secret-named entries of nested mappings; other values pass through."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _is_secret(str(key)) else _redact(item) for key, item in value.items()
        }
    return value


@functools.lru_cache(maxsize=4)
def _second_prefix(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _format_ts(created: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-26T10:53:00.123Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{_second_prefix(seconds)}.{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newline; the handler adds it).

    Keys: ``ts``, ``level``, ``event``, ``logger``, then the record's ``fields`` (from
    :class:`EventLogger`, or ``extra={"fields": {...}}``) flattened, then ``traceback``
    when the record carries ``exc_info``. A field whose name clashes with one of those
    keys is written as ``field.<name>``. Values orjson cannot encode are written as
    ``str(value)``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _format_ts(record.created),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for name, value in fields.items():
                key = str(name)
                if key in _CORE_KEYS:
                    key = "field." + key
                line[key] = REDACTED if _is_secret(key) else _redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _dumps(line)


def _dumps(line: dict[str, object]) -> str:
    try:
        return orjson.dumps(line, default=str, option=_DUMPS_OPTIONS).decode()
    except TypeError:
        # orjson refuses some values without calling `default` (e.g. ints over 64 bits):
        # fall back to strings for every field rather than lose the line.
        safe = {key: value if isinstance(value, str) else str(value) for key, value in line.items()}
        return orjson.dumps(safe).decode()


class EventLogger:
    """Logs named events with keyword fields: ``log.info("login.failed", ip=ip)``.

    Fields must not include message bodies, passwords or tokens (see the module doc).
    """

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def debug(self, event: str, /, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, /, **fields: object) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, /, **fields: object) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, /, **fields: object) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, /, **fields: object) -> None:
        """Log at ERROR with the exception being handled as a ``traceback`` field."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def _log(
        self, level: int, event: str, fields: dict[str, object], exc_info: bool = False
    ) -> None:
        if self.logger.isEnabledFor(level):
            # stacklevel 3: the record points at our caller, not at this adapter.
            self.logger.log(level, event, extra={"fields": fields}, exc_info=exc_info, stacklevel=3)


class DailyLogFileHandler(logging.handlers.TimedRotatingFileHandler):
    """Appends to ``<log_dir>/chatd.log``, rotated at UTC midnight to
    ``chatd.log.YYYY-MM-DD``, keeping ``keep_days`` old files.

    :meth:`reopen` supports external rotation (logrotate moves the file, then SIGHUP).
    Tests can force a rotation with :meth:`doRollover`, or by setting ``rolloverAt`` in
    the past and emitting a record.
    """

    def __init__(self, log_dir: Path, *, keep_days: int = 30) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            log_dir / LOG_FILE_NAME,
            when="midnight",
            utc=True,
            backupCount=keep_days,
            encoding="utf-8",
        )

    @property
    def path(self) -> Path:
        return Path(self.baseFilename)

    def reopen(self) -> None:
        """Close the file and open ``chatd.log`` again (creating it if it was moved)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


class _HandOverHandler(logging.handlers.QueueHandler):
    """Puts records on the queue as they are: the listener thread formats them, so the
    event loop pays only for building the record. (The stock QueueHandler formats on the
    caller's thread, to make records picklable for other processes; ours stay in this
    one.)"""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class LogHandle:
    """What :func:`configure_logging` installed; lets the entry point reopen or undo it."""

    def __init__(
        self,
        logger: logging.Logger,
        queue_handler: logging.handlers.QueueHandler,
        listener: logging.handlers.QueueListener,
        file_handler: DailyLogFileHandler | None,
        previous_level: int,
    ) -> None:
        self._logger = logger
        self._queue_handler = queue_handler
        self._listener = listener
        self.file_handler = file_handler
        self._previous_level = previous_level
        self._closed = False

    def reopen(self) -> None:
        """Reopen the log file (wire SIGHUP here after external logrotate)."""
        if self.file_handler is not None and not self._closed:
            self.file_handler.reopen()

    def close(self) -> None:
        """Write out queued lines, remove the handlers and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._logger.removeHandler(self._queue_handler)
        self._listener.stop()  # drains the queue first
        for handler in self._listener.handlers:
            handler.close()
        self._logger.setLevel(self._previous_level)


def configure_logging(
    log_dir: Path | None,
    *,
    keep_days: int = 30,
    stderr: bool = False,
    level: int = logging.INFO,
) -> LogHandle:
    """Send every log record (root logger) as a JSON line to ``<log_dir>/chatd.log``.

    Args:
        log_dir: where ``chatd.log`` lives (created if missing); ``None`` logs to stderr
            only.
        keep_days: rotated daily files to keep.
        stderr: also write the JSON lines to stderr (foreground runs).
        level: the root logger's level.

    Returns:
        A :class:`LogHandle`; call ``reopen()`` on SIGHUP and ``close()`` at exit.
    """
    handlers: list[logging.Handler] = []
    file_handler = None
    if log_dir is not None:
        file_handler = DailyLogFileHandler(log_dir, keep_days=keep_days)
        handlers.append(file_handler)
    if stderr or log_dir is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = JsonFormatter()
    for handler in handlers:
        handler.setFormatter(formatter)  # formatting happens on the listener thread

    # The logging HOWTO's switches for what no line uses: caller lookup, thread and
    # process names. They cost the event loop a few microseconds per record.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = _HandOverHandler(records)
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=False)

    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(level)
    root.addHandler(queue_handler)
    listener.start()
    return LogHandle(root, queue_handler, listener, file_handler, previous_level)
