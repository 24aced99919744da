"""Pick the store implementation from a database URL (``--db`` on the command line)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qs, urlsplit

from chatd.store.base import Store
from chatd.store.sqlite import SqliteStore
from chatd.store.sqlite.stall import STALL_BOUND

__all__ = ["check_db_url", "is_postgres", "open_store", "schema_from_url"]

_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SYNC_MODES: Final = ("full", "normal")
_SEARCH_PATH_RE: Final = re.compile(r"-c\s*search_path\s*=\s*([^\s,]+)")


def schema_from_url(url: str) -> str | None:
    """The schema a PostgreSQL URL selects with libpq's ``options`` parameter
    (``?options=-csearch_path%3Dchat_eu``: the first entry of the path), or None."""
    for options in parse_qs(urlsplit(url).query).get("options", []):
        match = _SEARCH_PATH_RE.search(options)
        if match:
            return match.group(1).strip('"')
    return None


def open_store(
    url: str,
    *,
    sync: str = "full",
    on_commit: Callable[[int, float], None] | None = None,
    serving: bool = False,
) -> Store:
    """The store for ``url`` (see :func:`check_db_url`), not yet opened; ``sync`` is
    SQLite's ``synchronous`` mode, ``"full"`` or ``"normal"``; ``on_commit(batch_size,
    seconds)`` is called on the loop after each commit of messages. ``serving``: the
    server's store, whose requests must be answered within a bound: a SQLite write
    waiting on a writer that finishes nothing fails after
    :data:`~chatd.store.sqlite.stall.STALL_BOUND` (PostgreSQL's queries are always
    bounded); admin commands wait for a lock instead.

    Raises:
        ValueError: for a URL :func:`check_db_url` refuses, or another sync mode.
    """
    if sync not in _SYNC_MODES:
        raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
    check_db_url(url)
    if is_postgres(url):
        from chatd.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url, schema=schema_from_url(url), on_commit=on_commit)
    return SqliteStore(_sqlite_path(url), sync=sync, on_commit=on_commit,
                       stall_bound=STALL_BOUND if serving else None)


def check_db_url(url: str) -> None:
    """Accept a database URL, or raise ValueError saying what one looks like:

    - ``postgresql://...`` or ``postgres://...``: PostgreSQL, in the schema named by the
      URL's ``options=-csearch_path=...`` if any, else ``public``;
    - ``sqlite:///abs/path.db``, ``sqlite:relative.db``, or a plain path that says it is
      one (it holds a ``/`` or ends in ``.db``, ``.sqlite`` or ``.sqlite3``): SQLite.

    Anything else (another scheme, a typo such as ``postgresq://``, a bare word) is
    refused rather than taken for the name of a new SQLite file.
    """
    if is_postgres(url):
        return
    _sqlite_path(url)


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (else it is SQLite's)."""
    return url.startswith(("postgresql://", "postgres://"))


def _sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite://") :]
    elif url.startswith("sqlite://"):
        raise ValueError(
            f"bad SQLite URL {url!r}: use sqlite:///absolute/path.db or sqlite:relative.db"
        )
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
    elif _SCHEME_RE.match(url) or not (
        "/" in url or url.endswith((".db", ".sqlite", ".sqlite3"))
    ):
        raise ValueError(
            f"{url!r} is not a database URL: use postgresql://user@host/dbname,"
            " sqlite:///path.db or a path such as ./chatd.db"
        )
    else:
        path = url
    if not path or path == ":memory:":
        raise ValueError(f"bad database URL {url!r}: give the SQLite file's path")
    return path
