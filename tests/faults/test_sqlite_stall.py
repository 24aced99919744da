"""A SQLite writer that finishes nothing: requests are still answered within the bound.

Another process holding the database's write lock (a ``sqlite3`` shell left inside a
transaction) stops chatd's writer in its transaction, as a disk that stalls would. The
bug: every write behind it waited with it. A sign-up, a login, a logout waited out
SQLite's 5 s busy timeout and got 500 internal_error, and each transaction retried
waited as long again; with a stalled disk they waited for as long as the disk did.
PostgreSQL's requests are answered 503 within 2 s in an outage (test_pg_recovery); the
SQLite store now keeps the same bound, and /healthz says 503 while it lasts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
import orjson
import pytest

from tests.chatd.clients import PASSWORD, http, register, unique_name
from tests.chatd.server import ChatdProcess
from tests.support.poll import poll

BOUND = 2.0  # the store's: chatd.store.sqlite.stall.STALL_BOUND
SLACK = 1.5  # the watch's check interval, a loaded machine's scheduling, the sign-up's hash


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another process's write transaction on ``database``, open for the block."""
    conn = apsw.Connection(str(database))
    conn.set_busy_timeout(10_000)  # chatd may be committing at that moment
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def events(server: ChatdProcess) -> list[str]:
    path = server.log_dir / "chatd.log"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [str(orjson.loads(line)["event"]) for line in lines if line]


def test_requests_behind_a_stalled_writer_get_503_within_the_bound(tmp_path: Path) -> None:
    with ChatdProcess(tmp_path / "data", tmp_path / "logs") as server:
        register(server)  # the store works
        with write_lock_held(tmp_path / "data" / "chatd.db"):
            started = time.monotonic()
            answer = http(server, "POST", "/v1/register",
                          {"username": unique_name(), "password": PASSWORD})
            took = time.monotonic() - started
            assert answer.status == 503, answer.raw
            assert answer.error_code == "server_busy"
            assert int(answer.headers.get("retry-after", "0")) >= 1
            assert took < BOUND + SLACK, f"answered after {took:.1f} s"
            # a monitor sees it: /healthz answers 503 while the writer is stalled
            assert http(server, "GET", "/healthz").status == 503
            # held past SQLite's busy timeout, the writer's transaction fails and it
            # answers again, but it does not work: still one outage, no "restored"
            poll(lambda: "store.sqlite.commit_failed" in events(server),
                 "the writer's transaction failing on the lock")
            started = time.monotonic()
            again = http(server, "POST", "/v1/register",
                         {"username": unique_name(), "password": PASSWORD})
            assert again.status == 503, again.raw
            assert time.monotonic() - started < BOUND + SLACK
            assert "store.restored" not in events(server)
        # the lock is gone: writes go through again, and the outage ends in the log
        poll(lambda: http(server, "POST", "/v1/register",
                          {"username": unique_name(), "password": PASSWORD}).status == 201,
             "a sign-up once the lock is released", timeout=15)
        poll(lambda: "store.restored" in events(server), "store.restored in the log")
        assert http(server, "GET", "/healthz").status == 200
        logged = events(server)
        assert logged.count("store.unavailable") == 1, logged
        assert logged.count("store.restored") == 1, logged


def lines(server: ChatdProcess) -> list[dict[str, object]]:
    path = server.log_dir / "chatd.log"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


@pytest.mark.long_fault  # 10 s, most of it SQLite's busy timeout: `make faults` runs it
def test_sigterm_while_the_writer_is_stalled_exits_cleanly_without_tracebacks(
    tmp_path: Path,
) -> None:
    """The shutdown's last write (the seq lease) waits on the stalled writer like any
    other: it fails within the bound, and an outage is no place for a traceback."""
    with ChatdProcess(tmp_path / "data", tmp_path / "logs") as server:
        register(server)
        with write_lock_held(tmp_path / "data" / "chatd.db"):
            answer = http(server, "POST", "/v1/register",
                          {"username": unique_name(), "password": PASSWORD})
            assert answer.status == 503, answer.raw
            started = time.monotonic()
            assert server.stop(timeout=30) == 0
            took = time.monotonic() - started
    assert took < 10, f"exited after {took:.1f} s"  # SQLite's busy timeout, then the close
    with_traceback = [line["event"] for line in lines(server) if "traceback" in line]
    assert with_traceback == []
    assert any(line["event"] == "store.sqlite.seq_record_failed" for line in lines(server))
