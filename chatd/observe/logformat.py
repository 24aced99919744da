"""How one log line is written: JSON layout, redaction of secrets, bounds and escapes.

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
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from pathlib import PurePath
from typing import Final

import orjson

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_ITEMS",
    "MAX_TRACEBACK_CHARS",
    "MAX_TRUSTED_CHARS",
    "REDACTED",
    "REDACTED_FIELDS",
    "JsonFormatter",
    "Trusted",
    "clean_text",
    "clean_value",
    "dumps_line",
    "escape_unprintable",
    "exception_type",
    "format_line",
    "format_ts",
]

REDACTED_FIELDS: Final = frozenset({"password", "token", "body", "authorization"})
REDACTED: Final = "[redacted]"
_CORE_KEYS: Final = frozenset(
    {"ts", "level", "event", "logger", "exc_type", "exc_message", "traceback", "stack"}
)
_DUMPS_OPTIONS: Final = orjson.OPT_NON_STR_KEYS

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


def clean_value(value: object) -> object:
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
            clean_text(str(key)): REDACTED if _is_secret(str(key)) else clean_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [clean_value(item) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"...[{len(value) - MAX_ITEMS} more items]")
        return items
    return clean_text(str(value))


@functools.lru_cache(maxsize=4)
def _second_prefix(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_ts(created: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-26T10:53:00.123Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{_second_prefix(seconds)}.{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newline; the handler adds it).

    Keys: ``ts``, ``level``, ``event``, ``logger``, then the record's ``fields`` (from
    :class:`EventLogger`, or ``extra={"fields": {...}}``) flattened, then, when the
    record carries ``exc_info``, the error event's ``exc_type`` (the exception's class,
    module-qualified unless a builtin), ``exc_message`` (bounded like any field from the
    wire) and ``traceback`` (the whole stack as one string field, newlines escaped by
    JSON: the line stays one line). A field whose name clashes with one of those
    keys is written as ``field.<name>``. Values orjson cannot encode are written as
    ``str(value)``.
    """

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        fields = getattr(record, "fields", None)
        exc = record.exc_info[1] if record.exc_info else None
        return format_line(
            record.created,
            record.levelname,
            record.getMessage(),
            record.name,
            fields if isinstance(fields, Mapping) else None,
            exception=exc,
            traceback=record.exc_text,
            stack=self.formatStack(record.stack_info) if record.stack_info else None,
        )


def exception_type(exc: BaseException) -> str:
    """``KeyError``, ``chatd.store.base.StoreError``: the class, module-qualified
    unless it is a builtin."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def format_line(
    created: float,
    level_name: str,
    event: str,
    logger_name: str,
    fields: Mapping[str, object] | None,
    *,
    exception: BaseException | None = None,
    traceback: str | None = None,
    stack: str | None = None,
) -> str:
    """One JSON line (without the newline) in the layout :class:`JsonFormatter` documents."""
    # The common cases inline (short printable text, numbers): a line per message sent
    # and delivered goes through here.
    if len(event) > MAX_TRUSTED_CHARS or not event.isprintable():
        event = clean_text(event, MAX_TRUSTED_CHARS)
    line: dict[str, object] = {
        "ts": format_ts(created),
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
                line[key] = clean_value(value)
    if exception is not None:
        line["exc_type"] = clean_text(exception_type(exception), MAX_TRUSTED_CHARS)
        line["exc_message"] = clean_text(str(exception))
    if traceback:
        line["traceback"] = clean_text(traceback, MAX_TRACEBACK_CHARS, keep="\n")
    if stack:
        line["stack"] = clean_text(stack, MAX_TRACEBACK_CHARS, keep="\n")
    return dumps_line(line)


def dumps_line(line: dict[str, object]) -> str:
    try:
        return orjson.dumps(line, default=str, option=_DUMPS_OPTIONS).decode()
    except TypeError:
        # orjson refuses some values without calling `default` (e.g. ints over 64 bits):
        # fall back to strings for every field rather than lose the line.
        safe = {key: value if isinstance(value, str) else str(value) for key, value in line.items()}
        return orjson.dumps(safe).decode()
