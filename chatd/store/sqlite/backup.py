"""A consistent copy of the live SQLite database, taken while the server runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import apsw

from chatd.store.base import StoreError
from chatd.store.sqlite.db import connect, create_private, scalar

__all__ = ["BACKUP_PAGES_PER_STEP", "backup"]

BACKUP_PAGES_PER_STEP: Final = 1024  # pages copied per backup step (4 MiB at 4 KiB pages)


def backup(path: Path, dest: Path) -> None:
    """Copy ``path`` to ``dest`` (replaced) page by page inside one read transaction,
    so the copy is one snapshot. Blocks: run it in a thread."""
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    source = connect(path, create=False)
    try:
        create_private(partial)  # the copy holds what the database holds: 0600 too
        target = apsw.Connection(str(partial))
        try:
            source.execute("BEGIN")
            scalar(source, "SELECT count(*) FROM sqlite_schema")  # take the snapshot
            with target.backup("main", source, "main") as copy:
                while not copy.done:
                    copy.step(BACKUP_PAGES_PER_STEP)
            source.execute("COMMIT")
        finally:
            target.close()
    except apsw.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed: {exc}") from exc
    finally:
        source.close()
    os.replace(partial, dest)
