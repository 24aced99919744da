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

Field values may come from the wire (a username, a client id, an exception message
about a request), so the formatter bounds and escapes every string it writes, and no
call site can forget to (:func:`clean_text`):

- a string field keeps its first :data:`MAX_FIELD_CHARS` characters, then says how many
  were cut: ``"xxxx...[65408 more chars]"``. A value wrapped in :class:`Trusted`, a
  ``pathlib`` path (chatd's own files), the event of another library's record and the
  logger name keep up to :data:`MAX_TRUSTED_CHARS`; a traceback up to
  :data:`MAX_TRACEBACK_CHARS`. Lists keep :data:`MAX_ITEMS` items; other types are
  written as ``str(value)`` under the same rules.
- every character ``str.isprintable()`` rejects (ESC and the other C0 and C1 controls,
  DEL, bidi overrides, lone surrogates) is written as a Python escape, ``\\x1b`` or
  ``\\u202e``, so a decoded value (``jq -r``) cannot drive a terminal either; tracebacks
  keep their newlines.

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

import functools
import io
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Final

import orjson

from chatd.files import PRIVATE_FILE, make_private_dir

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
REDACTED_FIELDS: Final = frozenset({"password", "token", "body", "authorization"})
REDACTED: Final = "[redacted]"
_CORE_KEYS: Final = frozenset({"ts", "level", "event", "logger", "traceback", "stack"})
_DUMPS_OPTIONS: Final = orjson.OPT_NON_STR_KEYS
WRITES_PER_SECOND: Final = 50  # the writer thread's most writes per second per handler


MAX_FIELD_CHARS: Final = 128  # a string from the wire: any valid name, id or address fits
MAX_TRUSTED_CHARS: Final = 4096  # chatd's own text: paths, startup errors, library messages
MAX_TRACEBACK_CHARS: Final = 16 * 1024  # a deep stack fits; a 64 KiB request in it does not
MAX_ITEMS: Final = 32  # items of a list or tuple field


class Trusted(str):
    """A field value chatd made or the operator gave, not a client (a configured path,
    a startup error): logged up to :data:`MAX_TRUSTED_CHARS` characters instead of
    :data:`MAX_FIELD_CHARS`. Its control characters are escaped all the same::

        log.error("server.refused", reason=Trusted(str(exc)))
    """

    __slots__ = ()


def clean_text(text: str, limit: int = MAX_FIELD_CHARS, *, keep: str = "") -> str:
    """``text`` made safe for a log line or a terminal.

    Args:
        text: any string, e.g. a username a client sent.
        limit: characters of ``text`` to keep; the rest is replaced by
            ``...[N more chars]``.
        keep: unprintable characters to leave as they are (``"\\n"`` for tracebacks).

    Returns:
        At most ``limit`` characters of ``text``, each one that ``str.isprintable()``
        rejects (and ``keep`` does not hold) written as ``\\xNN``, ``\\uNNNN`` or
        ``\\UNNNNNNNN``.
    """
    cut = len(text) - limit
    if cut > 0:
        return f"{escape_unprintable(text[:limit], keep)}...[{cut} more chars]"
    return escape_unprintable(text, keep)


def escape_unprintable(text: str, keep: str = "") -> str:
    """``text`` with each character that ``str.isprintable()`` rejects, other than those
    in ``keep``, written as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``: nothing left
    that a terminal obeys (ESC, CSI, BEL, CR, bidi overrides)."""
    if text.isprintable():  # a fast scan in C: most text is printable
        return text
    return "".join(char if char.isprintable() or char in keep else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


@functools.lru_cache(maxsize=512)
def _field_key(name: object, limit: int = MAX_FIELD_CHARS) -> tuple[str, bool]:
    """A field name as written (cleaned, ``field.``-prefixed if it clashes with a core
    key), and whether its value is a secret. Names are few: the code's keywords."""
    key = clean_text(str(name), limit)
    if key in _CORE_KEYS:
        key = "field." + key
    return key, _is_secret(key)


@functools.lru_cache(maxsize=512)
def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in REDACTED_FIELDS or any(
        lowered.endswith("_" + secret) for secret in REDACTED_FIELDS
    )


_NUMBERS: Final = (int, float, type(None))  # bool is an int


def _clean(value: object) -> object:
    """A field value as it is written: strings bounded and escaped, secret-named
    entries of nested mappings redacted, lists shortened, other types as strings."""
    if type(value) is str:  # most fields: first, and without the slower checks below
        return clean_text(value)
    if isinstance(value, _NUMBERS):
        return value
    if isinstance(value, Trusted | PurePath):
        return clean_text(str(value), MAX_TRUSTED_CHARS)
    if isinstance(value, Mapping):
        return {
            clean_text(str(key)): REDACTED if _is_secret(str(key)) else _clean(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [_clean(item) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"...[{len(value) - MAX_ITEMS} more items]")
        return items
    return clean_text(str(value))


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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        fields = getattr(record, "fields", None)
        return format_line(
            record.created,
            record.levelname,
            record.getMessage(),
            record.name,
            fields if isinstance(fields, Mapping) else None,
            traceback=record.exc_text,
            stack=self.formatStack(record.stack_info) if record.stack_info else None,
        )


def format_line(
    created: float,
    level_name: str,
    event: str,
    logger_name: str,
    fields: Mapping[str, object] | None,
    *,
    traceback: str | None = None,
    stack: str | None = None,
) -> str:
    """One JSON line (without the newline) in the layout :class:`JsonFormatter` documents."""
    # The common cases inline (short printable text, numbers): a line per message sent
    # and delivered goes through here.
    if len(event) > MAX_TRUSTED_CHARS or not event.isprintable():
        event = clean_text(event, MAX_TRUSTED_CHARS)
    line: dict[str, object] = {
        "ts": _format_ts(created),
        "level": level_name.lower(),
        "event": event,
        "logger": _field_key(logger_name, MAX_TRUSTED_CHARS)[0],
    }
    if fields:
        for name, value in fields.items():
            key, secret = _field_key(name)
            if secret:
                line[key] = REDACTED
            elif type(value) is str:
                line[key] = (value if len(value) <= MAX_FIELD_CHARS and value.isprintable()
                             else clean_text(value))
            elif type(value) is int:
                line[key] = value
            else:
                line[key] = _clean(value)
    if traceback:
        line["traceback"] = clean_text(traceback, MAX_TRACEBACK_CHARS, keep="\n")
    if stack:
        line["stack"] = clean_text(stack, MAX_TRACEBACK_CHARS, keep="\n")
    return _dumps(line)


def _dumps(line: dict[str, object]) -> str:
    try:
        return orjson.dumps(line, default=str, option=_DUMPS_OPTIONS).decode()
    except TypeError:
        # orjson refuses some values without calling `default` (e.g. ints over 64 bits):
        # fall back to strings for every field rather than lose the line.
        safe = {key: value if isinstance(value, str) else str(value) for key, value in line.items()}
        return orjson.dumps(safe).decode()


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

    def exception(self, event: str, /, **fields: object) -> None:
        """Log at ERROR with the exception being handled as a ``traceback`` field."""
        self._log(logging.ERROR, event, fields, exc_info=True)

    def _log(
        self, level: int, event: str, fields: dict[str, object], exc_info: bool = False
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
            return _dumps({"ts": _format_ts(time.time()), "level": "error",
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
