"""PostgreSQL for tests: where it is, whether it answers, and a schema of one's own.

PostgreSQL is at ``CHATD_TEST_PG_DSN``. When it does not answer, a test that needs it is
skipped, except with ``CI=true``: there PostgreSQL is part of the environment, so the
test fails instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

PG_DSN = os.environ.get("CHATD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres() -> None:
    """Skip the test (fail it under ``CI=true``) unless PostgreSQL answers at PG_DSN."""
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at CHATD_TEST_PG_DSN: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def drop_schema(name: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """The name of a schema no other test uses (whoever opens it creates it), dropped
    afterwards. Skips or fails first, as :func:`require_postgres` does."""
    require_postgres()
    name = f"test_{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        drop_schema(name)
