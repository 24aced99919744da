"""The token signing key and keyring, kept in the database so every node uses them."""

from __future__ import annotations

from chatd.store.postgres.pool import Database

__all__ = ["SharedKeys"]


class SharedKeys:
    """The ``settings`` rows of the token key and the keyring (chatd.auth.keys)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def shared_token_key(self, candidate: bytes) -> bytes:
        """The token signing key every node of this database uses: ``candidate`` if
        no node has stored one yet, else the stored one (nodes must agree on it, or a
        token from one node is refused by the next)."""
        await self._db.execute(
            "INSERT INTO settings (name, value) VALUES ('token_key', %s)"
            " ON CONFLICT (name) DO NOTHING",
            (candidate,),
        )
        row = await self._db.fetchone("SELECT value FROM settings WHERE name = 'token_key'")
        assert row is not None
        return bytes(row[0])

    async def token_keyring(self) -> bytes | None:
        """The keyring document ``chatd key rotate`` stored, if any (chatd.auth.keys)."""
        row = await self._db.fetchone("SELECT value FROM settings WHERE name = 'token_keyring'")
        return None if row is None else bytes(row[0])

    async def set_token_keyring(self, document: bytes, expected: bytes | None) -> bool:
        """Store the keyring document if the stored one is still ``expected`` (None: no
        keyring stored yet); False when another writer changed it first."""
        if expected is None:
            row = await self._db.announced(
                "INSERT INTO settings (name, value) VALUES ('token_keyring', %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING name",
                (document,),
            )
        else:
            row = await self._db.announced(
                "UPDATE settings SET value = %s WHERE name = 'token_keyring' AND value = %s"
                " RETURNING name",
                (document, expected),
            )
        return row is not None
