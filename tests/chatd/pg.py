"""PostgreSQL-backed chatd nodes for tests: a schema of their own, named in the URL.

chatd takes a URL, not a schema, so the schema travels in libpq's ``options`` parameter
(``?options=-csearch_path%3Dtest_<hex>``): the store creates it and works in it, and
the nodes' bus listens on a channel named after it, so tests running at once (other
test processes on the same database) neither see each other's rows nor hear each
other's events.

PostgreSQL is at ``CHATD_TEST_PG_DSN``; tests/support/pg.py skips the test when it does
not answer (or fails it, with ``CI=true``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from tests.chatd.clients import Frame, WsPeer
from tests.chatd.conftest import _shut
from tests.chatd.server import ChatdProcess
from tests.support.pg import PG_DSN, fresh_schema

# Above the default per-user send limits, so a test's stream is never refused.
FAST = ("--send-rate", "1000", "--send-burst", "1000")

Nodes = tuple[ChatdProcess, ChatdProcess]


def url_with_schema(schema: str) -> str:
    """``PG_DSN`` with ``search_path`` set to ``schema`` through libpq's ``options``."""
    separator = "&" if "?" in PG_DSN else "?"
    return f"{PG_DSN}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema's URL; the schema is dropped afterwards (chatd creates it)."""
    with fresh_schema() as schema:
        yield url_with_schema(schema)


def start_nodes(tmp: Path, url: str, *args: str, port: int = 0) -> Nodes:
    """Nodes A and B on the database at ``url``, each with its own data and log dirs
    (and ``args``, and ``port``: 0 gives each node a free port of its own)."""
    a = ChatdProcess(tmp / "a", tmp / "a-logs", *FAST, *args, db=url).start(port)
    try:
        b = ChatdProcess(tmp / "b", tmp / "b-logs", *FAST, *args, db=url).start(port)
    except BaseException:
        _shut(a)
        raise
    return a, b


@contextlib.contextmanager
def running_nodes(tmp: Path) -> Iterator[Nodes]:
    """Nodes A and B on a fresh schema, shut down (and the schema dropped) afterwards."""
    with pg_schema() as url:
        a, b = start_nodes(tmp, url)
        try:
            yield a, b
        finally:
            _shut(a)
            _shut(b)


def frames(peer: WsPeer, kind: str, **fields: object) -> list[Frame]:
    """The frames of type ``kind`` ``peer`` received whose ``fields`` match."""
    return [f for f in peer.frames if f.get("type") == kind
            and all(f.get(k) == v for k, v in fields.items())]
