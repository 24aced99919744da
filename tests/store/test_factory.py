"""open_store: from a --db URL to the right, unopened store."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatd.store.factory import open_store
from chatd.store.sqlite import SqliteStore


def test_sqlite_urls_and_plain_paths(tmp_path: Path) -> None:
    absolute = tmp_path / "chat.db"
    store = open_store(f"sqlite://{absolute}")
    assert isinstance(store, SqliteStore)
    assert store.path == absolute
    assert store.sync == "full"
    relative = open_store("sqlite:data/chat.db", sync="normal")
    assert isinstance(relative, SqliteStore)
    assert relative.path == Path("data/chat.db")
    assert relative.sync == "normal"
    plain = open_store(str(absolute))
    assert isinstance(plain, SqliteStore)
    assert plain.path == absolute
    assert isinstance(open_store("chat.db"), SqliteStore)


def test_postgres_urls() -> None:
    postgres = pytest.importorskip("chatd.store.postgres")
    for url in ("postgresql://chat@db.example/chat", "postgres://chat@db.example/chat"):
        store = open_store(url)
        assert isinstance(store, postgres.PostgresStore)
        assert store.dsn == url


@pytest.mark.parametrize(
    "url", ["", "mysql://root@localhost/chat", "sqlite:", "sqlite://host/chat.db", ":memory:"]
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_bad_sync_is_refused() -> None:
    with pytest.raises(ValueError):
        open_store("chat.db", sync="off")
