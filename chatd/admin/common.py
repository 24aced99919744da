"""What every subcommand shares: exit statuses, :class:`AdminError`, and opening the
store named by ``--data-dir``/``--db``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from chatd.files import make_private_dir
from chatd.store import Store, User
from chatd.store.factory import open_store
from chatd.store.sqlite import SqliteStore
from libchat.protocol import normalize_username

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "AdminError",
    "data_dir",
    "find_user",
    "new_store",
    "opened",
]

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1  # unknown user, name taken, disabled user: the operation is refused
EXIT_USAGE: Final = 2  # bad input, missing database, schema mismatch, unusable config
DEFAULT_DATA_DIR: Final = Path("data")


class AdminError(Exception):
    """A refused operation: the message goes to stderr, ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.status = status


def data_dir(args: argparse.Namespace) -> Path:
    chosen: Path | None = getattr(args, "data_dir", None)
    return chosen if chosen is not None else DEFAULT_DATA_DIR


def _db_url(args: argparse.Namespace) -> str:
    db: str | None = getattr(args, "db", None)
    return db or str(data_dir(args) / "chatd.db")


def new_store(args: argparse.Namespace, *, create: bool) -> Store:
    """The store for ``--db``/``--data-dir``, not opened. Only ``create`` commands may
    bring a new SQLite file into being, so a mistyped ``--data-dir`` is an error."""
    try:
        store = open_store(_db_url(args))
    except ValueError as exc:
        raise AdminError(str(exc), EXIT_USAGE) from None
    if isinstance(store, SqliteStore):
        if create:
            make_private_dir(store.path.parent)
        elif not store.path.is_file():
            raise AdminError(
                f"no database at {store.path}: check --data-dir or --db"
                " (`chatd migrate` creates one)",
                EXIT_USAGE,
            )
    return store


@contextlib.asynccontextmanager
async def opened(args: argparse.Namespace, *, create: bool = False) -> AsyncIterator[Store]:
    store = new_store(args, create=create)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def find_user(store: Store, name: str) -> User:
    user = await store.user_by_name(normalize_username(name))
    if user is None:
        raise AdminError(f"no such user {name!r}")
    return user
