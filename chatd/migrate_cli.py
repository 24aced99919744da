"""``chatd migrate-data --from data/chatd.db --to postgresql://...``: the checks before
the copy (a PostgreSQL URL, an existing SQLite file no server holds), the copy itself
(:func:`chatd.migrate_data.migrate_data`), and one line per table verified. The schema
is the URL's ``search_path`` option if it names one, else ``public``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Final

from chatd.datalock import DatabaseInUse, DataLock
from chatd.store.base import StoreError
from chatd.store.factory import is_postgres, schema_from_url

__all__ = ["add_parser", "run"]

EXIT_OK: Final = 0
EXIT_MISMATCH: Final = 1  # copied, but a table differs between the two databases
EXIT_ERROR: Final = 2  # nothing verified: bad arguments, unreadable source, database error


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate-data`` to ``chatd``'s subcommands."""
    summary = "copy a SQLite database into PostgreSQL and verify it (safe to run again)"
    parser = subcommands.add_parser("migrate-data", help=summary, description=summary + ".")
    parser.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE",
                        help="the SQLite database (chatd stopped), e.g. data/chatd.db")
    parser.add_argument("--to", dest="target", required=True, metavar="URL",
                        help="postgresql://user@host/dbname; a schema other than public"
                        " through ?options=-csearch_path%%3DNAME")


def run(args: argparse.Namespace) -> int:
    """``chatd migrate-data``: copy, verify, print one line per table; the exit status."""
    target: str = args.target
    if not is_postgres(target):
        print(f"chatd: --to must be a postgresql:// URL, not {target!r}", file=sys.stderr)
        return EXIT_ERROR
    if not Path(args.source).is_file():  # before anything is created in PostgreSQL
        print(f"chatd: {args.source}: no such SQLite database", file=sys.stderr)
        return EXIT_ERROR
    try:  # a database a server writes to would change under the copy and its check
        DataLock.check_free(Path(args.source))
    except DatabaseInUse as exc:
        print(f"chatd: {exc}: stop it first, or migrate from a `chatd backup` copy",
              file=sys.stderr)
        return EXIT_ERROR
    from chatd.migrate_data import migrate_data  # psycopg: only for this subcommand

    try:
        report = asyncio.run(migrate_data(args.source, target, schema=schema_from_url(target)))
    except StoreError as exc:  # SchemaMismatch included
        print(f"chatd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("chatd: interrupted; run it again (it is safe)", file=sys.stderr)
        return EXIT_ERROR
    for table in report.tables:
        verdict = "verified" if table.ok else "MISMATCH"
        print(
            f"{table.table}: {table.source_rows} in SQLite, {table.target_rows} in PostgreSQL,"
            f" {table.copied} copied by this run, checksum {table.target_checksum}: {verdict}"
        )
    if not report.ok:
        print("chatd: the databases differ; see the tables marked MISMATCH", file=sys.stderr)
        return EXIT_MISMATCH
    total = sum(table.source_rows for table in report.tables)
    print(f"verified: {len(report.tables)} tables, {total} rows, counts and checksums match")
    return EXIT_OK
