"""A PostgreSQL schema of its own for one chatd test, named in the URL chatd gets.

chatd takes a URL, not a schema, so the schema travels in libpq's ``options`` parameter
(``?options=-csearch_path%3Dtest_<hex>``): the store creates it and works in it, and
the nodes' bus listens on a channel named after it, so tests running at once (other
test processes on the same database) neither see each other's rows nor hear each
other's events.

PostgreSQL is at ``CHATD_TEST_PG_DSN``. When it does not answer, the test is skipped,
except with ``CI=true``: there PostgreSQL is part of the environment and the test fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

PG_DSN = os.environ.get("CHATD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


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
