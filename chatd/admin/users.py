"""``chatd user``: add, list, show, disable, enable, passwd; and reading a password."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chatd.admin.audit import audit
from chatd.admin.common import EXIT_OK, EXIT_USAGE, AdminError, find_user, opened
from chatd.admin.output import iso, print_json, shown
from chatd.auth import Passwords
from chatd.store import User
from libchat import limits
from libchat.protocol import is_valid_username, normalize_username

__all__ = [
    "read_password",
    "set_disabled",
    "user_add",
    "user_list",
    "user_passwd",
    "user_show",
]


def read_password(stdin: Any = None) -> str:
    """One line of stdin when it is not a terminal; otherwise prompt twice."""
    stdin = stdin if stdin is not None else sys.stdin
    if stdin is None:
        raise AdminError("no password: stdin is closed", EXIT_USAGE)
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise AdminError("the passwords differ", EXIT_USAGE)
        password = first
    else:
        line = stdin.readline()
        if not line:
            raise AdminError("no password on stdin (give it as one line)", EXIT_USAGE)
        password = line.removesuffix("\n").removesuffix("\r")
    if not limits.MIN_PASSWORD_CHARS <= len(password) <= limits.MAX_PASSWORD_CHARS:
        raise AdminError(
            f"passwords are {limits.MIN_PASSWORD_CHARS} to {limits.MAX_PASSWORD_CHARS}"
            " characters",
            EXIT_USAGE,
        )
    return password


async def hash_password(password: str) -> str:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2") as executor:
        return await Passwords(executor).hash(password)


# --- user --------------------------------------------------------------------------------


def user_add(args: argparse.Namespace) -> int:
    username = normalize_username(args.name)
    if not is_valid_username(username):
        raise AdminError(
            f"invalid username {args.name!r}: 3 to 32 characters of a-z 0-9 _ . -", EXIT_USAGE
        )

    async def main() -> User:
        async with opened(args, create=True) as store:
            if await store.user_by_name(username) is not None:
                raise AdminError(f"user {username!r} already exists")
            password_hash = await hash_password(read_password())  # asked once the name is free
            user = await store.create_user(username, password_hash, int(time.time() * 1000))
            if user is None:
                raise AdminError(f"user {username!r} already exists")
            return user

    user = asyncio.run(main())
    audit("admin.user_add", user=user.username, user_id=user.id)
    print(f"created user {user.username} (id {user.id})")
    return EXIT_OK


def user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "disabled": user.disabled,
        "created_at": user.created_at,
    }


def user_list(args: argparse.Namespace) -> int:
    async def main() -> list[User]:
        async with opened(args) as store:
            return await store.list_users()

    users = asyncio.run(main())
    audit("admin.user_list", users=len(users))
    if args.json:
        print_json({"users": [user_row(user) for user in users]})
        return EXIT_OK
    rows = [("ID", "USERNAME", "STATUS", "CREATED")]
    rows += [
        (str(u.id), shown(u.username), "disabled" if u.disabled else "enabled",
         iso(u.created_at))
        for u in users
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return EXIT_OK


def user_show(args: argparse.Namespace) -> int:
    async def main() -> tuple[User, int]:
        async with opened(args) as store:
            user = await find_user(store, args.name)
            return user, await store.queue_depth(user.id)

    user, undelivered = asyncio.run(main())
    audit("admin.user_show", user=user.username, user_id=user.id)
    row = user_row(user) | {"token_generation": user.token_generation, "undelivered": undelivered}
    if args.json:
        print_json(row)
        return EXIT_OK
    print(f"username          {shown(user.username)}")
    print(f"id                {user.id}")
    print(f"status            {'disabled' if user.disabled else 'enabled'}")
    print(f"created           {iso(user.created_at)}")
    print(f"token generation  {user.token_generation}")
    print(f"undelivered       {undelivered}")
    return EXIT_OK


def set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    async def main() -> User:
        async with opened(args) as store:
            user = await find_user(store, args.name)
            return await store.set_disabled(user.id, disabled)

    user = asyncio.run(main())
    audit("admin.user_disable" if disabled else "admin.user_enable",
          user=user.username, user_id=user.id)
    if disabled:
        print(f"disabled {user.username}: its tokens are revoked; a running server closes"
              " its connections at once")
    else:
        print(f"enabled {user.username}")
    return EXIT_OK


def user_passwd(args: argparse.Namespace) -> int:
    async def main() -> User:
        async with opened(args) as store:
            user = await find_user(store, args.name)
            return await store.set_password(user.id, await hash_password(read_password()))

    user = asyncio.run(main())
    audit("admin.user_passwd", user=user.username, user_id=user.id)
    print(f"changed the password of {user.username}: its older tokens are revoked")
    return EXIT_OK
