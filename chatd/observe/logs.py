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

An unexpected exception is an error event, ``log.exception("http.handler_failed")``:
one line with ``exc_type``, ``exc_message``, the stack as a ``traceback`` field and the
request it happened in (:mod:`chatd.observe.context`: route, connection, the peer's
network, the user); with ``--sentry-dsn`` it also goes to the error tracker
(:mod:`chatd.observe.errors`).

Never pass message bodies, passwords or tokens. As a safety net the formatter
(:mod:`chatd.observe.logformat`) redacts secret-named fields and bounds and escapes
every string it writes; its names are also importable from here.

Repeated refusals (429s, bad tokens) go through :mod:`chatd.observe.refusals`, which
logs a few lines per client and minute and counts every one in ``/metrics``.

Only entry points call :func:`configure_logging`. It starts one writer thread that
formats and writes every line, so logging never blocks the event loop on disk I/O or on
JSON encoding. Once it is configured, :class:`EventLogger` hands its events straight to
that thread (a tuple on a queue, about a microsecond, no ``LogRecord``): chatd logs one
line per message accepted and delivered, and the stock ``logging`` path (record, handler
locks, one ``write`` and ``flush`` per line) was a fifth of the server's CPU. Records of
other libraries still come through ``logging``'s root logger to the same thread, in
order. The thread writes what has queued up as one block per handler, then lingers a
few milliseconds so that a busy server costs at most :data:`WRITES_PER_SECOND` writes.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from chatd.files import PRIVATE_FILE, make_private_dir
from chatd.observe.context import RequestContext, current_fields
from chatd.observe.logformat import (
    MAX_FIELD_CHARS,
    MAX_TRACEBACK_CHARS,
    MAX_TRUSTED_CHARS,
    REDACTED,
    REDACTED_FIELDS,
    JsonFormatter,
    Trusted,
    clean_text,
    dumps_line,
    escape_unprintable,
    format_line,
    format_ts,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_TRACEBACK_CHARS",
    "MAX_TRUSTED_CHARS",
    "REDACTED",
    "REDACTED_FIELDS",
    "DailyLogFileHandler",
    "EventLogger",
    "JsonFormatter",
    "LogHandle",
    "PrivateFileHandler",
    "Trusted",
    "clean_text",
    "configure_logging",
    "escape_unprintable",
]

LOG_FILE_NAME: Final = "chatd.log"
WRITES_PER_SECOND: Final = 50  # the writer thread's most writes per second per handler


