"""The PostgreSQL writer's cost per commit: sequential submits of small batches.

``python -m bench.pg_batch [--batches N] [--size M]`` opens a PostgresStore on a fresh
schema at CHATD_TEST_PG_DSN, submits N batches of M messages one after another (each
submit waits for its commit, so every batch is one commit), and prints the wall time
and this process's CPU time per batch. The schema is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import psycopg
from psycopg import sql

from chatd.store import NewMessage
from chatd.store.postgres import PostgresStore

DSN = os.environ.get("CHATD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def measure(schema: str, batches: int, size: int) -> tuple[float, float]:
    """Seconds of wall time and of this process's CPU for all the batches."""
    store = PostgresStore(DSN, schema=schema)
    await store.open()
    try:
        alice = await store.create_user("alice", "hash-a", 1)
        bob = await store.create_user("bob", "hash-b", 2)
        assert alice is not None and bob is not None

        def batch(i: int) -> list[NewMessage]:
            return [
                NewMessage(
                    sender_id=alice.id, sender="alice", recipient_id=bob.id,
                    recipient="bob", client_id=f"m-{i}-{j}", body="hello", ts=1_000 + i,
                )
                for j in range(size)
            ]

        for i in range(20):  # warm up: connections, prepared statements
            await store.submit(batch(-1 - i))
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(batches):
            await store.submit(batch(i))
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:16]}"
    try:
        wall, cpu = asyncio.run(measure(schema, args.batches, args.size))
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    n = args.batches
    print(f"{n} batches of {args.size}: wall {wall:.2f} s, {wall / n * 1e6:.0f} us/batch;"
          f" CPU {cpu:.2f} s, {cpu / n * 1e6:.0f} us/batch")


if __name__ == "__main__":
    main()
