"""Pick the store implementation from a database URL (``--db`` on the command line)."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qs, urlsplit

from chatd.store.base import Store
from chatd.store.sqlite import SqliteStore

__all__ = ["open_store", "schema_from_url"]

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


def open_store(url: str, *, sync: str = "full") -> Store:
    """The store for ``url``, not yet opened.

    - ``sqlite:///abs/path.db``, ``sqlite:relative.db`` or a plain path: SQLite
      (``sync`` is its ``synchronous`` mode, ``"full"`` or ``"normal"``);
    - ``postgresql://...`` or ``postgres://...``: PostgreSQL, in the schema named by
      the URL's ``options=-csearch_path=...`` if any, else ``public``.

    Raises:
        ValueError: for any other URL, an empty path or ``:memory:``.
    """
    if sync not in _SYNC_MODES:
        raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
    if url.startswith(("postgresql://", "postgres://")):
        from chatd.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url, schema=schema_from_url(url))
    if url.startswith("sqlite:///"):
        path = url[len("sqlite://") :]
    elif url.startswith("sqlite://"):
        raise ValueError(
            f"bad SQLite URL {url!r}: use sqlite:///absolute/path.db or sqlite:relative.db"
        )
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
    elif _SCHEME_RE.match(url):
        raise ValueError(
            f"unsupported database URL {url!r}: use sqlite:///path.db, a file path,"
            " or postgresql://user@host/dbname"
        )
    else:
        path = url
    if not path or path == ":memory:":
        raise ValueError(f"bad database URL {url!r}: give the SQLite file's path")
    return SqliteStore(path, sync=sync)
