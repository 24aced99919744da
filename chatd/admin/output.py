"""How the subcommands print: times, stored user text made safe for a terminal, JSON,
sizes."""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from chatd.observe.logs import escape_unprintable

__all__ = ["iso", "print_json", "shown", "size"]


def iso(ms: int | None) -> str:
    """Unix ms as RFC 3339 UTC (``2026-11-26T10:53:00.123Z``); ``-`` for None."""
    if ms is None:
        return "-"
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def shown(text: str) -> str:
    """Stored user text (a body, a name) as it may reach the operator's terminal: every
    control character but newline and tab escaped (``\\x1b``), so no body can move the
    cursor, retitle the window or hide a line. ``--json`` prints the exact text, which
    JSON escapes."""
    return escape_unprintable(text, keep="\n\t")


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
