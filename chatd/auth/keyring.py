"""The token keyring: the HS256 keys that sign and verify tokens, and its JSON document.

Where a keyring is kept (a key file or the database) is :mod:`chatd.auth.keys`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Final

import attrs
import orjson

__all__ = ["IAT_SKEW", "KEY_BYTES", "KeyFileError", "Keyring", "SigningKey", "key_id"]

KEY_BYTES: Final = 32  # HS256 wants a key at least as long as its 256-bit output
IAT_SKEW: Final = 60.0  # seconds a token's iat may lie in the future (clocks of several nodes)
KEYRING_FORMAT: Final = 1  # the "chatd_keyring" version of the JSON keyring document
MAX_KEYS: Final = 32  # keys in one keyring: each rotation adds one, pruning drops old ones


class KeyFileError(Exception):
    """The token key file (or the database's keyring) exists but cannot be used."""


def key_id(secret: bytes) -> str:
    """A key's ``kid``: derived from the secret (so a legacy key file gets the same kid on
    every node), and telling nothing about it."""
    digest = hashlib.sha256(b"chatd token key id\x00" + secret).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode("ascii")


@attrs.frozen(kw_only=True)
class SigningKey:
    """One HS256 key of the keyring."""

    secret: bytes = attrs.field(repr=False)
    created_at: int  # Unix s; 0 for a key that came from a legacy key file
    retired_at: int | None = None  # Unix s when a newer key took over signing
    legacy: bool = False  # verifies tokens without a kid (issued before keyrings existed)

    def __attrs_post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise ValueError(f"a token key must be at least {KEY_BYTES} bytes")

    @property
    def kid(self) -> str:
        return key_id(self.secret)


@attrs.frozen
class Keyring:
    """The token keys, oldest first: the last one signs, every one verifies.

    Stored either as a legacy key file (exactly :data:`KEY_BYTES` raw bytes: one key,
    which also verifies tokens without a kid) or as a JSON document, see :meth:`encode`.
    """

    keys: tuple[SigningKey, ...]

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        if len({key.kid for key in self.keys}) != len(self.keys):
            raise ValueError("a keyring holds the same key twice")

    @classmethod
    def from_legacy(cls, secret: bytes) -> Keyring:
        return cls((SigningKey(secret=secret, created_at=0, legacy=True),))

    @property
    def signing(self) -> SigningKey:
        return self.keys[-1]

    def find(self, kid: str | None) -> SigningKey | None:
        """The key for a token's ``kid`` header; None for a kid not in the ring. A token
        without a kid is checked with the legacy key, if the ring still has one."""
        for key in self.keys:
            if (key.legacy and kid is None) or (kid is not None and key.kid == kid):
                return key
        return None

    def rotated(self, secret: bytes, now: float, keep: float) -> tuple[Keyring, list[SigningKey]]:
        """A keyring where ``secret`` signs and the current key is retired, without the
        keys retired more than ``keep`` seconds (the longest token lifetime) ago, and
        the keys pruned.

        Raises:
            ValueError: ``secret`` is already in the ring, or too short.
        """
        stamp = int(now)
        kept: list[SigningKey] = []
        pruned: list[SigningKey] = []
        for key in self.keys:
            if key.retired_at is None:
                key = attrs.evolve(key, retired_at=stamp)
            if key.retired_at is not None and key.retired_at + keep + IAT_SKEW < now:
                pruned.append(key)
            else:
                kept.append(key)
        kept.append(SigningKey(secret=secret, created_at=stamp))
        if len(kept) > MAX_KEYS:
            raise ValueError(f"more than {MAX_KEYS} keys would be kept: rotate less often")
        return Keyring(tuple(kept)), pruned

    def encode(self) -> bytes:
        """The JSON keyring document (secrets in base64url)."""
        return orjson.dumps(
            {
                "chatd_keyring": KEYRING_FORMAT,
                "keys": [
                    {
                        "kid": key.kid,
                        "secret": base64.urlsafe_b64encode(key.secret).decode("ascii"),
                        "created_at": key.created_at,
                        "retired_at": key.retired_at,
                        "legacy": key.legacy,
                    }
                    for key in self.keys
                ],
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def decode(cls, data: bytes) -> Keyring:
        """A keyring from a legacy key file's bytes or a JSON keyring document.

        Raises:
            KeyFileError: neither.
        """
        if len(data) == KEY_BYTES:
            return cls.from_legacy(bytes(data))
        try:
            document = orjson.loads(data)
            if document["chatd_keyring"] != KEYRING_FORMAT:
                raise KeyFileError(f"unknown keyring format {document['chatd_keyring']!r}")
            keys = tuple(_signing_key(entry) for entry in document["keys"])
            return cls(keys)
        except KeyFileError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise KeyFileError(
                f"neither a {KEY_BYTES}-byte key nor a keyring document ({type(exc).__name__})"
            ) from None


def _signing_key(entry: dict[str, Any]) -> SigningKey:
    retired_at = entry["retired_at"]
    key = SigningKey(
        secret=base64.urlsafe_b64decode(entry["secret"].encode("ascii")),
        created_at=_whole(entry["created_at"]),
        retired_at=None if retired_at is None else _whole(retired_at),
        legacy=entry.get("legacy", False) is True,
    )
    if entry["kid"] != key.kid:
        raise ValueError("a kid does not match its secret")
    return key


def _whole(value: object) -> int:
    if type(value) is not int:
        raise TypeError("times are whole Unix seconds")
    return value
