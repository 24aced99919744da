"""The ``store`` fixture: one harness per backend (SQLite file, PostgreSQL schema).

There is no pytest-asyncio: a test is a plain function that hands an async body to
``store.run(...)``, which opens a fresh store inside one ``asyncio.run`` (a store binds to
the running loop at ``open()``) and closes it afterwards. ``store.make()`` gives another
unopened store on the same database, for reopen and restart tests.

PostgreSQL is skipped when ``chatd.store.postgres`` cannot be imported or the server at
``CHATD_TEST_PG_DSN`` does not answer, except with ``CI=true``: there it fails instead.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chatd.store.base import Store

T = TypeVar("T")

PG_DSN = os.environ.get("CHATD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.pg)]


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _unavailable(reason: str) -> None:
    """Skip a PostgreSQL test, or fail it in CI, where PostgreSQL is always there."""
    if _in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


class StoreHarness:
    """Makes stores on one test database and runs async test bodies against them."""

    def __init__(
        self, backend: str, make: Callable[..., Store], set_version: Callable[[int], None]
    ) -> None:
        self.backend = backend
        self._make = make
        self._set_version = set_version

    def make(self, **options: Any) -> Store:
        """A new, unopened store on this test's database."""
        return self._make(**options)

    def set_schema_version(self, version: int) -> None:
        """Overwrite the database's recorded schema version (the store must be closed)."""
        self._set_version(version)

    def run(self, body: Callable[[Store], Awaitable[T]], **options: Any) -> T:
        """Open a store, await ``body(store)``, close it; all in one event loop."""

        async def main() -> T:
            store = self.make(**options)
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def run_loop(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body()`` in a fresh event loop; it opens and closes stores itself."""

        async def main() -> T:
            return await body()

        return asyncio.run(main())


def _sqlite_harness(path: Path) -> StoreHarness:
    import apsw

    from chatd.store.sqlite import SqliteStore

    def make(**options: Any) -> Store:
        return SqliteStore(path, **options)

    def set_version(version: int) -> None:
        conn = apsw.Connection(str(path))
        try:
            conn.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            conn.close()

    return StoreHarness("sqlite", make, set_version)


def _postgres_module() -> Any:
    try:
        return importlib.import_module("chatd.store.postgres")
    except ImportError as exc:
        _unavailable(f"chatd.store.postgres cannot be imported: {exc}")


def _pg_reachable() -> None:
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL not reachable at CHATD_TEST_PG_DSN: {exc}")


def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHarness]:
    backend: str = request.param
    if backend == "sqlite":
        yield _sqlite_harness(tmp_path / "chat.db")
        return
    module = _postgres_module()
    _pg_reachable()
    schema = f"test_{uuid.uuid4().hex[:16]}"

    def make(**options: Any) -> Store:
        store: Store = module.PostgresStore(PG_DSN, schema=schema, **options)
        return store

    def set_version(version: int) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.schema_version SET version = %s").format(sql.Identifier(schema)),
                (version,),
            )

    try:
        yield StoreHarness(backend, make, set_version)
    finally:
        _drop_schema(schema)
