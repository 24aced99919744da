"""PostgreSQL-backed chatd nodes for tests: a schema of their own, named in the URL.

chatd takes a URL, not a schema, so the schema travels in libpq's ``options`` parameter
(``?options=-csearch_path%3Dtest_<hex>``): the store creates it and works in it, and
the nodes' bus listens on a channel named after it, so tests running at once (other
test processes on the same database) neither see each other's rows nor hear each
other's events.

PostgreSQL is at ``CHATD_TEST_PG_DSN``. When it does not answer, the test is skipped,
except with ``CI=true``: there PostgreSQL is part of the environment and the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.chatd.clients import TIMEOUT, Frame, WsPeer
from tests.chatd.conftest import _shut
from tests.chatd.server import ChatdProcess

PG_DSN = os.environ.get("CHATD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# Above the default per-user send limits, so a test's stream is never refused.
FAST = ("--send-rate", "1000", "--send-burst", "1000")

Nodes = tuple[ChatdProcess, ChatdProcess]


def require_postgres() -> None:
    """Skip (or, in CI, fail) unless PostgreSQL answers at ``PG_DSN``."""
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and PostgreSQL is not reachable at CHATD_TEST_PG_DSN: {exc}")
        pytest.skip(f"PostgreSQL not reachable at CHATD_TEST_PG_DSN: {exc}")


def url_with_schema(schema: str) -> str:
    """``PG_DSN`` with ``search_path`` set to ``schema`` through libpq's ``options``."""
    separator = "&" if "?" in PG_DSN else "?"
    return f"{PG_DSN}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema's URL; the schema is dropped afterwards (chatd creates it)."""
    require_postgres()
    schema = f"test_{uuid.uuid4().hex}"
    try:
        yield url_with_schema(schema)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def frames(peer: WsPeer, kind: str, **fields: object) -> list[Frame]:
    """The frames of type ``kind`` ``peer`` received whose ``fields`` match."""
    return [f for f in peer.frames if f.get("type") == kind
            and all(f.get(k) == v for k, v in fields.items())]
