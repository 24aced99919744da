"""Seqs never go backwards, even when a SQLite file is restored from an older backup.

Clients drop a message whose seq they have seen (at-least-once delivery), so a seq issued
twice hides the second message for good. The database cannot guard against its own
restore, so a number is kept beside it, in ``<database>.seqs``: the *lease*, at least
every seq the database ever committed. The writer extends it (``LEASE_BLOCK`` ahead, one
small synced write per block) before a commit would pass it; a clean close writes the
exact last seq. When the server starts on a database whose seqs are below the lease (a
restored file), new seqs continue above the lease.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from chatd.files import replace_durably

__all__ = ["LEASE_BLOCK", "SeqLease", "lease_path"]

LEASE_BLOCK: Final = 10_000  # seqs reserved per write: at 5,000 msg/s one write each 2 s


def lease_path(database: Path) -> Path:
    return database.with_name(database.name + ".seqs")


class SeqLease:
    """The lease file of one database. Writer-thread only."""

    def __init__(self, database: Path) -> None:
        self.path = lease_path(database)
        self.value = self._read()

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise ValueError(f"{self.path} does not hold a seq: {text[:40]!r}")
        return int(text)

    def cover(self, seq: int) -> None:
        """Make sure the lease is at least ``seq`` before it is committed: extend it by
        a block when it is not. Raises OSError when the file cannot be written (the
        commit must then fail: an unguarded seq could be issued again)."""
        if seq > self.value:
            self.write(seq + LEASE_BLOCK)

    def write(self, value: int) -> None:
        """Replace the lease with ``value``, durably (temporary file, fsync, rename)."""
        replace_durably(self.path, f"{value}\n".encode("ascii"))
        self.value = value
