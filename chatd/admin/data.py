"""The data itself: ``chatd messages``, ``stats``, ``migrate`` and ``backup``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from chatd.admin.audit import audit
from chatd.admin.common import EXIT_OK, EXIT_USAGE, AdminError, find_user, new_store, opened
from chatd.admin.output import iso, print_json, shown, size
from chatd.store import User
from chatd.store.sqlite import SqliteStore
from libchat.protocol import Message, MessagePage, encode_body

__all__ = ["backup", "messages", "migrate", "stats"]


def messages(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise AdminError("--limit must be at least 1", EXIT_USAGE)

    async def main() -> tuple[User, User, list[Message], bool]:
        async with opened(args) as store:
            a, b = await find_user(store, args.a), await find_user(store, args.b)
            page, has_more = await store.history(a.id, b.id, args.before, args.limit)
            return a, b, page, has_more

    a, b, page, has_more = asyncio.run(main())
    # The audit line says who looked at which pair and how much: never the bodies.
    audit("admin.inspect", a=a.username, b=b.username, messages=len(page),
          has_more=has_more, before=args.before, limit=args.limit)
    if args.json:
        page_json = encode_body(MessagePage(messages=tuple(page), has_more=has_more))
        sys.stdout.write(page_json.decode() + "\n")
        return EXIT_OK
    for message in page:
        status = "read" if message.read_at else "delivered" if message.delivered_at else "queued"
        who = f"{shown(message.sender)} -> {shown(message.recipient)}"
        head = f"{message.seq} {iso(message.ts)} {who} [{status}]"
        body = shown(message.body).replace("\n", "\n    ")
        print(f"{head} {body}")
    if has_more:
        oldest = page[0].seq if page else args.before
        print(f"(older messages exist: --before {oldest})")
    return EXIT_OK


def stats(args: argparse.Namespace) -> int:
    async def main() -> Any:
        async with opened(args) as store:
            return await store.stats()

    totals = asyncio.run(main())
    audit("admin.stats", users=totals.users, messages=totals.messages,
          undelivered=totals.undelivered, db_bytes=totals.db_bytes)
    if args.json:
        print_json({"users": totals.users, "messages": totals.messages,
                    "undelivered": totals.undelivered, "db_bytes": totals.db_bytes})
        return EXIT_OK
    print(f"users        {totals.users}")
    print(f"messages     {totals.messages}")
    print(f"undelivered  {totals.undelivered}")
    print(f"database     {size(totals.db_bytes)} ({totals.db_bytes} bytes)")
    return EXIT_OK


def migrate(args: argparse.Namespace) -> int:
    store = new_store(args, create=True)
    version = asyncio.run(store.migrate())
    audit("admin.migrate", schema_version=version)
    print(f"database schema is at version {version}")
    return EXIT_OK


def backup(args: argparse.Namespace) -> int:
    store = new_store(args, create=False)
    if not isinstance(store, SqliteStore):
        raise AdminError(
            "backup copies SQLite databases only: for PostgreSQL use pg_dump", EXIT_USAGE
        )
    dest: Path = args.file
    if dest.exists() and dest.resolve() == store.path.resolve():
        raise AdminError("the backup file is the database itself", EXIT_USAGE)
    if not dest.parent.is_dir():
        raise AdminError(f"no directory {dest.parent} for the backup", EXIT_USAGE)

    async def main() -> None:
        await store.open()  # checks the schema first: never back up a foreign file
        try:
            await store.backup(dest)
        finally:
            await store.close()

    asyncio.run(main())
    audit("admin.backup", source=store.path, dest=dest, bytes=dest.stat().st_size)
    print(f"backed up {store.path} to {dest} ({dest.stat().st_size} bytes)")
    return EXIT_OK
