"""Where the token keyring lives, and how it is read and written.

Three places, chosen by :func:`key_source`:

- ``--token-key-file FILE``: the keyring is that file and nothing else (the database never
  sees a key). Every node of a cluster is given the same file. ``chatd serve`` refuses to
  start when it is missing: nodes that each made their own would refuse each other's
  tokens.
- SQLite, without the flag: ``token.key`` in the data directory, created at first start.
- PostgreSQL, without the flag: the ``settings`` table (as before keyrings existed: the
  legacy ``token_key`` row, and ``token_keyring`` once ``chatd key rotate`` has run), so
  that every node signs alike; anyone who can read that table can mint tokens.

A key file holds either exactly 32 raw bytes (a legacy key, as chatd always wrote it) or
a JSON keyring (:meth:`chatd.auth.Keyring.encode`); rotation rewrites it atomically
(private temporary file, fsync, rename, fsync of the directory), mode 0600.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Protocol

from chatd.auth import (
    KEY_FILE,
    KeyFileError,
    Keyring,
    create_key_file,
    load_or_create_key,
)
from chatd.files import replace_durably

__all__ = ["DatabaseKeys", "FileKeys", "KeySource", "key_source"]

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 64 * 1024  # a keyring of MAX_KEYS keys is a few KiB


class KeySource(Protocol):
    """Somewhere a keyring is kept."""

    description: str  # for messages: a path, or "the database"

    async def load(self) -> Keyring:
        """The keyring.

        Raises:
            KeyFileError: it is missing or unreadable.
        """
        ...

    async def save(self, keyring: Keyring, previous: Keyring | None) -> None:
        """Replace ``previous`` (None: there was none) with ``keyring``.

        Raises:
            KeyFileError: it cannot be written, or someone else changed it meanwhile.
        """
        ...


class FileKeys:
    """A keyring in one file. ``create``: make a legacy key file when it is missing (the
    data directory's ``token.key``); otherwise a missing file is an error."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self.create = create
        self.description = str(path)

    async def load(self) -> Keyring:
        if self.create and not self.path.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                create_key_file(self.path)
            except OSError as exc:
                raise KeyFileError(f"cannot create token key file {self.path}: {exc}") from None
        return read_keyring(self.path)

    async def save(self, keyring: Keyring, previous: Keyring | None) -> None:
        write_keyring(self.path, keyring)


def read_keyring(path: Path) -> Keyring:
    """The keyring in ``path`` (a legacy 32-byte key or a JSON keyring).

    Raises:
        KeyFileError: missing, unreadable, too large or not a keyring.
    """
    try:
        with path.open("rb") as src:
            mode = stat.S_IMODE(os.fstat(src.fileno()).st_mode)
            data = src.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"token key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"token key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        keyring = Keyring.decode(data)
    except KeyFileError as exc:
        raise KeyFileError(f"token key file {path}: {exc}") from None
    if mode & 0o077:
        log.warning(
            "token key file %s has mode %o: anyone who reads it can forge tokens; chmod 600 it",
            path,
            mode,
        )
    return keyring


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Replace ``path`` with ``keyring`` atomically, mode 0600.

    Raises:
        KeyFileError: the directory is not writable, the disk is full...
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_durably(path, keyring.encode())
    except OSError as exc:
        raise KeyFileError(f"cannot write token key file {path}: {exc.strerror or exc}") from None


class DatabaseKeys:
    """The keyring of a PostgreSQL store kept in its ``settings`` table.

    The legacy key (``token_key``) is agreed on by the first node to start, from its data
    directory's ``token.key`` as before; ``token_keyring``, written by ``chatd key
    rotate``, takes over once it exists and still holds the legacy key until it is pruned.
    """

    description = "the database's settings table"

    def __init__(self, store: Any, data_dir: Path) -> None:
        self._store = store
        self._data_dir = data_dir
        self._legacy: bytes | None = None  # agreed once, never changes
        self._document: bytes | None = None  # the keyring row as last loaded, if any

    async def load(self) -> Keyring:
        document = await self._store.token_keyring()
        self._document = document
        if document is not None:
            try:
                return Keyring.decode(bytes(document))
            except KeyFileError as exc:
                raise KeyFileError(f"the database's token keyring: {exc}") from None
        if self._legacy is None:
            candidate = load_or_create_key(self._data_dir)
            self._legacy = bytes(await self._store.shared_token_key(candidate))
        return Keyring.from_legacy(self._legacy)

    async def save(self, keyring: Keyring, previous: Keyring | None) -> None:
        """Compare-and-set against the row :meth:`load` saw (none: the legacy key)."""
        if not await self._store.set_token_keyring(keyring.encode(), self._document):
            raise KeyFileError(
                "the database's token keyring changed meanwhile (another `chatd key rotate`?):"
                " run it again"
            )


def key_source(store: object, data_dir: Path, token_key_file: Path | None) -> KeySource:
    """Where this deployment's keyring lives (see the module docstring)."""
    if token_key_file is not None:
        return FileKeys(token_key_file, create=False)
    if hasattr(store, "shared_token_key"):
        return DatabaseKeys(store, data_dir)
    return FileKeys(data_dir / KEY_FILE, create=True)
