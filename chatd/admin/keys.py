"""``chatd token issue`` and ``chatd key rotate``: tokens, and the keyring that signs them."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from pathlib import Path

from chatd.admin.audit import audit
from chatd.admin.common import (
    EXIT_OK,
    EXIT_USAGE,
    AdminError,
    data_dir,
    find_user,
    new_store,
    opened,
)
from chatd.auth import (
    KEY_BYTES,
    KEY_FILE,
    KeyFileError,
    Keyring,
    KeySource,
    SigningKey,
    Tokens,
    key_source,
)
from chatd.auth.keys import FileKeys
from chatd.store import User

__all__ = ["key_rotate", "token_issue"]


def token_issue(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise AdminError("--ttl must be a positive number of seconds", EXIT_USAGE)

    async def main() -> tuple[User, Keyring]:
        async with opened(args) as store:
            user = await find_user(store, args.name)
            if user.disabled:
                raise AdminError(f"user {user.username!r} is disabled")
            try:  # the server's keyring: --token-key-file, the data dir's, or the database's
                source = key_source(store, data_dir(args), args.token_key_file)
                return user, await source.load()
            except KeyFileError as exc:
                raise AdminError(str(exc), EXIT_USAGE) from None

    user, keyring = asyncio.run(main())
    issued = Tokens(keyring, args.ttl).issue(user.id, user.token_generation, time.time())
    audit("admin.token_issue", user=user.username, user_id=user.id, jti=issued.jti,
          expires_at=issued.expires_at, kid=keyring.signing.kid)
    print(issued.token)
    return EXIT_OK


def key_rotate(args: argparse.Namespace) -> int:
    """Add a new signing key to the keyring and prune keys retired longer ago than
    ``--token-ttl``. With ``--token-key-file`` naming a file that does not exist yet, the
    new file starts with the keys used so far (data dir or database), so switching to a
    key file logs nobody out."""
    if args.token_ttl <= 0:
        raise AdminError("--token-ttl must be a positive number of seconds", EXIT_USAGE)
    store = new_store(args, create=False)  # checks --data-dir/--db even when unused
    key_file: Path | None = args.token_key_file
    directory = data_dir(args)

    async def main() -> tuple[Keyring, list[SigningKey], str]:
        uses_db = hasattr(store, "shared_token_key") and (key_file is None or not key_file.exists())
        if uses_db:
            await store.open()
        try:
            default: KeySource = (
                key_source(store, directory, None) if uses_db
                else FileKeys(directory / KEY_FILE, create=False)
            )
            source = default if key_file is None else FileKeys(key_file, create=False)
            previous: Keyring | None = None
            if key_file is None or key_file.exists():
                previous = await source.load()
                current: Keyring | None = previous
            elif uses_db or (directory / KEY_FILE).exists():
                current = await default.load()  # a new key file starts from the keys in use
            else:
                current = None
            now = time.time()
            secret = secrets.token_bytes(KEY_BYTES)
            pruned: list[SigningKey] = []
            if current is None:
                keyring = Keyring((SigningKey(secret=secret, created_at=int(now)),))
            else:
                keyring, pruned = current.rotated(secret, now, keep=args.token_ttl)
            await source.save(keyring, previous)
            return keyring, pruned, source.description
        except (KeyFileError, ValueError) as exc:
            raise AdminError(str(exc), EXIT_USAGE) from None
        finally:
            if uses_db:
                await store.close()

    keyring, pruned, where = asyncio.run(main())
    kid = keyring.signing.kid
    audit("admin.key_rotate", kid=kid, keys=len(keyring.keys), pruned=[k.kid for k in pruned],
          source=where)
    print(f"new token signing key {kid} in {where}: {len(keyring.keys)} keys,"
          f" {len(pruned)} pruned")
    return EXIT_OK
