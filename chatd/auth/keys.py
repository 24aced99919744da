"""Where the token keyring lives, and how it is read and written.

Three places, chosen by :func:`key_source`:

- ``--token-key-file FILE``: the keyring is that file and nothing else (the database never
  sees a key). Every node of a cluster is given the same file. ``chatd serve`` refuses to
  start when it is missing: nodes that each made their own would refuse each other's
  tokens.
- SQLite, without the flag: ``token.key`` in the data directory, created at first start
  (:func:`load_or_create_key`).
- PostgreSQL, without the flag: the ``settings`` table (as before keyrings existed: the
  legacy ``token_key`` row, and ``token_keyring`` once ``chatd key rotate`` has run), so
  that every node signs alike; anyone who can read that table can mint tokens.

A key file holds either exactly 32 raw bytes (a legacy key, as chatd always wrote it) or
a JSON keyring (:meth:`chatd.auth.keyring.Keyring.encode`); rotation rewrites it atomically
(private temporary file, fsync, rename, fsync of the directory), mode 0600.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Final, Protocol

from chatd.auth.keyring import KEY_BYTES, KeyFileError, Keyring
from chatd.files import fsync_dir, make_private_dir, replace_durably
from chatd.observe.logs import EventLogger

__all__ = [
    "KEY_FILE",
    "DatabaseKeys",
    "FileKeys",
    "KeySource",
    "create_key_file",
    "key_source",
    "load_or_create_key",
    "read_keyring",
    "write_keyring",
]

log = EventLogger(logging.getLogger(__name__))

KEY_FILE: Final = "token.key"  # the data directory's key file (SQLite, or PostgreSQL's first key)
MAX_KEY_FILE_BYTES = 64 * 1024  # a keyring of MAX_KEYS keys is a few KiB


# --- the legacy key file -------------------------------------------------------------------


def load_or_create_key(data_dir: Path) -> bytes:
    """The HS256 key in ``data_dir/token.key``: read it, or create it (mode 0600).

    Creation is atomic: the key is written and synced to a private temporary file that
    is then hard-linked into place, so a crash never leaves a short key file behind and,
    if two processes race, both end up with the one that was linked first.

    Raises:
        KeyFileError: the file has the wrong size.
    """
    make_private_dir(data_dir)
    path = data_dir / KEY_FILE
    if not path.exists():
        create_key_file(path)
    return _read_key(path)


def create_key_file(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process created it first: use theirs
        fsync_dir(path.parent)
        log.info("keys.file_created", path=path)
    finally:
        tmp.unlink(missing_ok=True)


def _warn_open(path: Path, mode: int) -> None:
    log.warning("file.mode_open", path=path, mode=oct(mode),
                hint="anyone who reads the token key file can forge tokens: chmod 600 it")


def _read_key(path: Path) -> bytes:
    with path.open("rb") as src:
        mode = os.fstat(src.fileno()).st_mode
        key = src.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path} holds {len(key)} bytes, expected {KEY_BYTES}")
    if stat.S_IMODE(mode) & 0o077:
        _warn_open(path, stat.S_IMODE(mode))
    return key



# --- keyrings ------------------------------------------------------------------------------


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
        _warn_open(path, mode)
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