# An event handed to the writer thread without a LogRecord:
# (created, level number, event, logger name, fields).
_Event = tuple[float, int, str, str, Mapping[str, object]]
_Item = logging.LogRecord | _Event


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

    def log(self, level: int, event: str, /, **fields: object) -> None:
        """Log at a ``logging`` level chosen at run time."""
        self._log(level, event, fields)

    def exception(
        self,
        event: str,
        /,
        *,
        exc_info: BaseException | None = None,
        context: RequestContext | None = None,
        **fields: object,
    ) -> None:
        """Log an error event at ERROR: the exception being handled (or ``exc_info``)
        as ``exc_type``, ``exc_message`` and a ``traceback`` field, with the request it
        happened in (``context``, by default the current one: see
        :mod:`chatd.observe.context`) unless ``fields`` say otherwise. One JSON line;
        with ``--sentry-dsn`` also an event for the error tracker."""
        where = context.fields() if context is not None else current_fields()
        self._log(logging.ERROR, event, where | fields,
                  exc_info=exc_info if exc_info is not None else True)

    def _log(
        self,
        level: int,
        event: str,
        fields: dict[str, object],
        exc_info: BaseException | bool = False,
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        writer = _writer
        if writer is not None and not exc_info:
            writer.put((time.time(), level, event, self.logger.name, fields))
        else:
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
        make_private_dir(log_dir)
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

    def _open(self) -> io.TextIOWrapper:
        return _open_private(self)

    def reopen(self) -> None:
        """Close the file and open ``chatd.log`` again (creating it if it was moved)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()

    def write_lines(self, text: str) -> None:
        """Append formatted lines (newlines included) with one write, rolling over
        first when midnight has passed."""
        self.acquire()
        try:
            if self.shouldRollover(None):  # type: ignore[arg-type]  # the record is unused
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(text)
            self.stream.flush()
        finally:
            self.release()


class PrivateFileHandler(logging.FileHandler):
    """A plain appending file handler whose file, when it creates it, is 0600."""

    def _open(self) -> io.TextIOWrapper:
        return _open_private(self)


def _open_private(handler: logging.FileHandler) -> io.TextIOWrapper:
    """What ``FileHandler._open`` does, but a new file gets mode 0600 whatever the umask."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(handler.baseFilename, flags, PRIVATE_FILE)
    return open(fd, "a", encoding=handler.encoding, errors=handler.errors)


class _StreamLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines to a stream (stderr), written as blocks like :class:`DailyLogFileHandler`."""

    def write_lines(self, text: str) -> None:
        self.acquire()
        try:
            self.stream.write(text)
            self.stream.flush()
        finally:
            self.release()


_LineHandler = DailyLogFileHandler | _StreamLines


class _LineWriter:
    """The thread that formats every queued record and event and writes them out."""

    _STOP: Final = None

    def __init__(self, handlers: list[_LineHandler]) -> None:
        self.handlers = handlers
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.put = self.queue.put
        self._formatter = JsonFormatter()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatd-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write out everything queued so far, then end the thread."""
        self._closing.set()
        self.queue.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        linger = 1 / WRITES_PER_SECOND
        while True:
            items = [self.queue.get()]
            while True:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = self._STOP in items
            self._write([item for item in items if item is not None])
            if stop:
                return
            self._closing.wait(linger)  # let a busy server's lines gather into one write

    def _write(self, items: list[_Item]) -> None:
        if not items:
            return
        lines = [self._format(item) for item in items]
        lines.append("")
        text = "\n".join(lines)
        for handler in self.handlers:
            try:
                handler.write_lines(text)
            except Exception as exc:  # a full disk must not kill the writer
                print(f"chatd: cannot write {len(items)} log lines: {exc!r}", file=sys.stderr)

    def _format(self, item: _Item) -> str:
        try:
            if isinstance(item, logging.LogRecord):
                return self._formatter.format(item)
            created, level, event, logger_name, fields = item
            return format_line(created, logging.getLevelName(level), event, logger_name, fields)
        except Exception as exc:  # a record that cannot be formatted still leaves a trace
            return dumps_line({"ts": format_ts(time.time()), "level": "error",
                           "event": "log.unformattable", "error": repr(exc)})


# The writer of the installed configuration, for EventLogger's direct path.
_writer: _LineWriter | None = None


class _HandOverHandler(logging.handlers.QueueHandler):
    """Puts records on the writer's queue as they are: the writer thread formats them.
    (The stock QueueHandler formats on the caller's thread, to make records picklable for
    other processes; ours stay in this one.)"""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class LogHandle:
    """What :func:`configure_logging` installed; lets the entry point reopen or undo it."""

    def __init__(
        self,
        logger: logging.Logger,
        queue_handler: logging.handlers.QueueHandler,
        writer: _LineWriter,
        file_handler: DailyLogFileHandler | None,
        previous_level: int,
    ) -> None:
        self._logger = logger
        self._queue_handler = queue_handler
        self._writer = writer
        self.file_handler = file_handler
        self._previous_level = previous_level
        self._closed = False

    def reopen(self) -> None:
        """Reopen the log file (wire SIGHUP here after external logrotate)."""
        if self.file_handler is not None and not self._closed:
            self.file_handler.reopen()

    def close(self) -> None:
        """Write out queued lines, remove the handlers and close the file. Idempotent."""
        global _writer
        if self._closed:
            return
        self._closed = True
        if _writer is self._writer:
            _writer = None
        self._logger.removeHandler(self._queue_handler)
        self._writer.stop()  # writes out the queue first
        for handler in self._writer.handlers:
            handler.close()
        self._logger.setLevel(self._previous_level)


def configure_logging(
    log_dir: Path | None,
    *,
    keep_days: int = 30,
    stderr: bool = False,
    level: int = logging.INFO,
) -> LogHandle:
    """Send every log record (root logger) and every :class:`EventLogger` event as a JSON
    line to ``<log_dir>/chatd.log``.

    Args:
        log_dir: where ``chatd.log`` lives (created if missing); ``None`` logs to stderr
            only.
        keep_days: rotated daily files to keep.
        stderr: also write the JSON lines to stderr (foreground runs).
        level: the root logger's level.

    Returns:
        A :class:`LogHandle`; call ``reopen()`` on SIGHUP and ``close()`` at exit.
    """
    global _writer
    handlers: list[_LineHandler] = []
    file_handler = None
    if log_dir is not None:
        file_handler = DailyLogFileHandler(log_dir, keep_days=keep_days)
        handlers.append(file_handler)
    if stderr or log_dir is None:
        handlers.append(_StreamLines(sys.stderr))

    # The logging HOWTO's switches for what no line uses: caller lookup, thread and
    # process names. They cost the event loop a few microseconds per record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    writer = _LineWriter(handlers)
    queue_handler = _HandOverHandler(writer.queue)

    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(level)
    root.addHandler(queue_handler)
    writer.start()
    _writer = writer
    return LogHandle(root, queue_handler, writer, file_handler, previous_level)
